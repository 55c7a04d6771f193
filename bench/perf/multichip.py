"""Sharding machinery adds no cost, and collectives are timed as a plain loop would time them.

On this CPU, for JAX (forced host devices) and PyTorch (gloo ranks, one process each):
1. the sharded decoder on one device (a 1-device mesh; torch: a group of one rank) against the
   unsharded one: ~125M Llama (or --model small-moe), batch 1, context 128, time per decode step, alternating rounds
   (target: within 3%);
2. an all-reduce of 16 MiB (JAX: over 4 host devices; torch: over 2 ranks), or with --op the
   all-to-all of a mixture of experts' dispatch and combine: infercost's bus bandwidth (its timing
   loop and statistics) against the same call timed by hand in a plain loop (JAX: the jitted call;
   torch: dist.all_reduce or dist.all_to_all_single on every rank, with no infercost code)
   (target: within 3%).

    python bench/perf/multichip.py [--rounds 5] [--framework jax|torch|both] [--op all-to-all] [--model small-moe]
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from targets import report  # noqa: E402  (bench/perf/targets.py, beside this script)


def decode_time(runner, steps: int, sync) -> float:
    step = runner.decode_step([[1]], 128)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tp1_ratio(backend, rounds: int) -> tuple[float, dict]:
    """Sharded-on-one-device / unsharded time per decode step: medians over alternating rounds,
    with the two models built in one order and then again in the other, and the geometric mean of
    the two ratios. Why: on this host the model built second streamed its weights 3-6% faster
    whichever it was (where its buffers landed), which alone would decide a 3% target."""
    import math

    import numpy as np

    from infercost.kernels.models import CONFIGS
    backend.configure("float32", False)
    cfg = CONFIGS[MODEL]
    build = {"unsharded": lambda: backend.load_model(cfg, "float32", 1, 129, seed=0),
             "sharded tp=1": lambda: backend.load_model(cfg, "float32", 1, 129, seed=0, mesh={"tp": 1, "dp": 1})}
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, 128))
    ratios, times = [], {k: [] for k in build}
    for order in (("unsharded", "sharded tp=1"), ("sharded tp=1", "unsharded")):
        runners = {name: build[name]() for name in order}
        for r in runners.values():
            r.prefill_step(prompt)()
            decode_time(r, 5, backend.sync)
        these = {k: [] for k in runners}
        for _ in range(rounds):
            for name, r in runners.items():
                these[name].append(decode_time(r, 30, backend.sync))
        ratios.append(statistics.median(s / u for s, u in zip(these["sharded tp=1"], these["unsharded"])))
        for k in these:
            times[k] += these[k]
        print(f"built {' then '.join(order)}: sharded / unsharded {ratios[-1]:.3f}")
        del runners
    return math.sqrt(ratios[0] * ratios[1]), {k: statistics.median(v) for k, v in times.items()}


OP = "all-reduce"  # --op's
MODEL = "small-125m"  # --model's

def bus_factor(n: int) -> float:
    """nccl-tests' bus bandwidth over algorithm bandwidth: 2(n-1)/n for all-reduce, (n-1)/n for all-to-all."""
    return 2 * (n - 1) / n if OP == "all-reduce" else (n - 1) / n


def infercost_busbw(backend, n: int, nbytes: int) -> tuple[float, str]:
    from infercost.bench.measure import measure_case
    from infercost.bench.timing import Settings
    from infercost.bench.workloads import CollectiveWorkload
    case = {"backend": backend.name, "workload": "collective", "params": {"op": OP, "bytes": nbytes, "devices": n},
            "dtype": "float32", "tf32": False, "threads": 2}
    rec = measure_case(backend, CollectiveWorkload(case), case, Settings(warmup_s=0.3, min_time_s=1.0), 0, 2)
    # From the record's own median time, valid or not (a shared 2-core host is noisy); its
    # verdict is printed.
    busbw = nbytes / rec["stats"]["median"] * bus_factor(n) / 1e9
    return busbw, rec["status"] + (f" ({rec['reasons'][0]})" if rec["reasons"] else "")


def plain_torch_rank(rank: int, n: int, port: int, nbytes: int, result, op: str = "all-reduce") -> None:
    """One rank of a hand-written all-reduce loop, timed as nccl-tests times: after a barrier,
    a block of back-to-back calls, its time over the calls; the median over blocks. No infercost
    code. Rank 0 decides when to stop (after 1 s of blocks and at least 10); the others follow."""
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n)
    x = torch.ones(nbytes // 4)
    out = torch.empty_like(x)
    call = (lambda: dist.all_reduce(x)) if op == "all-reduce" else (lambda: dist.all_to_all_single(out, x))
    for _ in range(3):
        call()
    go = torch.zeros(1, dtype=torch.long)
    per_call, calls = [], 4
    while True:
        if rank == 0:
            go[0] = int(sum(per_call) * calls < 1.0 or len(per_call) < 10)
        dist.broadcast(go, 0)
        if not go[0]:
            break
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        per_call.append((time.perf_counter() - t0) / calls)
    if rank == 0:
        result.put(statistics.median(per_call))
    dist.destroy_process_group()


def plain_torch_busbw(n: int, nbytes: int) -> float:
    import torch.multiprocessing as mp

    from infercost.bench.adapters.torch_dist import free_port
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=plain_torch_rank, args=(r, n, port, nbytes, result, OP)) for r in range(n)]
    for p in procs:
        p.start()
    median = result.get(timeout=300)
    for p in procs:
        p.join()
    return nbytes / median * bus_factor(n) / 1e9


