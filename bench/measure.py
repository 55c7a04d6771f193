"""One measurement pipeline for every workload: fit -> float64 check -> time -> gates -> verdict.

A workload (bench/workloads.py: matmul; bench/llm.py: prefill and decode) says what it is,
checks itself against float64, prepares the call to time and turns the timings into its own
figures. `measure_case` does everything else the same way for all of them, and returns the
record through records.record, the one record builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from infercost.hardware import catalog

from . import gates
from .records import record
from .stats import summarize
from .timing import Settings, measure

# Figures that are throughputs (or derived from one): an invalid measurement reports none.
RATES = ("tflops", "gbps", "peak_fraction", "input_tokens", "output_tokens", "per_user", "mfu", "mbu",
         "ttft", "tpot", "roofline_fraction", "tokens_per_joule", "joules_per_token", "tokens_per_mwh", "algbw", "busbw")


@dataclass
class Prepared:
    fn: Callable            # the call that is timed
    args: list              # its arguments
    timing: dict            # preparation times (build, compile) for the record
    case: dict = field(default_factory=dict)  # case fields known only once built (how it launches)


class Workload(Protocol):
    def describe(self) -> dict:
        """Case fields this workload adds (its shape in words, a model's configuration)."""

    def fit(self, backend) -> str | None:
        """Why this case cannot run on the backend's device (it does not fit), or None."""

    def check(self, backend, seed: int) -> tuple[dict, dict]:
        """Run once and compare with float64: the check (error, tolerance, finite, passed, what
        was checked) and the times it took to get there (compile, first call)."""

    def prepare(self, backend, seed: int) -> Prepared:
        """The call to time, built the way it is checked."""

    def work(self) -> tuple[int, int]:
        """FLOPs and minimum bytes moved by one call."""

    def before_timing(self, backend) -> None:
        """Anything to read just before timing starts (a bandwidth sweep on CPUs)."""

    def metrics(self, backend, acc, stats: dict, m: dict) -> tuple[dict, list]:
        """The workload's figures from the timings, and its ceiling-gate findings."""


def measure_case(backend, workload: Workload, case: dict, settings: Settings, seed: int,
                 cpus_available: int) -> dict:
    """One case on one backend, from fit check to verdict; always returns a record."""
    case = {**case, "framework": backend.framework, "device": backend.device_name(),
            "cache_policy": backend.cache_policy, **workload.describe()}
    tf32 = bool(case.get("tf32"))
    reason = backend.agree(backend.unsupported(case["dtype"], tf32) or workload.fit(backend))  # host 0's, on every host
    if reason:
        return record(case, "skipped", [reason])
    case["precision_flags"] = backend.configure(case["dtype"], tf32)
    emulated = backend.emulated(case["dtype"])
    if emulated:  # measured, and labelled wherever it is shown or priced
        case["dtype_support"] = "emulated"

    check, check_timing = workload.check(backend, seed)  # correct before fast
    if not backend.agree(check["passed"]):
        why = "NaN or Inf in the result" if not check["finite"] else (
            f"wrong result: relative error {check['error']:.2e} > tolerance {check['tolerance']:.0e}")
        return record(case, "invalid", [why], check=check, **({"timing": check_timing} if check_timing else {}))

    prepared = workload.prepare(backend, seed)
    case.update(prepared.case)
    workload.before_timing(backend)
    m, stats, findings = timed(backend, prepared.fn, prepared.args, settings, seed, case, cpus_available)
    flops, nbytes = workload.work()
    steady = float(np.mean(m["times"]))  # total time / total calls over all timed blocks
    acc = catalog.lookup(case["device"])
    case.update(catalog.chip_fields(case["device"], case.get("devices") or 1))  # the physical chips used
    acc = acc.per_device() if acc else None  # a device that is part of a chip is held to its share
    peak = acc.peak(case["dtype"], tf32) if acc else None
    metrics = {
        "flops": flops, "bytes": nbytes,
        "tflops": flops / steady / 1e12, "gbps": nbytes / steady / 1e9,
        "spread": stats["iqr"] / stats["median"],
        "catalog_device": acc.name if acc else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "power_w": m.get("power_w"),  # NVML board power while timed (NVIDIA only)
        "energy_j_per_call": m.get("energy_j_per_call"),
    }
    extra, ceiling_findings = workload.metrics(backend, acc, stats, m)
    metrics.update(extra)
    if emulated:
        findings = findings + [(gates.WARN, f"{case['dtype']} emulated: {emulated}")]
    timing = {**check_timing, **prepared.timing,
              **{k: v for k, v in m.items() if k not in ("times", "power_w", "energy_j_per_call")}}
    return conclude(case, findings + ceiling_findings, metrics, RATES,
                    check=check, timing=timing, stats=stats, raw_times_s=m["times"])


def conclude(case: dict, findings: list, metrics: dict, rates: tuple[str, ...], **sections) -> dict:
    """The tail every measurement shares (a timed case here, a serving level in bench/serving):
    the findings and the figures' own gate decide the verdict, an invalid measurement reports none
    of its `rates` (the metric names starting so), and the record is built."""
    verdict = gates.verdict(findings + gates.figures_gate(metrics))
    if not verdict["valid"]:
        metrics = {**metrics, **{k: None for k in metrics if k.startswith(rates)}}
    return record(case, "ok" if verdict["valid"] else "invalid", verdict["reasons"], verdict["warnings"],
                  metrics=metrics, **sections)


def timed(backend, fn, args, settings: Settings, seed: int, case: dict, cpus_available: int):
    """Measure fn(*args); returns the raw measurement, its statistics and the timing gates' findings.
    On an NVIDIA GPU: energy from the board's counter around the timed blocks (sampled power where
    it has none), and the clocks before and after."""
    from .power import PowerSampler

    monitor = backend.monitor()
    before = monitor.state() if monitor else None
    if monitor is None:
        m = measure(backend, fn, args, settings)
    elif monitor.energy_j() is not None:
        m = measure(backend, fn, args, settings, energy=monitor.energy_j)
        m["energy_source"] = "NVML total energy counter"
    else:  # no counter on this board: the mean of sampled power over the timed blocks
        with PowerSampler(monitor.power_w) as sampler:
            m = measure(backend, fn, args, settings)
        if sampler.mean_watts():
            m["power_w"] = sampler.mean_watts()
            m["energy_j_per_call"] = m["power_w"] * float(np.mean(m["times"]))
            m["energy_source"] = "NVML power, sampled every 20 ms"
    stats = summarize(m["times"], seed=seed)
    findings = gates.noise_gate(stats) + gates.timer_gate(m["times"])
    findings += gates.scaling_gate(m["block_median_s"], m["double_block_s"])
    if backend.kind == "cpu":
        findings += gates.threads_gate(case.get("threads"), cpus_available)
    findings += gates.warmup_gate(m["times"])
    if backend.device_timer and m["calls_per_block"] > 1:
        findings += gates.overhead_gate(m["single_call_s"], stats["median"])
    if monitor is not None:
        m["device_state"] = {"before": before, "after": monitor.state()}
        findings += gates.clock_gate(m["device_state"]["before"], m["device_state"]["after"])
    return m, stats, findings
