"""A planned case: what to measure, on which adapter, in which dtype, over how many devices.

bench/plan.py makes every Case; the runner hands each to its backend's worker and to the record
as `as_dict()` (it crosses the process boundary as JSON, and records and reports have always
read this dict), so a Case is the typed form of the first fields of every record's "case"."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from infercost.kernels.dtypes import QuantSpec

from .layout import Layout

# The fields that say which case a record answers (what --resume matches on): not how many
# devices the plan counted or which kind of device, which follow from these.
KEY_FIELDS = ("backend", "workload", "params", "dtype", "tf32", "threads")


@dataclass(frozen=True)
class Case:
    backend: str
    workload: str                # "matmul", "collective", "prefill", "decode"
    params: dict = field(hash=False)  # the workload's own: shape, model, batch, tokens, quant, mesh...
    dtype: str = "float32"
    tf32: bool = False           # float32 matmuls as TF32 (CUDA only)
    threads: int | None = None   # CPU threads (None on accelerators)
    device_kind: str = "cpu"
    devices: int = 1             # devices the case spans (its layout's, or a collective's)

    @property
    def quant(self) -> QuantSpec:
        return QuantSpec.of(self.params)

    @property
    def layout(self) -> Layout:
        return Layout.of(self.params.get("mesh"))

    def as_dict(self) -> dict:
        return {"backend": self.backend, "workload": self.workload, "params": self.params, "dtype": self.dtype,
                "tf32": self.tf32, "threads": self.threads, "device_kind": self.device_kind, "devices": self.devices}

    @property
    def key(self) -> str:
        return case_key(self.as_dict())


def case_key(case: dict) -> str:
    """A stable identity for a requested case, from a Case's dict or a record's "case"."""
    return json.dumps({f: case.get(f) for f in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
