"""A run over several hosts: every host runs the same cases in the same order, host 0 decides.

Each host starts one worker per backend, as on one host (bench/runner.py), and its worker joins
the others' through the framework's own runtime (jax.distributed, torch.distributed). Over the
control link (bench/hostlink.py) host 0 says which cases a generation of workers runs; the other
hosts report each case's outcome and any worker that ended early. Host 0 alone writes records:
a case is an error when any host's worker failed in it (the record names the host and why), and
then every host's workers are stopped and a new generation starts with the next case, so a host
that crashed or hung costs one case, as a crashed worker does on one host.
"""

from __future__ import annotations

import threading
import time

from infercost.errors import RunError

from .records import finished, record
from .runner import STARTUP_TIMEOUT_S, Event, Worker, why_ended

GRACE_S = 30.0  # how long host 0 waits past its own time limit for another host's word on a case


def watch(worker: Worker, generation: int, count: int, case_timeout: float, report) -> threading.Thread:
    """Follow one worker in a thread: report(event) for ready, started, outcome and ended (the
    worker died, timed out or ran all `count` cases). Time limits as bench/runner.py's."""
    def follow():
        current, started, deadline = None, False, time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            msg = worker.until(deadline)
            if msg is None or msg["event"] == "timeout":
                reason = why_ended(worker, msg, started, case_timeout)
                worker.stop()
                report({"op": "ended", "generation": generation, "pos": current, "reason": reason})
                return
            event = msg["event"]
            if event == "unavailable":
                worker.stop()
                report({"op": "ended", "generation": generation, "pos": None, "reason": msg["reason"]})
                return
            if event == "ready":
                report({"op": "ready", "generation": generation, "device": msg["device"],
                        "open_s": msg.get("open_s")})
            elif event == "start":
                current, started, deadline = msg["index"], True, time.monotonic() + case_timeout
                report({"op": "started", "generation": generation, "pos": current})
            elif event == "record":
                report({"op": "outcome", "generation": generation, "pos": msg["index"], "record": msg["record"]})
                current, deadline = None, time.monotonic() + case_timeout
                if msg["index"] == count - 1:
                    return
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def host_job(job: dict, backend: str, cases: list[dict], hosts, generation: int) -> dict:
    return {**job, "backend": backend, "cases": cases, "hosts": {**hosts.as_dict(), "generation": generation}}


