"""Batch-1 decode of a mixture of experts on CPUs, torch-cpu and jax-cpu side by side in one run.

small-moe (32 experts, 4 a token, hidden 768: 364M parameters, 100M active), float32, context 128.
Each backend's bytes per step are counted as `infercost run` counts them for MBU, with the experts
its own router chose for the timed token (the embedding row, attention, router, the routed
experts, the head, the KV cache and the logits). As in `infercost run`, JAX runs in a process of
its own, answering one round at a time; every figure is the median of alternating rounds. Each
process sweeps its own weight buffers with bench/sweep.py after every round (torch's also before
the first), and a round is held against its own process's sweeps (on a VM two processes' buffers
can read at different speeds, and a shared host's memory speed moves within a run).
Targets (the MoE issue): MBU against the routed experts' bytes >= 0.80 on both backends; jax-cpu
time per token <= 1.25x torch-cpu's.

    python bench/perf/moe_decode.py [--rounds 5] [--steps 40] [--model small-moe]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from targets import cap_isa, report  # bench/perf/targets.py, beside this script

HOST = cap_isa()  # before torch and jax start
CONTEXT = 128


def step_time(backend, step, steps: int, warmup: int = 10) -> float:
    """Median seconds of one synchronised decode step after `warmup` untimed ones (a round starts
    right after the other process's, whose threads may still be spinning)."""
    for _ in range(warmup):
        backend.sync(step())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        backend.sync(step())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def decode(backend_name: str, model: str):
    """A warmed-up batch-1 decode step, its bytes as `infercost run` counts them (experts as routed)
    and a read sweep over the model's own weight buffers."""
    import numpy as np

    from infercost.bench.backend import open_backend
    from infercost.bench.llm import TransformerWorkload, experts_touched
    from infercost.hardware.host import available_cpus
    from infercost.kernels.models import resolve_config

    cfg = resolve_config(model)
    backend = open_backend(backend_name, threads=available_cpus())
    backend.configure("float32", False)
    runner = backend.load_model(cfg, "float32", 1, CONTEXT + 1, seed=0)
    runner.prefill_step(np.random.default_rng(0).integers(0, cfg.vocab_size, (1, CONTEXT)))()
    step = runner.decode_step([[1]], CONTEXT)
    step_time(backend, step, 5, warmup=0)  # compile and warm up
    work = TransformerWorkload({"workload": "decode", "dtype": "float32",
                                "params": {"model": model, "batch": 1, "tokens": CONTEXT}})
    work.touched = experts_touched(runner.routes())
    print(f"{backend_name}: {runner.launch}; {work.touched:g} experts a layer routed", file=sys.stderr)
    sweep = lambda: (backend.read_bandwidth(runner.streamed()) or (0.0,))[0]
    return backend, step, work.work()[1], sweep


def child(backend_name: str, model: str, steps: int) -> None:
    """Answer each line on stdin with one round's median step time and a sweep taken after it."""
    backend, step, nbytes, sweep = decode(backend_name, model)
    print("ready", nbytes, flush=True)
    for _ in sys.stdin:
        t = step_time(backend, step, steps)
        print(t, sweep(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="small-moe")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend, run as the other process
    args = parser.parse_args()
    from infercost.kernels.models import resolve_config
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    try:
        if resolve_config(args.model).family != "moe":
            parser.error(f"--model {args.model} is not a mixture of experts")
    except (KeyError, ValueError, OSError) as e:
        parser.error(f"--model {args.model}: {e}")
    if args.child:
        child(args.child, args.model, args.steps)
        return 0

    from infercost.hardware.host import available_cpus
    torch_backend, torch_step, torch_bytes, torch_sweep = decode("torch-cpu", args.model)
    jax = subprocess.Popen([sys.executable, __file__, "--child", "jax-cpu", "--model", args.model,
                            "--steps", str(args.steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = jax.stdout.readline().split()
    if not ready or ready[0] != "ready":
        sys.exit("the jax-cpu process did not start")
    jax_bytes = int(ready[1])
    torch_times, jax_times, torch_bws, jax_bws = [], [], [torch_sweep()], []
    for r in range(args.rounds):  # alternate: drift on a shared host hits both alike
        torch_times.append(step_time(torch_backend, torch_step, args.steps))
        torch_bws.append(torch_sweep())
        jax.stdin.write("round\n")
        jax.stdin.flush()
        t, bw = map(float, jax.stdout.readline().split())
        jax_times.append(t)
        jax_bws.append(bw)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    jax.stdin.close()
    jax.wait()
    torch_ceilings = [(a + b) / 2 for a, b in zip(torch_bws, torch_bws[1:])]  # the sweeps either side
    torch_mbu = statistics.median(torch_bytes / bw / t for bw, t in zip(torch_ceilings, torch_times))
    jax_mbu = statistics.median(jax_bytes / bw / t for bw, t in zip(jax_bws, jax_times))
    ratio = statistics.median(j / t for j, t in zip(jax_times, torch_times))
    cfg = resolve_config(args.model)
    print(f"\n{args.model} ({cfg.n_params() / 1e6:.0f}M parameters, {cfg.active_params() / 1e6:.0f}M active; "
          f"{cfg.experts} experts, {cfg.top_k} a token) batch 1, context {CONTEXT}, float32, "
          f"{available_cpus()} threads on {HOST}; medians of {args.rounds} alternating rounds x {args.steps} steps")
    print(f"read bandwidth (bench/sweep.py over each process's own weights): torch {min(torch_bws) / 1e9:.1f} to "
          f"{max(torch_bws) / 1e9:.1f} GB/s, jax {min(jax_bws) / 1e9:.1f} to {max(jax_bws) / 1e9:.1f} GB/s")
    print(f"{'':<12}{'TPOT ms':>9}{'tok/s':>9}{'MB a step':>11}{'MBU':>8}")
    for name, times, nbytes, mbu in (("torch-cpu", torch_times, torch_bytes, torch_mbu),
                                     ("jax-cpu", jax_times, jax_bytes, jax_mbu)):
        t = statistics.median(times)
        print(f"{name:<12}{t * 1e3:>9.2f}{1 / t:>9.1f}{nbytes / 1e6:>11.1f}{mbu:>8.1%}")
    checks = [("torch-cpu MBU against the routed experts' bytes", torch_mbu, 0.80, ">="),
              ("jax-cpu MBU against the routed experts' bytes", jax_mbu, 0.80, ">="),
              ("jax-cpu TPOT / torch-cpu TPOT", ratio, 1.25, "<=")]
    return 0 if report(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
