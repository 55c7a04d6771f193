"""A level's figures from its requests: throughput counted from the server's tokens, latency
percentiles, goodput under an SLO, and the gates (errors, a level still climbing)."""

from __future__ import annotations

import numpy as np

from .. import gates
from ..stats import percentiles, slice_rate_interval
from .client import Request

MAX_ERROR_RATE = 0.05   # a level with more failed requests than this is invalid
CLIMB_INVALID = 0.25    # token rate of the level's second half over its first half (with 16+ requests)
CLIMB_WARN = 0.10
SLICES = 20             # parts of a level's window that its tokens are counted in (climb and interval)
# A level's figures that are throughputs: an invalid level reports none of them.
RATES = ("output_tokens_per_s", "goodput", "per_user", "requests_per_s", "e2e_interactivity")


def slo_ok(r: Request, slo: dict) -> bool:
    if not r.ok:
        return False
    if "ttft" in slo and (r.ttft is None or r.ttft > slo["ttft"]):
        return False
    tpot = r.tpot()
    return not ("tpot" in slo and tpot is not None and tpot > slo["tpot"])


def summarize_level(requests: list[Request], start: float, end: float, slo: dict, seed: int = 0,
                    steady: bool = True) -> tuple[dict, dict, list]:
    """The level's metrics, its latency statistics, and the gates' findings. steady=False: the load
    is meant to vary (a trace's), so a rising throughput is not held against it."""
    measured = [r for r in requests if not r.warmup]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    window = max(end - start, 1e-9)
    findings = []
    if not measured:
        findings.append((gates.INVALID, "no request was measured"))
    elif len(failed) / len(measured) > MAX_ERROR_RATE:
        findings.append((gates.INVALID, f"errors: {len(failed)} of {len(measured)} requests failed "
                                        f"(limit {MAX_ERROR_RATE:.0%}); first: {failed[0].error}"))
    counted = [r for r in ok if r.output_tokens is not None]
    if ok and len(counted) < len(ok):
        findings.append((gates.INVALID, "token counts unknown: the server sent no usage; name a tokenizer with --tokenizer"))
    tokens = sum(r.output_tokens for r in counted)
    tpots = [t for r in counted if (t := r.tpot()) is not None]
    itls = [b - a for r in ok for a, b in zip(r.chunks, r.chunks[1:])]
    # Still climbing: the second half of the window delivers clearly more tokens than the first.
    # Tokens are placed when they arrive (a request's count spread over its chunks), not when
    # their request ends: a batching server ends requests in waves, and counted by end a steady
    # level read +33% to +100%.
    per_slice = np.zeros(SLICES)  # tokens as they arrived, in SLICES equal parts of the window
    for r in counted:
        times = r.chunks or [r.start + r.e2e]
        for t in times:
            if start <= t <= end:
                per_slice[min(int((t - start) / window * SLICES), SLICES - 1)] += r.output_tokens / len(times)
    first, second = per_slice[:SLICES // 2].sum(), per_slice[SLICES // 2:].sum()
    if steady and len(counted) >= 16 and first > 0:
        climb = second / first - 1
        if climb > CLIMB_INVALID:
            findings.append((gates.INVALID, f"throughput still climbing: second half {climb:+.0%} over the first"))
        elif climb > CLIMB_WARN:
            findings.append((gates.WARN, f"throughput climbing: second half {climb:+.0%} over the first"))
    lo, hi = slice_rate_interval(tokens / window, per_slice, seed) if counted else (None, None)
    good = [r for r in counted if slo_ok(r, slo)]
    # End-to-end interactivity: 1 / p90 of each request's end-to-end time per output token (what a
    # user waits a token, the prefill and queueing included), beside 1/TPOT's per-user speed.
    per_token = [r.e2e / r.output_tokens for r in counted if r.e2e and r.output_tokens]
    in_flight = sum(r.e2e for r in ok) / window if ok else None  # Little's law: L = throughput x latency
    prompts = [r.prompt_tokens for r in counted]
    inputs = sum(prompts) if counted and all(isinstance(n, int) for n in prompts) else None  # the server's usage
    timed = [r for r in counted if r.ttft is not None and r.e2e]
    # The share of the requests' time before their first token: what pricing gives the input
    # tokens of a serving level (an attribution, stated with every figure it makes).
    prefill_share = sum(r.ttft for r in timed) / sum(r.e2e for r in timed) if timed else None
    metrics = {
        "output_tokens_per_s": tokens / window if counted else None,
        "output_tokens_per_s_ci95_low": lo,
        "output_tokens_per_s_ci95_high": hi,
        "requests_per_s": len(ok) / window,
        "tpot_s": float(np.median(tpots)) if tpots else None,
        "ttft_s": float(np.median(ttfts)) if (ttfts := [r.ttft for r in ok if r.ttft is not None]) else None,
        "per_user_tokens_per_s": float(np.median([1 / t for t in tpots])) if tpots else None,
        "e2e_interactivity_tokens_per_s": 1 / float(np.percentile(per_token, 90)) if per_token else None,
        "goodput_requests_per_s": len(good) / window,
        "goodput_tokens_per_s": sum(r.output_tokens for r in good) / window,
        "mean_in_flight": in_flight,
        "input_tokens_per_s": inputs / window if inputs else None,
        "prefill_share": prefill_share,
        "output_tokens": tokens, "input_tokens": inputs, "requests_ok": len(ok), "requests_failed": len(failed),
        "timeouts": sum(1 for r in failed if (r.error or "").startswith("timeout")),
        "warmup_requests": len(requests) - len(measured), "window_s": window,
    }
    stats = {"ttft_s": percentiles([r.ttft for r in ok if r.ttft is not None]), "tpot_s": percentiles(tpots),
             "itl_s": percentiles(itls), "e2e_s": percentiles([r.e2e for r in ok])}
    return metrics, stats, findings


def parse_slo(text: str | None) -> dict:
    """"ttft=500ms,tpot=50ms" -> {"ttft": 0.5, "tpot": 0.05} (s or ms units)."""
    from infercost.errors import InputError
    from infercost.numbers import number
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip().lower()
        if key not in ("ttft", "tpot"):
            raise InputError(f"--slo {text!r}: {key!r} is not ttft or tpot")
        scale = 1e-3 if value.endswith("ms") else 1.0
        out[key] = number(value.removesuffix("ms").removesuffix("s"), f"--slo {key}") * scale
    return out


T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}  # Student's t, 95% two-sided, by degrees of freedom


def across_repeats(values: list[float]) -> dict:
    """A figure over repeated runs of one level: mean, range and the 95% t-interval of the mean
    (run-to-run spread, which a run's own interval understates 2-3x)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "min": mean, "max": mean, "ci95": None}
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    t = T95[max(k for k in T95 if k <= n - 1)] if n - 1 <= 30 else 1.96
    half = t * sd / n ** 0.5
    return {"n": n, "mean": mean, "min": min(values), "max": max(values), "ci95": [mean - half, mean + half]}
