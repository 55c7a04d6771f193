"""Harness overhead: infercost's reported TFLOP/s against a careful plain measurement.

For a large float32 matmul on torch-cpu and jax-cpu, each framework in its own process, the
two measurements alternate (plain, infercost, plain, infercost, ...) so drift on a shared
machine hits both alike. Target: infercost within 3% of the plain figure.

    python bench/perf/overhead.py [--size 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TARGET = 0.03


def plain_torch(n: int, threads: int, seed: int) -> float:
    """torch.utils.benchmark's blocked_autorange, same inputs and threads; median seconds."""
    import torch
    import torch.utils.benchmark as tb

    from infercost.kernels.matmul import Matmul
    a, b = (torch.from_numpy(x) for x in Matmul(n, n, n, "float32").inputs(seed))
    timer = tb.Timer("torch.matmul(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads)
    timer.timeit(3)  # warm-up
    return timer.blocked_autorange(min_run_time=1.0).median


def plain_jax(n: int, threads: int, seed: int) -> float:
    """The compiled function called in a loop, blocking on each result; median seconds."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from infercost.kernels.matmul import Matmul
    a, b = (jax.device_put(x) for x in Matmul(n, n, n, "float32").inputs(seed))
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)).lower(a, b).compile()
    for _ in range(3):
        f(a, b).block_until_ready()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < 1.0 or len(times) < 10:
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_framework(backend_name: str, n: int, rounds: int, seed: int) -> dict:
    from infercost.bench.backend import open_backend
    from infercost.bench.timing import Settings
    from infercost.bench.measure import measure_case
    from infercost.bench.workloads import MatmulWorkload
    from infercost.hardware.host import available_cpus

    threads = available_cpus()
    backend = open_backend(backend_name, threads=threads)
    plain_fn = plain_torch if backend.framework == "torch" else plain_jax
    case = {"backend": backend_name, "workload": "matmul", "params": {"m": n, "n": n, "k": n},
            "dtype": "float32", "tf32": False, "threads": threads}
    flops = 2 * n**3
    plain, ours, steady = [], [], []
    for _ in range(rounds):
        plain.append(flops / plain_fn(n, threads, seed) / 1e12)
        record = measure_case(backend, MatmulWorkload(case), case, Settings(min_time_s=1.0), seed, threads)
        assert record["status"] == "ok", record["reasons"]
        ours.append(record["metrics"]["tflops_median"])
        steady.append(record["metrics"]["tflops"])
    return {"backend": backend_name, "size": n, "threads": threads,
            "plain_tflops": statistics.median(plain), "infercost_tflops": statistics.median(ours),
            "infercost_steady_tflops": statistics.median(steady), "plain_all": plain, "infercost_all": ours}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one backend in this process
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure_framework(args.only, args.size, args.rounds, args.seed)))
        return 0
    rows = []
    for name in ("torch-cpu", "jax-cpu"):
        out = subprocess.run([sys.executable, __file__, "--only", name,
                              "--size", str(args.size), "--rounds", str(args.rounds)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    plain_name = {"torch-cpu": "Timer.blocked_autorange", "jax-cpu": "jit loop + block_until_ready"}
    print(f"\nfloat32 {args.size}^3 matmul, medians of {args.rounds} alternating rounds")
    print(f"{'backend':<10} {'plain method':<30} {'plain TFLOP/s':>13} {'infercost':>10} {'ratio':>7}  verdict")
    ok = True
    for r in rows:
        ratio = r["infercost_tflops"] / r["plain_tflops"]
        good = abs(ratio - 1) <= TARGET
        ok &= good
        print(f"{r['backend']:<10} {plain_name[r['backend']]:<30} {r['plain_tflops']:>13.4f} "
              f"{r['infercost_tflops']:>10.4f} {ratio:>7.3f}  {'within' if good else 'OUTSIDE'} {TARGET:.0%}")
    return 0 if ok and len(rows) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
