"""How the torch decoder runs best on CPUs: the layer forms and compile policy torch-cpu picks.

Two forms, both measured on 2-core EPYC and Xeon hosts:
- OneDNN: weights packed for oneDNN's inner product. MKL's matrix-vector product behind
  F.linear runs on one thread whatever torch's thread count; oneDNN streamed the weights at
  ~0.8 of a read sweep's bandwidth on the EPYC host, and is faster at prefill too. Batched
  decode (4-8 rows) stays here: 20-30% faster than the fused form or unpacked oneDNN.
- FusedGEMV: batch-1 decode compiled by inductor, with every one-row product written as a
  float32 multiply-reduce over W's rows and decode attention as broadcast multiply-reduces, so
  the whole step (norms, rotary, cache update, softmax, every GEMV) becomes one C++/OpenMP
  kernel that streams the weights at about a read sweep's bandwidth. Outside compilation
  (the prefill beside it) it calls oneDNN on the unpacked weights, about as fast as packed.
  int8 weights are the exception: their one-row products call int8_gemv_torch_cpu.cpp between
  inductor's kernels (inductor's own loop was latency-bound there, not memory-bound).
int8 weights in both forms, outside compiled code: a few rows (batched decode) by the same
kernel's batched product, many rows (prefill) by dequantized blocks through oneDNN (int8_linear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import decode_f32_torch_cpu, int8_gemv_torch_cpu
from .llama_torch import COMPILED_MOE_BATCH, Llama, Ops, QLinear, rms_norm, sink_softmax, strict_recompiles

# oneDNN's inner product on a pre-packed weight (the kernel torch.compile's CPU path calls).
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def onednn_linear(x, w, b=None):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


# Rows of x up to which infercost's int8 kernel takes a batched product; above, the weights are
# dequantized a block at a time for oneDNN's float product. Measured on the 2-core EPYC host
# (small-125m's 84 matrices, AVX2 form): 4 rows 6.4 ms (float32's product 34 ms), 16 rows 23 ms,
# 64 rows 77 ms against 93-168 for dequantize-and-multiply, 128 rows 153 ms for both. torch's own
# int8 weight-only CPU kernel (torch._weight_int8pack_mm) took 36 ms a row, linear in the rows:
# never used.
INT8_KERNEL_MAX_ROWS = 64
DEQUANT_BLOCK_BYTES = 64 << 20  # float32 weights made at once by the dequantizing path


def dequant_linear(x, w: QLinear):
    """x @ (values * scale).T through oneDNN/MKL's float product, the weights dequantized a block of
    rows at a time (an LM head of 128k rows is never made in float32 whole)."""
    rows = max(1, DEQUANT_BLOCK_BYTES // (4 * w.values.shape[1]))
    x32 = x.float()
    parts = [F.linear(x32, w.values[i:i + rows].float() * w.scale[i:i + rows].float()[:, None])
             for i in range(0, w.values.shape[0], rows)]
    return torch.cat(parts, dim=-1).to(x.dtype)


def int8_linear(x, w: QLinear, b=None):
    """y = x @ (values * scale).T without a float copy of the whole W: infercost's kernel for a
    few rows (one row: its GEMV), dequantized blocks for many."""
    rows = x.shape[:-1].numel()
    if rows <= INT8_KERNEL_MAX_ROWS and int8_gemv_torch_cpu.available():
        x32 = x.float()
        y = (int8_gemv_torch_cpu.int8_gemv if rows == 1 else int8_gemv_torch_cpu.int8_gemm)(x32, w.values, w.scale.float()).to(x.dtype)
    else:
        y = dequant_linear(x, w)
    return y if b is None else y + b


class OneDNN(Ops):
    def weight(self, w, batch: int):
        if isinstance(w, QLinear):
            return w
        if ONEDNN and w.dtype in ONEDNN_DTYPES:
            return torch.ops.mkldnn._reorder_linear_weight(w, batch)
        return w

    def linear(self, x, w, b=None):
        if isinstance(w, QLinear) and w.values.dtype == torch.int8:
            return int8_linear(x, w, b)
        if not isinstance(w, QLinear) and w.is_mkldnn:
            return onednn_linear(x, w, b)
        return super().linear(x, w, b)


def one_row(x: torch.Tensor) -> bool:
    return x.shape[:-1].numel() == 1


def multiply_reduce(x32: torch.Tensor, w, int8_kernel: bool = False) -> torch.Tensor:
    """x32 @ W.T for one row, as inductor streams it: one vectorised pass over W's rows, split
    across threads, float32 accumulation as in a GEMM. A quantized W is converted inside the
    same loop (1 byte read a weight) and scaled once per output; int8 goes to our own kernel
    where it built (int8_gemv_torch_cpu.cpp says why: inductor's loop is latency-bound on int8)."""
    if isinstance(w, QLinear):
        if int8_kernel and w.values.dtype == torch.int8:
            return int8_gemv_torch_cpu.int8_gemv(x32, w.values, w.scale.float())
        return (x32.unsqueeze(-2) * w.values.float()).sum(-1) * w.scale.float()
    return (x32.unsqueeze(-2) * w.float()).sum(-1)


class FusedGEMV(Ops):
    """Weights unpacked (inductor reads them); the fused forms apply while compiling."""

    int8_kernel = False  # int8 weights' rows by infercost's kernel
    kv_kernel = False    # an int8 KV cache's attention by infercost's kernels

    def __init__(self, kv_int8: bool = False):
        self.kv_int8, self.kv_decided = kv_int8, False

    def weight(self, w, batch: int):
        # Decided here, as the weights arrive, in every process that builds a part of the model (a
        # rank of a split one): compiled code cannot ask, and a float model never builds the kernel.
        if self.kv_int8 and not self.kv_decided:
            why = int8_gemv_torch_cpu.why_not()
            self.kv_kernel, self.kv_decided = why is None, True
            self.launch_note += ("; int8 KV cache attention by infercost's kernels" if why is None
                                 else f"; int8 KV cache attention by inductor's loop ({why})")
        if isinstance(w, QLinear) and w.values.dtype == torch.int8 and "rows by" not in self.launch_note:
            why = int8_gemv_torch_cpu.why_not()
            self.int8_kernel = why is None
            self.launch_note += (f"; int8 rows by infercost's GEMV, {int8_gemv_torch_cpu.describe()}" if why is None
                                 else f"; int8 rows by inductor's loop ({why})")
        return w

    def linear(self, x, w, b=None):
        if one_row(x) and torch.compiler.is_compiling():
            y = multiply_reduce(x.float(), w, self.int8_kernel)
            return (y if b is None else y + b.float()).to(x.dtype)
        if isinstance(w, QLinear):
            if w.values.dtype == torch.int8 and not torch.compiler.is_compiling():
                return int8_linear(x, w, b)
            return super().linear(x, w, b)
        if ONEDNN and w.dtype in ONEDNN_DTYPES and not torch.compiler.is_compiling():
            return onednn_linear(x, w, b)
        return super().linear(x, w, b)

    def norm_linear(self, x, norm_w, eps, w, b=None):
        if one_row(x) and torch.compiler.is_compiling():
            # RMSNorm's scale is one number per row, so it is applied after the product instead
            # of to every element inside it. Why: fused into the GEMV's loop, the norm made
            # inductor's kernel stream weights 15-35% slower than a plain multiply-reduce.
            x32 = x.float()
            scale = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
            y = multiply_reduce(norm_w.float() * x32, w, self.int8_kernel) * scale
            return (y if b is None else y + b.float()).to(x.dtype)
        return self.linear(rms_norm(x, norm_w, eps), w, b)

    def decode_attention(self, q, k_cache, v_cache, mask, k_scale=None, v_scale=None, sinks=None):
        if not torch.compiler.is_compiling():
            return super().decode_attention(q, k_cache, v_cache, mask, k_scale, v_scale, sinks)
        # Broadcast multiply-reduces fuse with the softmax around them; bmm would be a separate
        # library call per layer for a few rows. An int8 cache's per-position scales are applied
        # outside the sums (to the scores, and to the probabilities before the values' sum), so its
        # int8 values are converted inside the loops and never written back dequantized.
        b, nh, t, hd = q.shape
        qg = q.reshape(b, k_cache.shape[1], (nh // k_cache.shape[1]) * t, hd)
        kernel = k_scale is not None and self.kv_kernel
        if kernel:  # infercost's int8 kernels (int8_gemv_torch_cpu.cpp says why)
            scores = int8_gemv_torch_cpu.int8_attn_scores(qg.float() * hd**-0.5, k_cache, k_scale)
        else:
            scores = (qg.unsqueeze(-2).float() * k_cache.unsqueeze(2).float()).sum(-1) * hd**-0.5
            if k_scale is not None:
                scores = scores * k_scale.unsqueeze(2)
        probs = sink_softmax(scores.masked_fill(~mask, float("-inf")), sinks, t)
        if v_scale is not None:
            probs = probs * v_scale.unsqueeze(2)
        if kernel:
            o = int8_gemv_torch_cpu.int8_attn_values(probs, v_cache).to(q.dtype)
        else:
            o = (probs.unsqueeze(-1) * v_cache.unsqueeze(2).float()).sum(-2).to(q.dtype)
        return o.reshape(b, nh, t, hd)


def inductor(forward, model: Llama):
    strict_recompiles()
    # A C++ wrapper calls the step's kernels without a Python line each: 6% of an int8 step on
    # the EPYC host (4.09 -> 3.93 ms), where the GEMVs are calls of their own; ~3 s more to compile.
    return torch.compile(forward, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})


def step_kernel_or_inductor(forward, model: Llama):
    """Batch-1 decode by infercost's step kernel where the model is one it runs (dense or
    Mixtral-style experts, float32 or int8 weights) and the kernel built (decode_f32_cpu.h: it streamed the
    weights 1.1-1.2x faster than inductor's step on the same buffers, EPYC host), else compiled by
    inductor; the function's `launch` says which and why."""
    if decode_f32_torch_cpu.unsuited(model) is None:
        why = decode_f32_torch_cpu.unavailable()
        if why is None:
            model.ops.launch_note = ""  # it named the int8 GEMV op, which the step kernel does not call
            return decode_f32_torch_cpu.step(model)
        compiled = inductor(forward, model)
        compiled.launch = f"torch.compile(inductor, CPU): fused GEMVs (infercost's float32 step {why})"
        return compiled
    return inductor(forward, model)


def plan(batch: int, compile_decode: bool, kv_int8: bool = False, moe: bool = False) -> dict:
    """The Runner options for a CPU model: ops, compile function and launch labels. Batch-1
    decode is compiled; so is a mixture of experts' at small batches, where the eager grouped loop
    (an expert at a time) spends more than its experts' reads."""
    prefill = "eager (oneDNN)" if ONEDNN else "eager"
    if compile_decode and batch == 1:
        return {"ops": FusedGEMV(kv_int8), "compile": step_kernel_or_inductor,
                "launch": "torch.compile(inductor, CPU): fused GEMVs", "prefill_launch": prefill}
    if compile_decode and moe and batch <= COMPILED_MOE_BATCH:
        return {"ops": FusedGEMV(kv_int8), "compile": inductor,
                "launch": "torch.compile(inductor, CPU): experts by index for each token", "prefill_launch": prefill}
    return {"ops": OneDNN(), "compile": None, "prefill_launch": prefill}
