"""A mixture-of-experts layer in JAX: the router, and experts that read only what the tokens routed
to. Same math and op order as llama_torch's (softmax over every expert in float32, the top k, the
k renormalised where the model says so; each expert's tokens go through it together, experts in
ascending order, then Qwen2-MoE's gated shared expert).

XLA needs static shapes, and which expert gets how many tokens is known only at run time. So the
routed (token, expert) pairs are sorted by expert and cut into tiles of a fixed number of rows,
each tile one expert's; a loop with a run-time trip count takes the tiles, and each reads its
expert's weights by index (a slice of the stacked weights, not a copy). An expert no token chose
has no tile and is never read; padding rows of a tile are computed and weighted 0. This is the
tiled grouped product of MegaBlocks and JAX's megablox, written with plain lax ops so that it runs
on every backend (XLA:CPU's `lax.ragged_dot` multiplies every expert under a mask: it would price
a mixture of experts as a dense model).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def stacked(cfg, w: dict, p: str, cat_rows) -> dict:
    """A MoE layer's params: router, experts stacked [experts, rows, in] (gate and up as one
    [2 x expert width, hidden] matrix each), and the shared expert where the model has one.
    cat_rows: the decoder's row concatenation (llama_jax.py; quantized weights too)."""
    if cfg.family == "gptoss":  # fused as the Hub stores them: [E, hidden, 2 x width], gate and up interleaved
        gu, gub = w[p + "experts.gate_up_proj"], w[p + "experts.gate_up_proj_bias"]
        return {"router": w[p + "router.weight"], "router_b": w[p + "router.bias"],
                "we13": jnp.concatenate([gu[..., 0::2], gu[..., 1::2]], axis=-1).transpose(0, 2, 1),
                "be13": jnp.concatenate([gub[..., 0::2], gub[..., 1::2]], axis=-1),
                "we2": w[p + "experts.down_proj"].transpose(0, 2, 1), "be2": w[p + "experts.down_proj_bias"]}
    out = {"router": w[p + "gate.weight"],
           "we13": stack([cat_rows([w[p + f"experts.{e}.gate_proj.weight"], w[p + f"experts.{e}.up_proj.weight"]])
                          for e in range(cfg.experts)]),
           "we2": stack([w[p + f"experts.{e}.down_proj.weight"] for e in range(cfg.experts)])}
    if cfg.shared_intermediate:
        out["ws13"] = cat_rows([w[p + "shared_expert.gate_proj.weight"], w[p + "shared_expert.up_proj.weight"]])
        out["ws2"] = w[p + "shared_expert.down_proj.weight"]
        if cfg.shared_gate:
            out["wsg"] = w[p + "shared_expert_gate.weight"]
    if cfg.score_bias:
        out["router_bias"] = w[p + "gate.e_score_correction_bias"]
    return out


def stack(parts: list):
    """A layer's experts [experts, out, in]; quantized ones ({"q", "s"}) with their rows' scales."""
    if isinstance(parts[0], dict):
        return {"q": jnp.stack([p["q"] for p in parts]), "s": jnp.stack([p["s"] for p in parts])}
    return jnp.stack(parts)


def expert(stacked, e):
    """Expert e's [out, in] matrix of stacked experts (a slice by index, not a copy)."""
    if isinstance(stacked, dict):
        return {key: jax.lax.dynamic_index_in_dim(v, e, keepdims=False) for key, v in stacked.items()}
    return jax.lax.dynamic_index_in_dim(stacked, e, keepdims=False)


