"""Energy per token at a stated boundary.

Two boundaries: "board", the accelerator's own counter (NVML, amd-smi) as a run measured it
(bench/llm.py); and "node (estimate)", the whole machine's share from a sourced all-in power per
accelerator (hardware/node_power.csv: server, networking and cooling included) held for the
measured time. The second is an estimate, never a measurement, and says so with its formula.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import catalog

NODE_POWER_FILE = Path(__file__).with_name("node_power.csv")


@dataclass(frozen=True)
class NodePower:
    accelerator: str
    all_in_kw: float
    as_of: str
    source: str


@lru_cache(maxsize=None)
def _table() -> dict[str, NodePower]:
    with NODE_POWER_FILE.open() as f:
        rows = [NodePower(r["accelerator"], float(r["all_in_kw"]), r["as_of"], r["source"]) for r in csv.DictReader(f)]
    known = {a.name for a in catalog.all_entries()}
    for r in rows:  # a table error, caught by the tests: each row names a catalog entry
        if r.accelerator not in known or not r.all_in_kw > 0 or not r.source:
            raise ValueError(f"{NODE_POWER_FILE.name}: row {r.accelerator!r} names no catalog entry or lacks kW/source")
    return {r.accelerator: r for r in rows}


@lru_cache(maxsize=4096)  # (one lookup per device name, not per record of a large folder)
def node_power(device: str | None) -> NodePower | None:
    """The all-in power row of a device as a backend names it, or None."""
    acc = catalog.lookup(device or "")
    return _table().get(acc.name) if acc else None


def node_estimate(device: str | None, chips: int, tokens_per_s: float | None) -> dict:
    """Tokens per MW-hour of the whole node, estimated: tokens/s x 3600 / (all-in kW x chips / 1000).
    {} where the device has no sourced all-in power or the rate is missing."""
    row = node_power(device)
    if row is None or not tokens_per_s:
        return {}
    kw = row.all_in_kw * chips
    return {"tokens_per_mwh_node_estimate": tokens_per_s * 3600 / (kw / 1000),
            "energy_boundary_node": f"node (estimate): {row.all_in_kw:g} kW all-in a chip x {chips} "
                                    f"(hardware/node_power.csv, {row.as_of})"}
