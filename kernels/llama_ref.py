"""A float64 numpy reference of the decoder: the same math, written plainly, no framework.

Its mixture-of-experts layers (kernels/moe.py): softmax over every expert's router logit, the k
largest probabilities chosen (ties to the lower expert index), renormalised to sum to one where
the model says so; the output is the chosen experts' MLPs weighted by those probabilities, plus a
shared expert scaled by its sigmoid gate where the model has one (Qwen2-MoE)."""

from __future__ import annotations

from dataclasses import dataclass


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


def int8_round_trip(x: np.ndarray) -> np.ndarray:
    """x as an int8 KV cache holds it: per batch, head and position, scale = max|x| over head_dim
    / 127, values rounded half to even and clipped to +-127 (kernels' quantize_kv does the same)."""
    scale = np.abs(x).max(axis=-1, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(x / scale), -127, 127) * scale


def q8_round_trip(x: np.ndarray) -> np.ndarray:
    """x [..., k] as int8 activations hold it, quantized as llama.cpp's Q8_0 quantizes them: blocks
    of 32 along the last axis (the last may be shorter), each with scale max|x| / 127, values
    x * 127 / max|x| rounded half to even."""
    k = x.shape[-1]
    out = np.empty_like(x)
    for b in range(0, k, 32):
        block = x[..., b:b + 32]
        amax = np.abs(block).max(axis=-1, keepdims=True)
        inv = np.where(amax > 0, 127.0 / np.where(amax > 0, amax, 1.0), 0.0)
        out[..., b:b + 32] = np.rint(block * inv) * (amax / 127.0)
    return out


def forward(cfg: LlamaConfig, w: dict, tokens: np.ndarray, kv_int8_from: int | None = None,
            kv_given: list | None = None, routes: list | None = None, follow: list | None = None,
            act_int8_from: int | None = None) -> np.ndarray:
    """Logits [B, T, V] for a whole sequence with causal attention (no cache: the reference
    recomputes everything, so the frameworks' caches are checked rather than trusted).

    kv_int8_from: positions from this one on attend to keys and values as an int8 cache holds
    them, as decode steps read the cache; earlier ones (the prompt's prefill) to the exact ones.
    kv_given: per layer, the (keys, values) a device's int8 cache held, dequantized, to attend to
    instead of this reference's own rounding (as quantized weights, the quantized cache is an
    input both share: float32 and float64 keys can round to different int8 values).
    routes: a list that gets, for every mixture-of-experts layer, its Routing.
    follow: for every mixture-of-experts layer, the experts [B * T, k] to route to instead of
    this reference's own choice (a check follows a device's choice where a near-tie decided it).
    act_int8_from: from this position on, every input of the weight matrices (q/k/v, o, gate/up,
    down, the routed experts' (not the float router's), head) is taken as int8 activations hold it
    (q8_round_trip), as the CPU step kernel's decode steps take it with int8 weights; earlier
    positions (the prefill) as they are."""
    b, t = tokens.shape

    def act_rows(y, rows):  # a weight matrix's input [rows, k], for those rows of the flattened [B * T] tokens
        if act_int8_from is None:
            return y
        return np.where((rows % t >= act_int8_from)[:, None], q8_round_trip(y), y)

    def act(y):  # the same for [B, T, k]
        return act_rows(y.reshape(b * t, -1), np.arange(b * t)).reshape(y.shape)
    cos, sin = rope_tables(cfg, t)
    causal = np.tril(np.ones((t, t), dtype=bool))
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.norm_eps)
        if cfg.family == "mla":
            x = x + mla_attention(cfg, w, p + "self_attn.", h, cos, sin, causal)
        else:
            x = x + gqa_attention(cfg, w, p + "self_attn.", h, cos, sin, causal, i, kv_int8_from, kv_given, act)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.norm_eps)
        if cfg.moe_layer(i):
            given = follow[sum(cfg.moe_layer(j) for j in range(i))] if follow is not None else None
            out, routing = moe_block(cfg, w, p + "mlp.", h, given, act_rows)
            x = x + out
            if routes is not None:
                routes.append(routing)
        else:
            x = x + mlp(w, p + "mlp.", h, act)
    x = rms_norm(x, w["model.norm.weight"], cfg.norm_eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]  # quantized: its own head
    return act(x) @ head.T


