"""The Llama-family decoder, framework-free: configurations with real public shapes, analytic
FLOPs and bytes, seeded weights that are identical on every backend, safetensors loading,
and rotary tables.

Parameter names are Hugging Face's (`model.layers.0.self_attn.q_proj.weight`, ...), so a
`LlamaForCausalLM` checkpoint loads as is. Linear weights are [out, in] as in HF.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, replace
from typing import ClassVar
from pathlib import Path

import numpy as np

from .dtypes import KV_SCALE_ITEMSIZE, NO_QUANT, STORED_ITEMSIZE, QuantSpec


# -- tensor parallelism, declared once for both frameworks (as jax-llm-examples does) -------
# Each array's logical axes, and the mesh axis each logical axis is split over: "tp" splits the
# attention heads, the MLP's intermediate dimension and the vocabulary (column-parallel q/k/v,
# gate/up and LM head; row-parallel o and down, one all-reduce after each); "dp" splits the
# batch; activations and everything else are replicated. KV heads are split when there are at
# least as many as chips, replicated otherwise (JAX: all of them on every chip; torch: each chip
# holds the one its query heads read, tp_slices()).
RULES = {"batch": "dp", "heads": "tp", "kv_heads": "tp", "ffn": "tp", "vocab": "tp",
         "table": None, "embed": None, "seq": None, "head_dim": None}
AXES = {
    "embed": ("table", "embed"),       # the embedding gather reads replicated rows
    "head": ("vocab", "embed"),
    "norm": ("embed",), "ln1": ("embed",), "ln2": ("embed",),
    "wq": ("heads", "embed"), "wk": ("kv_heads", "embed"), "wv": ("kv_heads", "embed"),
    "bq": ("heads",), "bk": ("kv_heads",), "bv": ("kv_heads",),
    "wo": ("embed", "heads"),
    "wg": ("ffn", "embed"), "wu": ("ffn", "embed"), "w2": ("embed", "ffn"),
    "cache": ("batch", "kv_heads", "seq", "head_dim"), "cache_scale": ("batch", "kv_heads", "seq"),
    "tokens": ("batch", "seq"), "activation": ("batch", "seq", "embed"), "logits": ("batch", "seq", None),
}
HF_NAMES = {"embed_tokens.weight": "embed", "lm_head.weight": "head", "model.norm.weight": "norm",
            "input_layernorm.weight": "ln1", "post_attention_layernorm.weight": "ln2",
            "q_proj.weight": "wq", "k_proj.weight": "wk", "v_proj.weight": "wv", "q_proj.bias": "bq",
            "k_proj.bias": "bk", "v_proj.bias": "bv", "o_proj.weight": "wo", "gate_proj.weight": "wg",
            "up_proj.weight": "wu", "down_proj.weight": "w2"}


def hf_axes(name: str) -> tuple:
    """The logical axes of a tensor by its HF name; () (replicated) for one no rule names (a
    router, a sink, an MLA projection)."""
    return next((AXES[v] for k, v in HF_NAMES.items() if name.endswith(k)), ())


def tp_slices(cfg: "LlamaConfig", name: str, shape: tuple, rank: int, tp: int) -> tuple[slice, ...]:
    """The part of an HF tensor that chip `rank` of `tp` holds: every dimension whose logical axis
    RULES puts on "tp" cut into tp equal contiguous parts. With fewer KV heads than chips (tp a
    multiple of them, as vLLM requires) each chip holds the one KV head its query heads read."""
    out = []
    for axis, size in zip(hf_axes(name), shape):
        if RULES.get(axis) != "tp" or tp == 1:
            out.append(slice(None))
        elif axis == "kv_heads" and cfg.kv_heads % tp:
            head = rank // (tp // cfg.kv_heads)
            out.append(slice(head * cfg.hd, (head + 1) * cfg.hd))
        else:
            part = size // tp
            out.append(slice(rank * part, (rank + 1) * part))
    return tuple(out) + (slice(None),) * (len(shape) - len(out))  # a replicated tensor whole


def tp_unsupported(cfg: "LlamaConfig", tp: int) -> str | None:
    """Why this model cannot be split over tp chips, or None."""
    if cfg.heads % tp or cfg.intermediate % tp or cfg.vocab_size % tp:
        return (f"tp={tp} must divide the {cfg.heads} heads, the MLP's {cfg.intermediate} columns and the "
                f"{cfg.vocab_size}-token vocabulary")
    if cfg.kv_heads % tp and tp % cfg.kv_heads:
        return f"tp={tp} must divide the {cfg.kv_heads} KV heads or be a multiple of them"
    return None


# Sizes beyond any model, refused before anything is built from them (a loop over 10**30 layers
# would never end): an axis a framework indexes with 32-bit integers, a depth 100x today's largest.
MAX_AXIS = 2**31 - 1
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class LlamaConfig:
    family: ClassVar[str] = "dense"   # which kernels run it (an adapter's Capabilities.families)
    experts_model: ClassVar[bool] = False  # a mixture of experts (kernels/moe.py)
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    head_dim: int | None = None
    qkv_bias: bool = False            # Qwen2 has biases on q, k and v
    rope_scaling: dict | None = None  # Llama 3.1+ "llama3" frequency scaling
    source: str = ""

    def __post_init__(self):
        """Refuse a configuration no model can have (a config.json is user input)."""
        for name in ("vocab_size", "hidden", "layers", "heads", "kv_heads", "intermediate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"model config: {name} must be a positive whole number, not {v!r}")
            if v > (MAX_LAYERS if name == "layers" else MAX_AXIS):
                raise ValueError(f"model config: {name} {v} is beyond any model "
                                 f"(at most {MAX_LAYERS if name == 'layers' else MAX_AXIS})")
        if self.head_dim is not None and (isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int)
                                          or self.head_dim <= 0 or self.head_dim % 2 or self.head_dim > MAX_AXIS):
            raise ValueError(f"model config: head_dim must be a positive even number, not {self.head_dim!r}")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"model config: hidden size {self.hidden} is not divisible by {self.heads} heads")
        if self.hd % 2:
            raise ValueError(f"model config: head size {self.hd} must be even (rotary embedding)")
        if self.heads % self.kv_heads:
            raise ValueError(f"model config: {self.heads} heads are not divisible by {self.kv_heads} KV heads")
        for name in ("rope_theta", "norm_eps"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"model config: {name} must be a positive finite number, not {v!r}")

    def moe_layer(self, layer: int) -> bool:
        """Whether a layer's MLP is a mixture of experts (never, in a dense model)."""
        return False

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def as_dict(self) -> dict:
        return asdict(self)

    # -- sizes ------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter by its Hugging Face name, in a fixed order."""
        h, hd, i = self.hidden, self.hd, self.intermediate
        shapes = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            shapes[p + "input_layernorm.weight"] = (h,)
            shapes[p + "self_attn.q_proj.weight"] = (self.heads * hd, h)
            shapes[p + "self_attn.k_proj.weight"] = (self.kv_heads * hd, h)
            shapes[p + "self_attn.v_proj.weight"] = (self.kv_heads * hd, h)
            if self.qkv_bias:
                shapes[p + "self_attn.q_proj.bias"] = (self.heads * hd,)
                shapes[p + "self_attn.k_proj.bias"] = (self.kv_heads * hd,)
                shapes[p + "self_attn.v_proj.bias"] = (self.kv_heads * hd,)
            shapes[p + "self_attn.o_proj.weight"] = (h, self.heads * hd)
            shapes[p + "post_attention_layernorm.weight"] = (h,)
            shapes[p + "mlp.gate_proj.weight"] = (i, h)
            shapes[p + "mlp.up_proj.weight"] = (i, h)
            shapes[p + "mlp.down_proj.weight"] = (h, i)
        shapes["model.norm.weight"] = (h,)
        if not self.tie_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    # -- bytes: the one count of what is stored and what a step reads (records, MBU, roofline,
    # fit checks and the estimator all call these) -----------------------------------------
    def linear_names(self) -> list[str]:
        """The [out, in] matrices a token multiplies by: every projection and the LM head (its own
        tensor even when tied to the embedding). kernels/quant.py quantizes exactly these."""
        return [n for n in self.param_shapes() if n.endswith("_proj.weight")] + ["lm_head.weight"]

    def tensor_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> dict[str, int]:
        """Bytes of every stored tensor: in `dtype`, or, for the tensors kernels/quant.py quantizes
        (`quant.weights` "int8" or "fp8"), one byte a value plus a scale a row in the compute dtype.
        A tied LM head quantized is a tensor of its own (the embedding gather keeps floats)."""
        item, weights = STORED_ITEMSIZE[dtype], quant.weights
        shapes = dict(self.param_shapes())
        quantized = set(self.linear_names()) if weights else set()
        if weights and self.tie_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, self.hidden)
        return {n: (math.prod(s) * STORED_ITEMSIZE[weights] + s[0] * item if n in quantized else math.prod(s) * item)
                for n, s in shapes.items()}

    def stored_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """Every weight as stored, the embedding table included (what memory must hold)."""
        return sum(self.tensor_bytes(dtype, quant).values())

    def streamed_weight_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """Weights a forward pass reads in full: every tensor but the embedding table (a gather reads
        only its rows), biases and norms included; a tied float head reads the table as the head."""
        t = self.tensor_bytes(dtype, quant)
        table = t.pop("model.embed_tokens.weight")
        return sum(t.values()) + (table if "lm_head.weight" not in t else 0)

    def kv_position_bytes(self, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """KV cache bytes of one position of one sequence over every layer: keys and values in
        `dtype`, or one byte each plus a float32 scale per head (`quant.kv` "int8" or "fp8")."""
        kv = quant.kv
        per_head = self.hd * STORED_ITEMSIZE[kv] + KV_SCALE_ITEMSIZE if kv else self.hd * STORED_ITEMSIZE[dtype]
        return 2 * self.layers * self.kv_heads * per_head

    def kv_bytes(self, batch: int, seq: int, dtype: str, quant: QuantSpec = NO_QUANT) -> int:
        """Bytes of a KV cache holding `seq` positions for `batch` sequences."""
        return batch * seq * self.kv_position_bytes(dtype, quant)

    # -- work -------------------------------------------------------------------------
    def matmul_params(self) -> int:
        """Parameters that take part in matmuls per token (all but the embedding gather and norms;
        the LM head counts even when tied, since the logits multiply by it)."""
        per_layer = self.attention_params() + 3 * self.hidden * self.intermediate
        return self.layers * per_layer + self.vocab_size * self.hidden

    def attention_params(self) -> int:
        """Weights of one layer's attention projections (q, k, v, o)."""
        return self.hidden * self.hd * (2 * self.heads + 2 * self.kv_heads)

    def attention_flops(self) -> int:
        """FLOPs of QK^T and AV for one new token against one attended position, every layer."""
        return 4 * self.layers * self.heads * self.hd

    def flops(self, batch: int, new_tokens: int, attended: int, logit_tokens: int | None = None) -> int:
        """Matmul FLOPs of one forward pass as executed: 2 per weight per token, the LM head
        only for the `logit_tokens` per sequence that produce logits (default all), plus QK^T
        and AV over `attended` keys for each new token (prefill attends the prompt as a full,
        causally masked square; decode attends the whole static cache)."""
        tokens = batch * new_tokens
        logit_tokens = new_tokens if logit_tokens is None else logit_tokens
        head = self.vocab_size * self.hidden
        attention = self.attention_flops() * attended * tokens
        return 2 * (self.matmul_params() - head) * tokens + 2 * head * batch * logit_tokens + attention

    def bytes(self, batch: int, new_tokens: int, cache_len: int, dtype: str,
              logit_tokens: int | None = None, quant: QuantSpec = NO_QUANT) -> int:
        """Minimum bytes moved by one forward pass: every weight but the embedding read once (as
        stored: quantized ones with their scales), the embedding rows gathered, the KV cache read
        over `cache_len` positions and the new positions written (as stored), logits out (float32)."""
        tokens = batch * new_tokens
        embed_rows = tokens * self.hidden * STORED_ITEMSIZE[dtype]
        kv_moved = self.kv_bytes(batch, cache_len + new_tokens, dtype, quant)
        logits = batch * (new_tokens if logit_tokens is None else logit_tokens) * self.vocab_size * 4
        return self.streamed_weight_bytes(dtype, quant) + embed_rows + kv_moved + logits


def _hf(name: str, **kw) -> LlamaConfig:
    return LlamaConfig(source=f"huggingface.co/{name}/blob/main/config.json", **kw)


LLAMA3_SCALING = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}

