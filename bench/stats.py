"""Summary statistics of raw per-call times."""

from __future__ import annotations

import math

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


MIN_FOR_P99 = 100  # fewer requests than this have no 99th percentile worth a number


def percentiles(values: list[float]) -> dict:
    """p50, p90, p99 and the mean of latencies (None each where there are none), each percentile
    with its 95% interval from order statistics (distribution-free: the ranks a binomial(n, q)
    count of values below the quantile spans, by its normal approximation). A p99 from fewer
    than MIN_FOR_P99 values is refused (None), and p99_refused says why."""
    n = len(values)
    if not n:
        return {"p50": None, "p90": None, "p99": None, "mean": None}
    xs = np.sort(np.asarray(values, dtype=np.float64))
    out: dict = {"n": n, "mean": float(xs.mean())}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        if name == "p99" and n < MIN_FOR_P99:
            out.update(p99=None, p99_refused=f"a p99 needs at least {MIN_FOR_P99} requests; there were {n}")
            continue
        out[name] = float(np.percentile(xs, q * 100))
        half = 1.96 * math.sqrt(n * q * (1 - q))
        lo, hi = max(1, math.floor(n * q - half)), min(n, math.ceil(n * q + half) + 1)
        out[f"{name}_ci95"] = [float(xs[lo - 1]), float(xs[hi - 1])]
    return out


def slice_rate_interval(rate: float, per_slice: list[float], seed: int = 0, resamples: int = 1000) -> tuple[float, float]:
    """The 95% bootstrap interval of a rate measured over a window cut into equal slices, from
    what arrived in each slice (a serving level's tokens as they streamed): the slices are
    resampled, and each resample scales the rate by its total over the measured total. What
    varies over time is what the interval shows: resampling requests instead gave zero width
    whenever every request asked for the same number of tokens."""
    per = np.asarray(per_slice, dtype=np.float64)
    total = per.sum()
    if per.size < 2 or total <= 0:
        return rate, rate
    rng = np.random.default_rng(seed)
    sums = per[rng.integers(0, per.size, (resamples, per.size))].sum(axis=1) / total * rate
    lo, hi = np.percentile(sums, [2.5, 97.5])
    return float(lo), float(hi)


def rate_interval(work: float, stats: dict) -> tuple[float, float]:
    """The 95% interval of a rate (work per second) from the interval of the mean time a call: the
    slow end of the time is the low end of the rate."""
    return work / stats["mean_ci95_high"], work / stats["mean_ci95_low"]
