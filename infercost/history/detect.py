"""Change points of one series: ruptures' PELT search over a least-squares cost (KernelCPD with a
linear kernel, its C implementation), each candidate then kept only where Welch's t-test between
the segments on either side finds a difference (p < ALPHA), weakest first, as Apache Otava keeps
E-Divisive's candidates. bench/perf/history_detector.py measured this against MongoDB's
E-Divisive means (signal-processing-algorithms) and ruptures' other searches; see the README.

The series is divided by its median, and the penalty scales with its noise, estimated from the
median absolute step between neighbours (a level shift moves one step, not the median).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 8    # fewer: "not enough points" for a verdict
MIN_SEGMENT = 3   # points on each side of a change
ALPHA = 0.01      # the t-test's level for keeping a change
PENALTY = 3.0     # x 2 sigma^2 ln(n): BIC's penalty, tripled (measured: no false change in 200 flat series)


@dataclass(frozen=True)
class Change:
    index: int      # the first point after the change
    before: float   # the mean of the segment before it
    after: float    # the mean of the segment after it
    size: float     # after / before - 1
    low: float      # the size's 95% interval (Welch's interval of the difference, over `before`)
    high: float
    p: float        # Welch's t-test


def noise(y: np.ndarray) -> float:
    """The noise's standard deviation, from the median absolute difference of neighbours."""
    return float(np.median(np.abs(np.diff(y)))) / 0.6745 / math.sqrt(2)


def changes(values) -> list[Change]:
    """The significant changes of a series (oldest first); [] for a series under MIN_POINTS."""
    import ruptures
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < MIN_POINTS:
        return []
    scale = float(np.median(np.abs(x))) or 1.0
    y = x / scale
    sigma = max(noise(y), 1e-9)
    cuts = ruptures.KernelCPD(kernel="linear", min_size=MIN_SEGMENT).fit(y).predict(pen=PENALTY * 2 * sigma ** 2 * math.log(n))[:-1]
    while True:
        tested = [welch(x, ([0] + cuts)[i], c, (cuts + [n])[i + 1]) for i, c in enumerate(cuts)]
        weak = [i for i, t in enumerate(tested) if t.p >= ALPHA]
        if not weak:
            return tested
        cuts.pop(max(weak, key=lambda i: tested[i].p))


def welch(x: np.ndarray, start: int, at: int, end: int) -> Change:
    """The change at `at` between the segments x[start:at] and x[at:end], with Welch's t-test."""
    from scipy import stats
    a, b = x[start:at], x[at:end]
    before, after = float(a.mean()), float(b.mean())
    if a.std() == 0 and b.std() == 0:  # flat segments: a difference is certain, none is none
        p, low, high = (0.0 if before != after else 1.0), after - before, after - before
    else:
        t = stats.ttest_ind(b, a, equal_var=False)
        ci = t.confidence_interval(0.95)
        p, low, high = float(t.pvalue), float(ci.low), float(ci.high)
    base = before if before else 1.0
    return Change(int(at), before, after, after / base - 1, low / base, high / base, p)
