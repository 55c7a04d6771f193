"""Energy, power and clocks of an NVIDIA GPU through NVML, around each timed case.

Energy comes from the board's total-energy counter (millijoules since the driver loaded), read
before and after the timed blocks; where a board has no counter, power sampled in a thread while
the blocks run stands in. Clocks, temperature and the reasons the clocks are held down are read
before and after each case, so a throttled or re-clocked case is flagged (bench/gates.py).
"""

from __future__ import annotations

import threading
import time


# NVML's clocks-event reasons (nvmlClocksEventReasons); idle, an application-clock setting and
# sync boost are not slowdowns of a busy GPU.
REASONS = {0x4: "software power cap", 0x8: "hardware slowdown", 0x40: "software thermal slowdown",
           0x80: "hardware thermal slowdown", 0x100: "hardware power brake", 0x200: "display clock setting"}


class Monitor:
    """One GPU's NVML handle."""

    def __init__(self, nvml, handle):
        self.nvml, self.handle = nvml, handle

    def power_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # milliwatts

    def energy_j(self) -> float | None:
        """Joules since the driver loaded (Volta and later), or None."""
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0  # millijoules
        except Exception:
            return None

    def state(self) -> dict:
        n, h = self.nvml, self.handle
        out = {}
        for key, read in (("sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
                          ("memory_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
                          ("max_sm_clock_mhz", lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM)),
                          ("temperature_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
                          ("power_w", self.power_w)):
            try:
                out[key] = read()
            except Exception:
                out[key] = None
        try:
            get = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or n.nvmlDeviceGetCurrentClocksThrottleReasons
            mask = get(h)
            out["slowdowns"] = [name for bit, name in REASONS.items() if mask & bit]
        except Exception:
            out["slowdowns"] = None
        return out


def nvml_monitor(index: int = 0) -> Monitor | None:
    """The GPU's monitor, or None where NVML is not available."""
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetPowerUsage(handle)
    except Exception:
        return None
    return Monitor(pynvml, handle)


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
