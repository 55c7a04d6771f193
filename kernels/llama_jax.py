"""The decoder in JAX: the same math and op order as llama_torch.py, jitted, with the KV
cache a list of per-layer arrays [batch, kv_heads, max_seq, head_dim] (as in torch) donated to
each step and updated in place with dynamic_update_slice. In the CPU form (multiply-reduce
attention) keys are held [batch, kv_heads, head_dim, max_seq]: decode_attention says why."""

from __future__ import annotations

import contextlib

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .llama import AXES, GOLDEN, M1, M2, RULES, LlamaConfig, hf_axes, rope_tables, tensor_salt, weight_init
from . import mla_jax, moe_jax
from .quant import QWeight


def on_host(x) -> np.ndarray:
    """A device array as one host array; on several hosts every host gathers the whole of it."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    # np.asarray, not jax.device_get: device_get's copy_to_host_async cost ~0.15 ms a fetch on
    # the CPU, 2% of a small model's decode step
    return np.asarray(x)

def sharding_rules(cfg: LlamaConfig, tp: int, ep: int = 1) -> dict:
    """RULES for this model on `tp` chips (fewer KV heads than chips: the KV heads are replicated);
    with experts split over `ep` chips, the batch is split over them too."""
    if cfg.heads % tp:
        raise ValueError(f"{tp} chips do not divide {cfg.heads} attention heads")
    return {**RULES, "kv_heads": "tp" if cfg.kv_heads % tp == 0 else None, **({"batch": "ep"} if ep > 1 else {})}


def partition(mesh, rules: dict, axes: tuple):
    from jax.sharding import NamedSharding, PartitionSpec
    return NamedSharding(mesh, PartitionSpec(*(rules.get(a) if a else None for a in axes)))


@partial(jax.jit, static_argnums=0)  # salt is traced: one compile per tensor size, not per tensor
def hashed_uniform(n: int, salt) -> jax.Array:
    """float32 values in [-1, 1), bit-identical to llama.hashed_uniform_numpy."""
    x = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(GOLDEN) + salt
    x ^= x >> 16
    x *= jnp.uint32(M1)
    x ^= x >> 13
    x *= jnp.uint32(M2)
    x ^= x >> 16
    return (x >> 8).astype(jnp.float32) * jnp.float32(2.0**-23) - jnp.float32(1.0)


def seeded_weights(cfg: LlamaConfig, seed: int, dtype, device) -> dict[str, jax.Array]:
    out = {}
    with jax.default_device(device):
        for index, (name, shape) in enumerate(cfg.param_shapes().items()):
            offset, width = weight_init(name)
            u = hashed_uniform(math.prod(shape), jnp.uint32(tensor_salt(seed, index)))
            out[name] = (jnp.float32(offset) + jnp.float32(width) * u).reshape(shape).astype(dtype)
    return out


def cat_rows(parts: list):
    """Fused rows (QKV, gate/up); a quantized weight is {"q": values, "s": per-row scales}."""
    if isinstance(parts[0], dict):
        return {"q": jnp.concatenate([p["q"] for p in parts]), "s": jnp.concatenate([p["s"] for p in parts])}
    return jnp.concatenate(parts)


def leaves(items: list) -> list:
    return [a for x in items for a in ((x["q"], x["s"]) if isinstance(x, dict) else (x,))]


def prepare(cfg: LlamaConfig, w: dict, fuse: bool = True) -> dict:
    """The params pytree: q/k/v and gate/up fused as the torch model does, or (sharded models)
    kept apart, so each chip's rows are whole heads and whole MLP columns."""
    layers = []
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        moe = cfg.moe_layer(i)
        layer = {"ln1": w[p + "input_layernorm.weight"], "wo": w[p + "self_attn.o_proj.weight"],
                 "ln2": w[p + "post_attention_layernorm.weight"]}
        if moe:
            layer.update(moe_jax.stacked(cfg, w, p + "mlp.", cat_rows))
        else:
            layer["w2"] = w[p + "mlp.down_proj.weight"]
        if getattr(cfg, "qk_norm", False):  # Qwen3: each head's queries and keys normalised
            layer.update(qn=w[p + "self_attn.q_norm.weight"], kn=w[p + "self_attn.k_norm.weight"])
        if cfg.family == "gptoss":  # an output bias, a sink a head
            layer.update(bo=w[p + "self_attn.o_proj.bias"], sinks=w[p + "self_attn.sinks"])
        if cfg.family == "mla":
            layer.update(mla_jax.layer_weights(cfg, w, p + "self_attn."))
            if not moe:
                layer["w13"] = cat_rows([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
        elif fuse:
            layer["wqkv"] = cat_rows([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            if not moe:
                layer["w13"] = cat_rows([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
            if cfg.qkv_bias:
                layer["bqkv"] = jnp.concatenate([w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
        else:
            layer.update({f"w{n}": w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"})
            if not moe:
                layer.update(wg=w[p + "mlp.gate_proj.weight"], wu=w[p + "mlp.up_proj.weight"])
            if cfg.qkv_bias:
                layer.update({f"b{n}": w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"})
        layers.append(layer)
    embed = w["model.embed_tokens.weight"]
    head = w.get("lm_head.weight", embed) if cfg.tie_embeddings else w["lm_head.weight"]  # quantized: its own
    return {"embed": embed, "head": head,
            "norm": w["model.norm.weight"], "layers": layers}


def rope(cfg: LlamaConfig, max_seq: int, dtype) -> tuple[jax.Array, jax.Array]:
    cos, sin = rope_tables(cfg, max_seq)
    return (jnp.asarray(cos.astype(np.float32)).astype(dtype), jnp.asarray(sin.astype(np.float32)).astype(dtype))


def new_cache(cfg: LlamaConfig, batch: int, max_seq: int, dtype, kv_int8: bool = False,
              keys_t: bool = False) -> list:
    """Per layer (keys, values), or with kv_int8 (int8 keys, int8 values, their float32 scales).
    keys_t: keys held [batch, kv_heads, head_dim, max_seq] (their scales stay per position)."""
    shape = (batch, cfg.kv_heads, max_seq, cfg.hd)
    kshape = (batch, cfg.kv_heads, cfg.hd, max_seq) if keys_t else shape
    if kv_int8:
        return [(jnp.zeros(kshape, jnp.int8), jnp.zeros(shape, jnp.int8), jnp.ones(shape[:3], jnp.float32),
                 jnp.ones(shape[:3], jnp.float32)) for _ in range(cfg.layers)]
    return [(jnp.zeros(kshape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.layers)]


def quantize_kv(x):
    """int8 values and float32 scales of keys or values [..., positions, head_dim], per position:
    scale = max|x| / 127, rounded half to even (llama_ref.int8_round_trip does the same)."""
    x32 = x.astype(jnp.float32)
    scale = jnp.max(jnp.abs(x32), axis=-1) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)
    return jnp.clip(jnp.round(x32 / scale[..., None]), -127, 127).astype(jnp.int8), scale


def rms_norm(x, w, eps):
    x32 = x.astype(jnp.float32)
    return w * (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def sink_softmax(scores, sinks, t: int):
    """Softmax over the last axis of scores [B, kv_heads, group x T, S] (float32); with sinks
    [heads] (gpt-oss), each head's sink logit joins its rows' softmax and its weight is dropped."""
    if sinks is None:
        return jax.nn.softmax(scores, axis=-1)
    b, nkv, rows, _ = scores.shape
    sink = jnp.broadcast_to(sinks.astype(jnp.float32).reshape(1, nkv, -1, 1, 1), (b, nkv, rows // t, t, 1))
    return jax.nn.softmax(jnp.concatenate([scores, sink.reshape(b, nkv, rows, 1)], axis=-1), axis=-1)[..., :-1]


def prompt_attention(q, k, v, sinks, window: int | None):
    """Causal attention of a prompt [B, T, heads, hd] over itself with gpt-oss's sinks and, on a
    sliding layer, its window (llama_torch.prompt_attention)."""
    b, t, nh, hd = q.shape
    nkv = k.shape[2]
    qg = q.reshape(b, t, nkv, nh // nkv, hd).transpose(0, 2, 3, 1, 4).reshape(b, nkv, -1, hd)
    scores = jnp.einsum("bkqd,bskd->bkqs", qg, k).astype(jnp.float32) * hd**-0.5
    i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
    allowed = (j <= i) & (j > i - window) if window else j <= i
    probs = sink_softmax(jnp.where(jnp.tile(allowed, (nh // nkv, 1)), scores, -jnp.inf), sinks, t)
    o = jnp.einsum("bkqs,bskd->bkqd", probs.astype(q.dtype), v)
    return o.reshape(b, nkv, nh // nkv, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, nh, hd)


def stacked_cache(cfg: LlamaConfig, batch: int, max_seq: int, dtype) -> tuple:
    """The step kernel's cache: every layer's keys [layers, batch, kv_heads, head_dim, max_seq]
    and every layer's values [layers, batch, kv_heads, max_seq, head_dim], two buffers instead of
    two a layer. Every buffer a call takes costs XLA's dispatch time, the more as a step leaves the
    caches cold: with two a layer XLA took 0.40-0.50 ms around a small-125m step, stacked
    0.21-0.30 (2-core EPYC VM, 2026-12-07; 5-6% of an int8 step). forward's prefill writes it in place."""
    return (jnp.zeros((cfg.layers, batch, cfg.kv_heads, cfg.hd, max_seq), dtype),
            jnp.zeros((cfg.layers, batch, cfg.kv_heads, max_seq, cfg.hd), dtype))


def decode_attention(q, k_cache, v_cache, length, multiply_reduce: bool, sinks=None, window: int | None = None):
    """Attention of new queries [B, T, heads, hd] over the cache [B, kv_heads, S, hd], masked
    to the first `length` positions.

    As llama_torch's: the query heads that share a KV head are rows of one product, and the
    cache is read in place, never expanded. multiply_reduce: written as broadcast
    multiply-reduces (the adapter's choice on CPUs), with keys given [B, kv_heads, hd, S]; XLA:CPU
    sums over head_dim as a middle axis, one vector a key position wide, 3x faster than over the
    last axis (12 vs 38-44 us a layer on small-125m, EPYC). Otherwise batched dots.
    """
    b, t, nh, hd = q.shape
    nkv, max_seq = k_cache.shape[1], v_cache.shape[2]
    qg = q.reshape(b, t, nkv, nh // nkv, hd).transpose(0, 2, 3, 1, 4).reshape(b, nkv, -1, hd)
    valid = jnp.arange(max_seq) < length
    if window:  # a sliding layer: the last `window` positions written
        valid = valid & (jnp.arange(max_seq) >= length - window)
    if multiply_reduce:
        scores = (qg[..., None].astype(jnp.float32) * k_cache[:, :, None].astype(jnp.float32)).sum(-2)
    else:
        scores = jnp.einsum("bkqd,bksd->bkqs", qg, k_cache).astype(jnp.float32)
    probs = sink_softmax(jnp.where(valid, scores * hd**-0.5, -jnp.inf), sinks, t)
    if multiply_reduce:
        o = (probs[..., None] * v_cache[:, :, None].astype(jnp.float32)).sum(-2).astype(q.dtype)
    else:
        o = jnp.einsum("bkqs,bksd->bkqd", probs.astype(q.dtype), v_cache)
    return o.reshape(b, nkv, nh // nkv, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, nh, hd)


INT8_ROWS_MAX = 16  # batched int8 decode rows taken one product each (linear says why)


def linear(x, w, b=None, multiply_reduce: bool = False, written=None):
    """x @ W.T (+ b). multiply_reduce (CPUs): batch-1 rows take the one-row forms below, their
    input first passed through `written` (forward says why)."""
    one_row = multiply_reduce and x.shape[0] * x.shape[1] == 1
    few_rows = multiply_reduce and x.shape[1] == 1 and 1 < x.shape[0] <= INT8_ROWS_MAX and isinstance(w, dict)
    if (one_row or few_rows) and written is not None:
        x = written(x)
    if few_rows:
        # Batched int8 decode on CPUs: one one-row product (below) a sequence. XLA:CPU's dot of
        # float rows with a converted int8 matrix ran at 0.3-0.4 G weights/s whatever the form
        # (einsum, matmul, a materialised convert, preferred_element_type); a pass a row reads the
        # int8 matrix B times at 17 G weights/s each (small-125m b4 decode 27 -> ~200 tok/s, EPYC).
        rows = [linear(x[i:i + 1], w, None, multiply_reduce) for i in range(x.shape[0])]
        y = jnp.concatenate(rows, axis=0)
    elif one_row and isinstance(w, dict):
        # x [1, K] @ convert(W).T. Written this way XLA:CPU reads the int8 matrix once, converting
        # as it multiplies (29-33 G weights/s for a 32000 x 768 LM head on the EPYC host);
        # contracting W's dimension 1 directly (einsum "oi") converted the whole matrix first
        # (0.8), and a multiply-reduce ran a chained loop (8.9).
        y = x.reshape(1, -1).astype(jnp.float32) @ w["q"].astype(jnp.float32).T
        y = (y[0] * w["s"].astype(jnp.float32)).astype(x.dtype).reshape(x.shape[:2] + (-1,))
    elif one_row:
        y = (x.reshape(1, -1) @ w.T).reshape(x.shape[:2] + (-1,))
    elif isinstance(w, dict):  # dequantize-and-dot; per-row scale after the sum
        y = jnp.einsum("bti,oi->bto", x, w["q"].astype(x.dtype)) * w["s"]
    else:
        y = jnp.einsum("bti,oi->bto", x, w)
    return y if b is None else y + b


def forward(cfg: LlamaConfig, params, rope_tab, tokens, pos, cache, prefill: bool, last_only: bool = False,
            multiply_reduce_attention: bool = False, replicated=None, cache_sharding=None, scale_sharding=None,
            ep_mesh=None):
    """Logits (float32) [B, T, V], the updated cache, and the experts each token chose in each
    mixture-of-experts layer ([layers, B * T, k] int32; [0, B * T, 1] for a dense model), for
    tokens [B, T] starting at `pos` (a scalar). Prefill starts at 0 and attends causally within the prompt; decode attends
    the whole static cache, masked to the positions written so far. cache: per layer (keys,
    values), or (prefill only) stacked_cache's two buffers, written in place. replicated (sharded
    models): the sharding every chip's copy of the activations takes after embedding and after
    each row-parallel product, which is where the all-reduces fall."""
    b, t = tokens.shape
    keep = (lambda a: a) if replicated is None else (lambda a: jax.lax.with_sharding_constraint(a, replicated))
    # The cache keeps its layout through the update (else XLA may split a replicated cache
    # by query-head groups and gather it back: two extra collectives a layer).
    keep_cache = (lambda a: a) if cache_sharding is None else (lambda a: jax.lax.with_sharding_constraint(a, cache_sharding))
    # XLA:CPU fuses a one-row product's input (a norm, silu x up) into the product's loop and
    # recomputes it for every output row; a conditional's result is a buffer of its own, written
    # once (int8 decode 7.2 -> 4.7 ms a token on small-125m, EPYC; float32 2-15% faster).
    # pos >= 0 always holds, but XLA cannot know it. An optimization barrier is expanded before
    # fusion and did not stop it.
    written = lambda v: jax.lax.cond(pos >= 0, lambda a: a, jnp.zeros_like, v)
    lin = partial(linear, multiply_reduce=multiply_reduce_attention, written=written)  # the adapter's CPU forms
    keep_scale = (lambda a: a) if scale_sharding is None else (lambda a: jax.lax.with_sharding_constraint(a, scale_sharding))
    keys_t = multiply_reduce_attention  # keys held [B, kv_heads, hd, S] (decode_attention says why)
    update = lambda old, new, keep, axis=2: keep(jax.lax.dynamic_update_slice_in_dim(old, keep(new), pos, axis=axis))
    stacked = isinstance(cache, tuple)  # stacked_cache's two buffers (the step kernel's, one device)

    def at_layer(i):  # update for a stacked cache: layer i's entry written in place at pos
        def update_stacked(old, new, keep, axis=2):
            start = [0] * old.ndim
            start[0], start[axis + 1] = i, pos
            return jax.lax.dynamic_update_slice(old, new[None], start)
        return update_stacked

    keys_of = lambda upd: lambda old, new, keep: (upd(old, new.swapaxes(2, 3), keep, axis=3) if keys_t
                                                  else upd(old, new, keep))
    cos_all, sin_all = rope_tab
    cos = jax.lax.dynamic_slice_in_dim(cos_all, pos, t)[None, :, None, :]
    sin = jax.lax.dynamic_slice_in_dim(sin_all, pos, t)[None, :, None, :]
    x = keep(params["embed"][tokens])
    new_cache, routes = [], []
    if stacked and not prefill:
        raise ValueError("a stacked cache is the step kernel's; only a prefill writes it here")
    for i, layer in enumerate(params["layers"]):
        entry = cache if stacked else cache[i]
        upd = at_layer(i) if stacked else update
        h = rms_norm(x, layer["ln1"], cfg.norm_eps)
        if "wqa_kva" in layer:  # multi-head latent attention (kernels/mla_jax.py)
            out, entry = mla_jax.attention(cfg, layer, entry, h, cos, sin, pos, prefill, lin, rms_norm, rotate_half)
            x = keep(x + out)
        else:
            window = cfg.window(i) if cfg.family == "gptoss" else None
            x, entry = gqa_block(cfg, layer, entry, x, h, cos, sin, pos, t, prefill, lin, keep, keep_cache, keep_scale,
                                 upd, keys_of(upd), multiply_reduce_attention, window)
        if stacked:
            cache = entry
        else:
            new_cache.append(entry)
        h = rms_norm(x, layer["ln2"], cfg.norm_eps)
        if "router" in layer:  # the experts here, or split over devices (moe_jax.experts_ep: plain products)
            flat = h.reshape(b * t, -1)
            out, chosen = (moe_jax.experts(cfg, layer, flat, lin) if ep_mesh is None
                           else moe_jax.experts_ep(cfg, layer, flat, ep_mesh, linear))
            routes.append(chosen)
            x = keep(x + out.reshape(x.shape))
            continue
        if "w13" in layer:
            gate, up = jnp.split(lin(h, layer["w13"]), 2, axis=-1)
        else:
            gate, up = lin(h, layer["wg"]), lin(h, layer["wu"])
        x = keep(x + lin(jax.nn.silu(gate) * up, layer["w2"]))
    if last_only:
        x = x[:, -1:]
    x = rms_norm(x, params["norm"], cfg.norm_eps)
    routes = jnp.stack(routes) if routes else jnp.zeros((0, b * t, 1), jnp.int32)
    return lin(x, params["head"]).astype(jnp.float32), cache if stacked else new_cache, routes


def gqa_block(cfg, layer, entry, x, h, cos, sin, pos, t, prefill, lin, keep, keep_cache, keep_scale, update,
              update_keys, multiply_reduce_attention, window=None):
    """Grouped-query attention for normed inputs h: the residual x with its output added, and the
    layer's updated cache entry."""
    b = x.shape[0]
    nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.hd
    keys_t = multiply_reduce_attention
    if "wqkv" in layer:
        qkv = lin(h, layer["wqkv"], layer.get("bqkv"))
        q, k, v = jnp.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
    else:
        q, k, v = (lin(h, layer[f"w{n}"], layer.get(f"b{n}")) for n in "qkv")
    q = q.reshape(b, t, nh, hd)
    k = k.reshape(b, t, nkv, hd)
    v = v.reshape(b, t, nkv, hd)
    if "qn" in layer:
        q, k = rms_norm(q, layer["qn"], cfg.norm_eps), rms_norm(k, layer["kn"], cfg.norm_eps)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if len(entry) == 4:  # an int8 cache: quantized as written, dequantized as read
        (kq, ks), (vq, vs) = quantize_kv(kt), quantize_kv(vt)
        entry = (update_keys(entry[0], kq, keep_cache), update(entry[1], vq, keep_cache),
                 update(entry[2], ks, keep_scale), update(entry[3], vs, keep_scale))
        k_scale = entry[2][:, :, None, :] if keys_t else entry[2][..., None]
        k_cache = (entry[0].astype(jnp.float32) * k_scale).astype(k.dtype)
        v_cache = (entry[1].astype(jnp.float32) * entry[3][..., None]).astype(k.dtype)
    else:
        entry = (update_keys(entry[0], kt, keep_cache), update(entry[1], vt, keep_cache))
        k_cache, v_cache = entry
    if prefill and "sinks" in layer:  # gpt-oss: dot_product_attention has no sinks
        o = prompt_attention(q, k, v, layer["sinks"], window)
    elif prefill:  # the prompt attends to its own exact keys and values
        o = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    else:
        o = decode_attention(q, k_cache, v_cache, pos + t, multiply_reduce=multiply_reduce_attention,
                             sinks=layer.get("sinks"), window=window)
    return keep(x + lin(o.reshape(b, t, nh * hd), layer["wo"], layer.get("bo"))), entry


class Runner:
    """One model on one device, or split over a mesh of devices ("dp" x "tp"): builds weights
    and cache in place, and hands out compiled steps."""

    launch = prefill_launch = "jit"

    def __init__(self, cfg: LlamaConfig, dtype: str, device, batch: int, max_seq: int,
                 seed: int = 0, weights: dict | None = None, keep_weights: bool = False,
                 multiply_reduce_attention: bool = False, mesh=None, kv_int8: bool = False,
                 one_row_options: dict | None = None, step_kernel_threads: int | None = None):
        self.cfg, self.device, self.batch, self.max_seq = cfg, device, batch, max_seq
        self.multiply_reduce_attention = multiply_reduce_attention
        self.one_row_options = one_row_options  # XLA options for a batch-1 decode step (the adapter's)
        self.dtype = jnp.dtype(dtype)
        self.mesh = mesh
        self.ep = mesh.shape.get("ep", 1) if mesh is not None else 1
        if mesh is not None:
            self.rules = sharding_rules(cfg, mesh.shape["tp"], self.ep)
            self.launch = self.prefill_launch = f"jit over {mesh.size} devices (dp={mesh.shape['dp']}, tp={mesh.shape['tp']})"
            if self.ep > 1:
                tp = mesh.shape["tp"]
                self.launch = self.prefill_launch = (
                    f"jit over {mesh.size} devices (ep={self.ep}: experts and batch split, "
                    + (f"tp={tp}: attention heads split, experts over all ep x tp; " if tp > 1 else "")
                    + "dispatch and combine by all-to-all)")
                if batch % self.ep:
                    raise ValueError(f"batch {batch} is not divisible by ep={self.ep}")
            if batch % mesh.shape["dp"]:
                raise ValueError(f"batch {batch} is not divisible by dp={mesh.shape['dp']}")
        if weights is None:
            w = seeded_weights(cfg, seed, self.dtype, device) if mesh is None else self._seeded_sharded(seed)
        else:
            w = {k: self._put(v, device if mesh is None else self._sharding(hf_axes(k))) for k, v in weights.items()}
        with jax.default_device(device):  # fused weights split badly over tp > 1 chips; on one they are faster
            self.params = prepare(cfg, w, fuse=mesh is None or mesh.shape["tp"] == 1)
        if self.ep > 1:  # each device keeps its share of every MoE layer's experts
            from jax.sharding import NamedSharding, PartitionSpec
            by_expert = NamedSharding(mesh, PartitionSpec(moe_jax.expert_axes(mesh)))
            for layer in self.params["layers"]:
                for key in moe_jax.EXPERT_KEYS:
                    if key in layer:
                        layer[key] = jax.device_put(layer[key], by_expert)
        self.weights = w if keep_weights else None  # the params hold fused copies
        del w
        # jax-cpu's batch-1 decode by infercost's step kernel where the model is one it runs (dense
        # or Mixtral-style experts, float32 or int8 weights) and it built (decode_f32_jax_cpu.py); else XLA's step, and
        # `launch` says why.
        self.kernel_decode, self.kernel_note = None, ""
        if step_kernel_threads:
            from . import decode_f32_jax_cpu as kernel
            if kernel.unsuited(cfg, batch, self.dtype, mesh, kv_int8, multiply_reduce_attention, self.params) is None:
                why = kernel.unavailable()
                if why is None:
                    self.kernel_decode = partial(kernel.forward, cfg, threads=step_kernel_threads)
                    self.kernel_launch = f"{self.launch}; {kernel.launch(self.params)}"
                else:
                    self.kernel_note = f"; infercost's float32 step {why}"
        with jax.default_device(device):
            self.rope = rope(cfg, max_seq, self.dtype)
            if self.kernel_decode is not None:
                self.cache = stacked_cache(cfg, batch, max_seq, self.dtype)
            else:
                self.cache = (mla_jax.new_cache(cfg, batch, max_seq, self.dtype) if cfg.family == "mla" else
                              new_cache(cfg, batch, max_seq, self.dtype, kv_int8, keys_t=multiply_reduce_attention))
        if mesh is not None:
            self.rope = jax.device_put(self.rope, self._sharding(()))
            self.cache = jax.device_put(self.cache, self._cache_shardings())
        self._compiled = {}
        self.launch_base = self.launch  # what `launch` says before a compile adds its options

    def _sharding(self, axes: tuple):
        return partition(self.mesh, self.rules, axes)

    def _cache_shardings(self) -> list:
        # Keys held [batch, kv_heads, hd, S] take the same sharding: only batch and kv_heads are split.
        cache, scale = self._sharding(AXES["cache"]), self._sharding(AXES["cache_scale"])
        return [tuple(cache if a.ndim == 4 else scale for a in entry) for entry in self.cache]

    def _seeded_sharded(self, seed: int) -> dict:
        """The seeded weights made in place on the mesh: each chip computes its own shard."""
        out = {}
        for index, (name, shape) in enumerate(self.cfg.param_shapes().items()):
            offset, width = weight_init(name)

            def make(salt, shape=shape, offset=offset, width=width):
                u = hashed_uniform(math.prod(shape), salt)
                return (jnp.float32(offset) + jnp.float32(width) * u).reshape(shape).astype(self.dtype)
            out[name] = jax.jit(make, out_shardings=self._sharding(hf_axes(name)))(jnp.uint32(tensor_salt(seed, index)))
        return out

    def _put(self, v, where):
        if isinstance(v, QWeight):
            # On a mesh the scales follow their output rows: split with a column-parallel
            # weight, replicated with a row-parallel one.
            if self.mesh is not None:
                from jax.sharding import NamedSharding, PartitionSpec
                rows = NamedSharding(self.mesh, PartitionSpec(*where.spec[:1]))
            else:
                rows = where
            return {"q": jax.device_put(np.asarray(v.values), where),
                    "s": jax.device_put(np.asarray(v.scale, np.float32).astype(self.dtype), rows)}
        return jax.device_put(np.asarray(v).astype(self.dtype), where)

    def _fn(self, key, tokens, pos, prefill, last_only):
        if key not in self._compiled:
            f = partial(forward, self.cfg, prefill=prefill, last_only=last_only,
                        multiply_reduce_attention=self.multiply_reduce_attention,
                        replicated=None if self.mesh is None else self._sharding(AXES["activation"]),
                        cache_sharding=None if self.mesh is None else self._sharding(AXES["cache"]),
                        scale_sharding=None if self.mesh is None else self._sharding(AXES["cache_scale"]),
                        ep_mesh=self.mesh if self.ep > 1 else None)
            # routes [layers, B x T, k] stay where their tokens are (rows are batch-major)
            out = None if self.mesh is None else (self._sharding(AXES["logits"]), self._cache_shardings(),
                                                  self._sharding((None, "batch", None)))
            kernel = self.kernel_decode is not None and not prefill
            lowered = jax.jit(self.kernel_decode if kernel else f, donate_argnums=4,
                              out_shardings=out).lower(self.params, self.rope, tokens, pos, self.cache)
            if kernel:
                self._compiled[key] = lowered.compile()
                self.launch = self.kernel_launch
            else:
                self._compiled[key] = self._compile(lowered, self.one_row_options if not prefill and self.batch == 1 else None)
        return self._compiled[key]

    def _compile(self, lowered, options: dict | None):
        """Compiled with `options` where this XLA takes them; where it does not (an older jaxlib
        without the option), with its defaults, and `launch` says so."""
        if not options:
            return lowered.compile()
        base = self.launch_base + self.kernel_note
        try:
            compiled = lowered.compile(compiler_options=options)
            self.launch = f"{base}; XLA options {', '.join(f'{k}={v!r}' for k, v in options.items())}"
        except Exception as e:
            compiled = lowered.compile()
            self.launch = f"{base}; XLA's defaults ({', '.join(options)} not taken: {type(e).__name__})"
        return compiled

    def _step(self, key, tokens, pos, prefill, last_only):
        # One device: the step takes its token and position from the host, as a server's step
        # does (measured on the CPU: device_put first, and the step then waited ~0.3 ms on it).
        # On a mesh they are placed by their shardings beforehand.
        host_inputs = self.mesh is None
        if host_inputs:
            tokens, pos = np.asarray(tokens, np.int32), np.int32(pos)
        else:
            tokens = jax.device_put(np.asarray(tokens, np.int32), self._sharding(AXES["tokens"]))
            pos = jax.device_put(np.int32(pos), self._sharding(()))
        if host_inputs:  # compiled for this runner's device, which host inputs alone would not say
            on = jax.sharding.SingleDeviceSharding(self.device)
            fn = self._fn(key + tokens.shape, jax.ShapeDtypeStruct(tokens.shape, np.int32, sharding=on),
                          jax.ShapeDtypeStruct((), np.int32, sharding=on), prefill, last_only)
        else:
            fn = self._fn(key + tokens.shape, tokens, pos, prefill, last_only)

        def step():
            with jax.transfer_guard_host_to_device("allow") if host_inputs else contextlib.nullcontext():
                logits, self.cache, self.last_routes = fn(self.params, self.rope, tokens, pos, self.cache)
            return logits
        return step

    def prefill_step(self, tokens, last_only: bool = True):
        return self._step(("prefill", last_only), tokens, 0, True, last_only)

    def decode_step(self, tokens, pos: int):
        return self._step(("decode",), tokens, pos, False, False)

    def routes(self) -> np.ndarray:
        """The experts each token of the last step chose, per mixture-of-experts layer [layers, B * T, k]."""
        return on_host(self.last_routes)

    def streamed(self) -> list:
        """The weights a decode step reads in full (head, every layer's matrices and norms): the
        buffers a read sweep must cover to measure this model's bandwidth ceiling."""
        p = self.params
        return leaves([p["head"], p["norm"], *(a for layer in p["layers"] for a in layer.values())])

    def kv_numpy(self) -> list:
        """Per layer, (keys, values) as the cache holds them, as float64 [batch, kv_heads, seq, hd]."""
        def f64(entry):
            k, v = (on_host(c).astype(np.float64) for c in entry[:2])
            if self.multiply_reduce_attention:  # keys held [batch, kv_heads, hd, seq]
                k = k.swapaxes(2, 3)
            if len(entry) == 4:  # int8 values and their per-position scales
                k, v = (c * on_host(s).astype(np.float64)[..., None] for c, s in ((k, entry[2]), (v, entry[3])))
            return k, v
        return [f64(entry) for entry in (self.cache if self.kernel_decode is None else zip(*self.cache))]

    def weights_numpy(self) -> dict:
        """float64 weights as this model computes with them (quantized ones dequantized)."""
        def f64(v):
            if isinstance(v, dict):
                return on_host(v["q"]).astype(np.float64) * on_host(v["s"]).astype(np.float64)[:, None]
            return on_host(v).astype(np.float64)
        return {k: f64(v) for k, v in self.weights.items()}
