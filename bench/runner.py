"""The runner: one worker process per backend, a time limit per case, every record kept.

A crash, out-of-memory kill or hang in one backend becomes an error record for the case it
was running; the worker is restarted for the remaining cases and the run goes on.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from .backend import module_of
from .case import Case
from .records import finished, record

STARTUP_TIMEOUT_S = 180.0  # importing a framework and finding its device


@dataclass
class Event:
    kind: str     # "start" (a case began), "record" (a case ended), "backend" (a worker is up)
    backend: str
    case: dict | None = None
    record: dict | None = None
    detail: str | None = None


def worker_env(host_devices: int = 1) -> dict:
    from infercost.hardware.host import isa_env
    env = isa_env(dict(os.environ))  # INFERCOST_CPU_ISA caps the frameworks too
    if host_devices > 1:  # JAX on a CPU: as many host devices as the widest layout asks for
        flag = f"--xla_force_host_platform_device_count={host_devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    # JAX would otherwise take 75% of GPU memory at start; each backend has its own process,
    # and the memory check needs the real free memory.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def probe(names: list[str], timeout: float = STARTUP_TIMEOUT_S) -> dict[str, dict]:
    """Probe backends in child processes (one per framework, in parallel)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(module_of(name), []).append(name)
    procs = {
        fw: subprocess.Popen([sys.executable, "-m", "infercost.bench.worker", "probe", *group],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=worker_env())
        for fw, group in groups.items()
    }
    found = {}
    for fw, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"probe timed out after {timeout:.0f} s"
        for line in out.splitlines():
            info = json.loads(line)
            found[info["backend"]] = info
        for name in groups[fw]:
            if name not in found:
                tail = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
                found[name] = {"backend": name, "available": False, "device": None,
                               "reason": f"probe failed: {tail[:200]}"}
    return {name: found[name] for name in names}


class Worker:
    """One worker process for one backend, read through a thread so reads can time out."""

    def __init__(self, job: dict):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infercost.bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            env=worker_env(job.get("host_devices", 1)), start_new_session=True,  # Ctrl-C reaches the runner, which stops us
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float) -> dict | None:
        """The next message; None when the worker exited. Raises queue.Empty on timeout."""
        line = self.lines.get(timeout=timeout)
        return None if line is None else json.loads(line)

    def until(self, deadline: float) -> dict | None:
        """The next message, {"event": "timeout"} when none came by `deadline` (monotonic), None when
        the worker exited."""
        try:
            return self.next(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return {"event": "timeout"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def failure(self) -> str:
        """Why the worker died, from its exit status and the last line of its stderr."""
        self.proc.wait()
        code = self.proc.returncode
        self.stderr.seek(0)
        lines = [l for l in self.stderr.read().strip().splitlines() if l.strip()]
        tail = lines[-1].strip()[:300] if lines else ""
        if code is not None and code < 0:
            import signal
            what = f"killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                what += " (out of memory?)"
        else:
            what = f"exited with status {code}"
        return f"worker {what}" + (f": {tail}" if tail else "")


def why_ended(worker: Worker, msg: dict | None, started: bool, case_timeout: float) -> str:
    """Why a worker's cases ended early: it died (no message), or it was silent past its limit
    (before any case: its start-up's; after: the case's)."""
    if msg is None:
        return worker.failure()
    if not started:
        return f"backend did not start within {STARTUP_TIMEOUT_S:.0f} s"
    return f"timed out after {case_timeout:.0f} s (case time limit)"


def run(cases: list[Case], job: dict, writer, provenance: dict, case_timeout: float, on_event) -> list[dict]:
    """Run cases grouped by backend; each record is written as soon as its case ends."""
    records = []

    # The run's settings are fields of every record, not only words in the command line.
    settings = {**job["settings"], "seed": job["seed"], "threads": job.get("threads"), "case_timeout_s": case_timeout}

    def finish(case: dict, done: dict) -> None:
        done = finished(done, provenance, settings)
        writer.write(done)
        records.append(done)
        on_event(Event("record", case["backend"], case=case, record=done))

    by_backend: dict[str, list[dict]] = {}  # each case as the worker and the record take it
    for case in cases:
        by_backend.setdefault(case.backend, []).append(case.as_dict())

    for backend, pending in by_backend.items():
        while pending:
            worker = Worker({**job, "backend": backend, "cases": pending})
            current, deadline = None, time.monotonic() + STARTUP_TIMEOUT_S
            try:
                while True:
                    msg = worker.until(deadline)
                    if msg is None or msg["event"] == "timeout":
                        reason = why_ended(worker, msg, current is not None, case_timeout)
                        worker.stop()
                        if current is None:  # died before any case: none of them can run
                            for case in pending:
                                finish(case, record(case, "error", [reason]))
                            pending = []
                        else:
                            finish(pending[current], record(pending[current], "error", [reason]))
                            pending = pending[current + 1:]
                        break
                    if msg["event"] == "unavailable":
                        for case in pending:
                            finish(case, record(case, "skipped", [msg["reason"]]))
                        pending = []
                        break
                    if msg["event"] == "ready":
                        on_event(Event("backend", backend, detail=msg["device"]))
                    elif msg["event"] == "start":
                        current = msg["index"]
                        deadline = time.monotonic() + case_timeout
                        on_event(Event("start", backend, case=pending[current]))
                    elif msg["event"] == "record":
                        finish(pending[msg["index"]], msg["record"])
                        deadline = time.monotonic() + case_timeout
                        if msg["index"] == len(pending) - 1:
                            pending = []
                            break
            finally:
                worker.stop()
    return records
