"""DeepSeek-V3 and Kimi-K2: a mixture of experts (kernels/moe.py, with DeepSeek's sigmoid router)
whose attention is multi-head latent attention (MLA, arXiv:2405.04434).

MLA caches, for each position, one compressed latent (kv_lora_rank wide, normed) and one shared
rotary key (qk_rope_head_dim wide) instead of every head's keys and values: 576 numbers a position
and layer for DeepSeek-V3, against 2 x 128 heads x 128-192 for its heads' keys and values. The
heads' keys and values are the latent times kv_b_proj. Prefill expands them (the "naive" form);
decode folds kv_b_proj into the query and the output instead (the "absorbed" form: scores are
q_nope W_UK . latent + q_rope . k_rope, the output latent is probs . latent, then W_UV), so a step
reads the latent cache once and never expands it. The work model counts that form.

Framework-free, like kernels/llama.py: configuration, parameters by Hugging Face name, work model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .dtypes import NO_QUANT, STORED_ITEMSIZE, QuantSpec
from .llama import MAX_AXIS, yarn_mscale
from .moe import MoEConfig

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class DeepseekConfig(MoEConfig):
    family: ClassVar[str] = "mla"
    q_lora_rank: int = 0          # 0: queries projected from the hidden state directly (no low rank)
    kv_lora_rank: int = 1
    qk_nope_head_dim: int = 1     # each head's query/key part without rotation (head_dim: the rotary part)
    v_head_dim: int = 1
    rope_interleave: bool = True  # the rotary dims in (even, odd) pairs, as DeepSeek's checkpoints hold them

    def __post_init__(self):
        super().__post_init__()
        if self.head_dim is None:
            raise ValueError("model config: qk_rope_head_dim is missing")
        for name in ("kv_lora_rank", "qk_nope_head_dim", "v_head_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_AXIS:
                raise ValueError(f"model config: {name} must be a positive whole number, not {v!r}")
        q = self.q_lora_rank
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= MAX_AXIS:
            raise ValueError(f"model config: q_lora_rank must be a whole number (or null), not {q!r}")
        if self.kv_lora_rank > self.hidden or q > self.hidden:
            raise ValueError(f"model config: a low rank (q {q}, kv {self.kv_lora_rank}) wider than the hidden "
                             f"size {self.hidden} compresses nothing")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.hd

    @property
    def attention_scale(self) -> float:
        """The softmax scale: 1/sqrt(query width), times YaRN's mscale squared where it applies."""
        s, scale = self.rope_scaling or {}, self.qk_head_dim ** -0.5
        if s.get("rope_type", s.get("type")) == "yarn" and s.get("mscale_all_dim"):
            scale *= yarn_mscale(s["factor"], s["mscale_all_dim"]) ** 2
        return scale

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """As the mixture of experts', with each layer's q/k/v/o replaced by MLA's projections."""
        h, n, r, c = self.hidden, self.heads, self.q_lora_rank, self.kv_lora_rank
        out = {}
        for name, shape in super().param_shapes().items():
            parts = name.split(".")
            if len(parts) < 5 or parts[3] != "self_attn" or parts[4] not in ATTENTION + ("q_norm", "k_norm"):
                out[name] = shape
                continue
            if parts[4] != "q_proj":
                continue
            p = f"model.layers.{parts[2]}.self_attn."
            if r:
                out[p + "q_a_proj.weight"] = (r, h)
                out[p + "q_a_layernorm.weight"] = (r,)
                out[p + "q_b_proj.weight"] = (n * self.qk_head_dim, r)
            else:
                out[p + "q_proj.weight"] = (n * self.qk_head_dim, h)
            out[p + "kv_a_proj_with_mqa.weight"] = (c + self.hd, h)
            out[p + "kv_a_layernorm.weight"] = (c,)
            out[p + "kv_b_proj.weight"] = (n * (self.qk_nope_head_dim + self.v_head_dim), c)
            out[p + "o_proj.weight"] = (h, n * self.v_head_dim)
        return out

    def attention_params(self) -> int:
        h, n, r, c = self.hidden, self.heads, self.q_lora_rank, self.kv_lora_rank
        q = r * h + n * self.qk_head_dim * r if r else n * self.qk_head_dim * h
        return q + (c + self.hd) * h + n * (self.qk_nope_head_dim + self.v_head_dim) * c + h * n * self.v_head_dim

    def attention_flops(self) -> int:
        """Per new token and attended position, every layer, in the absorbed form: each head's
        scores over the latent and the rotary key, and its sum of latents."""
        return 2 * self.layers * self.heads * (2 * self.kv_lora_rank + self.hd)

    def kv_position_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """The latent and the rotary key of one position, every layer (no quantized form here)."""
        if quant.kv:
            raise ValueError("an MLA latent cache is not quantized here (--kv-cache is for multi-head caches)")
        return self.layers * (self.kv_lora_rank + self.hd) * STORED_ITEMSIZE[dtype]


