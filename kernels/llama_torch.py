"""The decoder in PyTorch: static KV cache updated in place, prefill and decode steps.

Same math and op order as llama_jax.py: fused QKV and gate/up weights, RMSNorm in float32,
rotary tables cast to the model dtype, attention softmax in float32 (SDPA), logits in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .llama import GOLDEN, M1, M2, LlamaConfig, rope_tables, tensor_salt, weight_init

MASK = 0xFFFFFFFF


def hashed_uniform(n: int, salt: int, device) -> torch.Tensor:
    """float32 values in [-1, 1), bit-identical to llama.hashed_uniform_numpy."""
    # int64 holds every intermediate: the low 32 bits are right even when a product wraps.
    x = (torch.arange(n, dtype=torch.int64, device=device) * GOLDEN + salt) & MASK
    x ^= x >> 16
    x = (x * M1) & MASK
    x ^= x >> 13
    x = (x * M2) & MASK
    x ^= x >> 16
    return (x >> 8).to(torch.float32) * 2.0**-23 - 1.0


def seeded_weights(cfg: LlamaConfig, seed: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    out = {}
    for index, (name, shape) in enumerate(cfg.param_shapes().items()):
        offset, width = weight_init(name)
        u = hashed_uniform(math.prod(shape), tensor_salt(seed, index), device)
        out[name] = (offset + width * u).reshape(shape).to(dtype)
        del u
    return out


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


# oneDNN's inner product on a pre-packed weight (the kernel torch.compile's CPU path calls).
ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def as_weight(w: torch.Tensor, batch: int, pack: bool = True) -> torch.Tensor:
    """An HF [out, in] weight stored for `linear`.

    On CPUs it is packed for oneDNN (unless pack is False). Why: MKL's matrix-vector product
    runs on one thread whatever torch's thread count; on a 2-core EPYC it streamed weights at
    ~0.6 of a read sweep's bandwidth, oneDNN's inner product at ~0.8, and it is faster at
    prefill too.
    """
    if pack and ONEDNN and w.device.type == "cpu" and w.dtype in (torch.float32, torch.bfloat16):
        return torch.ops.mkldnn._reorder_linear_weight(w, batch)
    return w


def compiling_for_cpu(t: torch.Tensor) -> bool:
    """True while torch.compile traces work on a CPU tensor: one-row products and decode
    attention are then written as multiply-reduces, for inductor to fuse into one kernel."""
    return t.device.type == "cpu" and torch.compiler.is_compiling()


def one_row(x: torch.Tensor) -> bool:
    return x.shape[:-1].numel() == 1


def multiply_reduce(x32: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x32 @ W.T for one row, as inductor streams it: one vectorised pass over W's rows, split
    across threads, float32 accumulation as in a GEMM. It reads weights at about a read
    sweep's bandwidth; oneDNN's GEMV reached ~0.8 of it."""
    return (x32.unsqueeze(-2) * w.float()).sum(-1)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T (+ b) for a weight stored by as_weight."""
    if one_row(x) and compiling_for_cpu(w):  # batch-1 decode on a CPU
        y = multiply_reduce(x.float(), w)
        return (y if b is None else y + b.float()).to(x.dtype)
    if w.is_mkldnn or (w.device.type == "cpu" and ONEDNN and w.dtype in (torch.float32, torch.bfloat16)
                       and not torch.compiler.is_compiling()):
        # oneDNN also takes an unpacked weight (a prefill beside compiled decode) at about
        # the packed speed; MKL's sgemm behind F.linear was 1.5x slower at 128 rows.
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return F.linear(x, w, b)


def norm_linear(x: torch.Tensor, norm_w: torch.Tensor, eps: float, w: torch.Tensor,
                b: torch.Tensor | None = None) -> torch.Tensor:
    """linear(rms_norm(x)): how each layer enters its attention and MLP, and the head."""
    if one_row(x) and compiling_for_cpu(w):
        # RMSNorm's scale is one number per row, so it is applied after the product instead of
        # to every element inside it. Why: fused into the GEMV's loop, the norm made inductor's
        # kernel stream weights 15-35% slower than a plain multiply-reduce (worst on fast memory).
        x32 = x.float()
        scale = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        y = multiply_reduce(norm_w.float() * x32, w) * scale
        return (y if b is None else y + b.float()).to(x.dtype)
    return linear(rms_norm(x, norm_w, eps), w, b)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def decode_attention(q, k_cache, v_cache, mask):
    """Attention of new queries [B, heads, T, hd] over the cache [B, kv_heads, S, hd].

    The query heads that share a KV head are stacked as rows of one product, so the cache is
    read once per KV head and never expanded (decode is bound by reading weights and cache).
    Scores and softmax in float32, as SDPA and JAX's dot_product_attention do.
    """
    b, nh, t, hd = q.shape
    nkv = k_cache.shape[1]
    qg = q.reshape(b, nkv, (nh // nkv) * t, hd)
    if compiling_for_cpu(q):
        # Under inductor on a CPU, broadcast multiply-reduces fuse with the softmax around
        # them; bmm would be a separate library call per layer for a few rows.
        scores = (qg.unsqueeze(-2).float() * k_cache.unsqueeze(2).float()).sum(-1) * hd**-0.5
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        o = (probs.unsqueeze(-1) * v_cache.unsqueeze(2).float()).sum(-2).to(q.dtype)
        return o.reshape(b, nh, t, hd)
    scores = (qg @ k_cache.transpose(-1, -2)).float() * hd**-0.5
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).to(q.dtype)
    return (probs @ v_cache).reshape(b, nh, t, hd)


class Llama(torch.nn.Module):
    """Weights (HF names) fused for speed; caches of [batch, kv_heads, max_seq, head_dim]."""

    def __init__(self, cfg: LlamaConfig, weights: dict, batch: int, max_seq: int, pack: bool = True):
        super().__init__()
        self.cfg = cfg
        w = weights
        dtype = w["model.embed_tokens.weight"].dtype
        device = w["model.embed_tokens.weight"].device
        self.embed = w["model.embed_tokens.weight"]
        self.head = as_weight(self.embed if cfg.tie_embeddings else w["lm_head.weight"], batch, pack)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for i in range(cfg.layers):
            p = f"model.layers.{i}."
            layer = {
                "ln1": w[p + "input_layernorm.weight"],
                "wqkv": as_weight(torch.cat([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]), batch, pack),
                "wo": as_weight(w[p + "self_attn.o_proj.weight"], batch, pack),
                "ln2": w[p + "post_attention_layernorm.weight"],
                "w13": as_weight(torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]), batch, pack),
                "w2": as_weight(w[p + "mlp.down_proj.weight"], batch, pack),
            }
            if cfg.qkv_bias:
                layer["bqkv"] = torch.cat([w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            self.layers.append(layer)
        cos, sin = rope_tables(cfg, max_seq)
        self.cos = torch.from_numpy(cos).to(device, torch.float32).to(dtype)
        self.sin = torch.from_numpy(sin).to(device, torch.float32).to(dtype)
        shape = (batch, cfg.kv_heads, max_seq, cfg.hd)
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.max_seq = max_seq

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a step reads or writes (CUDA graphs keep them at fixed addresses)."""
        layer_tensors = [t for layer in self.layers for t in layer.values()]
        return [self.embed, self.head, self.norm, self.cos, self.sin, *layer_tensors,
                *self.k_cache, *self.v_cache]

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, prefill: bool,
                last_only: bool = False) -> torch.Tensor:
        """Logits (float32) for tokens [B, T] at positions input_pos [T].

        prefill: the prompt from position 0 attends to itself causally, and its keys and
        values are written to the cache. Otherwise (decode) the new token attends to the
        whole static cache, masked to the positions written so far.
        """
        cfg = self.cfg
        b, t = tokens.shape
        nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.hd
        cos, sin = self.cos[input_pos], self.sin[input_pos]
        mask = None if prefill else (torch.arange(self.max_seq, device=tokens.device) <= input_pos[-1]).view(1, 1, 1, -1)
        x = F.embedding(tokens, self.embed)
        for layer, k_cache, v_cache in zip(self.layers, self.k_cache, self.v_cache):
            qkv = norm_linear(x, layer["ln1"], cfg.norm_eps, layer["wqkv"], layer.get("bqkv"))
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            q = q.view(b, t, nh, hd).transpose(1, 2)
            k = k.view(b, t, nkv, hd).transpose(1, 2)
            v = v.view(b, t, nkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k_cache.index_copy_(2, input_pos, k)
            v_cache.index_copy_(2, input_pos, v)
            if prefill:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                o = decode_attention(q, k_cache, v_cache, mask)
            x = x + linear(o.transpose(1, 2).reshape(b, t, nh * hd), layer["wo"])
            gate, up = norm_linear(x, layer["ln2"], cfg.norm_eps, layer["w13"]).chunk(2, dim=-1)
            x = x + linear(F.silu(gate) * up, layer["w2"])
        if last_only:
            x = x[:, -1:]
        return norm_linear(x, self.norm, cfg.norm_eps, self.head).float()


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Runner:
    """One model on one device: builds weights and cache, and hands out ready-to-call steps.

    Decode runs compiled where that pays: on CUDA through torch.compile with CUDA graphs
    ("reduce-overhead"); on a CPU at batch 1 through inductor, whose fused multiply-reduce
    GEMVs stream the weights faster than any library GEMV torch calls (batch > 1 stays on
    oneDNN's packed GEMM, faster there). If compiling fails the runner falls back to eager and
    says why in `launch`.
    """

    def __init__(self, cfg: LlamaConfig, dtype: str, device, batch: int, max_seq: int,
                 seed: int = 0, weights: dict | None = None, compile_decode: bool = True,
                 keep_weights: bool = False):
        tdtype = TORCH_DTYPES[dtype]
        if weights is None:
            w = seeded_weights(cfg, seed, tdtype, device)
        else:  # numpy (bfloat16 via ml_dtypes) -> float32 -> dtype: exact for every source dtype
            import numpy as np
            w = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device, tdtype) for k, v in weights.items()}
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        cpu_gemv = compile_decode and self.device.type == "cpu" and batch == 1
        self.model = Llama(cfg, w, batch, max_seq, pack=not cpu_gemv)
        self.weights = w if keep_weights else None  # the model holds fused copies
        self.params = self.model.tensors()
        del w
        self.launch = "eager"
        self.prefill_launch = "eager (oneDNN)" if self.device.type == "cpu" and ONEDNN else "eager"
        self._decode = partial_forward = lambda tokens, pos: self.model(tokens, pos, prefill=False)
        if compile_decode and (cuda or cpu_gemv):
            # Each runner is a new closure over the same code, so a sweep recompiles; past the
            # limit dynamo would quietly run eager: raise instead, and the fallback records it.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        if compile_decode and cuda:
            for t in self.model.tensors():
                torch._dynamo.mark_static_address(t)
            self._decode = torch.compile(partial_forward, mode="reduce-overhead", fullgraph=True)
            self.launch = "torch.compile(reduce-overhead): CUDA graphs"
        elif cpu_gemv:
            self._decode = torch.compile(partial_forward, fullgraph=True, dynamic=False)
            self.launch = "torch.compile(inductor, CPU): fused GEMVs"
        self._eager_decode = partial_forward

    @torch.inference_mode()
    def _run_decode(self, tokens, pos):
        try:
            return self._decode(tokens, pos)
        except Exception as e:  # compile failure: eager is slower but still the same math
            if self._decode is self._eager_decode:
                raise
            self._decode = self._eager_decode
            self.launch = f"eager (torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
            return self._decode(tokens, pos)

    def prefill_step(self, tokens, last_only: bool = True):
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        pos = torch.arange(tokens.shape[1], device=self.device)

        @torch.inference_mode()
        def step():
            return self.model(tokens, pos, prefill=True, last_only=last_only)
        return step

    def decode_step(self, tokens, pos: int):
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        pos = torch.tensor([pos], dtype=torch.long, device=self.device)
        return lambda: self._run_decode(tokens, pos)

    def streamed(self) -> list[torch.Tensor]:
        """The weights a decode step reads in full (head, every layer's matrices and norms), as
        stored: the buffers a read sweep must cover to measure this model's bandwidth ceiling."""
        m = self.model
        return [m.head, m.norm, *(t for layer in m.layers for t in layer.values())]

    def weights_numpy(self) -> dict:
        return {k: v.detach().to("cpu", torch.float64).numpy() for k, v in self.weights.items()}
