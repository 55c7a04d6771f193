"""gpt-oss (OpenAI's open-weight mixture of experts): the dense decoder's grouped-query attention
with biases, a learned "sink" logit per head that takes part in every softmax, and a sliding
window on every other layer; a router with a bias whose top-k logits are softmaxed; experts with
biases and a clamped SwiGLU (gate clamped above at `swiglu_limit`, up within +-limit,
out = (up + 1) * gate * sigmoid(alpha * gate)).

Experts are stored as the Hub stores them: one fused tensor a layer, gate and up interleaved
column by column ("mlp.experts.gate_up_proj" [experts, hidden, 2 x width], its bias, "down_proj"
[experts, width, hidden] and its bias); the router is "mlp.router". The Hub's gpt-oss-120b holds
its experts in MXFP4 (blocks and scales): such a checkpoint is refused by name (no tensor
"gate_up_proj") until an MXFP4 reader exists.

Framework-free, like kernels/moe.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .dtypes import NO_QUANT, QuantSpec
from .moe import MoEConfig


@dataclass(frozen=True)
class GptOssConfig(MoEConfig):
    family: ClassVar[str] = "gptoss"
    sliding_window: int = 128
    sliding_layers: tuple[int, ...] = field(default=())  # layers that attend to the last sliding_window positions
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0

    def __post_init__(self):
        super().__post_init__()
        w = self.sliding_window
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
            raise ValueError(f"model config: sliding_window must be a positive whole number, not {w!r}")
        for i in self.sliding_layers:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.layers:
                raise ValueError(f"model config: sliding layer {i!r} is not a layer of the {self.layers}")
        for name in ("swiglu_alpha", "swiglu_limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6:
                raise ValueError(f"model config: {name} must be a positive number, not {v!r}")

    def window(self, layer: int) -> int | None:
        return self.sliding_window if layer in self.sliding_layers else None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        h, e, i = self.hidden, self.experts, self.expert_intermediate
        out = {}
        for name, shape in super().param_shapes().items():
            parts = name.split(".")
            if name.endswith("self_attn.o_proj.weight"):
                out[name] = shape
                out[name.replace("weight", "bias")] = (h,)
                out[name.replace("o_proj.weight", "sinks")] = (self.heads,)
            elif name.endswith("mlp.gate.weight"):
                p = name[:-len("gate.weight")]
                out[p + "router.weight"] = (e, h)
                out[p + "router.bias"] = (e,)
                out[p + "experts.gate_up_proj"] = (e, h, 2 * i)
                out[p + "experts.gate_up_proj_bias"] = (e, 2 * i)
                out[p + "experts.down_proj"] = (e, i, h)
                out[p + "experts.down_proj_bias"] = (e, h)
            elif len(parts) > 5 and parts[4] == "experts":
                continue  # held fused above
            else:
                out[name] = shape
        return out

    def expert_params(self) -> int:
        return 3 * self.hidden * self.expert_intermediate + 2 * self.expert_intermediate + self.hidden

    def expert_bytes(self, sizes: dict[str, int]) -> float:
        first = next(i for i in range(self.layers) if self.moe_layer(i))
        p = f"model.layers.{first}.mlp.experts."
        return sum(sizes[p + n] for n in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")) / self.experts

    def matmul_params(self) -> int:
        return super().matmul_params() - self.moe_layers * self.top_k * (2 * self.expert_intermediate + self.hidden)

    def attended(self, layer: int, positions: int) -> int:
        w = self.window(layer)
        return positions if w is None else min(w, positions)

    def flops(self, batch: int, new_tokens: int, attended: int, logit_tokens: int | None = None) -> int:
        """As the dense decoder's, a sliding layer's attention over at most its window (an upper
        bound for a prompt longer than the window, whose early tokens attend fewer)."""
        full = super().flops(batch, new_tokens, attended, logit_tokens)
        per_layer = self.attention_flops() // self.layers * batch * new_tokens
        return full - sum(per_layer * (attended - self.attended(i, attended)) for i in range(self.layers))

    def kv_bytes(self, batch: int, seq: int, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """The cache positions attention needs: a sliding layer's last window, a full layer's all."""
        per_layer = self.kv_position_bytes(dtype, quant) // self.layers
        return batch * per_layer * sum(self.attended(i, seq) for i in range(self.layers))


def gptoss_fields(c: dict) -> dict:
    """The gpt-oss fields of a Hugging Face config.json (model_type gpt_oss)."""
    layers = c["num_hidden_layers"]
    kinds = c.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    if not isinstance(kinds, list) or len(kinds) != layers or set(kinds) - {"sliding_attention", "full_attention"}:
        raise ValueError(f"layer_types must list sliding_attention or full_attention for each of the {layers} layers")
    return dict(experts=c["num_local_experts"], top_k=c["num_experts_per_tok"], expert_intermediate=c["intermediate_size"],
                scoring="topk_softmax", sliding_window=c["sliding_window"],
                sliding_layers=tuple(i for i, k in enumerate(kinds) if k == "sliding_attention"),
                swiglu_alpha=c.get("swiglu_alpha", 1.702), swiglu_limit=c.get("swiglu_limit", 7.0))


CONFIGS = {
    # From the public config.json: 117B parameters, 5.1B active (the model card's figures).
    "gpt-oss-120b": GptOssConfig(
        source="huggingface.co/openai/gpt-oss-120b/blob/main/config.json", vocab_size=201088, hidden=2880, layers=36,
        heads=64, kv_heads=8, head_dim=64, intermediate=2880, rope_theta=150000.0, norm_eps=1e-5, qkv_bias=True,
        rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                      "original_max_position_embeddings": 4096},
        experts=128, top_k=4, expert_intermediate=2880, scoring="topk_softmax", sliding_window=128,
        sliding_layers=tuple(range(0, 36, 2))),
    "tiny-gptoss": GptOssConfig(
        source="infercost test shape", vocab_size=512, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16,
        intermediate=32, qkv_bias=True, experts=8, top_k=2, expert_intermediate=32, scoring="topk_softmax",
        sliding_window=4, sliding_layers=(0,)),
}
