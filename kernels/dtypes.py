"""Dtype names shared by every backend, with their sizes and the check tolerance each earns."""

DTYPES = ("float32", "bfloat16", "float16")

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}
# Bytes an element takes where it is stored: the compute dtypes, and the one-byte formats that
# quantized weights and KV caches use (and that the estimator may assume for compute).
STORED_ITEMSIZE = {**ITEMSIZE, "fp8": 1, "int8": 1}
# A quantized KV cache keeps a float32 scale for each head and position, of keys and of values.
KV_SCALE_ITEMSIZE = 4

# Largest accepted relative error against the float64 reference (see the README): about
# 100x each format's unit roundoff accumulated over long sums, and well under the error a
# wrong kernel makes.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 2e-2}


def tolerance(dtype: str, tf32: bool = False) -> float:
    return TOLERANCE["tf32"] if (dtype == "float32" and tf32) else TOLERANCE[dtype]

# Whole-model logits against float64 (max |error| / max |logit|): errors compound through
# the layers, so 16-bit formats get more room than a single matmul.
MODEL_TOLERANCE = {"float32": 1e-4, "tf32": 1e-2, "float16": 2e-2, "bfloat16": 6e-2}


def model_tolerance(dtype: str, tf32: bool = False) -> float:
    return MODEL_TOLERANCE["tf32"] if (dtype == "float32" and tf32) else MODEL_TOLERANCE[dtype]
