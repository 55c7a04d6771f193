"""Price tables: dated, sourced rows of what an instance costs per hour, and a SkyPilot importer.

A row: provider, instance_type, accelerator, accelerator_count, region, pricing (the basis: see
BASES), usd_per_hour for the whole instance, vcpus, memory_gib, as_of, source. A row may leave
usd_per_hour empty where no public price exists (its source says so): it is listed, and asking
to price with it is refused. Users add their own tables in the same format; every figure keeps
its row, and a row older than MAX_AGE_DAYS is marked STALE wherever it is named.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

PRICES_FILE = Path(__file__).with_name("prices.csv")
# The bases a price row can be on, and what each means (README: "Price bases").
BASES = {
    "on-demand": "a cloud's list price per hour, no commitment",
    "spot": "a cloud's interruptible capacity (preemptible), per hour",
    "1-year": "a cloud's price per hour under a 1-year commitment",
    "3-year": "a cloud's price per hour under a 3-year commitment",
    "owned": "your own hardware: purchase over its life plus power (a row, or --owned)",
    "market-owning": "a market TCO model's cost of owning and running the accelerator at scale, per hour",
    "market-retail": "a market TCO model's going rental rate per accelerator-hour",
}
PRICINGS = tuple(BASES)
COLUMNS = ("provider", "instance_type", "accelerator", "accelerator_count", "region", "pricing",
           "usd_per_hour", "vcpus", "memory_gib", "as_of", "source")
REQUIRED = ("provider", "instance_type", "accelerator_count", "pricing", "usd_per_hour", "as_of", "source")
MAX_AGE_DAYS = 180


class PriceTableError(ValueError):
    """An invalid table; the message names the file, line and field."""


@dataclass(frozen=True)
class Price:
    provider: str
    instance_type: str
    accelerator: str
    accelerator_count: int
    region: str
    pricing: str
    usd_per_hour: float | None   # None: no public price (the source says so); never priced from
    vcpus: float | None
    memory_gib: float | None
    as_of: str
    source: str
    file: str = ""
    line: int = 0

    @property
    def instance(self) -> str:
        return f"{self.provider}:{self.instance_type}"

    def label(self) -> str:
        """How a cost figure names the row it used: basis, amount, date (STALE past MAX_AGE_DAYS)."""
        stale = f", STALE: {self.age_days()} days old" if self.stale() else ""
        return (f"{self.instance} {self.region or ''} {self.pricing} ${self.usd_per_hour:g}/h "
                f"(as of {self.as_of}{stale}; {Path(self.file).name}:{self.line})").replace("  ", " ")

    def age_days(self, today: date | None = None) -> int:
        return ((today or date.today()) - date.fromisoformat(self.as_of)).days

    def stale(self, today: date | None = None) -> bool:
        return self.age_days(today) > MAX_AGE_DAYS

    def per_accelerator_hour(self) -> float | None:
        """The price per accelerator-hour (the whole price for a CPU instance)."""
        if self.usd_per_hour is None:
            return None
        return self.usd_per_hour / self.accelerator_count if self.accelerator_count else self.usd_per_hour

    def as_dict(self) -> dict:
        return asdict(self)


def _number(text: str, where: str, field: str, integer: bool = False, optional: bool = False):
    text = (text or "").strip()
    if not text:
        if optional:
            return None
        raise PriceTableError(f"{where}: field {field!r} is empty")
    try:
        value = int(text) if integer else float(text)
    except (ValueError, OverflowError):
        raise PriceTableError(f"{where}: field {field!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise PriceTableError(f"{where}: field {field!r} is not finite: {text!r}")
    if value < 0:
        raise PriceTableError(f"{where}: field {field!r} is negative: {text}")
    return value


def _positive(value: float, where: str, field: str) -> float:
    if value <= 0:
        raise PriceTableError(f"{where}: field {field!r} is zero: an hour of an instance costs something")
    return value


NO_PUBLIC_PRICE = "no public price"  # how a row's source begins where usd_per_hour is left empty


def amount(row: dict, where: str) -> float | None:
    """usd_per_hour: positive and finite, or empty where the source says no public price exists
    (None: listed, never priced from); an unexplained gap is refused."""
    if (row.get("usd_per_hour") or "").strip():
        return _positive(_number(row["usd_per_hour"], where, "usd_per_hour"), where, "usd_per_hour")
    if not (row.get("source") or "").strip().lower().startswith(NO_PUBLIC_PRICE):
        raise PriceTableError(f"{where}: field 'usd_per_hour' is empty (a row without a price must have a "
                              f"source starting {NO_PUBLIC_PRICE!r}, saying why)")
    return None


def load(path: str | Path) -> list[Price]:
    """Read and validate a price table; raises PriceTableError naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise PriceTableError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PriceTableError(f"{path}: not a price table (not UTF-8 text)") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise PriceTableError(f"{path}:1: missing column(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    rows = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        pricing = (row.get("pricing") or "").strip()
        if pricing not in PRICINGS:
            raise PriceTableError(f"{where}: field 'pricing' is {pricing!r}; valid: {', '.join(PRICINGS)}")
        as_of = (row.get("as_of") or "").strip()
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise PriceTableError(f"{where}: field 'as_of' is {as_of!r}, not a date YYYY-MM-DD") from None
        for field in ("provider", "instance_type", "source"):
            if not (row.get(field) or "").strip():
                raise PriceTableError(f"{where}: field {field!r} is empty")
        rows.append(Price(
            provider=row["provider"].strip(), instance_type=row["instance_type"].strip(),
            accelerator=(row.get("accelerator") or "").strip(),
            accelerator_count=_number(row["accelerator_count"], where, "accelerator_count", integer=True),
            region=(row.get("region") or "").strip(), pricing=pricing,
            usd_per_hour=amount(row, where),
            vcpus=_number(row.get("vcpus"), where, "vcpus", optional=True),
            memory_gib=_number(row.get("memory_gib"), where, "memory_gib", optional=True),
            as_of=as_of, source=row["source"].strip(), file=str(path), line=reader.line_num,
        ))
    return rows


def load_all(extra: list[str | Path] = ()) -> list[Price]:
    """The built-in table plus the user's tables (their rows listed first, so they win)."""
    rows = []
    for path in extra:
        rows += load(path)
    return rows + load(PRICES_FILE)


def find(rows: list[Price], instance: str, pricing: str = "on-demand", region: str | None = None,
         max_age_days: int = MAX_AGE_DAYS) -> Price:
    """The row for "provider:instance_type" (first match; a region narrows it). Warns when old."""
    if ":" not in instance:
        raise PriceTableError(f"instance {instance!r} must be provider:instance_type, e.g. gcp:tpu-v6e-8")
    provider, itype = instance.split(":", 1)
    same = [r for r in rows if r.provider == provider and r.instance_type == itype]
    if not same:
        known = sorted({r.instance for r in rows if r.provider == provider})[:12]
        raise PriceTableError(f"no price for {instance}" + (f"; {provider} has: {', '.join(known)}" if known else
                                                             f"; providers: {', '.join(sorted({r.provider for r in rows}))}"))
    matching = [r for r in same if r.pricing == pricing and (region is None or r.region.startswith(region))]
    if not matching:
        have = sorted({f"{r.pricing} {r.region}" for r in same})
        raise PriceTableError(f"no {pricing} price for {instance}{' in ' + region if region else ''}; have: {', '.join(have)}")
    row = matching[0]
    if row.usd_per_hour is None:
        raise PriceTableError(f"{instance} has no {pricing} price: {row.source} ({Path(row.file).name}:{row.line}); "
                              "nothing is priced from it: give another --pricing or --price-per-hour")
    if row.age_days() > max_age_days:
        warnings.warn(f"the price of {instance} ({row.pricing}) is {row.age_days()} days old "
                      f"(as of {row.as_of}); refresh it with `infercost prices --from-skypilot`", stacklevel=2)
    return row


# -- SkyPilot catalogs --------------------------------------------------------------------

SKYPILOT_PLACEHOLDERS = {0.0, 700.0}


def tpu_chips(name: str) -> int | None:
    """Chips in a TPU slice: the suffix counts chips on v5e/v6e, TensorCores on v4/v5p."""
    if m := re.match(r"tpu7x-(\d+)$", name.strip().lower()):
        # Ironwood: two TensorCores a chip (cloud.google.com/tpu/docs/tpu7x); its slice names are
        # taken to count TensorCores as v5p's do (the page likens TPU7x to v5p): tpu7x-8 is 4 chips.
        return int(m.group(1)) // 2
    m = re.match(r"tpu-(v\d+[a-z]*?)(?:litepod|pod)?-(\d+)$", name.strip().lower())
    if not m:
        return None
    version, count = m.group(1), int(m.group(2))
    return count // 2 if version in ("v2", "v3", "v4", "v5p") else count


def _f(value: str) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if not math.isfinite(v) or v <= 0 or v in SKYPILOT_PLACEHOLDERS else v  # unknown


def import_skypilot(path: str | Path, provider: str, as_of: str, source: str | None = None) -> list[dict]:
    """Rows of our format from a SkyPilot catalog CSV (vms.csv), reading columns by header name.

    GCP prices accelerators separately from their host VM: a GPU row is summed with the host VM
    row of the same instance type and region. TPU slices become chip counts. Placeholder prices
    and spot prices equal to on-demand are dropped as unknown.
    """
    path = Path(path)
    try:
        date.fromisoformat(as_of)
    except (TypeError, ValueError):
        raise PriceTableError(f"--as-of {as_of!r} is not a date YYYY-MM-DD") from None
    try:
        reader = csv.DictReader(path.read_bytes().decode("utf-8").splitlines())
        need = {"InstanceType", "AcceleratorName", "AcceleratorCount", "Price", "SpotPrice", "Region"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise PriceTableError(f"{path}:1: not a SkyPilot catalog: missing column(s) {', '.join(sorted(missing))}")
        raw = list(reader)
    except UnicodeDecodeError:
        raise PriceTableError(f"{path}: not a SkyPilot catalog (not UTF-8 text)") from None
    except csv.Error as e:
        raise PriceTableError(f"{path}: not a SkyPilot catalog ({e})") from None
    raw = [r for r in raw if isinstance(r.get("InstanceType"), str) and isinstance(r.get("Region"), str)]
    source = source or f"SkyPilot catalog {path.name}"
    host = {}
    for r in raw:
        if not (r.get("AcceleratorName") or "").strip():
            host.setdefault((r["InstanceType"], r["Region"]), r)
    out, seen = [], set()
    for r in raw:
        acc = (r.get("AcceleratorName") or "").strip()
        itype = (r.get("InstanceType") or "").strip()
        count = _f(r.get("AcceleratorCount"))
        od, spot = _f(r.get("Price")), _f(r.get("SpotPrice"))
        chips = tpu_chips(acc) if acc.lower().startswith("tpu-") else None
        vcpus, memory = r.get("vCPUs", ""), r.get("MemoryGiB", "")
        if chips is not None:
            itype, count, acc = acc, chips, f"TPU {acc.split('-')[1].replace('litepod', 'e')}"
        elif provider == "gcp" and acc:
            vm = host.get((itype, r["Region"]))
            if vm is None:
                continue  # an accelerator with no host VM to run it: no whole-instance price
            od = od + _f(vm["Price"]) if od is not None and _f(vm["Price"]) is not None else None
            vcpus, memory = vm.get("vCPUs", ""), vm.get("MemoryGiB", "")
            vm_spot = _f(vm.get("SpotPrice"))
            spot = spot + vm_spot if spot is not None and vm_spot is not None else None
        elif provider == "gcp" and not acc and any(
                (x.get("InstanceType") == itype and (x.get("AcceleratorName") or "").strip()) for x in raw):
            continue  # a host VM row: priced only together with its accelerator
        if not itype:
            continue
        if spot is not None and od is not None and spot == od:
            spot = None
        key = (itype, r["Region"])
        if key in seen:
            continue  # zones of one region: keep the first
        seen.add(key)
        for pricing, price in (("on-demand", od), ("spot", spot)):
            if price is not None:
                out.append({"provider": provider, "instance_type": itype, "accelerator": acc,
                            "accelerator_count": int(count or 0), "region": r["Region"], "pricing": pricing,
                            "usd_per_hour": f"{price:.6g}", "vcpus": vcpus,
                            "memory_gib": memory, "as_of": as_of, "source": source})
    return out


def write(rows: list[dict], path: str | Path) -> None:
    """The rows as a price table at path (its folder made if missing), written whole or not at all."""
    import os
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".partial")
    with part.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(part, path)


def from_skypilot_cache(folder: Path) -> list[dict]:
    """Rows of every cloud's vms.csv in SkyPilot's catalog cache, each dated by when it was fetched."""
    rows = []
    for path in sorted(folder.glob("*/vms.csv")):
        fetched = date.fromtimestamp(path.stat().st_mtime).isoformat()
        source = f"SkyPilot catalog cache {path.parent.name}/vms.csv (fetched {fetched})"
        rows += import_skypilot(path, path.parent.name, fetched, source)
    return rows


def diff(new: list[dict], current: list[Price]) -> tuple[list[tuple[Price, dict]], list[dict]]:
    """Rows of `new` whose price differs from the current row of the same instance, region and
    pricing, and rows the current table does not have."""
    index = {(r.provider, r.instance_type, r.region, r.pricing): r for r in reversed(current)}
    changed, added = [], []
    for row in new:
        old = index.get((row["provider"], row["instance_type"], row["region"], row["pricing"]))
        if old is None:
            added.append(row)
        elif old.usd_per_hour is None or abs(old.usd_per_hour - float(row["usd_per_hour"])) > 1e-9 * old.usd_per_hour:
            changed.append((old, row))
    return changed, added
