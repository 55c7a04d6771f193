"""Validity gates: each looks at one aspect of a measurement and names what is wrong with it.

A gate returns a list of (level, reason) findings; level "invalid" withholds the throughput,
"warn" keeps it with a note. Thresholds follow shared measurement practice (see README).
"""

from __future__ import annotations

import numpy as np

NOISY_WARN = 0.10     # IQR / median
NOISY_INVALID = 0.25
PEAK_MARGIN = 1.05    # above 1.05x the dense peak is physically impossible (no sync?)
MIN_SCALING = 1.5     # twice the calls must take at least 1.5x the time
TREND_WARN = 0.03     # first-third vs last-third median drift
FIRST_CALL_WARN = 5.0 # first timed call / median
OVERHEAD_WARN = 1.2   # back-to-back per-call time / device time of one call
MAX_ZERO_FRACTION = 0.01

INVALID, WARN = "invalid", "warn"


def inputs_gate(arrays: list[np.ndarray]) -> list[tuple[str, str]]:
    """Inputs must be finite, vary, and hold under 1% zeros: zeros run faster on big GPUs."""
    found = []
    for i, a in enumerate(arrays):
        if not np.issubdtype(a.dtype, np.floating):
            continue
        if not np.isfinite(a).all():
            found.append((INVALID, f"input {i} holds NaN or Inf"))
        elif a.size > 1 and float(a.std()) == 0.0:
            found.append((INVALID, f"input {i} has zero variance"))
        zeros = float(np.mean(a == 0))
        if zeros > MAX_ZERO_FRACTION:
            found.append((INVALID, f"input {i} is {zeros:.0%} zeros"))
    return found


def noise_gate(stats: dict) -> list[tuple[str, str]]:
    spread = stats["iqr"] / stats["median"] if stats["median"] > 0 else float("inf")
    if spread >= NOISY_INVALID:
        return [(INVALID, f"too noisy: IQR/median {spread:.2f} >= {NOISY_INVALID}")]
    if spread >= NOISY_WARN:
        return [(WARN, f"noisy: IQR/median {spread:.2f} >= {NOISY_WARN}")]
    return []


def timer_gate(times: list[float]) -> list[tuple[str, str]]:
    t = np.asarray(times)
    if (t <= 0).any():
        return [(INVALID, "a timed block took zero or negative time")]
    if t.size > 2 and np.all(t == t[0]):
        return [(INVALID, "zero-variance timings: every block took exactly the same time")]
    return []


def peak_gate(flop_rate: float | None, peak: float | None,
              byte_rate: float | None, bandwidth: float | None) -> list[tuple[str, str]]:
    found = []
    if flop_rate and peak and flop_rate > PEAK_MARGIN * peak:
        found.append((INVALID, f"physically impossible: {flop_rate / 1e12:.1f} TFLOP/s is above "
                               f"{PEAK_MARGIN}x the dense peak {peak / 1e12:.1f}"))
    if byte_rate and bandwidth and byte_rate > PEAK_MARGIN * bandwidth:
        found.append((INVALID, f"physically impossible: {byte_rate / 1e9:.0f} GB/s is above "
                               f"{PEAK_MARGIN}x the bandwidth {bandwidth / 1e9:.0f} GB/s"))
    return found


def scaling_gate(block_s: float, double_block_s: float | None) -> list[tuple[str, str]]:
    """Twice the calls must take about twice the time, or the timer is not seeing the work."""
    if double_block_s is None or block_s <= 0:
        return []
    ratio = double_block_s / block_s
    if ratio < MIN_SCALING:
        return [(INVALID, f"time does not grow with work: 2x the calls took {ratio:.2f}x the time")]
    return []


def threads_gate(threads: int | None, available: int) -> list[tuple[str, str]]:
    if threads and threads > available:
        return [(INVALID, f"thread oversubscription: {threads} threads on {available} available CPUs")]
    return []


def warmup_gate(times: list[float]) -> list[tuple[str, str]]:
    t = np.asarray(times)
    found = []
    if t.size >= 6:
        third = t.size // 3
        first, last = np.median(t[:third]), np.median(t[-third:])
        drift = abs(first - last) / last
        if drift > TREND_WARN:
            found.append((WARN, f"not steady: first and last thirds differ by {drift:.0%}"))
    median = float(np.median(t))
    if t.size >= 3 and median > 0 and t[0] / median > FIRST_CALL_WARN:
        found.append((WARN, f"first timed block is {t[0] / median:.0f}x the median (compile or lazy init?)"))
    return found


def overhead_gate(device_call_s: float | None, per_call_s: float) -> list[tuple[str, str]]:
    """With a device timer, one call alone shows the kernel's own time; if back-to-back calls
    take much longer each, launch overhead, not the kernel, sets the throughput."""
    if device_call_s and per_call_s > OVERHEAD_WARN * device_call_s:
        return [(WARN, f"overhead-bound: {per_call_s * 1e6:.1f} us per call back to back, "
                       f"{device_call_s * 1e6:.1f} us on the device alone")]
    return []


def figures_gate(metrics: dict) -> list[tuple[str, str]]:
    """Every figure a record reports must be a finite, non-negative number: a NaN, an infinity
    or a negative time or rate means the measurement is broken, and nothing may price it."""
    bad = [f"{k} = {v}" for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not (np.isfinite(v) and v >= 0)]
    return [(INVALID, f"impossible figure: {', '.join(bad)}")] if bad else []


def verdict(findings: list[tuple[str, str]]) -> dict:
    reasons = [r for level, r in findings if level == INVALID]
    warnings = [r for level, r in findings if level == WARN]
    return {"valid": not reasons, "reasons": reasons, "warnings": warnings}


def clock_gate(before: dict | None, after: dict | None) -> list[tuple[str, str]]:
    """A GPU held down (power cap, thermal or hardware slowdown) before or after the case, or whose
    SM clock moved by more than 10% between the two, is flagged: its figures are not the card's."""
    out = []
    for when, state in (("before", before), ("after", after)):
        if state and state.get("slowdowns"):
            out.append((WARN, f"GPU clocks held down {when} the case: {', '.join(state['slowdowns'])}"))
    a, b = (before or {}).get("sm_clock_mhz"), (after or {}).get("sm_clock_mhz")
    if a and b and abs(b - a) > 0.10 * max(a, b):
        out.append((WARN, f"SM clock changed during the case: {a} -> {b} MHz"))
    return out