CONFIGS = {
    # Real shapes, from each model's public config.json (source field).
    "llama-3.2-1b": _hf("meta-llama/Llama-3.2-1B", vocab_size=128256, hidden=2048, layers=16, heads=32,
                        kv_heads=8, intermediate=8192, rope_theta=500000.0, tie_embeddings=True, head_dim=64,
                        rope_scaling={**LLAMA3_SCALING, "factor": 32.0}),
    "llama-3.2-3b": _hf("meta-llama/Llama-3.2-3B", vocab_size=128256, hidden=3072, layers=28, heads=24,
                        kv_heads=8, intermediate=8192, rope_theta=500000.0, tie_embeddings=True, head_dim=128,
                        rope_scaling={**LLAMA3_SCALING, "factor": 32.0}),
    "llama-3.1-8b": _hf("meta-llama/Llama-3.1-8B", vocab_size=128256, hidden=4096, layers=32, heads=32,
                        kv_heads=8, intermediate=14336, rope_theta=500000.0,
                        rope_scaling={**LLAMA3_SCALING, "factor": 8.0}),
    "llama-3.1-70b": _hf("meta-llama/Llama-3.1-70B", vocab_size=128256, hidden=8192, layers=80, heads=64,
                         kv_heads=8, intermediate=28672, rope_theta=500000.0,
                         rope_scaling={**LLAMA3_SCALING, "factor": 8.0}),
    "mistral-7b": _hf("mistralai/Mistral-7B-v0.3", vocab_size=32768, hidden=4096, layers=32, heads=32,
                      kv_heads=8, intermediate=14336, rope_theta=1000000.0),
    "qwen2.5-7b": _hf("Qwen/Qwen2.5-7B", vocab_size=152064, hidden=3584, layers=28, heads=28, kv_heads=4,
                      intermediate=18944, rope_theta=1000000.0, norm_eps=1e-6, qkv_bias=True),
    "llama-7b": _hf("huggyllama/llama-7b", vocab_size=32000, hidden=4096, layers=32, heads=32, kv_heads=32,
                    intermediate=11008, norm_eps=1e-6),
    # Small shapes for CPU runs and tests (not public models).
    "small-125m": LlamaConfig(vocab_size=32000, hidden=768, layers=12, heads=12, kv_heads=4,
                              intermediate=2048, source="infercost CPU benchmark shape"),
    "tiny": LlamaConfig(vocab_size=512, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                        source="infercost test shape"),
}


