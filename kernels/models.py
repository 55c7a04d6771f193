"""Every model the harness knows, by family: built-in names, and the config.json files each family
reads (dense Llama-family decoders in kernels/llama.py, mixtures of experts in kernels/moe.py)."""

from __future__ import annotations

from pathlib import Path

from . import gptoss, llama, mla, moe
from .llama import LlamaConfig

CONFIGS = {**llama.CONFIGS, **moe.CONFIGS, **mla.CONFIGS, **gptoss.CONFIGS}
BUILT = (*moe.MOE_TYPES, "deepseek_v3", "gpt_oss")  # mixture-of-experts model_types read here
# Keys of a config.json that make a model a mixture of experts, whichever its family.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def from_hf_config(path: str | Path) -> LlamaConfig:
    """The configuration a Hugging Face config.json describes, or a one-line ValueError (a
    mixture of experts of a family not built here is refused, never read as a dense model)."""
    c = llama.read_config_json(path)
    kind = c.get("model_type")
    try:
        fields = llama.llama_fields(c)
        if kind in moe.MOE_TYPES:
            return moe.MoEConfig(**fields, **moe.moe_fields(c, fields["layers"]), source=str(path))
        if kind == "deepseek_v3":  # DeepSeek-V3, Kimi-K2
            if fields.pop("qkv_bias"):
                raise ValueError("attention_bias is not built for MLA attention")
            return mla.DeepseekConfig(**{**fields, **mla.deepseek_fields(c)}, source=str(path))
        if kind == "gpt_oss":
            return gptoss.GptOssConfig(**fields, **gptoss.gptoss_fields(c), source=str(path))
        if any(c.get(k) for k in EXPERT_KEYS):
            raise ValueError(f"model_type {kind!r} is a mixture of experts that infercost does not build yet "
                             f"(it builds {', '.join(BUILT)})")
        return LlamaConfig(**fields, source=str(path))
    except KeyError as e:
        raise ValueError(f"model config {path} lacks the field {e.args[0]!r}") from None
    except (TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"model config {path}: {str(e).splitlines()[0][:200]}") from None


def resolve_config(name: str) -> LlamaConfig:
    """A named configuration, or a path to a config.json."""
    if name in CONFIGS:
        return CONFIGS[name]
    if name.endswith(".json") or Path(name).is_file():
        return from_hf_config(name)
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(CONFIGS)}, or a path to a config.json")


def read_weights(path: str | Path, cfg: LlamaConfig) -> dict:
    """A checkpoint's tensors (a .safetensors file or folder) by the names `cfg` gives its
    parameters, each present with its shape (checked before anything is built), nothing else."""
    tensors = {moe.canonical_name(k): v for k, v in llama.read_safetensors(path).items()}
    llama.check_weights(cfg, tensors)
    return {name: tensors[name] for name in cfg.param_shapes()}
