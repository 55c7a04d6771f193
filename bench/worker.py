"""The per-backend worker process: runs cases on one backend and streams records to the runner.

Protocol: a JSON job on stdin; JSON lines on stdout ({"event": "ready" | "start" | "record"}).
Anything the frameworks print goes to stderr, so stdout carries only the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from infercost.hardware.host import available_cpus


def pin_threads(threads: int | None) -> int:
    """Restrict this process to `threads` CPUs before a framework starts its thread pools.

    Returns the CPUs that were available before pinning (the oversubscription gate's bound).
    """
    available = available_cpus()
    if threads and threads <= available and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    return available


def make_workload(case: dict):
    from infercost.kernels.matmul import Matmul
    if case["workload"] == "matmul":
        return Matmul(dtype=case["dtype"], **case["params"])
    raise ValueError(f"unknown workload {case['workload']!r}")


def run_case(backend, case: dict, settings, seed: int, cpus_available: int, workload=None) -> dict:
    """Check one case against float64, then time it; returns the record's measured part."""
    import numpy as np

    from infercost.hardware import catalog
    from infercost.kernels.dtypes import tolerance

    from . import gates

    workload = workload or make_workload(case)
    device = backend.device_name()
    tf32 = bool(case.get("tf32"))
    out = {"case": {**case, "framework": backend.framework, "device": device,
                    "shape": workload.shape, "cache_policy": backend.cache_policy}}

    reason = backend.unsupported(case["dtype"], tf32)
    free = backend.memory_bytes()
    if reason is None and free is not None and workload.bytes() > 0.9 * free:
        reason = f"needs {workload.bytes() / 1e9:.1f} GB, device has {free / 1e9:.1f} GB free"
    if reason:
        return {**out, "status": "skipped", "valid": False, "reasons": [reason], "warnings": []}

    out["case"]["precision_flags"] = backend.configure(case["dtype"], tf32)
    host_inputs = workload.inputs(seed)
    findings = gates.inputs_gate(host_inputs)
    args = [backend.put(x, case["dtype"]) for x in host_inputs]

    start = time.perf_counter()
    fn = backend.compile(workload.function(backend.framework, tf32), args)
    compiled_s = time.perf_counter() - start
    result = fn(*args)
    backend.sync(result)
    first_s = time.perf_counter() - start

    # Correct before fast: compare with float64 math on the same (rounded) inputs.
    check = workload.check(backend.fetch(result), [backend.fetch(a) for a in args], seed)
    check["tolerance"] = tolerance(case["dtype"], tf32)
    check["passed"] = bool(check["finite"] and check["error"] <= check["tolerance"])
    out["check"] = check
    timing = {"compile_s": compiled_s, "compile_and_first_call_s": first_s}
    if not check["passed"]:
        why = "NaN or Inf in the result" if not check["finite"] else (
            f"wrong result: relative error {check['error']:.2e} > tolerance {check['tolerance']:.0e}")
        return {**out, "timing": timing, "status": "invalid", "valid": False,
                "reasons": [why], "warnings": []}
    del result

    m, stats, timing_findings = timed(backend, fn, args, settings, seed, case, cpus_available)
    timing.update({k: v for k, v in m.items() if k != "times"})
    steady = float(np.mean(m["times"]))  # total time / total calls over all timed blocks
    acc = catalog.lookup(device)
    peak = acc.peak(case["dtype"], tf32) if acc else None
    bandwidth = acc.bandwidth if acc else None
    flops, nbytes = workload.flops(), workload.bytes()
    metrics = {
        "flops": flops,
        "bytes": nbytes,
        "tflops": flops / steady / 1e12,
        "tflops_median": flops / stats["median"] / 1e12,
        "tflops_ci95_low": flops / stats["mean_ci95_high"] / 1e12,  # the steady-state figure's interval
        "tflops_ci95_high": flops / stats["mean_ci95_low"] / 1e12,
        "gbps": nbytes / steady / 1e9,
        "spread": stats["iqr"] / stats["median"],
        "catalog_device": acc.name if acc else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "peak_fraction": flops / steady / peak if peak else None,
        "power_w": m.get("power_w"),
        "tflops_per_watt": flops / steady / 1e12 / m["power_w"] if m.get("power_w") else None,
    }
    findings += timing_findings
    findings += gates.peak_gate(flops / stats["min"], peak, nbytes / stats["min"], bandwidth)
    verdict = gates.verdict(findings)
    if not verdict["valid"]:  # an invalid measurement reports no throughput
        metrics.update(tflops=None, tflops_median=None, tflops_ci95_low=None,
                       tflops_ci95_high=None, gbps=None, peak_fraction=None)
    return {**out, "timing": timing, "stats": stats, "metrics": metrics,
            "raw_times_s": m["times"], "status": "ok" if verdict["valid"] else "invalid", **verdict}


def timed(backend, fn, args, settings, seed: int, case: dict, cpus_available: int):
    """Measure fn(*args); returns the raw measurement, its statistics and the timing gates' findings."""
    from . import gates
    from .stats import summarize
    from .timing import measure

    from .power import PowerSampler, nvml_reader
    read = nvml_reader() if backend.name in ("torch-cuda", "jax-gpu") else None
    if read is None:
        m = measure(backend, fn, args, settings)
    else:  # board power while the timed blocks run (NVIDIA only)
        with PowerSampler(read) as sampler:
            m = measure(backend, fn, args, settings)
        m["power_w"] = sampler.mean_watts()
    stats = summarize(m["times"], seed=seed)
    findings = gates.noise_gate(stats) + gates.timer_gate(m["times"])
    findings += gates.scaling_gate(m["block_median_s"], m["double_block_s"])
    if backend.name.endswith("-cpu"):
        findings += gates.threads_gate(case.get("threads"), cpus_available)
    findings += gates.warmup_gate(m["times"])
    if backend.device_timer and m["calls_per_block"] > 1:
        findings += gates.overhead_gate(m["single_call_s"], stats["median"])
    return m, stats, findings


def versions(backend) -> dict:
    from infercost.hardware.host import package_version
    return {"numpy": package_version("numpy"), **backend.device_info()}


def error_record(case: dict, reason: str) -> dict:
    return {"case": case, "status": "error", "valid": False, "reasons": [reason], "warnings": []}


def serve(job: dict, emit) -> None:
    from .backend import Unavailable, open_backend
    from .timing import Settings

    cpus_available = pin_threads(job.get("threads"))
    try:
        backend = open_backend(job["backend"], threads=job.get("threads"))
    except Unavailable as e:
        emit({"event": "unavailable", "reason": str(e)})
        return
    info = versions(backend)
    emit({"event": "ready", "device": backend.device_name()})
    settings = Settings(**job["settings"])
    for index, case in enumerate(job["cases"]):
        emit({"event": "start", "index": index})
        try:
            if case["workload"] in ("prefill", "decode"):
                from .llm import run_llm_case
                record = run_llm_case(backend, case, settings, job["seed"], cpus_available)
            else:
                record = run_case(backend, case, settings, job["seed"], cpus_available)
        except Exception as e:  # one broken case (OOM, a framework error) must not end the run
            traceback.print_exc(file=sys.stderr)
            record = error_record(case, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")
            if "out of memory" in str(e).lower() or "RESOURCE_EXHAUSTED" in str(e):
                record["reasons"] = ["out of memory: " + record["reasons"][0]]
        record["versions"] = info
        emit({"event": "record", "index": index, "record": record})


def die_with_parent() -> None:
    """Ask Linux to kill this worker if the runner dies (kill -9), so no orphan keeps a core busy."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    die_with_parent()
    # Keep stdout for the protocol: point fd 1 at stderr for everything else.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(message: dict) -> None:
        proto.write(json.dumps(message) + "\n")
        proto.flush()

    if sys.argv[1:2] == ["probe"]:
        from .backend import probe
        for name in sys.argv[2:]:
            emit(probe(name))
        return
    serve(json.loads(sys.stdin.read()), emit)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        os._exit(130)