def read_config_json(path: str | Path) -> dict:
    """A Hugging Face config.json as a dict, or a one-line ValueError."""
    path = Path(path)
    try:
        c = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"cannot read model config {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(c, dict):
        raise ValueError(f"model config {path} is not a JSON object")
    return c


def llama_fields(c: dict) -> dict:
    """The dense decoder's fields of a Hugging Face config.json (Llama, Mistral, Qwen2 and the
    attention and norms of the mixture-of-experts families that share them)."""
    heads = c["num_attention_heads"]
    # transformers >= 5 writes "rope_parameters" (theta and scaling together); older
    # files have "rope_theta" and "rope_scaling".
    rope = c.get("rope_parameters") or {}
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    scaling = c.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    return dict(
        vocab_size=c["vocab_size"], hidden=c["hidden_size"], layers=c["num_hidden_layers"],
        heads=heads, kv_heads=heads if c.get("num_key_value_heads") is None else c["num_key_value_heads"],
        intermediate=c["intermediate_size"], rope_theta=float(theta),
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        head_dim=c.get("head_dim"),
        qkv_bias=c.get("model_type") in ("qwen2", "qwen2_moe") or bool(c.get("attention_bias", False)),
        rope_scaling=scaling,
    )


def truncated(cfg: LlamaConfig, layers: int) -> LlamaConfig:
    """The same widths with fewer layers: checks every real matmul shape at a fraction of the cost."""
    n = min(cfg.layers, layers)
    dense = {"dense_layers": tuple(i for i in cfg.dense_layers if i < n)} if hasattr(cfg, "dense_layers") else {}
    return replace(cfg, layers=n, **dense)


