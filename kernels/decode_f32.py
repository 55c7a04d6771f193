"""What chooses the float32 decode step kernel (decode_f32_cpu.h), for torch-cpu and jax-cpu alike:
its forms and int8 dot products, the CPU flags each needs, and the three settings a user can give.

INFERCOST_F32_FORM picks a form ("AVX-512", "AVX2+FMA", "plain C++"); the default is the best the
CPU runs. INFERCOST_F32_DECODE=compiled keeps the framework's own compiled step (inductor's, XLA's)
instead of the kernel, for side-by-side runs (bench/perf/decode_vs_hf.py); "kernel" (or unset) is the
default. INFERCOST_INT8_DOT picks how int8 weights are summed: "float32 activations" (each weight
converted to float32 in the loop, the activations as they are) or x quantized to int8 as llama.cpp's
Q8_0 quantizes activations (blocks of 32, a scale each) and summed in int32 by one of INT8_DOTS' vector
forms; the default is the best int8 form the CPU runs. A value it does not know keeps the compiled
step too, and the launch label says why.
"""

from __future__ import annotations

import os

from infercost.hardware.host import cpu_flags

# name -> (the number the kernel takes, the CPU flags it needs), best first. AVX-512 first: in a
# whole step of small-125m on the 2-core EPYC host both streamed at about the read sweep's rate
# (62-68 against 62-67 GB/s, alternating in one process, 2026-12-07).
FORMS = {"AVX-512": (2, ("avx512f", "fma")), "AVX2+FMA": (1, ("avx2", "fma")), "plain C++": (0, ())}


# The same for int8 weights' dot products, best first. Quantized activations first: converting each
# weight to float32 held the whole int8 step at that arithmetic's rate on the 2-core EPYC host
# (2.21 ms a step from cache, 2.22 from memory, 2026-12-07); int8 sums stream at the memory's. Even
# in plain C++ the int8 sums come first: 9.0 G weights/s from cache against 2.7 for the conversion.
INT8_DOTS = {"AVX-512 VNNI": (4, ("avx512_vnni", "avx512bw", "avx512f")), "AVX-VNNI": (3, ("avx_vnni", "avx2", "fma")),
             "AVX2": (2, ("avx2", "fma")), "plain C++": (1, ()), "float32 activations": (0, ())}


def runnable(table: dict) -> list[str]:
    flags = cpu_flags()
    return [name for name, (_, needs) in table.items() if all(f in flags for f in needs)]


def runnable_forms() -> list[str]:
    return runnable(FORMS)


def chosen_int8_dot() -> tuple[str | None, str | None]:
    """The int8 dot product a step with int8 weights runs (INFERCOST_INT8_DOT where set, else the
    best), or None and why not."""
    asked, dots = os.environ.get("INFERCOST_INT8_DOT"), runnable(INT8_DOTS)
    if not asked:
        return dots[0], None
    if asked not in dots:
        return None, f"INFERCOST_INT8_DOT={asked!r} is not one this CPU runs ({', '.join(dots)})"
    return asked, None


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
    for chosen in (chosen_form, chosen_int8_dot):
        name, why = chosen()
        if name is None:
            return f"not taken: {why}"
    return None


INT8_ACTIVATIONS = "int8 weights by int8 activations"  # in the launch label of a step that quantizes them


def quantizes_activations(launch: str) -> bool:
    """Whether a runner whose launch label is `launch` quantizes its decode steps' activations to
    int8 (what a float64 check must do too: llama_ref.greedy's act_int8)."""
    return INT8_ACTIVATIONS in launch


def launch(form: str, runs_as: str, int8_dot: str | None) -> str:
    """The record's launch label; runs_as: how the framework calls it, e.g. "C++/OpenMP"; int8_dot:
    the int8 dot product of a model with int8 weights (None: float32 weights)."""
    how = "INFERCOST_F32_FORM" if os.environ.get("INFERCOST_F32_FORM") else "the CPU flags"
    label = (f"infercost's float32 decode step ({runs_as}), {form} (chosen by {how}; "
             f"this CPU runs {', '.join(runnable_forms())})")
    if int8_dot is None:
        return label
    how = "INFERCOST_INT8_DOT" if os.environ.get("INFERCOST_INT8_DOT") else "the CPU flags"
    if int8_dot == "float32 activations":
        return label + f"; int8 weights, converted in its loops, float32 activations (chosen by {how})"
    return label + (f"; {INT8_ACTIVATIONS} (quantized as llama.cpp's Q8_0: blocks of 32, a scale "
                    f"each), {int8_dot} dot products (chosen by {how})")


def model_unsuited(cfg) -> str | None:
    """Why the step kernel does not run this model's layers (None where it does): dense Llama-family
    layers, or mixtures of experts routed as Mixtral and Qwen-MoE route (softmax over every expert,
    the k best, renormalised or not), every layer routed, no shared expert."""
    if cfg.family == "dense" and not cfg.experts_model and not getattr(cfg, "qk_norm", False):
        return None
    if cfg.family != "moe":
        return f"a {cfg.family} model: the kernel runs dense Llama-family layers and Mixtral-style experts"
    why = ("a router other than softmax over every expert" if cfg.scoring != "softmax" or cfg.score_bias
           or cfg.groups > 1 or cfg.routed_scale != 1.0 else
           "a shared expert" if cfg.shared_intermediate else
           "query and key norms" if cfg.qk_norm else
           "dense layers among the routed ones" if cfg.dense_layers else None)
    return f"a mixture of experts with {why}: the kernel routes Mixtral-style experts only" if why else None


def mlp(layer: dict) -> tuple:
    """A layer's gate/up and down matrices as the kernel takes them (either framework's layer dict):
    its own, or its experts stacked."""
    return (layer["we13"], layer["we2"]) if "router" in layer else (layer["w13"], layer["w2"])
