"""The timing loop: calibrate, warm up by time, then time blocks of back-to-back calls."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Settings:
    warmup_s: float = 1.0     # time spent calling the kernel before any block counts
    min_time_s: float = 1.0   # keep timing blocks until this much time has passed...
    min_blocks: int = 10      # ...and at least this many blocks were timed
    max_blocks: int = 500
    max_time_s: float = 20.0  # stop early (with >= 3 blocks) for very slow calls
    block_s: float = 0.02     # calls per block are chosen so a block lasts about this long

    def as_dict(self) -> dict:
        return asdict(self)


def calls_per_block(call_s: float, settings: Settings, per_call_flush: bool) -> int:
    """One call per block when the device times it alone and the cache is flushed before
    each call, and the call is long enough (>= 100 us); otherwise enough back-to-back calls
    to fill a block, so host timers and launch gaps are amortised."""
    if per_call_flush and call_s >= 100e-6:
        return 1
    return max(1, math.floor(settings.block_s / max(call_s, 1e-9)))


def measure(backend, fn, args, settings: Settings, energy=None) -> dict:
    """Time fn(*args) on a backend. Per-call times are block times divided by calls per block.
    energy: a reader of the device's energy counter (joules), read around the timed blocks."""
    # Across hosts every choice below is host 0's (backend.agree), so all run the same calls.
    first = backend.time_block(fn, args, 1)  # holds one-time costs: calibrate on later calls
    second = backend.time_block(fn, args, 1)
    long_call = backend.agree(second > 10e-3)
    single = second if long_call else min(second, *(backend.time_block(fn, args, 1) for _ in range(2)))
    single = backend.agree(single)
    flush = backend.cache_policy != "hot" and backend.device_timer
    number = calls_per_block(single, settings, per_call_flush=flush)

    start = time.perf_counter()
    while backend.agree(time.perf_counter() - start < settings.warmup_s):
        backend.time_block(fn, args, number)
    warmup_s = time.perf_counter() - start

    blocks: list[float] = []
    joules_before = energy() if energy else None
    start = time.perf_counter()
    while True:
        blocks.append(backend.time_block(fn, args, number))
        elapsed = time.perf_counter() - start
        enough = (len(blocks) >= settings.max_blocks
                  or (len(blocks) >= settings.min_blocks and elapsed >= settings.min_time_s)
                  or (len(blocks) >= 3 and elapsed >= settings.max_time_s))
        if backend.agree(enough):
            break
    joules = energy() - joules_before if energy else None
    # One block of twice the calls: if it does not take about twice as long, the
    # timer is not seeing the work (a missing sync); the scaling gate reads this.
    double = backend.time_block(fn, args, 2 * number)
    blocks_sorted = sorted(blocks)
    return {
        "times": [b / number for b in blocks],
        "calls_per_block": number,
        "first_call_s": first,
        "single_call_s": single,
        "warmup_s": warmup_s,
        "block_median_s": blocks_sorted[len(blocks) // 2],
        "double_block_s": double,
        **({"energy_j_per_call": joules / (len(blocks) * number),
            "power_w": joules / elapsed} if joules else {}),
    }