def busbw_rounds(backend, n: int, nbytes: int, rounds: int, plain) -> tuple[list, list, list]:
    """Alternating rounds of infercost's measurement and plain(): bus bandwidths and verdicts."""
    ours, plain_bw, verdicts = [], [], []
    for _ in range(rounds):
        busbw, verdict = infercost_busbw(backend, n, nbytes)
        ours.append(busbw)
        verdicts.append(verdict)
        plain_bw.append(plain())
    return ours, plain_bw, verdicts


def summary(label: str, rounds: int, medians: dict, one_device: str, what: str, ours, plain, verdicts) -> None:
    from infercost.hardware.host import cpu_model
    print(f"\n{label} on {cpu_model()}; medians of {rounds} alternating rounds")
    print(f"decode TPOT, {MODEL} b1 ctx128: unsharded {medians['unsharded'] * 1e3:.2f} ms, "
          f"{one_device} {medians['sharded tp=1'] * 1e3:.2f} ms")
    print(f"{OP} 16 MiB over {what}, bus bandwidth: infercost {statistics.median(ours):.3g} GB/s, "
          f"plain loop {statistics.median(plain):.3g} GB/s; infercost's verdicts: {', '.join(verdicts)}")


def torch_main(rounds: int) -> list[tuple[str, float]]:
    from infercost.bench.adapters import torch_dist
    from infercost.bench.backend import open_backend
    backend = open_backend("torch-cpu", threads=2)
    ratio, medians = tp1_ratio(backend, rounds)
    n, nbytes = 2, 16 << 20

    def plain():
        torch_dist._close()  # infercost's group of ranks ends before the plain loop's starts
        torch_dist._group = None
        return plain_torch_busbw(n, nbytes)
    ours, plain_bw, verdicts = busbw_rounds(backend, n, nbytes, rounds, plain)
    summary("torch-cpu", rounds, medians, "sharded over a group of one rank", f"{n} gloo ranks", ours, plain_bw, verdicts)
    bus_ratio = statistics.median(o / p for o, p in zip(ours, plain_bw))
    return [("torch: sharded tp=1 / unsharded TPOT", ratio), (f"torch: infercost / plain loop {OP} bus bandwidth", bus_ratio)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--framework", choices=("jax", "torch", "both"), default="both")
    parser.add_argument("--op", choices=("all-reduce", "all-to-all"), default="all-reduce")
    parser.add_argument("--model", choices=("small-125m", "small-moe"), default="small-125m",
                        help="the decoder of step 1 (small-moe: the mixture of experts)")
    args = parser.parse_args()
    global OP, MODEL
    OP, MODEL = args.op, args.model
    results = []
    if args.framework in ("jax", "both"):
        results += jax_main(args.rounds)
    if args.framework in ("torch", "both"):
        results += torch_main(args.rounds)
    return 0 if report([(name, value, 0.03, "within") for name, value in results]) else 1


def jax_main(rounds: int) -> list[tuple[str, float]]:
    import jax

    from infercost.bench.backend import open_backend
    backend = open_backend("jax-cpu", threads=2)
    ratio, medians = tp1_ratio(backend, rounds)
    n, nbytes = 4, 16 << 20

    def plain():  # the same jitted call, timed by hand
        fn, fargs, _ = backend.collective(OP, nbytes // 4, "float32", n)
        jax.block_until_ready(fn(*fargs))
        t = []
        while sum(t) < 1.0 or len(t) < 10:
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*fargs))
            t.append(time.perf_counter() - t0)
        return nbytes / statistics.median(t) * bus_factor(n) / 1e9
    ours, plain_bw, verdicts = busbw_rounds(backend, n, nbytes, rounds, plain)
    summary(f"jax-cpu ({len(jax.devices())} host devices)", rounds, medians, "sharded on a 1-device mesh",
            f"{n} host devices", ours, plain_bw, verdicts)
    bus_ratio = statistics.median(o / p for o, p in zip(ours, plain_bw))
    return [("jax: sharded tp=1 / unsharded TPOT", ratio), (f"jax: infercost / plain loop {OP} bus bandwidth", bus_ratio)]


if __name__ == "__main__":
    sys.exit(main())