def deepseek_fields(c: dict) -> dict:
    """The MLA and router fields of a DeepSeek-V3 / Kimi-K2 config.json (model_type deepseek_v3)."""
    layers = c["num_hidden_layers"]
    method = c.get("topk_method", "noaux_tc")
    if method != "noaux_tc":
        raise ValueError(f"topk_method {method!r} is not built (DeepSeek-V3's noaux_tc is)")
    shared = c.get("n_shared_experts") or 0
    return dict(experts=c["n_routed_experts"], top_k=c["num_experts_per_tok"],
                expert_intermediate=c["moe_intermediate_size"], norm_topk=bool(c.get("norm_topk_prob", True)),
                shared_intermediate=shared * c["moe_intermediate_size"], shared_gate=False,
                dense_layers=tuple(range(min(c.get("first_k_dense_replace", 0), layers))),
                scoring=c.get("scoring_func", "sigmoid"), score_bias=True, groups=c.get("n_group") or 1,
                topk_groups=c.get("topk_group") or 1, routed_scale=c.get("routed_scaling_factor", 1.0),
                q_lora_rank=c.get("q_lora_rank") or 0, kv_lora_rank=c["kv_lora_rank"],
                qk_nope_head_dim=c["qk_nope_head_dim"], v_head_dim=c["v_head_dim"],
                head_dim=c["qk_rope_head_dim"], rope_interleave=bool(c.get("rope_interleave", True)))


CONFIGS = {
    # From the public config.json; 671B parameters, 37B active (the model card's figures; the test
    # holds the count to them). Kimi-K2 is the same architecture at 1T/32B.
    "deepseek-v3": DeepseekConfig(
        source="huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json", vocab_size=129280, hidden=7168,
        layers=61, heads=128, kv_heads=128, intermediate=18432, rope_theta=10000.0, norm_eps=1e-6,
        rope_scaling={"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        experts=256, top_k=8, expert_intermediate=2048, norm_topk=True, shared_intermediate=2048,
        shared_gate=False, dense_layers=(0, 1, 2), scoring="sigmoid", score_bias=True, groups=8, topk_groups=4,
        routed_scale=2.5, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, v_head_dim=128, head_dim=64),
    # A small DeepSeek-shaped model for CPU runs and tests (not a public model).
    "tiny-mla": DeepseekConfig(
        source="infercost test shape", vocab_size=512, hidden=64, layers=3, heads=4, kv_heads=4, intermediate=128,
        experts=8, top_k=2, expert_intermediate=32, shared_intermediate=32, shared_gate=False, dense_layers=(0,),
        scoring="sigmoid", score_bias=True, groups=4, topk_groups=2, routed_scale=2.5, q_lora_rank=32,
        kv_lora_rank=32, qk_nope_head_dim=16, v_head_dim=16, head_dim=8),
}
