"""Mixture-of-experts decoders: the dense decoder's attention, with the MLP of some or all layers
replaced by a router and experts (Mixtral; Qwen2-MoE and Qwen3-MoE: softmax over the experts,
the top k chosen, optionally renormalised to sum to one; Qwen2-MoE's shared expert with its
sigmoid gate; Qwen3's RMSNorm of each head's queries and keys).

Framework-free, like kernels/llama.py: the configuration, its parameters by Hugging Face name
(experts one tensor each, as the Hub stores Qwen's; Mixtral's checkpoint names are mapped on
read), and the work model: FLOPs of the active parameters, bytes of the experts a step touches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from .dtypes import NO_QUANT, QuantSpec
from .llama import MAX_AXIS, LlamaConfig

MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")


@dataclass(frozen=True)
class MoEConfig(LlamaConfig):
    family: ClassVar[str] = "moe"
    experts_model: ClassVar[bool] = True
    experts: int = 1
    top_k: int = 1
    expert_intermediate: int = 1
    norm_topk: bool = True            # the k chosen probabilities renormalised to sum 1 (Mixtral: always)
    shared_intermediate: int = 0      # an expert every token uses (Qwen2-MoE, DeepSeek)
    shared_gate: bool = True          # Qwen2-MoE scales the shared expert by a sigmoid gate; DeepSeek does not
    qk_norm: bool = False             # Qwen3: RMSNorm over each head's q and k before the rotation
    dense_layers: tuple[int, ...] = field(default=())  # layers with a dense MLP (`intermediate` wide)
    # DeepSeek-V3's router: sigmoid scores; the choice made on scores + a per-expert bias, within the
    # `topk_groups` best of `groups` groups of experts (a group scored by its two best); the weights
    # are the chosen scores (renormalised where norm_topk), times routed_scale.
    scoring: str = "softmax"
    score_bias: bool = False
    groups: int = 1
    topk_groups: int = 1
    routed_scale: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("experts", "top_k", "expert_intermediate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_AXIS:
                raise ValueError(f"model config: {name} must be a positive whole number, not {v!r}")
        if self.top_k > self.experts:
            raise ValueError(f"model config: top_k {self.top_k} is more than the {self.experts} experts")
        if isinstance(self.shared_intermediate, bool) or not isinstance(self.shared_intermediate, int) \
                or not 0 <= self.shared_intermediate <= MAX_AXIS:
            raise ValueError(f"model config: shared_intermediate must be a whole number >= 0, not {self.shared_intermediate!r}")
        if self.scoring not in ("softmax", "sigmoid", "topk_softmax"):  # topk_softmax: gpt-oss's
            raise ValueError(f"model config: scoring_func {self.scoring!r} is not softmax or sigmoid")
        for name in ("groups", "topk_groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= self.experts:
                raise ValueError(f"model config: {name} must be a whole number from 1 to the {self.experts} experts, not {v!r}")
        if self.experts % self.groups:
            raise ValueError(f"model config: n_group {self.groups} does not divide the {self.experts} experts")
        if self.topk_groups > self.groups:
            raise ValueError(f"model config: topk_group {self.topk_groups} is more than the {self.groups} groups")
        if self.top_k > self.topk_groups * (self.experts // self.groups):
            raise ValueError(f"model config: top_k {self.top_k} is more than the experts of {self.topk_groups} groups")
        if self.groups > 1 and self.experts // self.groups < 2:
            raise ValueError("model config: a group of experts is scored by its two best, so it needs two or more")
        if not isinstance(self.routed_scale, (int, float)) or isinstance(self.routed_scale, bool) \
                or not 0 < self.routed_scale < 1e6:
            raise ValueError(f"model config: routed_scaling_factor must be a positive number, not {self.routed_scale!r}")
        for i in self.dense_layers:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.layers:
                raise ValueError(f"model config: dense layer {i!r} is not a layer of the {self.layers}")

    def moe_layer(self, layer: int) -> bool:
        return layer not in self.dense_layers

    @property
    def moe_layers(self) -> int:
        return self.layers - len(set(self.dense_layers))

    # -- sizes ------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter by its Hugging Face name, in a fixed order: the dense decoder's, with a
        MoE layer's MLP replaced by its router ("mlp.gate"), experts and shared expert."""
        h, hd, ie, s = self.hidden, self.hd, self.expert_intermediate, self.shared_intermediate
        out = {}
        for name, shape in super().param_shapes().items():
            parts = name.split(".")
            layer = int(parts[2]) if name.startswith("model.layers.") else None
            if self.qk_norm and name.endswith("self_attn.k_proj.weight"):
                out[name] = shape
                out[name.replace("k_proj", "q_norm")] = (hd,)
                out[name.replace("k_proj", "k_norm")] = (hd,)
                continue
            if layer is None or not self.moe_layer(layer) or ".mlp." not in name:
                out[name] = shape
                continue
            if not name.endswith("mlp.gate_proj.weight"):
                continue  # the dense MLP's up and down: a MoE layer has none
            p = f"model.layers.{layer}.mlp."
            out[p + "gate.weight"] = (self.experts, h)
            if self.score_bias:
                out[p + "gate.e_score_correction_bias"] = (self.experts,)
            for e in range(self.experts):
                out[p + f"experts.{e}.gate_proj.weight"] = (ie, h)
                out[p + f"experts.{e}.up_proj.weight"] = (ie, h)
                out[p + f"experts.{e}.down_proj.weight"] = (h, ie)
            if s:
                out[p + "shared_expert.gate_proj.weight"] = (s, h)
                out[p + "shared_expert.up_proj.weight"] = (s, h)
                out[p + "shared_expert.down_proj.weight"] = (h, s)
                if self.shared_gate:
                    out[p + "shared_expert_gate.weight"] = (1, h)
        return out

    def expert_params(self) -> int:
        """Parameters of one expert (gate, up and down)."""
        return 3 * self.hidden * self.expert_intermediate

    def active_params(self) -> int:
        """Parameters one token uses: all but the experts its router does not choose (the embedding
        table counted whole, as model cards count it)."""
        return self.n_params() - self.moe_layers * (self.experts - self.top_k) * self.expert_params()

    # -- work: FLOPs of what a token uses, bytes of what a step reads -------------------
    def matmul_params(self) -> int:
        """Parameters a token multiplies by: attention, the router, its k experts and the shared
        expert in MoE layers, the dense MLP elsewhere, the LM head (the active parameters)."""
        h = self.hidden
        moe = self.experts * h + self.top_k * self.expert_params() + (
            3 * h * self.shared_intermediate + h * self.shared_gate if self.shared_intermediate else 0)
        dense = 3 * h * self.intermediate
        return self.layers * self.attention_params() + self.moe_layers * moe + (self.layers - self.moe_layers) * dense \
            + self.vocab_size * h

    def experts_touched(self, tokens: int) -> float:
        """Experts a MoE layer reads for `tokens` tokens routed independently and uniformly:
        E * (1 - (1 - k/E)^tokens) (the expected number; a measurement counts the router's)."""
        return self.experts * (1.0 - (1.0 - self.top_k / self.experts) ** tokens)

    def streamed_weight_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT, tokens: int | None = None,
                              touched: float | None = None) -> int:
        """Weights a forward pass over `tokens` tokens reads: everything the dense count reads but
        the experts, plus the experts it touches (`touched` a layer where the router's choices were
        counted, else the number expected under uniform routing; every expert when `tokens` is
        None). Rounded to whole bytes."""
        everything = super().streamed_weight_bytes(dtype, quant)
        if tokens is None or not self.moe_layers:
            return everything
        touched = self.experts_touched(tokens) if touched is None else touched
        sizes = self.tensor_bytes(dtype, quant)
        unread = self.moe_layers * (self.experts - touched) * self.expert_bytes(sizes)
        return round(everything - unread)

    def expert_bytes(self, sizes: dict[str, int]) -> float:
        """Bytes of one expert as stored, from tensor_bytes' sizes."""
        first = next(i for i in range(self.layers) if self.moe_layer(i))
        return sum(sizes[f"model.layers.{first}.mlp.experts.0.{n}_proj.weight"] for n in ("gate", "up", "down"))

    def all_experts_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """Bytes of every routed expert of every MoE layer as stored (what expert parallelism splits;
        the rest of the model is what each device of an expert-parallel group holds whole)."""
        return round(self.moe_layers * self.experts * self.expert_bytes(self.tensor_bytes(dtype, quant)))

    def bytes(self, batch: int, new_tokens: int, cache_len: int, dtype: str,
              logit_tokens: int | None = None, quant: QuantSpec = NO_QUANT, touched: float | None = None) -> int:
        """As the dense decoder's, with the experts counted as touched by batch x new_tokens tokens
        (`touched` experts a layer: as the router chose them, where they were counted)."""
        dense = super().bytes(batch, new_tokens, cache_len, dtype, logit_tokens, quant)
        return dense - super().streamed_weight_bytes(dtype, quant) + \
            self.streamed_weight_bytes(dtype, quant, batch * new_tokens, touched)


