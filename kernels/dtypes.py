"""Dtype names shared by every backend, with their sizes and the check tolerance each earns."""

DTYPES = ("float32", "bfloat16", "float16")

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2}

# Largest accepted relative error against the float64 reference (see the README): about
# 100x each format's unit roundoff accumulated over long sums, and well under the error a
# wrong kernel makes.
TOLERANCE = {"float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 2e-2}


def tolerance(dtype: str, tf32: bool = False) -> float:
    return TOLERANCE["tf32"] if (dtype == "float32" and tf32) else TOLERANCE[dtype]
