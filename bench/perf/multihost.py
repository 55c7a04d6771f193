"""Two local "hosts" (two `infercost run` processes on 127.0.0.1, joined as SkyPilot nodes would
be) against one process over two devices, the same layout, through the real command line.

For each backend, rounds alternate: one process with 2 devices (JAX: 2 forced host devices in
one runtime; torch: 2 gloo ranks started by that process), then 2 hosts with 1 device each (JAX:
jax.distributed with gloo between the processes; torch: one rank a host). Time per decode step
from each run's record (its own timing loop and statistics), the two hosts' join time reported
apart (it is outside any timed block). Target: 2 hosts / 1 process within 10%.

    python bench/perf/multihost.py [--rounds 3] [--model small-125m] [--backend jax-cpu,torch-cpu] [--mesh tp=2]
    python bench/perf/multihost.py --backend jax-cpu --mesh dp=2 --batch 2   # the default layout across hosts

tp=2 puts tensor parallelism across the hosts (two all-reduces a layer cross them: legal, and slow
where the link is slow); dp=2 is what a run over hosts does by default (each host its share of the
batch, no collective a layer).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from targets import cap_isa, report  # bench/perf/targets.py, beside this script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], out: Path, hosts: int, threads: int) -> dict:
    """One case through `infercost run`: on one host, or on `hosts` local processes."""
    common = [sys.executable, "-m", "infercost.cli", "run", *args, "--min-time", "3", "--warmup", "1",
              "--threads", str(threads), "--out", str(out)]
    if hosts == 1:
        proc = subprocess.run(common, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            sys.exit(f"one-process run failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")
    else:
        port = free_port()
        procs = []
        for rank in reversed(range(hosts)):
            env = {**os.environ, "SKYPILOT_NUM_NODES": str(hosts), "SKYPILOT_NODE_RANK": str(rank),
                   "SKYPILOT_NODE_IPS": "\n".join(["127.0.0.1"] * hosts)}
            cmd = common[:-2] + (["--out", str(out)] if rank == 0 else []) + ["--coordinator", f"127.0.0.1:{port}"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
        for p in procs:
            text, _ = p.communicate(timeout=900)
            if p.returncode:
                sys.exit(f"a host's run failed: {text[-800:]}")
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    out.unlink()
    if rec["status"] not in ("ok", "invalid") or "stats" not in rec:
        sys.exit(f"no measurement: {rec['status']}: {rec['reasons']}")
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="small-125m")
    ap.add_argument("--backend", default="jax-cpu,torch-cpu")
    ap.add_argument("--mesh", default="tp=2")
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("--rounds: at least 1")
    cores = len(os.sched_getaffinity(0))
    print(f"host: {cap_isa()}; {cores} CPUs; {a.model} b{a.batch} ctx128 float32 decode, layout {a.mesh}; "
          f"one process with {cores} threads vs 2 hosts with {max(1, cores // 2)} each")
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in a.backend.split(","):
            case = ["--backend", backend, "--model", a.model, "--mesh", a.mesh, "--workload", "decode",
                    "--tokens", "128", "--batch", str(a.batch)]
            one, two, joins = [], [], []
            for r in range(a.rounds):
                single = run(case, Path(tmp) / "one.jsonl", 1, cores)
                multi = run(case, Path(tmp) / "two.jsonl", 2, max(1, cores // 2))
                one.append(single["stats"]["median"])
                two.append(multi["stats"]["median"])
                joins.append(max(v for v in multi["hosts"]["open_s"].values() if v is not None))
                print(f"{backend} round {r + 1}: 1 process {one[-1] * 1e3:.2f} ms a step ({single['status']}), "
                      f"2 hosts {two[-1] * 1e3:.2f} ms ({multi['status']}); join and open {joins[-1]:.1f} s, "
                      f"outside the timing", flush=True)
            ratio = statistics.median(two) / statistics.median(one)
            print(f"{backend}: 2 hosts / 1 process time per step {ratio:.3f} (medians of {a.rounds} rounds)")
            checks.append((f"{backend} {a.mesh} 2 hosts / 1 process TPOT", ratio, 0.10, "within"))
    sys.exit(0 if report(checks) else 1)


if __name__ == "__main__":
    main()
