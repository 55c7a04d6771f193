"""The decoder in PyTorch: static KV cache updated in place, prefill and decode steps.

Same math and op order as llama_jax.py: fused QKV and gate/up weights, RMSNorm in float32,
rotary tables cast to the model dtype, attention softmax in float32 (SDPA), logits in float32.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from . import mla_torch
from .llama import GOLDEN, M1, M2, LlamaConfig, rope_tables, tensor_salt, weight_init
from .quant import QWeight

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


def seeded_tensor(cfg: LlamaConfig, seed: int, index: int, name: str, dtype: torch.dtype, device) -> torch.Tensor:
    """Parameter number `index` (of cfg.param_shapes()) of the seeded model."""
    shape = cfg.param_shapes()[name]
    offset, width = weight_init(name)
    return (offset + width * hashed_uniform(math.prod(shape), tensor_salt(seed, index), device)).reshape(shape).to(dtype)


def seeded_weights(cfg: LlamaConfig, seed: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    return {name: seeded_tensor(cfg, seed, i, name, dtype, device) for i, name in enumerate(cfg.param_shapes())}


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class QLinear:
    """A quantized [out, in] weight: values (int8 or float8_e4m3fn) and per-output-channel scales
    in the compute dtype; used as values * scale (kernels/quant.py made them)."""

    def __init__(self, values: torch.Tensor, scale: torch.Tensor):
        self.values, self.scale = values, scale

    @property
    def shape(self):
        return self.values.shape

    @staticmethod
    def cat(parts: list) -> "QLinear":
        """Fused rows (QKV, gate/up): per-output-channel scales concatenate with their rows."""
        return QLinear(torch.cat([p.values for p in parts]), torch.cat([p.scale for p in parts]))

    @staticmethod
    def stack(parts: list) -> "QLinear":
        """A layer's experts [experts, out, in], each with its rows' scales [experts, out]."""
        return QLinear(torch.stack([p.values for p in parts]), torch.stack([p.scale for p in parts]))

    def __getitem__(self, index) -> "QLinear":
        """Expert(s) `index` of stacked experts, values and scales alike."""
        return QLinear(self.values[index], self.scale[index])


def cat_rows(parts: list):
    return QLinear.cat(parts) if isinstance(parts[0], QLinear) else torch.cat(parts)


def stack(parts: list):
    return QLinear.stack(parts) if isinstance(parts[0], QLinear) else torch.stack(parts)


class Ops:
    """The plain forms of the ops a layer is built from. Device-specific forms (oneDNN packing,
    the fused CPU GEMV) subclass this in llama_torch_cpu.py; the model math stays here."""

    launch_note = ""  # what a subclass chose as the weights arrived, for the runner's launch label

    def weight(self, w: torch.Tensor, batch: int) -> torch.Tensor:
        """An HF [out, in] weight as the ops store it."""
        return w

    def linear(self, x: torch.Tensor, w, b: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(w, QLinear):  # dequantize and multiply; under torch.compile the two fuse (gpt-fast)
            y = F.linear(x, w.values.to(x.dtype)) * w.scale
            return y if b is None else y + b
        return F.linear(x, w, b)

    def norm_linear(self, x: torch.Tensor, norm_w: torch.Tensor, eps: float, w: torch.Tensor,
                    b: torch.Tensor | None = None) -> torch.Tensor:
        """linear(rms_norm(x)): how each layer enters its attention and MLP, and the head."""
        return self.linear(rms_norm(x, norm_w, eps), w, b)

    def decode_attention(self, q, k_cache, v_cache, mask, k_scale=None, v_scale=None, sinks=None):
        """Attention of new queries [B, heads, T, hd] over the cache [B, kv_heads, S, hd] (an int8
        cache comes with its float32 scales [B, kv_heads, S]; this form dequantizes it whole).
        sinks (gpt-oss): a logit a head that joins each softmax (sink_softmax).

        The query heads that share a KV head are stacked as rows of one product, so the cache is
        read once per KV head and never expanded (decode is bound by reading weights and cache).
        Scores and softmax in float32, as SDPA and JAX's dot_product_attention do.
        """
        if k_scale is not None:
            k_cache, v_cache = ((c.float() * s.unsqueeze(-1)).to(q.dtype) for c, s in ((k_cache, k_scale), (v_cache, v_scale)))
        b, nh, t, hd = q.shape
        qg = q.reshape(b, k_cache.shape[1], (nh // k_cache.shape[1]) * t, hd)
        scores = (qg @ k_cache.transpose(-1, -2)).float() * hd**-0.5
        probs = sink_softmax(scores.masked_fill(~mask, float("-inf")), sinks, t).to(q.dtype)
        return (probs @ v_cache).reshape(b, nh, t, hd)

    def expert(self, x: torch.Tensor, layer: dict, e: int, cfg) -> torch.Tensor:
        """Expert e of the layer's stacked experts on rows x [N, hidden]."""
        gate, up = self.linear(x, layer["we13"][e], layer["be13"][e] if "be13" in layer else None).chunk(2, dim=-1)
        return self.linear(expert_act(cfg, gate, up), layer["we2"][e], layer["be2"][e] if "be2" in layer else None)

    def experts(self, h: torch.Tensor, layer: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
        """A mixture-of-experts layer's output for normed inputs h [B, T, hidden], and the experts
        each token chose [B * T, k]. Eager: the tokens of each routed expert go through it
        together, so only routed experts' weights are read (HF's loop; its trip count depends on
        the routing, so it cannot be compiled). Compiled (decode up to COMPILED_MOE_BATCH tokens):
        routed_experts."""
        if torch.compiler.is_compiling():
            return routed_experts(self, h, layer, cfg)
        flat = h.reshape(-1, h.shape[-1])
        weights, chosen = route(flat, layer, cfg)
        out = torch.zeros_like(flat)
        for e in torch.unique(chosen).tolist():
            rows, slot = torch.nonzero(chosen == e, as_tuple=True)
            out.index_add_(0, rows, self.expert(flat[rows], layer, e, cfg) * weights[rows, slot, None])
        return (out + shared_expert(self, flat, layer)).view_as(h), chosen


PLAIN = Ops()

COMPILED_MOE_BATCH = 8  # a mixture of experts' decode is compiled up to this batch (routed_experts)


def routed_experts(ops: Ops, h: torch.Tensor, layer: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Ops.experts in a form torch.compile takes whole (static shapes, no host sync): each (token,
    expert) pair's rows are loaded by index inside the multiply-reduces (inductor indexes W[chosen]
    in the loop, on CPUs and in Triton; no copy of the routed experts is made first). One token
    reads its k experts once and no other expert; a few tokens read an expert two of them chose
    twice, which the record's bytes, counting distinct experts, do not credit."""
    x = h.reshape(-1, h.shape[-1]).float()
    weights, chosen = route(x, layer, cfg)
    e = chosen.reshape(-1)                                                                 # [pairs]
    rows = x if len(x) == 1 else x.repeat_interleave(chosen.shape[1], dim=0)               # a pair's token
    gate_up = routed_product(rows, layer["we13"], e)                                       # [pairs, 2 x width]
    if "be13" in layer:
        gate_up = gate_up + layer["be13"][e].float()
    gate, up = gate_up.chunk(2, dim=-1)
    y = routed_product(expert_act(cfg, gate, up), layer["we2"], e)                         # [pairs, hidden]
    if "be2" in layer:
        y = y + layer["be2"][e].float()
    out = (weights.float().reshape(-1, 1) * y).view(len(x), -1, y.shape[-1]).sum(1)
    return (out + shared_expert(ops, x, layer)).to(h.dtype).view_as(h), chosen


def routed_product(x: torch.Tensor, stacked, experts: torch.Tensor) -> torch.Tensor:
    """x [1 or k, in] times each routed expert's [out, in] matrix as a multiply-reduce, the experts'
    rows read by index inside the loop: [k, out]. Quantized experts are converted inside the loop
    and their rows' scales applied after the sum."""
    if isinstance(stacked, QLinear):
        return (x.unsqueeze(-2) * stacked.values[experts].float()).sum(-1) * stacked.scale[experts].float()
    return (x.unsqueeze(-2) * stacked[experts].float()).sum(-1)


def sink_softmax(scores: torch.Tensor, sinks: torch.Tensor | None, t: int) -> torch.Tensor:
    """Softmax over the last axis of scores [B, kv_heads, group x T, S] in float32; with sinks
    [heads] (gpt-oss), each head's sink logit joins its rows' softmax and its weight is dropped."""
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    b, nkv, rows, _ = scores.shape
    sink = sinks.float().view(nkv, -1, 1).expand(nkv, rows // t, t).reshape(1, nkv, rows, 1).expand(b, -1, -1, -1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


def expert_act(cfg, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """An expert's gated activation: SwiGLU, or gpt-oss's clamped form."""
    if cfg.family != "gptoss":
        return F.silu(gate) * up
    gate = gate.clamp(max=cfg.swiglu_limit)
    up = up.clamp(-cfg.swiglu_limit, cfg.swiglu_limit)
    return (up + 1) * gate * torch.sigmoid(gate * cfg.swiglu_alpha)


def route(x: torch.Tensor, layer: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The k experts each row of x [N, hidden] goes to, best first, and their weights, in float32
    as HF computes them: softmax over every expert (renormalised over the k where the model says
    so), or DeepSeek's sigmoid scores chosen with their bias within the best groups."""
    logits = x.float() @ layer["router"].float().T
    if cfg.scoring == "topk_softmax":  # gpt-oss: the k best logits (with the router's bias), softmaxed
        top, chosen = torch.topk(logits + layer["router_b"].float(), cfg.top_k, dim=-1)
        return torch.softmax(top, dim=-1).to(x.dtype), chosen
    if cfg.scoring == "softmax":
        top, chosen = torch.topk(torch.softmax(logits, dim=-1), cfg.top_k, dim=-1)
        if cfg.norm_topk:
            top = top / top.sum(-1, keepdim=True)
        return top.to(x.dtype), chosen
    scores = torch.sigmoid(logits)
    choice = scores + layer["router_bias"].float() if "router_bias" in layer else scores
    if cfg.groups > 1:  # a group's score: its two best experts'; all but the topk_groups best masked
        group_score = choice.view(len(choice), cfg.groups, -1).topk(2, dim=-1).values.sum(-1)
        kept = torch.zeros_like(group_score).scatter_(1, group_score.topk(cfg.topk_groups, dim=-1).indices, 1.0)
        choice = choice.masked_fill(kept.repeat_interleave(cfg.experts // cfg.groups, dim=-1) == 0, float("-inf"))
    chosen = choice.topk(cfg.top_k, dim=-1).indices
    top = scores.gather(1, chosen)
    if cfg.norm_topk:
        top = top / (top.sum(-1, keepdim=True) + 1e-20)
    return (top * cfg.routed_scale).to(x.dtype), chosen


def shared_expert(ops: Ops, flat: torch.Tensor, layer: dict) -> torch.Tensor | float:
    """The expert every token uses (Qwen2-MoE's scaled by its sigmoid gate; 0 where there is none)."""
    if "ws13" not in layer:
        return 0.0
    gate, up = ops.linear(flat, layer["ws13"]).chunk(2, dim=-1)
    out = ops.linear(F.silu(gate) * up, layer["ws2"])
    return torch.sigmoid(ops.linear(flat, layer["wsg"])) * out if "wsg" in layer else out


def expert_weights(cfg, w: dict, p: str, ops: Ops, batch: int, experts: range | None = None) -> dict:
    """A mixture-of-experts layer's router and its experts stacked [experts, rows, in] (gate and up
    as one [2 x expert width, hidden] matrix each), so a step indexes the routed ones."""
    if cfg.family == "gptoss":  # fused as the Hub stores them: [E, hidden, 2 x width], gate and up interleaved
        mine = slice(experts.start, experts.stop) if experts else slice(None)
        gu, gub = w[p + "experts.gate_up_proj"][mine], w[p + "experts.gate_up_proj_bias"][mine]
        return {"router": w[p + "router.weight"], "router_b": w[p + "router.bias"],
                "we13": torch.cat([gu[..., 0::2], gu[..., 1::2]], dim=-1).transpose(1, 2).contiguous(),
                "be13": torch.cat([gub[..., 0::2], gub[..., 1::2]], dim=-1),
                "we2": w[p + "experts.down_proj"][mine].transpose(1, 2).contiguous(),
                "be2": w[p + "experts.down_proj_bias"][mine]}
    out = {"router": w[p + "gate.weight"],
           "we13": stack([cat_rows([w[p + f"experts.{e}.gate_proj.weight"], w[p + f"experts.{e}.up_proj.weight"]])
                          for e in experts or range(cfg.experts)]),
           "we2": stack([w[p + f"experts.{e}.down_proj.weight"] for e in experts or range(cfg.experts)])}
    if cfg.shared_intermediate:
        out["ws13"] = ops.weight(cat_rows([w[p + "shared_expert.gate_proj.weight"], w[p + "shared_expert.up_proj.weight"]]), batch)
        out["ws2"] = ops.weight(w[p + "shared_expert.down_proj.weight"], batch)
        if cfg.shared_gate:
            out["wsg"] = w[p + "shared_expert_gate.weight"]
    if cfg.score_bias:
        out["router_bias"] = w[p + "gate.e_score_correction_bias"]
    return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def quantize_kv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values and float32 scales [..., positions] of keys or values [..., positions, head_dim]:
    per position, scale = max|x| / 127 (llama_ref.int8_round_trip does the same in float64)."""
    x32 = x.float()
    scale = x32.abs().amax(-1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round(x32 / scale.unsqueeze(-1)), -127, 127).to(torch.int8), scale


class KVCache:
    """One layer's keys and values [batch, kv_heads, max_seq, head_dim], updated in place: in the
    compute dtype, or (int8) as int8 with a float32 scale per batch row, head and position."""

    def __init__(self, shape: tuple, dtype: torch.dtype, device, int8: bool = False, v_shape: tuple | None = None):
        self.dtype, self.int8 = dtype, int8
        self.k, self.v = (torch.zeros(s, dtype=torch.int8 if int8 else dtype, device=device) for s in (shape, v_shape or shape))
        self.scales = [torch.ones(shape[:3], dtype=torch.float32, device=device) for _ in range(2)] if int8 else []

    def tensors(self) -> list[torch.Tensor]:
        return [self.k, self.v, *self.scales]

    def write(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if not self.int8:
            self.k.index_copy_(2, pos, k)
            self.v.index_copy_(2, pos, v)
            return
        for store, scale, x in ((self.k, self.scales[0], k), (self.v, self.scales[1], v)):
            q, s = quantize_kv(x)
            store.index_copy_(2, pos, q)
            scale.index_copy_(2, pos, s)

    def read(self) -> tuple:
        """Keys and values as stored, and their scales (None, None for a float cache): the
        attention decides where an int8 cache is dequantized."""
        if not self.int8:
            return self.k, self.v, None, None
        return self.k, self.v, self.scales[0], self.scales[1]

    def dequantized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values in the compute dtype (an int8 cache dequantized)."""
        if not self.int8:
            return self.k, self.v
        return tuple((store.float() * scale.unsqueeze(-1)).to(self.dtype)
                     for store, scale in ((self.k, self.scales[0]), (self.v, self.scales[1])))


class ExpertParallel:
    """A mixture of experts split over `size` ranks: each holds experts [rank x E/size, (rank + 1) x
    E/size) and its share of the batch's sequences. A MoE layer sends every (token, expert) pair to
    the rank holding the expert and gets the result back: two ragged all-to-alls of rows (sized by
    a third of counts), over gloo on CPUs (eager: the sizes are known only at run time)."""

    def __init__(self, group, size: int, rank: int, experts: int):
        self.group, self.size, self.rank = group, size, rank
        self.local = experts // size
        self.mine = range(rank * self.local, (rank + 1) * self.local)

    def experts(self, ops: Ops, h: torch.Tensor, layer: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.distributed as dist
        flat = h.reshape(-1, h.shape[-1])
        weights, chosen = route(flat, layer, cfg)
        k = chosen.shape[1]
        dest = chosen.reshape(-1) // self.local
        order = torch.argsort(dest, stable=True)          # pairs grouped by the rank they go to
        rows = order // k
        send_counts = torch.bincount(dest, minlength=self.size)
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)
        sent, got = send_counts.tolist(), recv_counts.tolist()
        arrived = flat.new_empty((sum(got), flat.shape[1]))
        dist.all_to_all_single(arrived, flat[rows].contiguous(), got, sent, group=self.group)
        expert_of = torch.empty(sum(got), dtype=torch.long, device=flat.device)
        dist.all_to_all_single(expert_of, (chosen.reshape(-1)[order] % self.local).contiguous(), got, sent, group=self.group)
        done = torch.zeros_like(arrived)
        for e in torch.unique(expert_of).tolist():
            here = torch.nonzero(expert_of == e, as_tuple=True)[0]
            done[here] = ops.expert(arrived[here], layer, e, cfg)
        back = flat.new_empty((len(order), flat.shape[1]))
        dist.all_to_all_single(back, done, sent, got, group=self.group)
        out = torch.zeros_like(flat).index_add_(0, rows, back * weights.reshape(-1)[order, None])
        return (out + shared_expert(ops, flat, layer)).view_as(h), chosen

    def gather_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of x (its sequences), in rank order along dimension 0."""
        import torch.distributed as dist
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts)


class TensorParallel:
    """The two collectives of a tensor-parallel decoder (Megatron's layout): the sum of the
    row-parallel products' partial outputs, and the vocabulary-split logits put back together.
    torch's functional collectives, so torch.compile traces them into the decode graph."""

    def __init__(self, group, size: int):
        self.group, self.size = group, size

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:  # one chip holds the whole sum
            return x
        from torch.distributed import _functional_collectives as funcol
        return funcol.all_reduce(x, "sum", self.group)

    def gather_last(self, x: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return x
        from torch.distributed import _functional_collectives as funcol
        gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor  # renamed in 2.12
        return gather(x.contiguous(), x.dim() - 1, self.group)


class Llama(torch.nn.Module):
    """Weights (HF names) fused for speed; caches of [batch, kv_heads, max_seq, head_dim].

    With `tp` (a TensorParallel), the weights are this chip's shard (kernels.llama.tp_slices):
    its query and KV heads, its MLP columns and vocabulary rows; widths come from the weights.
    """

    def __init__(self, cfg: LlamaConfig, weights: dict, batch: int, max_seq: int, ops: Ops = PLAIN,
                 tp: TensorParallel | None = None, kv_int8: bool = False, ep: ExpertParallel | None = None):
        super().__init__()
        self.cfg, self.ops, self.tp, self.ep = cfg, ops, tp, ep
        w = weights
        if cfg.family == "mla":  # a split model's heads are its weights' (MLA runs whole)
            self.heads = self.kv_heads = cfg.heads
        else:
            self.heads = w["model.layers.0.self_attn.q_proj.weight"].shape[0] // cfg.hd
            self.kv_heads = w["model.layers.0.self_attn.k_proj.weight"].shape[0] // cfg.hd
        dtype = w["model.embed_tokens.weight"].dtype
        device = w["model.embed_tokens.weight"].device
        self.embed = w["model.embed_tokens.weight"]
        # A quantized model carries its own LM head even when tied (the embedding gather stays float).
        head = w.get("lm_head.weight", self.embed) if cfg.tie_embeddings else w["lm_head.weight"]
        self.head = ops.weight(head, batch)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for i in range(cfg.layers):
            p = f"model.layers.{i}."
            layer = {"ln1": w[p + "input_layernorm.weight"], "ln2": w[p + "post_attention_layernorm.weight"]}
            if cfg.family == "mla":
                layer.update(mla_torch.layer_weights(cfg, w, p + "self_attn.", ops, batch))
            else:
                layer.update(wqkv=ops.weight(cat_rows([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]), batch),
                             wo=ops.weight(w[p + "self_attn.o_proj.weight"], batch))
                if cfg.family == "gptoss":  # an output bias, a sink a head, and maybe a sliding window
                    layer.update(bo=w[p + "self_attn.o_proj.bias"], sinks=w[p + "self_attn.sinks"])
            if cfg.moe_layer(i):
                layer.update(expert_weights(cfg, w, p + "mlp.", ops, batch, ep.mine if ep else None))
            else:
                layer["w13"] = ops.weight(cat_rows([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]), batch)
                layer["w2"] = ops.weight(w[p + "mlp.down_proj.weight"], batch)
            if getattr(cfg, "qk_norm", False):
                layer["qn"], layer["kn"] = w[p + "self_attn.q_norm.weight"], w[p + "self_attn.k_norm.weight"]
            if cfg.qkv_bias:
                layer["bqkv"] = torch.cat([w[p + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            self.layers.append(layer)
        cos, sin = rope_tables(cfg, max_seq)
        self.cos = torch.from_numpy(cos).to(device, torch.float32).to(dtype)
        self.sin = torch.from_numpy(sin).to(device, torch.float32).to(dtype)
        if cfg.family == "mla":  # one latent and one rotary key a position (kernels/mla_torch.py)
            shapes = {"shape": (batch, 1, max_seq, cfg.kv_lora_rank), "v_shape": (batch, 1, max_seq, cfg.hd)}
        else:
            shapes = {"shape": (batch, self.kv_heads, max_seq, cfg.hd)}
        self.caches = [KVCache(dtype=dtype, device=device, int8=kv_int8, **shapes) for _ in range(cfg.layers)]
        self.max_seq = max_seq

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor a step reads or writes (CUDA graphs keep them at fixed addresses)."""
        layer_tensors = [t for layer in self.layers for t in layer.values()]
        return unpack([self.embed, self.head, self.norm, self.cos, self.sin, *layer_tensors,
                       *(t for c in self.caches for t in c.tensors())])

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, prefill: bool,
                last_only: bool = False) -> torch.Tensor:
        """Logits (float32) for tokens [B, T] at positions input_pos [T].

        prefill: the prompt from position 0 attends to itself causally, and its keys and
        values are written to the cache. Otherwise (decode) the new token attends to the
        whole static cache, masked to the positions written so far.
        """
        cfg, ops = self.cfg, self.ops
        reduce = (lambda y: y) if self.tp is None else self.tp.all_reduce
        cos, sin = self.cos[input_pos], self.sin[input_pos]
        positions = torch.arange(self.max_seq, device=tokens.device)
        mask = None if prefill else (positions <= input_pos[-1]).view(1, 1, 1, -1)
        x = F.embedding(tokens, self.embed)
        routes = []
        for i, (layer, cache) in enumerate(zip(self.layers, self.caches)):
            if cfg.family == "mla":
                x = x + mla_torch.attention(cfg, ops, layer, cache, x, cos, sin, input_pos, prefill, mask,
                                            rms_norm, rotate_half)
            else:
                window = cfg.window(i) if cfg.family == "gptoss" else None
                layer_mask = mask if mask is None or not window else mask & (positions > input_pos[-1] - window).view(1, 1, 1, -1)
                x = x + self.attention(layer, cache, x, cos, sin, input_pos, prefill, layer_mask, window)
            if "router" in layer:
                moe = ops.experts if self.ep is None else partial(self.ep.experts, ops)
                out, chosen = moe(rms_norm(x, layer["ln2"], cfg.norm_eps), layer, cfg)
                x = x + out
                routes.append(chosen)
                continue
            gate, up = ops.norm_linear(x, layer["ln2"], cfg.norm_eps, layer["w13"]).chunk(2, dim=-1)
            x = x + reduce(ops.linear(F.silu(gate) * up, layer["w2"]))
        if routes:  # the experts each token chose, per MoE layer [layers, B * T, k]
            self.last_routes = torch.stack(routes)
            if self.ep is not None:  # every rank's tokens, batch-major as the whole batch's
                self.last_routes = self.ep.gather_batch(self.last_routes.transpose(0, 1)).transpose(0, 1)
        if last_only:
            x = x[:, -1:]
        logits = ops.norm_linear(x, self.norm, cfg.norm_eps, self.head).float()
        if self.ep is not None:  # each rank decoded its own sequences
            return self.ep.gather_batch(logits)
        return logits if self.tp is None else self.tp.gather_last(logits)

    def attention(self, layer: dict, cache: KVCache, x, cos, sin, input_pos, prefill: bool, mask,
                  window: int | None = None) -> torch.Tensor:
        """Grouped-query attention's output (after o_proj, summed over chips) for the residual x."""
        cfg, ops = self.cfg, self.ops
        b, t, _ = x.shape
        nh, nkv, hd = self.heads, self.kv_heads, cfg.hd
        reduce = (lambda y: y) if self.tp is None else self.tp.all_reduce
        qkv = ops.norm_linear(x, layer["ln1"], cfg.norm_eps, layer["wqkv"], layer.get("bqkv"))
        q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        q, k = q.view(b, t, nh, hd), k.view(b, t, nkv, hd)
        if "qn" in layer:  # Qwen3: each head's queries and keys normalised before the rotation
            q, k = rms_norm(q, layer["qn"], cfg.norm_eps), rms_norm(k, layer["kn"], cfg.norm_eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, t, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        cache.write(input_pos, k, v)
        if prefill and "sinks" in layer:  # gpt-oss: SDPA has no sinks
            o = prompt_attention(q, k, v, layer["sinks"], window)
        elif prefill:  # the prompt attends to its own exact keys and values
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k_cache, v_cache, k_scale, v_scale = cache.read()
            o = ops.decode_attention(q, k_cache, v_cache, mask, k_scale, v_scale, **({"sinks": layer["sinks"]} if "sinks" in layer else {}))
        return reduce(ops.linear(o.transpose(1, 2).reshape(b, t, nh * hd), layer["wo"], layer.get("bo")))


def prompt_attention(q, k, v, sinks: torch.Tensor, window: int | None) -> torch.Tensor:
    """Causal attention of a prompt over itself with gpt-oss's sinks and, on a sliding layer, its
    window (a query sees its own and the window - 1 keys before it)."""
    b, nh, t, hd = q.shape
    group = nh // k.shape[1]
    scores = (q.reshape(b, k.shape[1], group * t, hd) @ k.transpose(-1, -2)).float() * hd**-0.5
    i, j = torch.arange(t, device=q.device).view(-1, 1), torch.arange(t, device=q.device).view(1, -1)
    allowed = (j <= i) & (j > i - window) if window else j <= i
    probs = sink_softmax(scores.masked_fill(~allowed.repeat(group, 1), float("-inf")), sinks, t).to(q.dtype)
    return (probs @ v).reshape(b, nh, t, hd)


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unpack(items: list) -> list[torch.Tensor]:
    """Tensors, with each QLinear's values and scales in place of it."""
    return [t for x in items for t in ((x.values, x.scale) if isinstance(x, QLinear) else (x,))]


def float64_numpy(v):
    """A weight as float64 host values, as the model computes with it (a QLinear dequantized)."""
    if isinstance(v, QLinear):
        return (v.values.to("cpu", torch.float64) * v.scale.to("cpu", torch.float64)[:, None]).numpy()
    return v.detach().to("cpu", torch.float64).numpy()


def to_device(v, device, dtype: torch.dtype):
    """A host weight (numpy float, or a quant.QWeight) on the device: floats in the compute dtype,
    quantized values as they are, their scales in the compute dtype."""
    import numpy as np
    if isinstance(v, (torch.Tensor, QLinear)):  # already placed (a tensor-parallel shard)
        return v
    if isinstance(v, QWeight):  # by type: a checkpoint's numpy.memmap has attributes of its own
        values = np.asarray(v.values)
        if values.dtype == np.int8:
            t = torch.from_numpy(values.copy())
        else:  # float8_e4m3fn bits, reinterpreted without a copy through uint8
            t = torch.from_numpy(values.view(np.uint8).copy()).view(torch.float8_e4m3fn)
        scale = torch.from_numpy(np.asarray(v.scale, dtype=np.float32)).to(device, dtype)
        return QLinear(t.to(device), scale)
    # A copy: a checkpoint's float32 tensor is a read-only numpy.memmap, which torch must not alias.
    return torch.from_numpy(np.array(v, dtype=np.float32)).to(device, dtype)


class Runner:
    """One model on one device: builds weights and cache, and hands out ready-to-call steps.

    How it runs is the caller's choice (the adapter's): `ops` gives the layer forms, `compile`
    (a function of the decode forward) compiles decode, `launch` and `prefill_launch` say how
    each step runs. If compiling fails at the first call the runner falls back to eager and
    says why in `launch`.
    """

    def __init__(self, cfg: LlamaConfig, dtype: str, device, batch: int, max_seq: int,
                 seed: int = 0, weights: dict | None = None, keep_weights: bool = False,
                 ops: Ops = PLAIN, compile=None, launch: str = "eager", prefill_launch: str = "eager",
                 tp: TensorParallel | None = None, kv_int8: bool = False, ep: ExpertParallel | None = None):
        tdtype = TORCH_DTYPES[dtype]
        # Split by experts, this rank decodes its share of the sequences (rows `self.rows` of a step's tokens).
        self.rows = slice(None) if ep is None else slice(ep.rank * batch // ep.size, (ep.rank + 1) * batch // ep.size)
        batch = batch if ep is None else batch // ep.size
        if weights is None:
            w = seeded_weights(cfg, seed, tdtype, device)
        else:  # numpy (bfloat16 via ml_dtypes) -> float32 -> dtype: exact for every source dtype
            w = {k: to_device(v, device, tdtype) for k, v in weights.items()}
        self.device = torch.device(device)
        self.model = Llama(cfg, w, batch, max_seq, ops, tp, kv_int8, ep)
        self.weights = w if keep_weights else None  # the model holds fused copies
        self.params = self.model.tensors()
        del w
        self._eager_decode = lambda tokens, pos: self.model(tokens, pos, prefill=False)
        self._decode = self._eager_decode if compile is None else compile(self._eager_decode, self.model)
        # A compile function may name what it chose (llama_torch_cpu.step_kernel_or_inductor).
        self.launch = "eager" if compile is None else getattr(self._decode, "launch", launch) + ops.launch_note
        self.prefill_launch = prefill_launch

    @torch.inference_mode()
    def _run_decode(self, tokens, pos):
        try:
            return self._decode(tokens, pos)
        except Exception as e:  # compile failure: eager is slower but still the same math
            if self._decode is self._eager_decode:
                raise
            self._decode = self._eager_decode
            what = "the step kernel" if "decode step" in self.launch else "torch.compile"
            self.launch = f"eager ({what} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]})"
            return self._decode(tokens, pos)

    def prefill_step(self, tokens, last_only: bool = True):
        tokens = torch.as_tensor(tokens[self.rows], dtype=torch.long, device=self.device)
        pos = torch.arange(tokens.shape[1], device=self.device)

        @torch.inference_mode()
        def step():
            return self.model(tokens, pos, prefill=True, last_only=last_only)
        return step

    def decode_step(self, tokens, pos: int):
        # A fresh tensor, whatever the caller's view: a compiled step is guarded on strides, and a
        # column sliced out of a token array would recompile it.
        given = torch.as_tensor(tokens[self.rows], dtype=torch.long)
        tokens = torch.empty(given.shape, dtype=torch.long, device=self.device).copy_(given)
        pos = torch.tensor([pos], dtype=torch.long, device=self.device)
        return lambda: self._run_decode(tokens, pos)

    def routes(self):
        """The experts each token of the last step chose, per mixture-of-experts layer [layers, B * T, k]."""
        import numpy as np
        routes = getattr(self.model, "last_routes", None)
        return np.zeros((0, 0, 1), np.int32) if routes is None else routes.cpu().numpy().astype(np.int32)

    def streamed(self) -> list[torch.Tensor]:
        """The weights a decode step reads in full (head, every layer's matrices and norms), as
        stored: the buffers a read sweep must cover to measure this model's bandwidth ceiling."""
        m = self.model
        return unpack([m.head, m.norm, *(t for layer in m.layers for t in layer.values())])

    def kv_numpy(self) -> list:
        """Per layer, (keys, values) as the cache holds them, as float64 [batch, kv_heads, seq, hd]."""
        return [tuple(t.to("cpu", torch.float64).numpy() for t in c.dequantized()) for c in self.model.caches]

    def weights_numpy(self) -> dict:
        """float64 weights as this model computes with them (quantized ones dequantized)."""
        return {k: float64_numpy(v) for k, v in self.weights.items()}


def strict_recompiles() -> None:
    """Each runner is a new closure over the same code, so a sweep recompiles; past dynamo's
    limit it would quietly run eager: raise instead, and the runner's fallback records it."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    torch._dynamo.config.fail_on_recompile_limit_hit = True


def cuda_graphs(forward, model: Llama):
    """Decode compiled by inductor and replayed as CUDA graphs (gpt-fast's setting)."""
    strict_recompiles()
    for t in model.tensors():
        torch._dynamo.mark_static_address(t)
    return torch.compile(forward, mode="reduce-overhead", fullgraph=True)


def cuda_plan(batch: int, compile_decode: bool, moe: bool) -> dict:
    """The Runner options on a GPU: decode compiled and replayed as CUDA graphs; a mixture of
    experts' only up to COMPILED_MOE_BATCH tokens (routed_experts), eager above, where the
    grouped loop reads each routed expert once but its shapes follow the routing."""
    if not compile_decode or (moe and batch > COMPILED_MOE_BATCH):
        return {}
    return {"compile": cuda_graphs,
            "launch": "torch.compile(reduce-overhead): CUDA graphs" + (", experts by index for each token" if moe else "")}
