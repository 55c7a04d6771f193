"""Board power during a timed region, from NVML on NVIDIA GPUs (for tokens per joule)."""

from __future__ import annotations

import threading
import time


def nvml_reader(index: int = 0):
    """A function returning the board's power in watts, or None where NVML is not available."""
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetPowerUsage(handle)
    except Exception:
        return None
    return lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # milliwatts


class PowerSampler:
    """Samples a power reader every `period_s` in a thread while the block runs."""

    def __init__(self, read, period_s: float = 0.02):
        self.read, self.period_s = read, period_s
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(float(self.read()))
            except Exception:
                return
            self._stop.wait(self.period_s)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._start

    def mean_watts(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
