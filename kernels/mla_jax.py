"""Multi-head latent attention in JAX, as kernels/mla_torch.py computes it (kernels/mla.py says what
MLA is): the prompt's heads expanded from their latents, decode absorbed into latent space. A
layer's cache entry is (latents [batch, 1, max_seq, kv_lora_rank], rotary keys [batch, 1, max_seq,
qk_rope_head_dim])."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def layer_weights(cfg, w: dict, p: str) -> dict:
    """One layer's attention weights (as mla_torch.layer_weights: the query's first projection and
    the latent's as one matrix; kv_b_proj as [heads, nope + v, latent])."""
    first = w[p + "q_a_proj.weight"] if cfg.q_lora_rank else w[p + "q_proj.weight"]
    out = {"wqa_kva": jnp.concatenate([first, w[p + "kv_a_proj_with_mqa.weight"]]),
           "kvan": w[p + "kv_a_layernorm.weight"],
           "wkvb": w[p + "kv_b_proj.weight"].reshape(cfg.heads, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank),
           "wo": w[p + "o_proj.weight"]}
    if cfg.q_lora_rank:
        out.update(qan=w[p + "q_a_layernorm.weight"], wqb=w[p + "q_b_proj.weight"])
    return out


def new_cache(cfg, batch: int, max_seq: int, dtype) -> list:
    return [(jnp.zeros((batch, 1, max_seq, cfg.kv_lora_rank), dtype), jnp.zeros((batch, 1, max_seq, cfg.hd), dtype))
            for _ in range(cfg.layers)]


def deinterleave(x):
    """DeepSeek's rotary pairs (x0, x1), (x2, x3)... as evens then odds: the split-half layout."""
    return jnp.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def attention(cfg, layer: dict, entry: tuple, h, cos, sin, pos, prefill: bool, linear, rms_norm, rotate_half):
    """The attention's output (after o_proj) for normed inputs h [B, T, hidden], and the layer's
    updated cache entry. cos and sin are [1, T, 1, rope]; linear, rms_norm and rotate_half are the
    decoder's (llama_jax.py)."""
    b, t, _ = h.shape
    nh, nope, rope, c, vd = cfg.heads, cfg.qk_nope_head_dim, cfg.hd, cfg.kv_lora_rank, cfg.v_head_dim
    first = linear(h, layer["wqa_kva"])
    q, latent, k_rot = jnp.split(first, [first.shape[-1] - c - rope, first.shape[-1] - rope], axis=-1)
    if "wqb" in layer:
        q = linear(rms_norm(q, layer["qan"], cfg.norm_eps), layer["wqb"])
    q = q.reshape(b, t, nh, nope + rope)
    q_nope, q_rot = q[..., :nope], q[..., nope:]
    latent = rms_norm(latent, layer["kvan"], cfg.norm_eps)            # [B, T, c]
    k_rot = k_rot.reshape(b, t, 1, rope)
    if cfg.rope_interleave:
        q_rot, k_rot = deinterleave(q_rot), deinterleave(k_rot)
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = (k_rot * cos + rotate_half(k_rot) * sin)[:, :, 0]        # [B, T, rope]
    update = lambda old, new: jax.lax.dynamic_update_slice_in_dim(old, new[:, None].astype(old.dtype), pos, axis=2)
    entry = (update(entry[0], latent), update(entry[1], k_rot))
    w_uk, w_uv = layer["wkvb"][:, :nope], layer["wkvb"][:, nope:]     # [heads, nope, c], [heads, v, c]
    if prefill:  # every head's keys and values expanded from the prompt's latents
        k_nope = jnp.einsum("btc,hnc->bthn", latent, w_uk)
        v = jnp.einsum("btc,hvc->bthv", latent, w_uv)
        scores = (jnp.einsum("bthn,bshn->bhts", q_nope, k_nope) + jnp.einsum("bthr,bsr->bhts", q_rot, k_rot))
        valid = jnp.tril(jnp.ones((t, t), bool))
        probs = jax.nn.softmax(jnp.where(valid, scores.astype(jnp.float32) * cfg.attention_scale, -jnp.inf), axis=-1)
        o = jnp.einsum("bhts,bshv->bthv", probs.astype(h.dtype), v)
    else:  # absorbed: the query moved into latent space, the latents read once for every head
        latents, rot_keys = entry[0][:, 0], entry[1][:, 0]            # [B, S, c], [B, S, rope]
        q_lat = jnp.einsum("bthn,hnc->bthc", q_nope, w_uk)
        scores = jnp.einsum("bthc,bsc->bhts", q_lat, latents) + jnp.einsum("bthr,bsr->bhts", q_rot, rot_keys)
        valid = jnp.arange(latents.shape[1]) < pos + t
        probs = jax.nn.softmax(jnp.where(valid, scores.astype(jnp.float32) * cfg.attention_scale, -jnp.inf), axis=-1)
        o = jnp.einsum("bthc,hvc->bthv", jnp.einsum("bhts,bsc->bthc", probs.astype(h.dtype), latents), w_uv)
    return linear(o.reshape(b, t, nh * vd), layer["wo"]), entry
