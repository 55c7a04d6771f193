"""Multi-head latent attention in PyTorch (kernels/mla.py says what MLA is): the layer's weights as
the ops store them, and its attention, expanded over the prompt and absorbed for decode.

The cache is a KVCache whose "keys" are the normed latents [batch, 1, max_seq, kv_lora_rank] and
whose "values" are the rotary keys [batch, 1, max_seq, qk_rope_head_dim]: one entry a position that
every head reads, which is what makes an MLA model's decode cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F



def layer_weights(cfg, w: dict, p: str, ops, batch: int) -> dict:
    """The projections of one layer's attention. The query's first projection (its low-rank one,
    or the whole query where there is none) and the latent's are one matrix: one product of the
    normed input. kv_b_proj is kept [heads, nope + v, latent] so decode can use its parts as views."""
    first = w[p + "q_a_proj.weight"] if cfg.q_lora_rank else w[p + "q_proj.weight"]
    out = {"wqa_kva": ops.weight(torch.cat([first, w[p + "kv_a_proj_with_mqa.weight"]]), batch),
           "kvan": w[p + "kv_a_layernorm.weight"],
           "wkvb": w[p + "kv_b_proj.weight"].view(cfg.heads, cfg.qk_nope_head_dim + cfg.v_head_dim, cfg.kv_lora_rank),
           "wo": ops.weight(w[p + "o_proj.weight"], batch)}
    if cfg.q_lora_rank:
        out.update(qan=w[p + "q_a_layernorm.weight"], wqb=ops.weight(w[p + "q_b_proj.weight"], batch))
    return out


def deinterleave(x: torch.Tensor) -> torch.Tensor:
    """DeepSeek's rotary pairs (x0, x1), (x2, x3)... as evens then odds: the split-half layout."""
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def attention(cfg, ops, layer: dict, cache, x: torch.Tensor, cos, sin, input_pos, prefill: bool, mask,
              rms_norm, rotate_half) -> torch.Tensor:
    """The attention's output (after o_proj) for the residual stream x [B, T, hidden]; rms_norm and
    rotate_half are the decoder's (llama_torch.py)."""
    b, t, _ = x.shape
    nh, nope, rope, c, vd = cfg.heads, cfg.qk_nope_head_dim, cfg.hd, cfg.kv_lora_rank, cfg.v_head_dim
    first = ops.norm_linear(x, layer["ln1"], cfg.norm_eps, layer["wqa_kva"])
    q, latent, k_rot = first.split([first.shape[-1] - c - rope, c, rope], dim=-1)
    if "wqb" in layer:
        q = ops.linear(rms_norm(q, layer["qan"], cfg.norm_eps), layer["wqb"])
    q = q.view(b, t, nh, nope + rope).transpose(1, 2)
    q_nope, q_rot = q.split([nope, rope], dim=-1)
    latent = rms_norm(latent, layer["kvan"], cfg.norm_eps).view(b, 1, t, c)
    k_rot = k_rot.view(b, 1, t, rope)
    if cfg.rope_interleave:
        q_rot, k_rot = deinterleave(q_rot), deinterleave(k_rot)
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = k_rot * cos + rotate_half(k_rot) * sin
    cache.write(input_pos, latent, k_rot)
    w_uk, w_uv = layer["wkvb"].split([nope, vd], dim=1)  # [heads, nope, latent], [heads, v, latent]
    if prefill:  # every head's keys and values expanded from the prompt's latents
        k_nope = torch.einsum("bxtc,hnc->bhtn", latent, w_uk)
        v = torch.einsum("bxtc,hvc->bhtv", latent, w_uv)
        k = torch.cat([k_nope, k_rot.expand(b, nh, t, rope)], dim=-1)
        o = F.scaled_dot_product_attention(torch.cat([q_nope, q_rot], dim=-1), k, v, is_causal=True,
                                           scale=cfg.attention_scale)
    else:  # absorbed: the query moved into latent space, the latents read once for every head
        latents, rot_keys, _, _ = cache.read()
        q_lat = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk)
        scores = (q_lat @ latents.transpose(-1, -2) + q_rot @ rot_keys.transpose(-1, -2)).float() * cfg.attention_scale
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).to(q.dtype)
        o = torch.einsum("bhtc,hvc->bhtv", probs @ latents, w_uv)
    return ops.linear(o.transpose(1, 2).reshape(b, t, nh * vd), layer["wo"])
