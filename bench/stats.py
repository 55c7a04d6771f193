"""Summary statistics of raw per-call times."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


def summarize(times: list[float], seed: int = 0) -> dict:
    """n, mean, median, min, max, std, p10/p90, IQR, and 95% bootstrap CIs of the median and
    of the mean (the mean is the steady-state time per call that throughput is reported from)."""
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no times to summarize")
    q10, q25, q50, q75, q90 = np.percentile(t, [10, 25, 50, 75, 90])
    rng = np.random.default_rng(seed)
    resamples = rng.choice(t, size=(BOOTSTRAP_RESAMPLES, t.size), replace=True)
    lo, hi = np.percentile(np.median(resamples, axis=1), [2.5, 97.5])
    mean_lo, mean_hi = np.percentile(resamples.mean(axis=1), [2.5, 97.5])
    return {
        "n": int(t.size),
        "mean": float(t.mean()),
        "median": float(q50),
        "min": float(t.min()),
        "max": float(t.max()),
        "std": float(t.std(ddof=1)) if t.size > 1 else 0.0,
        "p10": float(q10),
        "p90": float(q90),
        "iqr": float(q75 - q25),
        "ci95_low": float(lo),
        "ci95_high": float(hi),
        "mean_ci95_low": float(min(mean_lo, t.mean())),
        "mean_ci95_high": float(max(mean_hi, t.mean())),
    }


def rate_interval(work: float, stats: dict) -> tuple[float, float]:
    """The 95% interval of a rate (work per second) from the interval of the mean time a call: the
    slow end of the time is the low end of the rate."""
    return work / stats["mean_ci95_high"], work / stats["mean_ci95_low"]