def gqa_attention(cfg, w, p, h, cos, sin, causal, i, kv_int8_from, kv_given, act=lambda y: y) -> np.ndarray:
    """Grouped-query attention's output (after o_proj) for normed inputs h [B, T, hidden]."""
    b, t, _ = h.shape
    hd, nh, nkv = cfg.hd, cfg.heads, cfg.kv_heads
    h = act(h)
    q, k, v = (h @ w[p + f"{n}_proj.weight"].T for n in "qkv")
    if cfg.qkv_bias:
        q, k, v = (y + w[p + f"{n}_proj.bias"] for y, n in zip((q, k, v), "qkv"))
    q, k = q.reshape(b, t, nh, hd), k.reshape(b, t, nkv, hd)
    if getattr(cfg, "qk_norm", False):  # Qwen3: each head's q and k normalised before the rotation
        q = rms_norm(q, w[p + "q_norm.weight"], cfg.norm_eps)
        k = rms_norm(k, w[p + "k_norm.weight"], cfg.norm_eps)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    v = v.reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    window = cfg.window(i) if cfg.family == "gptoss" else None
    if window:  # a sliding layer: a query sees its own and the window - 1 keys before it
        causal = causal & (np.arange(t)[None, :] > np.arange(t)[:, None] - window)
    attn = attend(q, k, v, causal, nh // nkv, w.get(p + "sinks"))
    if kv_int8_from is not None:
        kc, vc = (kv_given[i][0][:, :, :t], kv_given[i][1][:, :, :t]) if kv_given else (int8_round_trip(k), int8_round_trip(v))
        cached = attend(q, kc, vc, causal, nh // nkv)
        attn = np.where((np.arange(t) >= kv_int8_from)[None, :, None], cached, attn)
    return act(attn) @ w[p + "o_proj.weight"].T + w.get(p + "o_proj.bias", 0.0)


def mla_attention(cfg, w, p, h, cos, sin, causal) -> np.ndarray:
    """Multi-head latent attention's output (after o_proj) for normed inputs h [B, T, hidden], in
    the expanded form HF computes (each head's keys and values from the normed latent)."""
    b, t, _ = h.shape
    nh, nope, rope, c = cfg.heads, cfg.qk_nope_head_dim, cfg.hd, cfg.kv_lora_rank
    if cfg.q_lora_rank:
        q = rms_norm(h @ w[p + "q_a_proj.weight"].T, w[p + "q_a_layernorm.weight"], cfg.norm_eps) @ w[p + "q_b_proj.weight"].T
    else:
        q = h @ w[p + "q_proj.weight"].T
    q = q.reshape(b, t, nh, nope + rope).transpose(0, 2, 1, 3)
    q_nope, q_rot = q[..., :nope], q[..., nope:]
    compressed = h @ w[p + "kv_a_proj_with_mqa.weight"].T
    latent = rms_norm(compressed[..., :c], w[p + "kv_a_layernorm.weight"], cfg.norm_eps)
    k_rot = compressed[..., c:][:, None]  # one rotary key all heads share [B, 1, T, rope]
    if cfg.rope_interleave:  # pairs (x0, x1), (x2, x3)...: evens then odds is the split-half layout
        q_rot, k_rot = (np.concatenate([a[..., 0::2], a[..., 1::2]], axis=-1) for a in (q_rot, k_rot))
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = k_rot * cos + rotate_half(k_rot) * sin
    kv = (latent @ w[p + "kv_b_proj.weight"].T).reshape(b, t, nh, nope + cfg.v_head_dim).transpose(0, 2, 1, 3)
    k = np.concatenate([kv[..., :nope], np.broadcast_to(k_rot, (b, nh, t, rope))], axis=-1)
    scores = np.where(causal, np.concatenate([q_nope, q_rot], axis=-1) @ k.transpose(0, 1, 3, 2) * cfg.attention_scale,
                      -np.inf)
    o = (softmax(scores) @ kv[..., nope:]).transpose(0, 2, 1, 3).reshape(b, t, nh * cfg.v_head_dim)
    return o @ w[p + "o_proj.weight"].T


def mlp(w: dict, p: str, h: np.ndarray, act=lambda y: y) -> np.ndarray:
    """The SwiGLU MLP whose weights are named p + gate_proj/up_proj/down_proj (a dense layer's, an
    expert's, a shared expert's); act: what its matrices' inputs go through (forward's act)."""
    h = act(h)
    return act(silu(h @ w[p + "gate_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)) @ w[p + "down_proj.weight"].T


def attend(q, k, v, causal, group: int, sinks: np.ndarray | None = None) -> np.ndarray:
    """Softmax attention; with `sinks` (gpt-oss), each head's sink logit joins every row's softmax
    and takes its share of the weight without adding a value."""
    b, nh, t, hd = q.shape
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd), -np.inf)
    if sinks is None:
        probs = softmax(scores)
    else:
        probs = softmax(np.concatenate([scores, np.broadcast_to(sinks[None, :, None, None], (b, nh, t, 1))], -1))[..., :-1]
    return (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * hd)


def greedy(cfg: LlamaConfig, w: dict, prompt: np.ndarray, steps: int, kv_int8: bool = False,
           kv_given: list | None = None, act_int8: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy tokens and the logits that chose each: prefill logits first, then one per step.
    act_int8: decode steps take int8 activations (forward's act_int8_from), the prefill not."""
    tokens = prompt.copy()
    logits = forward(cfg, w, tokens)
    chosen, step_logits = [], [logits]
    for _ in range(steps):
        nxt = logits[:, -1].argmax(-1)
        chosen.append(nxt)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        logits = forward(cfg, w, tokens, prompt.shape[1] if kv_int8 else None, kv_given,
                         act_int8_from=prompt.shape[1] if act_int8 else None)
        step_logits.append(logits[:, -1:])
    return np.stack(chosen, axis=1), step_logits


# -- mixture-of-experts layers --------------------------------------------------------------
@dataclass
class Routing:
    """One layer's choices: experts [tokens, k] (best first), their weights [tokens, k], and per
    token the gap between the k-th and the (k+1)-th probability (how near a tie decided it)."""
    experts: np.ndarray
    weights: np.ndarray
    margin: np.ndarray


def route(cfg, logits: np.ndarray, given: np.ndarray | None = None, bias: np.ndarray | None = None) -> Routing:
    """The top-k choice for router logits [tokens, experts] (or the `given` experts, weighted as the
    model weights its own choice). Softmax routers choose by probability; DeepSeek's sigmoid router
    by score + bias within its best groups, weighting by the scores alone."""
    if cfg.scoring == "softmax":
        probs = choice = softmax(logits)
    elif cfg.scoring == "topk_softmax":  # gpt-oss: the k best logits, then a softmax over those k
        probs = choice = logits
    else:
        probs = 1.0 / (1.0 + np.exp(-logits))
        choice = probs + (0.0 if bias is None else bias)
        if cfg.groups > 1:  # a group's score: its two best experts'; all but the topk_groups best masked
            grouped = choice.reshape(len(choice), cfg.groups, -1)
            group_score = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
            kept = np.argsort(-group_score, axis=-1, kind="stable")[:, :cfg.topk_groups]
            mask = np.zeros(group_score.shape, bool)
            np.put_along_axis(mask, kept, True, axis=-1)
            choice = np.where(np.repeat(mask, cfg.experts // cfg.groups, axis=-1), choice, -np.inf)
    order = np.argsort(-choice, axis=-1, kind="stable")  # ties: the lower index first
    chosen = order[:, :cfg.top_k] if given is None else np.asarray(given)
    top = np.take_along_axis(probs, chosen, axis=-1)
    if cfg.top_k < cfg.experts:
        kth, next_ = (np.take_along_axis(choice, order[:, i:i + 1], axis=-1)[:, 0] for i in (cfg.top_k - 1, cfg.top_k))
        margin = kth - next_
    else:
        margin = np.full(len(probs), np.inf)
    if cfg.scoring == "topk_softmax":
        weights = softmax(top)
    else:
        weights = top / (top.sum(-1, keepdims=True) + (1e-20 if cfg.scoring == "sigmoid" else 0.0)) if cfg.norm_topk else top
    return Routing(chosen, weights * cfg.routed_scale, margin)


def gptoss_expert(cfg, w: dict, p: str, e: int, x: np.ndarray) -> np.ndarray:
    """One of gpt-oss's experts (fused tensors, gate and up interleaved by column; clamped SwiGLU)."""
    gate_up = x @ w[p + "gate_up_proj"][e] + w[p + "gate_up_proj_bias"][e]
    gate = np.minimum(gate_up[..., 0::2], cfg.swiglu_limit)
    up = np.clip(gate_up[..., 1::2], -cfg.swiglu_limit, cfg.swiglu_limit)
    act = (up + 1.0) * gate / (1.0 + np.exp(-cfg.swiglu_alpha * gate))
    return act @ w[p + "down_proj"][e] + w[p + "down_proj_bias"][e]


def moe_block(cfg, w: dict, p: str, h: np.ndarray, given: np.ndarray | None = None,
              act_rows=lambda y, rows: y) -> tuple[np.ndarray, Routing]:
    """The layer's output for h [..., hidden] and its routing (tokens flattened in order); act_rows:
    what the routed experts' inputs for those rows go through (forward's act_rows)."""
    shape = h.shape
    x = h.reshape(-1, shape[-1])
    if cfg.family == "gptoss":
        routing = route(cfg, x @ w[p + "router.weight"].T + w[p + "router.bias"], given)
        expert = lambda e, rows: gptoss_expert(cfg, w, p + "experts.", e, x[rows])
    else:
        routing = route(cfg, x @ w[p + "gate.weight"].T, given, w.get(p + "gate.e_score_correction_bias"))
        expert = lambda e, rows: mlp(w, p + f"experts.{e}.", x[rows], lambda y: act_rows(y, rows))
    out = np.zeros_like(x)
    for e in np.unique(routing.experts):
        rows, slot = np.nonzero(routing.experts == e)
        out[rows] += routing.weights[rows, slot][:, None] * expert(e, rows)
    if cfg.shared_intermediate:
        gate = 1.0 / (1.0 + np.exp(-(x @ w[p + "shared_expert_gate.weight"].T))) if cfg.shared_gate else 1.0
        out += gate * mlp(w, p + "shared_expert.", x)
    return out.reshape(shape), routing