# -- rotary embedding ---------------------------------------------------------------------

def inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Rotary inverse frequencies in float64, with Llama 3's scaling when configured."""
    freq = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.hd, 2, dtype=np.float64) / cfg.hd)
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("default", "llama3", "yarn"):
        raise ValueError(f"rope scaling {kind!r} is not supported (default, llama3 and yarn are)")
    if kind == "yarn":
        return yarn_freq(cfg, freq, scaling)
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / freq
        scaled = np.where(wavelen > old / low, freq / factor, freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        freq = np.where(medium, smoothed, scaled)
    return freq


def yarn_freq(cfg: LlamaConfig, freq: np.ndarray, scaling: dict) -> np.ndarray:
    """YaRN (arXiv:2309.00071), as HF computes it: dimensions that turn fewer than beta_slow times
    over the original context are interpolated (frequency / factor), those that turn more than
    beta_fast times kept, a linear ramp between."""
    factor, old = float(scaling["factor"]), scaling["original_max_position_embeddings"]
    fast, slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1
    dim, base = cfg.hd, cfg.rope_theta
    at = lambda turns: dim * math.log(old / (turns * 2 * math.pi)) / (2 * math.log(base))
    low, high = at(fast), at(slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / ((high - low) or 0.001), 0, 1)
    return freq / factor * ramp + freq * (1 - ramp)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_magnitude(cfg: LlamaConfig) -> float:
    """What YaRN multiplies cos and sin by (its attention factor; 1 without YaRN)."""
    s = cfg.rope_scaling or {}
    if s.get("rope_type", s.get("type")) != "yarn":
        return 1.0
    if s.get("attention_factor") is not None:
        return float(s["attention_factor"])
    if s.get("mscale") and s.get("mscale_all_dim"):
        return yarn_mscale(s["factor"], s["mscale"]) / yarn_mscale(s["factor"], s["mscale_all_dim"])
    return yarn_mscale(s["factor"])


def rope_tables(cfg: LlamaConfig, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [positions, head_dim], in the split-half layout HF's Llama uses."""
    angles = np.outer(np.arange(positions, dtype=np.float64), inv_freq(cfg))
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles) * rope_magnitude(cfg), np.sin(angles) * rope_magnitude(cfg)


# -- weights ------------------------------------------------------------------------------
# Seeded weights come from a counter-based hash of (seed, tensor index, element index), so
# numpy, torch and JAX produce bit-identical values, each on its own device, without
# generating billions of numbers on the host for a large model.

GOLDEN, M1, M2 = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35


def tensor_salt(seed: int, index: int) -> int:
    return (seed * 0x27D4EB2F + (index + 1) * 0x165667B1) & 0xFFFFFFFF


def weight_init(name: str) -> tuple[float, float]:
    """(offset, half-width) of the uniform distribution a parameter is drawn from.

    Half-widths are powers of two, so offset + width * u is one rounding in float32 on every
    framework (an exact product, then one add): bit-identical weights everywhere.
    """
    if name.endswith("norm.weight"):
        return 1.0, 2.0**-3  # around one, but not all ones, so the norms are really tested
    return 0.0, 2.0**-5      # std 0.018, near HF's initializer_range of 0.02


def hashed_uniform_numpy(n: int, salt: int) -> np.ndarray:
    """float64 values in [-1, 1) from the hash; the reference for the framework versions."""
    x = (np.arange(n, dtype=np.uint64) * GOLDEN + salt) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * M1) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * M2) & 0xFFFFFFFF
    x ^= x >> 16
    return (x >> 8).astype(np.float64) * 2.0**-23 - 1.0


