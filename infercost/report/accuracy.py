"""How far to trust an estimate: for every measured transformer case on a device the catalog
knows, the roofline estimate of the same cell (model, device, devices, batch, context, dtype,
quantization) beside the measurement, and per device kind the mean absolute error of
estimate / measured against 1. The estimate is an upper bound at 100% of the catalog's ceilings,
so a ratio above 1 is the share of the ceiling the measurement missed."""

from __future__ import annotations

from infercost.hardware import catalog
from infercost.hardware.estimate import estimate
from infercost.kernels.dtypes import QuantSpec
from infercost.kernels.models import resolve_config

NOTE = ("Each measured case on a catalogued device beside the roofline estimate of the same cell (100% of the "
        "catalog's ceilings: an upper bound, so a ratio above 1 is the share of the ceiling not reached); "
        "how far to trust an estimate for hardware not at hand, by device kind:")
HEAD = ["device", "model", "workload", "batch", "context", "dtype", "estimated tok/s", "measured tok/s",
        "estimate / measured"]


def cells(records: list[dict]) -> list[dict]:
    """One entry per valid prefill or decode record that an estimate can be made for."""
    out, estimates = [], {}  # one estimate a cell, however many records measured it
    for r in records:
        c = r["case"]
        if r.get("status") != "ok" or c["workload"] not in ("prefill", "decode"):
            continue
        acc = catalog.lookup(c.get("device") or "")
        if acc is None:  # CPUs and devices the catalog does not hold: nothing to estimate from
            continue
        p = c["params"]
        prefill = c["workload"] == "prefill"
        cell = (acc.name, p.get("model"), c.get("devices") or 1, p.get("batch"), p.get("tokens"), c["dtype"], prefill,
                QuantSpec.of(p))
        if cell not in estimates:
            try:
                # a device that is part of a chip is estimated as its share of the chip, as it is measured
                estimates[cell] = estimate(resolve_config(p["model"]), acc.per_device(), c.get("devices") or 1,
                                           p["batch"], p["tokens"] + (0 if prefill else 1), c["dtype"],
                                           prompt=p["tokens"] if prefill else None, quant=QuantSpec.of(p))
            except (ValueError, KeyError, OSError):
                estimates[cell] = None  # a model or dtype the estimator cannot take (a config gone, no peak)
        e = estimates[cell]
        if e is None:
            continue
        key = "input_tokens_per_s" if prefill else "output_tokens_per_s"
        measured = r["metrics"].get(key)
        if not measured:
            continue
        out.append({"kind": c.get("device_kind") or "accelerator", "device": c.get("device"), "model": p["model"],
                    "workload": c["workload"], "batch": p["batch"], "context": p["tokens"], "dtype": c["dtype"],
                    "estimated": e[key], "measured": measured, "ratio": e[key] / measured})
    return out


def table_rows(found: list[dict]) -> list[list[str]]:
    return [[f["device"], f["model"], f["workload"], str(f["batch"]), str(f["context"]), f["dtype"],
             f"{f['estimated']:.4g}", f"{f['measured']:.4g}", f"{f['ratio']:.2f}"] for f in found]


def errors_by_kind(found: list[dict]) -> dict[str, tuple[float, int]]:
    """{device kind: (mean |estimate / measured - 1|, cells)}."""
    by: dict = {}
    for f in found:
        by.setdefault(f["kind"], []).append(abs(f["ratio"] - 1))
    return {kind: (sum(v) / len(v), len(v)) for kind, v in sorted(by.items())}


def summary(found: list[dict]) -> str:
    return "; ".join(f"{kind}: mean absolute error {err:.0%} over {n} cell(s)"
                     for kind, (err, n) in errors_by_kind(found).items())
