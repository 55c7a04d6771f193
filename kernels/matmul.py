"""The matmul C = A @ B: shapes, seeded inputs, FLOPs and bytes, and the float64 check.

The kernel itself is each adapter's `matmul()`; nothing here imports a framework."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import ITEMSIZE

# Above this many multiply-adds the float64 reference checks a seeded sample of rows and
# columns instead of the whole product (a full 8192^3 float64 product takes ~10 s on a CPU).
FULL_CHECK_MAX_MACS = 2**31
SAMPLE = 256


@dataclass(frozen=True)
class Matmul:
    m: int
    n: int
    k: int
    dtype: str

    kind = "matmul"

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.n}x{self.k}"

    def params(self) -> dict:
        return {"m": self.m, "n": self.n, "k": self.k}

    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def bytes(self) -> int:
        """Minimum bytes moved: read A and B once, write C once."""
        return ITEMSIZE[self.dtype] * (self.m * self.k + self.k * self.n + self.m * self.n)

    def inputs(self, seed: int) -> list[np.ndarray]:
        """Seeded standard-normal float32 inputs; every backend gets these same values."""
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((self.m, self.k), dtype=np.float32)
        b = rng.standard_normal((self.k, self.n), dtype=np.float32)
        return [a, b]

    def check(self, out: np.ndarray, inputs64: list[np.ndarray], seed: int) -> dict:
        """Compare a result (as float64) with the float64 product of the same (rounded) inputs.

        The error is max|C - C_ref| / max|C_ref| over the checked entries.
        """
        a, b = inputs64
        if out.shape != (self.m, self.n):
            return {"error": float("inf"), "checked": "shape", "finite": False,
                    "note": f"output shape {out.shape} != {(self.m, self.n)}"}
        finite = bool(np.isfinite(out).all())
        if self.m * self.n * self.k <= FULL_CHECK_MAX_MACS:
            ref, got, checked = a @ b, out, "full"
        else:
            rng = np.random.default_rng(seed + 1)
            rows = np.unique(np.r_[0, self.m - 1, rng.choice(self.m, min(SAMPLE, self.m), replace=False)])
            cols = np.unique(np.r_[0, self.n - 1, rng.choice(self.n, min(SAMPLE, self.n), replace=False)])
            ref = np.concatenate([(a[rows] @ b).ravel(), (a @ b[:, cols]).ravel()])
            got = np.concatenate([out[rows].ravel(), out[:, cols].ravel()])
            checked = f"{len(rows)} rows + {len(cols)} columns"
        scale = float(np.abs(ref).max()) or 1.0
        error = float(np.abs(got - ref).max()) / scale if finite else float("inf")
        return {"error": error, "checked": checked, "finite": finite}
