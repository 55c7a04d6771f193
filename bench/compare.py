"""Compare two sets of results case by case: a throughput change with a 95% bootstrap interval,
a p-value, a verdict, and a failure when a case got slower beyond a threshold (for CI).

Throughput ratio = mean time per call of BASE / of NEW (> 1: NEW is faster). The interval and
p-value come from resampling each side's raw per-call times. The cost ratio at a fixed price is
the inverse. Cases whose device or library versions differ are flagged, not compared.
"""

from __future__ import annotations

import json

import numpy as np

RESAMPLES = 4000


def latest(records: list[dict]) -> dict[str, dict]:
    """The last record of each case (a later run of a case replaces an earlier one)."""
    return {r["key"]: r for r in records}


def usable(r: dict) -> bool:
    return r.get("status") == "ok" and bool(r.get("raw_times_s"))


def fingerprint(r: dict) -> dict:
    v = (r.get("provenance") or {}).get("versions") or {}
    keep = ("torch", "jax", "jaxlib", "runtime", "driver", "numpy", "platform_version")
    return {"device": r["case"].get("device"), **{k: v.get(k) for k in keep if v.get(k) is not None}}


def ratio_test(base: np.ndarray, new: np.ndarray, seed: int = 0) -> tuple[float, float, float, float]:
    """(ratio, ci_low, ci_high, two-sided p) for mean(base) / mean(new)."""
    rng = np.random.default_rng(seed)
    b = rng.choice(base, size=(RESAMPLES, base.size)).mean(axis=1)
    n = rng.choice(new, size=(RESAMPLES, new.size)).mean(axis=1)
    ratios = b / n
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    p = 2 * min(np.mean(ratios <= 1.0), np.mean(ratios >= 1.0))
    return float(base.mean() / new.mean()), float(lo), float(hi), float(min(1.0, max(p, 1 / RESAMPLES)))


def compare(base: list[dict], new: list[dict], threshold: float = 0.05) -> list[dict]:
    b, n = latest(base), latest(new)
    rows = []
    for key in [k for k in n if k in b]:
        rb, rn = b[key], n[key]
        c = rn["case"]
        row = {"key": key, "backend": c["backend"], "device": c.get("device"), "workload": c["workload"],
               "shape": c.get("shape"), "dtype": c["dtype"]}
        skipped = [side for side, r in (("BASE", rb), ("NEW", rn)) if r.get("status") == "skipped"]
        if skipped:  # could not run there (does not fit, no such dtype): nothing to compare, nothing broken
            if len(skipped) == 1:
                rows.append({**row, "verdict": "missing", "note": f"skipped in {skipped[0]}"})
            continue
        broken = [(side, r) for side, r in (("BASE", rb), ("NEW", rn)) if not usable(r)]
        if broken:  # an invalid or failed measurement is an error, never "no change"
            side, r = broken[0]
            rows.append({**row, "verdict": "error",
                         "note": f"{side} is {r.get('status')}: {'; '.join(r.get('reasons') or [])}"[:160]})
            continue
        fb, fn = fingerprint(rb), fingerprint(rn)
        if fb != fn:
            diff = ", ".join(f"{k} {fb.get(k)} -> {fn.get(k)}" for k in sorted(set(fb) | set(fn)) if fb.get(k) != fn.get(k))
            rows.append({**row, "verdict": "flagged", "note": f"not comparable: {diff}"})
            continue
        ratio, lo, hi, p = ratio_test(np.asarray(rb["raw_times_s"]), np.asarray(rn["raw_times_s"]))
        if hi < 1 - threshold:
            verdict = "slower"
        elif lo > 1 + threshold:
            verdict = "faster"
        else:
            verdict = "no change"
        rows.append({**row, "throughput_ratio": ratio, "ci95_low": lo, "ci95_high": hi, "p_value": p,
                     "cost_ratio": 1 / ratio, "verdict": verdict, "note": ""})
    for key in sorted(b.keys() - n.keys()):
        rows.append({"key": key, "backend": b[key]["case"]["backend"], "device": b[key]["case"].get("device"),
                     "workload": b[key]["case"]["workload"], "shape": b[key]["case"].get("shape"),
                     "dtype": b[key]["case"]["dtype"], "verdict": "missing", "note": "in BASE only"})
    return rows


def short_key(key: str) -> str:
    k = json.loads(key)
    return f"{k['backend']} {k['workload']} {k['params']} {k['dtype']}"