def lead(indexed: list[tuple[int, dict]], job: dict, writer, provenance: dict, case_timeout: float, on_event, link,
         hosts, host_fields) -> list[dict]:
    """Host 0: run the cases still to do, as (index in the case list every host planned alike,
    case dict), with every host; write one record a case. host_fields(case) gives a case's
    `hosts` section (count, devices per host, the axes crossing hosts)."""
    settings = {**job["settings"], "seed": job["seed"], "threads": job.get("threads"), "case_timeout_s": case_timeout}
    records: list[dict] = []
    others = range(1, hosts.count)
    generation = 0

    def finish(case: dict, done: dict, extra: dict) -> None:
        done = finished(done, provenance, settings)
        done["hosts"] = {**host_fields(case), **extra}
        writer.write(done)
        records.append(done)
        on_event(Event("record", case["backend"], case=case, record=done))

    by_backend: dict[str, list[tuple[int, dict]]] = {}
    for index, case in indexed:
        by_backend.setdefault(case["backend"], []).append((index, case))

    for backend, pending in by_backend.items():
        while pending:
            generation += 1
            link.broadcast({"op": "start", "generation": generation, "backend": backend,
                            "indices": [i for i, _ in pending]})
            own = Worker(host_job(job, backend, [c for _, c in pending], hosts, generation))
            watch(own, generation, len(pending), case_timeout, lambda e: link.inbox.put((0, e)))
            outcomes: dict[int, dict[int, dict]] = {r: {} for r in range(hosts.count)}
            ended: dict[int, dict] = {}
            opened: dict[int, float] = {}
            pos, deadline = 0, None
            try:
                while pos < len(pending):
                    got = link.receive(timeout=0.5)
                    if got is not None:
                        rank, msg = got
                        if msg is None:  # the case it was in is an error; without it no case can run
                            why = f"host {rank} left the run (its infercost stopped or its network went away)"
                            finish(pending[pos][1], record(pending[pos][1], "error", [f"host {rank}: left the run"]),
                                   {"open_s": opened})
                            raise RunError(f"{why}; the finished records are kept: start every host again with --resume")
                        if msg.get("generation") != generation:
                            continue  # a word about workers already stopped
                        op = msg["op"]
                        if op == "ready" and rank == 0:
                            on_event(Event("backend", backend, detail=msg["device"]))
                        if op == "ready":
                            opened[rank] = msg.get("open_s")
                        elif op == "started" and rank == 0:
                            deadline = time.monotonic() + case_timeout + GRACE_S
                            on_event(Event("start", backend, case=pending[msg["pos"]][1]))
                        elif op == "outcome":
                            outcomes[rank][msg["pos"]] = msg["record"]
                        elif op == "ended":
                            ended[rank] = msg
                    # the case at `pos` is decided once every host gave its outcome or a host ended
                    failed = {r: e for r, e in ended.items() if e["pos"] is None or e["pos"] <= pos}
                    lost = [r for r in others if pos not in outcomes[r] and r not in ended] if deadline and \
                        time.monotonic() > deadline else []
                    if failed or lost:
                        reasons = [f"host {r}: {e['reason']}" for r, e in sorted(failed.items())]
                        reasons += [f"host {r}: no word on this case {case_timeout + GRACE_S:.0f} s after it started"
                                    for r in lost]
                        start_failed = pos == 0 and all(e["pos"] is None for e in failed.values()) and not lost
                        todo = pending if start_failed else pending[pos:pos + 1]
                        for _, case in todo:  # a generation that never started fails every case it had
                            finish(case, record(case, "error", reasons), {"open_s": opened})
                        pending = [] if start_failed else pending[pos + 1:]
                        break
                    if all(pos in outcomes[r] for r in range(hosts.count)):
                        done = outcomes[0][pos]
                        bad = [f"host {r}: {outcomes[r][pos]['status']}: {'; '.join(outcomes[r][pos]['reasons'])}"
                               for r in others if outcomes[r][pos]["status"] in ("error",)]
                        if bad:  # host 0's own reasons first where it failed too
                            done = ({**done, "reasons": done["reasons"] + bad} if done["status"] == "error"
                                    else record(pending[pos][1], "error", bad))
                        finish(pending[pos][1], done, {"open_s": opened})
                        pos, deadline = pos + 1, None
                else:
                    pending = []
            finally:
                own.stop()
                link.broadcast({"op": "stop", "generation": generation})
    link.broadcast({"op": "done"})
    return records


def follow(cases: list, job: dict, case_timeout: float, link, on_event) -> int:
    """Hosts 1..n-1: run what host 0 says, report every outcome to it; returns cases run."""
    worker, generation, ran = None, 0, 0
    try:
        while True:
            got = link.receive(timeout=1.0)
            if got is None:
                continue
            _, msg = got
            if msg is None:
                raise RunError("host 0 left the run (its infercost stopped or its network went away)")
            if msg["op"] == "done":
                return ran
            if msg["op"] == "stop" and msg["generation"] == generation and worker is not None:
                worker.stop()
            if msg["op"] == "start":
                if worker is not None:
                    worker.stop()
                generation = msg["generation"]
                chosen = [cases[i].as_dict() for i in msg["indices"]]
                worker = Worker(host_job(job, msg["backend"], chosen, link.hosts, generation))

                def report(event, chosen=chosen):
                    nonlocal ran
                    if event["op"] == "started":
                        on_event(Event("start", msg["backend"], case=chosen[event["pos"]]))
                    if event["op"] == "outcome":
                        ran += 1
                        on_event(Event("record", msg["backend"], case=chosen[event["pos"]], record=event["record"]))
                        event = {**event, "record": {"status": event["record"]["status"],
                                                     "reasons": event["record"]["reasons"]}}
                    link.send(event)
                watch(worker, generation, len(chosen), case_timeout, report)
    finally:
        if worker is not None:
            worker.stop()
