"""A float64 numpy reference of the decoder: the same math, written plainly, no framework."""

from __future__ import annotations

import numpy as np

from .llama import LlamaConfig, rope_tables


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(cfg: LlamaConfig, w: dict, tokens: np.ndarray) -> np.ndarray:
    """Logits [B, T, V] for a whole sequence with causal attention (no cache: the reference
    recomputes everything, so the frameworks' caches are checked rather than trusted)."""
    b, t = tokens.shape
    hd, nh, nkv = cfg.hd, cfg.heads, cfg.kv_heads
    cos, sin = rope_tables(cfg, t)
    causal = np.tril(np.ones((t, t), dtype=bool))
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.norm_eps)
        q, k, v = (h @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        if cfg.qkv_bias:
            q, k, v = (y + w[p + f"self_attn.{n}_proj.bias"] for y, n in zip((q, k, v), "qkv"))
        q = q.reshape(b, t, nh, hd).transpose(0, 2, 1, 3)
        k = k.reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        v = v.reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, nh // nkv, axis=1)
        v = np.repeat(v, nh // nkv, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        scores = np.where(causal, scores, -np.inf)
        attn = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], cfg.norm_eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]  # quantized: its own head
    return x @ head.T


def greedy(cfg: LlamaConfig, w: dict, prompt: np.ndarray, steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy tokens and the logits that chose each: prefill logits first, then one per step."""
    tokens = prompt.copy()
    logits = forward(cfg, w, tokens)
    chosen, step_logits = [], [logits]
    for _ in range(steps):
        nxt = logits[:, -1].argmax(-1)
        chosen.append(nxt)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        logits = forward(cfg, w, tokens)
        step_logits.append(logits[:, -1:])
    return np.stack(chosen, axis=1), step_logits
