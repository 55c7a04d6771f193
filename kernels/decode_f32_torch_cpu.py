"""torch.ops.infercost.decode_f32: a model's whole batch-1 float32 decode step in one C++
kernel (decode_f32_cpu.h says why), built on first use by cpp_torch_cpu.build.

`unsuited(model)` says why a model is not one it runs and `unavailable()` why this host or run
does not take it (None where it does); `step(model)` is the decode function to use in place of the
compiled one, with its `launch` label. decode_f32.py says how a form is chosen.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from . import cpp_torch_cpu, decode_f32
from .llama_torch import QLinear

SOURCE = Path(__file__).with_name("decode_f32_torch_cpu.cpp")
HEADERS = (SOURCE.with_name("decode_f32_cpu.h"), SOURCE.with_name("int8_dot_cpu.h"))  # the step, shared with jax-cpu


@functools.cache
def build_failure() -> str | None:
    failed = cpp_torch_cpu.build("infercost_decode_f32", SOURCE, HEADERS)
    return None if failed is None else f"did not build: {failed}"


def unsuited(model) -> str | None:
    """Why `model` (a llama_torch.Llama) is not one the kernel runs; None if it is."""
    cfg = model.cfg
    if why := decode_f32.model_unsuited(cfg):
        return why
    if model.tp is not None or model.ep is not None:
        return "a split model"
    cache = model.caches[0]
    if cache.int8 or cache.k.shape[0] != 1:
        return "an int8 KV cache" if cache.int8 else "a batch above 1"
    matrices = [model.head, *(w for layer in model.layers for w in (layer["wqkv"], layer["wo"], *decode_f32.mlp(layer)))]
    if any(isinstance(w, QLinear) and (w.values.dtype != torch.int8 or w.scale.dtype != torch.float32) for w in matrices):
        return "quantized weights other than int8 with float32 scales"
    if any(t.dtype not in (torch.float32, torch.int8) or t.is_mkldnn or not t.is_contiguous() for t in tensors(model)):
        return "weights other than contiguous float32 (or int8)"
    return None


def unavailable() -> str | None:
    """Why this host or run does not take the kernel (not built, or not wanted); None if it does."""
    return decode_f32.not_wanted() or build_failure()


def tensors(model) -> list[torch.Tensor]:
    """The kernel's tensors in its order (decode_f32_torch_cpu.cpp): model-wide, then per layer; a
    matrix as its values and its rows' scales (an empty tensor for float32 values)."""
    none = torch.empty(0)

    def matrix(w):
        return [w.values, w.scale] if isinstance(w, QLinear) else [w, none]
    out = [model.embed, *matrix(model.head), model.norm, model.cos, model.sin]
    for layer, cache in zip(model.layers, model.caches):
        w13, w2 = decode_f32.mlp(layer)
        out += [layer["ln1"], *matrix(layer["wqkv"]), layer.get("bqkv", none), *matrix(layer["wo"]), layer["ln2"],
                *matrix(w13), *matrix(w2), cache.k, cache.v, layer.get("router", none)]
    return out


def int8_weights(model) -> bool:
    return isinstance(model.head, QLinear) or isinstance(model.layers[0]["wqkv"], QLinear)


def step(model, form: str | None = None, int8_dot: str | None = None):
    """decode(tokens [1, 1], pos [1]) -> float32 logits [1, 1, vocab], writing the new key and value
    into the model's caches (and, for a mixture of experts, the experts each layer chose into
    model.last_routes [layers, 1, k]); its `launch` says which form runs and what chose it. `form`, `int8_dot`:
    one of decode_f32.runnable_forms() (INT8_DOTS') in place of the chosen one (a benchmark's
    side-by-side runs)."""
    form = form or decode_f32.chosen_form()[0]
    int8_dot = int8_dot or decode_f32.chosen_int8_dot()[0]
    number, heads, kv_heads, eps = decode_f32.FORMS[form][0], model.heads, model.kv_heads, float(model.cfg.norm_eps)
    dot_number = decode_f32.INT8_DOTS[int8_dot][0]
    top_k, norm_topk = getattr(model.cfg, "top_k", 0), int(getattr(model.cfg, "norm_topk", False))

    def decode(tokens, pos):
        # The model's tensors as they are now (a benchmark may point them at other buffers); ~20 us.
        logits, routes = torch.ops.infercost.decode_f32(tokens, pos, tensors(model), heads, kv_heads, eps, top_k,
                                                        norm_topk, number, dot_number)
        if routes.numel():
            model.last_routes = routes
        return logits

    decode.launch = decode_f32.launch(form, "C++/OpenMP", int8_dot if int8_weights(model) else None)
    return decode