def seeded_weights_numpy(cfg: LlamaConfig, seed: int) -> dict[str, np.ndarray]:
    """All parameters as numpy float64 arrays holding the float32 values the backends build."""
    out = {}
    for index, (name, shape) in enumerate(cfg.param_shapes().items()):
        offset, width = weight_init(name)
        u = hashed_uniform_numpy(math.prod(shape), tensor_salt(seed, index))
        # exact in float64, then rounded once to float32, as the frameworks compute it
        out[name] = (offset + width * u).astype(np.float32).astype(np.float64).reshape(shape)
    return out


# -- safetensors --------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file (or every such file in a folder), memory-mapped.

    The format is an 8-byte header length, a JSON header, then raw little-endian data; no
    pickle is ever loaded. bfloat16 is read through ml_dtypes (a JAX dependency).
    """
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no .safetensors files in {path}")
    tensors = {}
    for f in files:
        try:
            raw = np.memmap(f, dtype=np.uint8, mode="r")
            if raw.size < 8:
                raise ValueError("shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw[:8].tobytes())
            if n > raw.size - 8:
                raise ValueError(f"header of {n} bytes is longer than the file")
            header = json.loads(raw[8:8 + n].tobytes().decode("utf-8"))
        except (OSError, ValueError, struct.error, RecursionError) as e:
            raise ValueError(f"{f} is not a safetensors file: {str(e).splitlines()[0][:200]}") from None
        entries = tensor_entries(f, header, raw.size - 8 - n)
        base = 8 + n
        for name, (np_dtype, shape, start, end) in entries.items():
            tensors[name] = raw[base + start:base + end].view(np_dtype).reshape(shape)
    return tensors


def tensor_entries(f, header, data_len: int) -> dict:
    """name -> (dtype, shape, start, end), every entry checked against the file before any
    tensor is read: a known dtype, whole non-negative dimensions, offsets inside the data, sized
    to shape x dtype, and no two tensors sharing bytes."""
    if not isinstance(header, dict):
        raise ValueError(f"{f}: the safetensors header is not an object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise ValueError(f"{f}: tensor {name} lacks dtype, shape or data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype == "BF16":
            import ml_dtypes
            np_dtype = ml_dtypes.bfloat16
        elif isinstance(dtype, str) and dtype in SAFETENSORS_DTYPES:
            np_dtype = SAFETENSORS_DTYPES[dtype]
        else:
            raise ValueError(f"{f}: tensor {name} has unsupported dtype {dtype!r} (read: F32, F16, BF16, F64; "
                             "quantized checkpoints are not read)")
        whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
        if not isinstance(shape, list) or not all(whole(d) for d in shape):
            raise ValueError(f"{f}: tensor {name} has shape {shape!r}, not a list of whole numbers >= 0")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(whole(o) for o in offsets) \
                or offsets[0] > offsets[1] or offsets[1] > data_len:
            raise ValueError(f"{f}: tensor {name} has data_offsets {offsets!r} outside the {data_len} data bytes")
        need = math.prod(shape) * np.dtype(np_dtype).itemsize
        if offsets[1] - offsets[0] != need:
            raise ValueError(f"{f}: tensor {name} holds {offsets[1] - offsets[0]} bytes, its shape {shape} "
                             f"x {dtype} needs {need}")
        out[name] = (np_dtype, tuple(shape), offsets[0], offsets[1])
    spans = sorted((s, e, name) for name, (_, _, s, e) in out.items() if e > s)
    for (_, e1, a), (s2, _, b) in zip(spans, spans[1:]):
        if s2 < e1:
            raise ValueError(f"{f}: tensors {a} and {b} overlap in the file")
    return out


def check_weights(cfg: LlamaConfig, tensors: dict) -> None:
    """Every parameter the configuration needs is present with its shape."""
    for name, shape in cfg.param_shapes().items():
        if name not in tensors:
            raise ValueError(f"weights lack {name}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, config needs {shape}")