def route(cfg, x, layer: dict):
    """The k experts each row of x [N, hidden] goes to, best first (ties: the lower index, as
    lax.top_k breaks them), and their weights in x's dtype: softmax over every expert, or
    DeepSeek's sigmoid scores chosen with their bias within the best groups (llama_torch.route)."""
    logits = x.astype(jnp.float32) @ layer["router"].astype(jnp.float32).T
    if cfg.scoring == "topk_softmax":  # gpt-oss: the k best logits (with the router's bias), softmaxed
        top, chosen = jax.lax.top_k(logits + layer["router_b"].astype(jnp.float32), cfg.top_k)
        return jax.nn.softmax(top, axis=-1).astype(x.dtype), chosen.astype(jnp.int32)
    if cfg.scoring == "softmax":
        top, chosen = jax.lax.top_k(jax.nn.softmax(logits, axis=-1), cfg.top_k)
        if cfg.norm_topk:
            top = top / top.sum(-1, keepdims=True)
        return top.astype(x.dtype), chosen.astype(jnp.int32)
    scores = jax.nn.sigmoid(logits)
    choice = scores + layer["router_bias"].astype(jnp.float32) if "router_bias" in layer else scores
    if cfg.groups > 1:
        group_score = jax.lax.top_k(choice.reshape(len(choice), cfg.groups, -1), 2)[0].sum(-1)
        kept = jax.lax.top_k(group_score, cfg.topk_groups)[1]
        mask = jnp.zeros(group_score.shape, bool).at[jnp.arange(len(choice))[:, None], kept].set(True)
        choice = jnp.where(jnp.repeat(mask, cfg.experts // cfg.groups, axis=-1), choice, -jnp.inf)
    chosen = jax.lax.top_k(choice, cfg.top_k)[1]
    top = jnp.take_along_axis(scores, chosen, axis=-1)
    if cfg.norm_topk:
        top = top / (top.sum(-1, keepdims=True) + 1e-20)
    return (top * cfg.routed_scale).astype(x.dtype), chosen.astype(jnp.int32)


def tile_rows(rows: int, cfg) -> int:
    """Rows a tile holds. Up to 32 routed rows (decode): one tile an expert holds all its tokens, so
    each touched expert is read exactly once. More (prefill): about one expert's average share,
    32-128 rows, so tiles are full enough to multiply well and few weights are read twice."""
    if rows <= 32:
        return rows
    return min(128, max(32, 1 << math.ceil(math.log2(max(1, rows * cfg.top_k // cfg.experts)))))


def experts(cfg, layer: dict, x, linear):
    """The layer's output for normed inputs x [N, hidden] and the experts each row chose [N, k].
    `linear(x, w)` is the caller's x @ w.T (its CPU one-row form where it has one)."""
    n, k = x.shape[0], cfg.top_k
    weights, chosen = route(cfg, x, layer)
    out = grouped(cfg, layer, x, chosen.reshape(-1), jnp.arange(n * k) // k, weights.reshape(-1), cfg.experts,
                  tile_rows(n, cfg), linear)
    return out + shared_expert(layer, x, linear), chosen


def grouped(cfg, layer: dict, x, expert_of_pair, row_of_pair, weight_of_pair, experts: int, tile: int, linear):
    """sum over pairs p of weight_of_pair[p] * expert_p(x[row_of_pair[p]]), added into row
    row_of_pair[p] of the output [N, hidden]: each expert's pairs in tiles of `tile` rows, one
    loop iteration a tile, the expert's weights read by index. A pair whose expert is `experts`
    (one past the last) is no pair: it has no tile and reads nothing."""
    pairs = expert_of_pair.shape[0]
    order = jnp.argsort(expert_of_pair, stable=True)  # pairs grouped by expert, tokens in order
    counts = jnp.bincount(expert_of_pair, length=experts + 1)[:experts]
    starts = jnp.cumsum(counts) - counts               # each expert's first pair in `order`
    tiles = (counts + tile - 1) // tile
    tiles_end = jnp.cumsum(tiles)

    def one_tile(t, out):
        e = jnp.searchsorted(tiles_end, t, side="right")  # the expert whose tiles cover t
        first = starts[e] + (t - (tiles_end[e] - tiles[e])) * tile
        slot = first + jnp.arange(tile)
        valid = slot < starts[e] + counts[e]
        pair = order[jnp.minimum(slot, pairs - 1)]
        rows = row_of_pair[pair]
        w13, w2 = expert(layer["we13"], e), expert(layer["we2"], e)
        gate_up = linear(x[rows][None], w13)[0]
        if "be13" in layer:
            gate_up = gate_up + layer["be13"][e]
        gate, up = jnp.split(gate_up, 2, axis=-1)
        y = linear(activation(cfg, gate, up)[None], w2)[0]
        if "be2" in layer:
            y = y + layer["be2"][e]
        scale = jnp.where(valid, weight_of_pair[pair], jnp.zeros((), x.dtype))
        return out.at[rows].add(y * scale[:, None])

    return jax.lax.fori_loop(0, tiles_end[-1], one_tile, jnp.zeros_like(x))


EXPERT_KEYS = ("we13", "we2", "be13", "be2")  # a MoE layer's params split by expert (the rest replicated)


def expert_axes(mesh) -> tuple[str, ...]:
    """The mesh axes a MoE layer's experts are split over: "ep", and "tp" beside it where the
    attention is tensor parallel (the experts then spread over every device, as vLLM's expert
    parallelism does: ep x tp groups, "tp" the minor axis)."""
    return ("ep", "tp") if mesh.shape.get("tp", 1) > 1 else ("ep",)


def experts_ep(cfg, layer: dict, x, mesh, linear):
    """experts() with the experts split over the mesh's expert axes and the rows of x [N, hidden]
    over "ep" (each group routes its own tokens). Dispatch: each device sends its (token, expert)
    pairs to the devices holding the experts, in one all-to-all of fixed-size buffers (a slot for
    each of its pairs on every device, since all could go to one); the devices run their experts
    on what arrived (tiles as above, empty slots read nothing); combine: a second all-to-all
    returns the results, which the sender weights and adds. With "tp" too, the devices of a tp
    group hold the same rows, so each sends a 1/tp share of the pairs and one all-reduce over the
    group adds the shares. The buffers are padded to the worst case: each all-to-all moves
    devices x pairs x hidden values, whatever the routing."""
    from jax.sharding import PartitionSpec as P
    axes = expert_axes(mesh)
    tp = mesh.shape.get("tp", 1)
    n = math.prod(mesh.shape[a] for a in axes)
    local = cfg.experts // n
    split = {key: P(axes) for key in EXPERT_KEYS if key in layer}
    specs = {key: split.get(key, P()) for key in layer}

    def body(layer, x):
        rows, k = x.shape[0], cfg.top_k
        weights, chosen = route(cfg, x, layer)
        share = -(-rows * k // tp)                         # pairs a device of the tp group sends
        pair = jax.lax.axis_index("tp") * share + jnp.arange(share) if tp > 1 else jnp.arange(share)
        valid = pair < rows * k
        pair = jnp.where(valid, pair, 0)
        dest = jnp.where(valid, chosen.reshape(-1)[pair] // local, 0)
        expert = jnp.where(valid, chosen.reshape(-1)[pair] % local, local)  # `local`: an empty slot
        slot = jnp.cumsum((dest[:, None] == jnp.arange(n)[None, :]) & valid[:, None], axis=0)[jnp.arange(share), dest] - 1
        slot = jnp.where(valid, slot, share - 1)
        send = jnp.zeros((n, share, x.shape[1]), x.dtype).at[dest, slot].set(x[pair // k] * valid[:, None].astype(x.dtype))
        send_expert = jnp.full((n, share), local, jnp.int32).at[dest, slot].min(expert)
        got = jax.lax.all_to_all(send, axes, 0, 0)          # got[i]: what device i sent here
        got_expert = jax.lax.all_to_all(send_expert, axes, 0, 0)
        flat = got.reshape(n * share, -1)
        done = grouped(cfg, layer, flat, got_expert.reshape(-1), jnp.arange(n * share),
                       (got_expert.reshape(-1) < local).astype(x.dtype), local, tile_rows(n * share, cfg), linear)
        back = jax.lax.all_to_all(done.reshape(n, share, -1), axes, 0, 0)  # back[d]: results of what went to d
        mine = back[dest, slot] * (weights.reshape(-1)[pair] * valid.astype(weights.dtype))[:, None]
        out = jnp.zeros_like(x).at[pair // k].add(mine)
        if tp > 1:
            out = jax.lax.psum(out, "tp")
        return out + shared_expert(layer, x, linear), chosen

    return jax.shard_map(body, mesh=mesh, in_specs=(specs, P("ep")), out_specs=(P("ep"), P("ep")),
                         check_vma=False)(layer, x)


def activation(cfg, gate, up):
    """An expert's gated activation: SwiGLU, or gpt-oss's clamped form."""
    if cfg.family != "gptoss":
        return jax.nn.silu(gate) * up
    gate = jnp.minimum(gate, cfg.swiglu_limit)
    up = jnp.clip(up, -cfg.swiglu_limit, cfg.swiglu_limit)
    return (up + 1) * gate * jax.nn.sigmoid(gate * cfg.swiglu_alpha)


def shared_expert(layer: dict, x, linear):
    """The expert every token uses (Qwen2-MoE's scaled by its sigmoid gate; 0 where there is none)."""
    if "ws13" not in layer:
        return jnp.zeros((), x.dtype)
    gate, up = jnp.split(linear(x[None], layer["ws13"])[0], 2, axis=-1)
    out = linear((jax.nn.silu(gate) * up)[None], layer["ws2"])[0]
    return jax.nn.sigmoid(linear(x[None], layer["wsg"])[0]) * out if "wsg" in layer else out
