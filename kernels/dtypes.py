"""Dtype names shared by every backend, with their sizes and the check tolerance each earns, and
the formats a model can store in fewer bits than it computes in (QuantSpec)."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
# Bytes an element takes where it is stored: the compute dtypes, and the one-byte formats that
# quantized weights and KV caches use (and that the estimator may assume for compute).
STORED_ITEMSIZE = {**ITEMSIZE, "fp8": 1, "int8": 1}
# A quantized KV cache keeps a float32 scale for each head and position, of keys and of values.
KV_SCALE_ITEMSIZE = 4
QUANT_MODES = ("int8", "fp8")  # how weights (and, in byte counts and estimates, KV caches) can be stored
KV_MODES = ("int8",)           # how a measured KV cache can be stored (int8, a scale a head and position)


@dataclass(frozen=True)
class QuantSpec:
    """What a model stores in fewer bits than it computes in: its weights (int8, fp8: per-output-
    channel scales) and its KV cache (int8: a scale a head and position). One value from the flags
    to the plan, the adapters, the byte counts and the record; the default stores nothing quantized.
    In a case's params it is written "quant" (weights) and "kv_cache", as records always had it."""
    weights: str | None = None
    kv: str | None = None

    def __post_init__(self):
        if self.weights is not None and self.weights not in QUANT_MODES:
            raise ValueError(f"unknown weight quantization {self.weights!r}; valid: {', '.join(QUANT_MODES)}")
        if self.kv is not None and self.kv not in QUANT_MODES:
            raise ValueError(f"unknown KV cache format {self.kv!r}; valid: {', '.join(QUANT_MODES)}")

    def __bool__(self) -> bool:
        return self.weights is not None or self.kv is not None

    @classmethod
    def of(cls, params: dict) -> "QuantSpec":
        """The spec a case's params (or a record's) carry."""
        return cls(params.get("quant"), params.get("kv_cache"))

    def params(self) -> dict:
        """The case params that say it (only what is quantized)."""
        return {**({"quant": self.weights} if self.weights else {}), **({"kv_cache": self.kv} if self.kv else {})}

    def weight_dtype(self, dtype: str) -> str:
        return self.weights or dtype

    def kv_dtype(self, dtype: str) -> str:
        return self.kv or dtype


NO_QUANT = QuantSpec()


# Largest accepted relative error against the float64 reference (see the README): about
# 100x each format's unit roundoff accumulated over long sums, and well under the error a
# wrong kernel makes.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 2e-2}


def tolerance(dtype: str, tf32: bool = False) -> float:
    return TOLERANCE["tf32"] if (dtype == "float32" and tf32) else TOLERANCE[dtype]

# Whole-model logits against float64 (max |error| / max |logit|): errors compound through
# the layers, so 16-bit formats get more room than a single matmul.
MODEL_TOLERANCE = {"float32": 1e-4, "tf32": 1e-2, "float16": 2e-2, "bfloat16": 6e-2}
# Decode steps with int8 activations against the reference that rounds them the same way: a value
# lying on a rounding boundary of the Q8 quantization goes either way in float32 and float64 (their
# inputs differ by ~1e-7), and one such value moved small-moe's logits by 3.6e-3 to 6.1e-3 of the
# largest (2 layers, prompts of 5 and 4 steps; the same for every int8 dot, plain C++ too); a wrong
# scale, block or expert moves them by far more.
INT8_ACTIVATION_TOLERANCE = 2e-2


def model_tolerance(dtype: str, tf32: bool = False) -> float:
    return MODEL_TOLERANCE["tf32"] if (dtype == "float32" and tf32) else MODEL_TOLERANCE[dtype]
