"""jax-cpu's batch-1 float32 decode step by infercost's kernel (decode_f32_cpu.h says why), called
through XLA's FFI (decode_f32_jax_cpu.cc), built on first use by bench/native.py.

`unsuited(...)` says why a model is not one it runs and `unavailable()` why this host or run does
not take it (None where it does); `forward` is llama_jax.forward's decode with the kernel in its
place (same arguments and results, but the cache stacked: llama_jax.stacked_cache), the cache
donated and written in place. decode_f32.py says how a form is chosen.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from infercost.bench.native import build_library

from . import decode_f32

SOURCE = Path(__file__).with_name("decode_f32_jax_cpu.cc")
HEADERS = (SOURCE.with_name("decode_f32_cpu.h"), SOURCE.with_name("int8_dot_cpu.h"))
TARGET = "infercost_decode_f32"


@functools.cache
def build_failure() -> str | None:
    """None once the handler is built and registered with XLA, else why not."""
    flags = ["-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC", f"-I{jax.ffi.include_dir()}"]
    try:
        lib = ctypes.CDLL(str(build_library(SOURCE, flags, HEADERS)))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.InfercostDecodeF32), platform="cpu")
    except (RuntimeError, OSError, AttributeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        return f"did not build: {first}"
    return None


def unsuited(cfg, batch: int, dtype, mesh, kv_int8: bool, keys_t: bool, params: dict | None = None) -> str | None:
    """Why this model (llama_jax.Runner's arguments and params) is not one the kernel runs; None if it is."""
    if why := decode_f32.model_unsuited(cfg):
        return why
    if mesh is not None:
        return "a split model"
    if kv_int8 or batch != 1:
        return "an int8 KV cache" if kv_int8 else "a batch above 1"
    if jnp.dtype(dtype) != jnp.float32:
        return "weights other than float32"
    if params is not None:
        matrices = [params["head"], *(w for layer in params["layers"]
                                      for w in (layer["wqkv"], layer["wo"], *decode_f32.mlp(layer)))]
        if any(isinstance(w, dict) for w in matrices) and not all(
                isinstance(w, dict) and w["q"].dtype == jnp.int8 and w["s"].dtype == jnp.float32 for w in matrices):
            return "quantized weights other than int8 with float32 scales"
    if not keys_t:
        return "keys not held [kv_heads, head_dim, positions]"
    return None


def unavailable() -> str | None:
    return decode_f32.not_wanted() or build_failure()


def launch(params: dict) -> str:
    return decode_f32.launch(decode_f32.chosen_form()[0], "C++ on its own threads, via XLA's FFI",
                             decode_f32.chosen_int8_dot()[0] if isinstance(params["head"], dict) else None)


def forward(cfg, params, rope_tab, tokens, pos, cache, *, threads: int):
    """(logits [1, 1, vocab] float32, the cache with this position written, the experts each
    layer chose [layers, 1, k] (none for a dense model)), as llama_jax.forward's decode returns
    them, from one call of the kernel; the cache is (keys, values), each every layer's stacked."""
    layers = params["layers"]
    has_bias, int8 = "bqkv" in layers[0], isinstance(params["head"], dict)
    matrix = (lambda w: [w["q"], w["s"]]) if int8 else (lambda w: [w])  # int8: values, then the rows' scales
    weights = [params["embed"], *matrix(params["head"]), params["norm"], *rope_tab]
    top_k = cfg.top_k if "router" in layers[0] else 0
    for layer in layers:
        w13, w2 = decode_f32.mlp(layer)
        weights += [layer["ln1"], *matrix(layer["wqkv"]), *([layer["bqkv"]] if has_bias else []), *matrix(layer["wo"]),
                    layer["ln2"], *matrix(w13), *matrix(w2), *([layer["router"]] if top_k else [])]
    keys, values = cache  # every layer's, stacked (llama_jax.stacked_cache)
    first = 2 + len(weights)  # the operand number of the keys (after token and pos)
    outs = [jax.ShapeDtypeStruct((1, 1, matrix(params["head"])[0].shape[0]), jnp.float32),
            jax.ShapeDtypeStruct(keys.shape, keys.dtype), jax.ShapeDtypeStruct(values.shape, values.dtype),
            *([jax.ShapeDtypeStruct((len(layers), 1, top_k), jnp.int32)] if top_k else [])]
    call = jax.ffi.ffi_call(TARGET, outs, input_output_aliases={first: 1, first + 1: 2})
    form = decode_f32.FORMS[decode_f32.chosen_form()[0]][0]
    heads = matrix(layers[0]["wo"])[0].shape[1] // cfg.hd
    kv_heads = (matrix(layers[0]["wqkv"])[0].shape[0] // cfg.hd - heads) // 2
    got = call(tokens.astype(jnp.int32), jnp.asarray(pos, jnp.int32), *weights, keys, values,
               heads=np.int64(heads), kv_heads=np.int64(kv_heads), eps=np.float64(cfg.norm_eps),
               has_bias=np.int64(has_bias), int8=np.int64(int8), top_k=np.int64(top_k),
               norm_topk=np.int64(getattr(cfg, "norm_topk", False)), form=np.int64(form),
               int8_dot=np.int64(decode_f32.INT8_DOTS[decode_f32.chosen_int8_dot()[0]][0]), threads=np.int64(threads))
    return got[0], (got[1], got[2]), got[-1] if top_k else jnp.zeros((0, 1, 1), jnp.int32)
