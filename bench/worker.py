"""The per-backend worker process: runs cases on one backend and streams records to the runner.
Only the process protocol lives here; bench/measure.py measures a case.

Protocol: a JSON job on stdin; JSON lines on stdout ({"event": "ready" | "start" | "record"}).
Anything the frameworks print goes to stderr, so stdout carries only the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from infercost.hardware.host import available_cpus

from .orphans import die_with_parent


def pin_threads(threads: int | None, skip: int = 0) -> int:
    """Restrict this process to `threads` CPUs before a framework starts its thread pools, after
    the first `skip` (local processes standing for hosts each take CPUs of their own).

    Returns the CPUs that were available before pinning (the oversubscription gate's bound).
    """
    available = available_cpus()
    if threads and threads <= available and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        start = skip if skip + threads <= len(cpus) else 0
        os.sched_setaffinity(0, cpus[start:start + threads])
    return available


def cpus_before(hosts: dict | None, threads: int | None) -> int:
    """Hosts on one machine (a coordinator on loopback: a test, a benchmark) take CPUs one after
    the other, as separate hosts would have their own; real hosts start at their first CPU."""
    from infercost.bench.hosts import is_loopback
    if not hosts or not threads or not is_loopback(hosts["address"]):
        return 0
    return hosts["rank"] * threads


def versions(backend) -> dict:
    from infercost.hardware.host import isa_summary, package_version
    out = {"numpy": package_version("numpy"), **backend.device_info()}
    if backend.kind == "cpu":  # the flags that decided the CPU paths (int8 kernel form, native dtypes)
        out["cpu_flags"] = isa_summary()
    return out


def serve(job: dict, emit) -> None:
    from .backend import Unavailable, open_backend
    from .measure import measure_case
    from .records import record
    from .timing import Settings
    from .workloads import make_workload

    import time
    cpus_available = pin_threads(job.get("threads"), cpus_before(job.get("hosts"), job.get("threads")))
    joined = time.perf_counter()
    try:  # a multi-host run's hosts join here, before any device is touched, outside any timing
        backend = open_backend(job["backend"], threads=job.get("threads"), hosts=job.get("hosts"))
    except Unavailable as e:
        emit({"event": "unavailable", "reason": str(e)})
        return
    info = versions(backend)
    emit({"event": "ready", "device": backend.device_name(), "open_s": time.perf_counter() - joined})
    settings = Settings(**job["settings"])
    follower = job.get("hosts") is not None and job["hosts"]["rank"] > 0 and not backend.spmd
    for index, case in enumerate(job["cases"]):
        emit({"event": "start", "index": index})
        try:
            with backend.case_scope(case, index):
                if follower:  # host 0 measures; this host's ranks follow it
                    why = backend.follow_case(case)
                    done = record(case, "error" if why else "ok", [why] if why else [])
                else:
                    done = measure_case(backend, make_workload(case), case, settings, job["seed"], cpus_available)
        except Exception as e:  # one broken case (OOM, a framework error) must not end the run
            traceback.print_exc(file=sys.stderr)
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
            if "out of memory" in str(e).lower() or "RESOURCE_EXHAUSTED" in str(e):
                reason = "out of memory: " + reason
            done = record(case, "error", [reason])
        done["versions"] = info
        emit({"event": "record", "index": index, "record": done})


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
