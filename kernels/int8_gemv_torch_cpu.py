"""torch.ops.infercost.int8_gemv: the one-row int8 product of int8_gemv_torch_cpu.cpp, built on first use.

It is built by cpp_torch_cpu.build (torch's extension builder), once a host. The forms are those the CPU's flags allow: AVX2 with FMA, and AVX-512
(avx512f and avx512bw); FORMS says which comes first and why. Where neither runs or the kernel cannot be built, `available()` is False and
`why_not()` says why; the caller keeps inductor's multiply-reduce form. `describe()` names the
form in use and the trial (for the record's launch).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from infercost.hardware.host import cpu_flags

from . import cpp_torch_cpu

SOURCE = Path(__file__).with_name("int8_gemv_torch_cpu.cpp")
# The forms, best first: name -> (the number int8_gemv_select takes, the CPU flags it needs).
# The default is the first the CPU runs. AVX2+FMA comes first on AVX-512 hosts too: in a whole
# int8 decode step on the 2-core AVX-512 EPYC host it reached 87-89% of the read ceiling against
# 82-85% for the AVX-512 form (alternating in one process, bench/perf/quant_decode.py prints both
# every round on any host); INFERCOST_INT8_FORM=AVX-512 picks the other.
FORMS = {"AVX2+FMA": (1, ("avx2", "fma")), "AVX-512": (2, ("avx512f", "avx512bw"))}


def runnable_forms() -> list[str]:
    """The forms this CPU's flags allow, best first (INFERCOST_CPU_ISA can take flags away)."""
    flags = cpu_flags()
    return [name for name, (_, needs) in FORMS.items() if all(f in flags for f in needs)]


def best_form() -> str | None:
    forms = runnable_forms()
    return forms[0] if forms else None


_state = {"form": None, "why": None}


@functools.cache
def _load() -> None:
    """Build and register the op once, and choose the best form this CPU runs; _state says which
    form is in use, or why none is."""
    wanted = best_form()
    if wanted is None:
        _state["why"] = "this CPU has neither AVX-512 nor AVX2 with FMA"
        return
    failed = cpp_torch_cpu.build("infercost_int8_gemv", SOURCE, (SOURCE.with_name("int8_dot_cpu.h"),))
    if failed:  # no compiler, no ninja: the inductor form still runs
        _state["why"] = f"the int8 kernel did not build: {failed}"
        return

    @torch.library.register_fake("infercost::int8_gemv")
    def _(x, w, scale):
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    @torch.library.register_fake("infercost::int8_gemm")
    def _(x, w, scale):
        return x.new_empty((*x.shape[:-1], w.shape[0]))

    @torch.library.register_fake("infercost::int8_attn_scores")
    def _(q, k, ks):
        return q.new_empty((*q.shape[:3], k.shape[2]))

    @torch.library.register_fake("infercost::int8_attn_values")
    def _(p, v):
        return p.new_empty((*p.shape[:3], v.shape[3]))
    asked = os.environ.get("INFERCOST_INT8_FORM")
    if asked:
        if asked not in FORMS:
            _state["why"] = f"INFERCOST_INT8_FORM={asked!r} is not one of {', '.join(FORMS)}"
            return
        wanted = asked
    use(wanted)


def use(name: str) -> bool:
    """Run the kernel's `name` form from now on, if this CPU runs it (the kernel checks)."""
    ok = torch.ops.infercost.int8_gemv_select(FORMS[name][0]) == FORMS[name][0]
    _state.update(form=name if ok else None, why=None if ok else f"this CPU does not run the kernel's {name} form")
    return ok


def available() -> bool:
    _load()
    return _state["form"] is not None


def why_not() -> str | None:
    _load()
    return _state["why"]


def form() -> str | None:
    _load()
    return _state["form"]


def describe() -> str:
    """The form in use and what chose it, for a record's launch."""
    _load()
    if _state["form"] is None:
        return f"none ({_state['why']})"
    how = "INFERCOST_INT8_FORM" if os.environ.get("INFERCOST_INT8_FORM") else "the CPU flags"
    return f"{_state['form']} (chosen by {how}; this CPU runs {', '.join(runnable_forms())})"


def int8_gemv(x32: torch.Tensor, values: torch.Tensor, scale32: torch.Tensor) -> torch.Tensor:
    """x32 [..., K] (one row, float32) @ (values [O, K] int8 * scale32 [O]).T"""
    return torch.ops.infercost.int8_gemv(x32, values, scale32)


def int8_gemm(x32: torch.Tensor, values: torch.Tensor, scale32: torch.Tensor) -> torch.Tensor:
    """x32 [..., K] (a few rows, float32) @ (values [O, K] int8 * scale32 [O]).T, the weights read once."""
    return torch.ops.infercost.int8_gemm(x32, values, scale32)


def int8_attn_scores(q32: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor) -> torch.Tensor:
    """q32 [B, H, G, D] against an int8 key cache k [B, H, S, D] with its scales [B, H, S]: [B, H, G, S]."""
    return torch.ops.infercost.int8_attn_scores(q32, k, k_scale)


def int8_attn_values(p32: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Probabilities p32 [B, H, G, S] (times the values' scales) over an int8 value cache [B, H, S, D]."""
    return torch.ops.infercost.int8_attn_values(p32, v)
