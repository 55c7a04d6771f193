"""The accelerator catalog: dense spec ceilings per device, each row with a source and date.

Peaks are dense (no sparsity) in decimal units: 1 TFLOP/s = 1e12 FLOP/s, 1 TB/s = 1e12 B/s.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("accelerators.csv")


@dataclass(frozen=True)
class Accelerator:
    name: str
    vendor: str
    memory_gb: float | None
    bandwidth_tbs: float | None
    peak_tflops: dict  # dtype name -> dense TFLOP/s (None when unknown)
    tdp_w: float | None
    as_of: str
    source: str
    interconnect_gbs: float | None = None  # per chip, one direction: NVLink, ICI, Infinity Fabric
    devices_per_chip: int = 1  # devices a framework sees on one chip (TPU7x: each TensorCore is one)
    # Hosts: a GPU host joins its chips by the interconnect above and other hosts by its network
    # (per chip, one direction); a TPU slice's ICI spans its hosts, so TPUs leave both empty.
    chips_a_host: int | None = None
    scale_out_gbs: float | None = None

    def peak(self, dtype: str, tf32: bool = False) -> float | None:
        """Dense peak FLOP/s for a matmul in this dtype, or None when unknown."""
        key = "tf32" if (dtype == "float32" and tf32) else dtype
        tflops = self.peak_tflops.get(key)
        return tflops * 1e12 if tflops else None

    @property
    def bandwidth(self) -> float | None:
        return self.bandwidth_tbs * 1e12 if self.bandwidth_tbs else None

    def per_device(self) -> "Accelerator":
        """The share of a chip one device is: its peaks, bandwidth and memory over devices_per_chip
        (the ceilings a single device's MFU and MBU are measured against)."""
        n = self.devices_per_chip
        if n == 1:
            return self
        part = lambda v: v / n if v else v
        return replace(self, name=f"{self.name} (one of {n} devices a chip)", memory_gb=part(self.memory_gb),
                       bandwidth_tbs=part(self.bandwidth_tbs), peak_tflops={k: part(v) for k, v in self.peak_tflops.items()},
                       tdp_w=part(self.tdp_w), interconnect_gbs=part(self.interconnect_gbs), devices_per_chip=1)

    @property
    def interconnect(self) -> float | None:
        """Bytes/s a chip sends to its peers (one direction), for collectives."""
        return self.interconnect_gbs * 1e9 if self.interconnect_gbs else None


def _num(text: str) -> float | None:
    return float(text) if text.strip() else None


@lru_cache(maxsize=None)
def _rows() -> tuple[tuple[re.Pattern, Accelerator], ...]:
    rows = []
    with CATALOG_FILE.open(newline="") as f:
        for row in csv.DictReader(f):
            peaks = {
                key.removeprefix("peak_tflops_"): _num(value)
                for key, value in row.items() if key.startswith("peak_tflops_")
            }
            acc = Accelerator(
                name=row["name"], vendor=row["vendor"], memory_gb=_num(row["memory_gb"]),
                bandwidth_tbs=_num(row["bandwidth_tbs"]), peak_tflops=peaks,
                tdp_w=_num(row["tdp_w"]), as_of=row["as_of"], source=row["source"],
                interconnect_gbs=_num(row.get("interconnect_gbs") or ""),
                devices_per_chip=int(row.get("devices_per_chip") or 1),
                chips_a_host=int(row["chips_a_host"]) if (row.get("chips_a_host") or "").strip() else None,
                scale_out_gbs=_num(row.get("scale_out_gbs") or ""),
            )
            rows.append((re.compile(row["match"], re.IGNORECASE), acc))
    return tuple(rows)


def all_entries() -> list[Accelerator]:
    return [acc for _, acc in _rows()]


@lru_cache(maxsize=4096)  # a report looks up the device of every record of a large folder
def lookup(device_name: str) -> Accelerator | None:
    """The catalog entry for a device name as a backend reports it, or None if unknown."""
    if not device_name:
        return None
    for pattern, acc in _rows():
        if pattern.search(device_name):
            return acc
    return None


def chip_fields(device_name: str, devices: int) -> dict:
    """How a record's devices map to physical chips, for an accelerator the catalog knows: chips
    used (whole chips: a run on one of a chip's two devices still occupies, and pays for, the
    chip) and devices a chip. {} for a device it does not know (a CPU)."""
    acc = lookup(device_name)
    if acc is None:
        return {}
    return {"chips": -(-devices // acc.devices_per_chip), "devices_per_chip": acc.devices_per_chip}


def find(name: str) -> Accelerator | None:
    """A catalog entry by its own name or by a device name as a backend reports it."""
    return lookup(name) or next((a for a in all_entries() if a.name.lower() == name.lower()), None)


# Who makes an accelerator, by the names price tables give it (many rows name a chip the catalog
# has no entry for: A10G, T4, GH200, B300). The first pattern that matches wins.
VENDOR_PATTERNS = (
    (r"^(Google )?TPU", "Google"),
    (r"^(AWS )?(Trainium|Inferentia)", "AWS"),
    (r"^(AMD )?(Instinct )?MI\d", "AMD"),
    (r"^(Intel )?Gaudi", "Intel"),
    (r"^(NVIDIA )?(A\d|B\d|GB\d|GH\d|H\d|L\d|T4|V100|RTX)", "NVIDIA"),
)


def vendor_of(accelerator: str) -> str | None:
    """The vendor of an accelerator named as a price row names it, or None when unknown."""
    acc = find(accelerator) if accelerator else None
    if acc is not None:
        return acc.vendor
    return next((vendor for pattern, vendor in VENDOR_PATTERNS if re.match(pattern, accelerator or "", re.IGNORECASE)),
                None)
