"""What chooses the float32 decode step kernel (decode_f32_cpu.h), for torch-cpu and jax-cpu alike:
its forms, the CPU flags each needs, and the two settings a user can give.

INFERCOST_F32_FORM picks a form ("AVX-512", "AVX2+FMA", "plain C++"); the default is the best the
CPU runs. INFERCOST_F32_DECODE=compiled keeps the framework's own compiled step (inductor's, XLA's)
instead of the kernel, for side-by-side runs (bench/perf/decode_vs_hf.py); "kernel" (or unset) is the
default. A value it does not know keeps the compiled step too, and the launch label says why.
"""

from __future__ import annotations

import os

from infercost.hardware.host import cpu_flags

# name -> (the number the kernel takes, the CPU flags it needs), best first. AVX-512 first: in a
# whole step of small-125m on the 2-core EPYC host both streamed at about the read sweep's rate
# (62-68 against 62-67 GB/s, alternating in one process, 2026-12-07).
FORMS = {"AVX-512": (2, ("avx512f", "fma")), "AVX2+FMA": (1, ("avx2", "fma")), "plain C++": (0, ())}


def runnable_forms() -> list[str]:
    flags = cpu_flags()
    return [name for name, (_, needs) in FORMS.items() if all(f in flags for f in needs)]


def chosen_form() -> tuple[str | None, str | None]:
    """The form a step runs (INFERCOST_F32_FORM where set, else the best), or None and why not."""
    asked = os.environ.get("INFERCOST_F32_FORM")
    forms = runnable_forms()
    if not asked:
        return forms[0], None
    if asked not in forms:
        return None, f"INFERCOST_F32_FORM={asked!r} is not one of the forms this CPU runs ({', '.join(forms)})"
    return asked, None


def not_wanted() -> str | None:
    """Why this run does not take the kernel whatever the host (the user's settings); None if it does."""
    asked = os.environ.get("INFERCOST_F32_DECODE", "kernel") or "kernel"
    if asked == "compiled":
        return "not taken: INFERCOST_F32_DECODE=compiled"
    if asked != "kernel":  # a typo keeps the framework's step, as an unknown form does, and says so
        return f"not taken: INFERCOST_F32_DECODE={asked!r} is neither 'kernel' nor 'compiled'"
    form, why = chosen_form()
    return None if form is not None else f"not taken: {why}"


def launch(form: str, runs_as: str, int8: bool) -> str:
    """The record's launch label; runs_as: how the framework calls it, e.g. "C++/OpenMP"."""
    how = "INFERCOST_F32_FORM" if os.environ.get("INFERCOST_F32_FORM") else "the CPU flags"
    return (f"infercost's float32 decode step ({runs_as}), {form} (chosen by {how}; "
            f"this CPU runs {', '.join(runnable_forms())})" + ("; int8 weights, converted in its loops" if int8 else ""))