# Mixtral's checkpoints name an expert's matrices w1 (gate), w3 (up) and w2 (down) under
# "block_sparse_moe"; Qwen's names (which this module uses) say what each is.
MIXTRAL_EXPERT = re.compile(r"\.block_sparse_moe\.experts\.(\d+)\.w([123])\.weight$")
MIXTRAL_ROLE = {"1": "gate", "2": "down", "3": "up"}


def canonical_name(name: str) -> str:
    """A checkpoint tensor's name as this module names it (Mixtral's mapped, DeepSeek's shared
    experts named as Qwen's shared expert, others unchanged)."""
    name = MIXTRAL_EXPERT.sub(lambda m: f".mlp.experts.{m[1]}.{MIXTRAL_ROLE[m[2]]}_proj.weight", name)
    return name.replace(".block_sparse_moe.gate.weight", ".mlp.gate.weight").replace(".mlp.shared_experts.", ".mlp.shared_expert.")


def moe_fields(c: dict, layers: int) -> dict:
    """The MoE fields of a Hugging Face config.json of a known MoE model_type."""
    kind = c["model_type"]
    experts = c.get("num_local_experts", c.get("num_experts"))
    if experts is None:
        raise KeyError("num_local_experts")
    out = {"experts": experts, "top_k": c["num_experts_per_tok"]}
    if kind == "mixtral":
        return {**out, "expert_intermediate": c["intermediate_size"], "norm_topk": True}
    step = c.get("decoder_sparse_step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
        raise ValueError(f"decoder_sparse_step must be a positive whole number, not {step!r}")
    only = c.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise ValueError(f"mlp_only_layers must be a list of layer numbers, not {str(only)[:80]}")
    dense = sorted(set(only) | {i for i in range(layers) if (i + 1) % step})
    out.update(expert_intermediate=c["moe_intermediate_size"], norm_topk=bool(c.get("norm_topk_prob", False)),
               dense_layers=tuple(dense), qk_norm=kind == "qwen3_moe")
    if kind == "qwen2_moe":
        out["shared_intermediate"] = c.get("shared_expert_intermediate_size") or 0
    return out


def _hf(name: str, **kw) -> MoEConfig:
    return MoEConfig(source=f"huggingface.co/{name}/blob/main/config.json", **kw)


CONFIGS = {
    # Real shapes, from each model's public config.json (source field). Their totals and active
    # parameters come out as the model cards state them (tests/test_moe.py holds them to it).
    "mixtral-8x7b": _hf("mistralai/Mixtral-8x7B-v0.1", vocab_size=32000, hidden=4096, layers=32, heads=32, kv_heads=8,
                        intermediate=14336, rope_theta=1e6, experts=8, top_k=2, expert_intermediate=14336),
    "qwen3-30b-a3b": _hf("Qwen/Qwen3-30B-A3B", vocab_size=151936, hidden=2048, layers=48, heads=32, kv_heads=4,
                         head_dim=128, intermediate=6144, rope_theta=1e6, norm_eps=1e-6, experts=128, top_k=8,
                         expert_intermediate=768, norm_topk=True, qk_norm=True),
    "qwen3-235b-a22b": _hf("Qwen/Qwen3-235B-A22B", vocab_size=151936, hidden=4096, layers=94, heads=64, kv_heads=4,
                           head_dim=128, intermediate=12288, rope_theta=1e6, norm_eps=1e-6, experts=128, top_k=8,
                           expert_intermediate=1536, norm_topk=True, qk_norm=True),
    # Small shapes for CPU runs and tests (not public models): 32 experts of which 4 a token.
    "small-moe": MoEConfig(vocab_size=32000, hidden=768, layers=8, heads=12, kv_heads=4, intermediate=2048,
                           experts=32, top_k=4, expert_intermediate=512, norm_topk=True,
                           source="infercost CPU benchmark shape"),
    "tiny-moe": MoEConfig(vocab_size=512, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                          experts=8, top_k=2, expert_intermediate=32, norm_topk=True, source="infercost test shape"),
}
