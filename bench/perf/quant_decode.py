"""int8 weight-only decode on CPUs against float32, measured side by side in one run.

~125M Llama (small-125m), batch 1, context 128: torch-cpu float32 (the compiled fused GEMV),
torch-cpu int8 (the compiled step, its int8 products by kernels/int8_gemv_cpu.cpp where it
builds) and jax-cpu int8 (dequantize-and-dot), every figure the median of alternating rounds.
As in `infercost run` (one worker process a backend), JAX runs in a process of its own,
answering one round at a time. The ceiling is the read bandwidth of ATen's sum over the float32
model's own weight buffers, taken around each round; a step's ceiling time is its bytes over that
bandwidth, counted as `infercost run` counts them for MBU (weights as stored, so int8 values and
scales, plus the KV cache, the embedding row and the logits). JAX's process also sweeps its own
int8 weights after each round ("of own"): on a VM, two processes' buffers can read at different
speeds. Targets (the quantization issue): torch
int8 >= 2.5x torch float32 tokens/s; torch int8 >= 80% of its ceiling; jax int8 time per token
within 1.25x of torch int8.

    python bench/perf/quant_decode.py [--rounds 5] [--steps 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from targets import report  # bench/perf/targets.py, beside this script


def step_time(backend, step, steps: int, warmup: int = 10) -> float:
    """Median seconds of one decode step, each call synchronised, after `warmup` untimed steps.
    Why warm up each round: a round starts right after another process's (JAX after torch), and
    its first steps ran 10-30% slower than the rest on the EPYC host (the other side's threads
    still spinning, its own asleep), as `infercost run` warms up before it times."""
    for _ in range(warmup):
        backend.sync(step())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        backend.sync(step())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_bytes(model: str, context: int, quant: str | None) -> int:
    """Bytes a decode step moves at least, counted as `infercost run` counts them for MBU: every
    weight as stored (int8 values and scales), the KV cache, the embedding row and the logits."""
    from infercost.bench.llm import TransformerWorkload

    params = {"model": model, "batch": 1, "tokens": context, **({"quant": quant} if quant else {})}
    return TransformerWorkload({"workload": "decode", "dtype": "float32", "params": params}).work()[1]


def decode_steps(backend_name: str, models: list[str], model: str, context: int) -> dict:
    """name -> (backend, step) of warmed-up batch-1 decode steps on one backend."""
    import numpy as np

    from infercost.bench.backend import open_backend
    from infercost.hardware.host import available_cpus
    from infercost.kernels import quant
    from infercost.kernels.llama import CONFIGS

    cfg = CONFIGS[model]
    backend = open_backend(backend_name, threads=available_cpus())
    backend.configure("float32", False)
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, context))
    out = {}
    for fmt in models:
        kw = dict(seed=0) if fmt == "float32" else dict(weights=quant.quantize_seeded(cfg, 0, fmt), quant=fmt)
        runner = backend.load_model(cfg, "float32", 1, context + 1, **kw)
        runner.prefill_step(prompt)()
        step = runner.decode_step([[1]], context)
        step_time(backend, step, 5, warmup=0)  # compile and warm up
        print(f"{backend_name} {fmt}: {runner.launch}", file=sys.stderr)
        out[f"{backend_name} {fmt}"] = (backend, step, runner)
    return out


def child(backend_name: str, model: str, context: int, steps: int) -> None:
    """Answer each line on stdin with one round's median step time on `backend_name` (int8) and
    the read bandwidth of a sweep over that model's own buffers, taken after it."""
    ((backend, step, runner),) = decode_steps(backend_name, ["int8"], model, context).values()
    print("ready", flush=True)
    for _ in sys.stdin:
        t = step_time(backend, step, steps)
        print(t, (backend.read_bandwidth(runner.streamed()) or (0.0,))[0], flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="small-125m")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend, run as the other process
    args = parser.parse_args()
    context = 128
    if args.child:
        child(args.child, args.model, context, args.steps)
        return 0

    from infercost.bench.torch_backend import weight_read_sweep
    from infercost.hardware.host import available_cpus, cpu_model

    threads = available_cpus()
    runners = decode_steps("torch-cpu", ["float32", "int8"], args.model, context)
    jax = subprocess.Popen([sys.executable, __file__, "--child", "jax-cpu", "--model", args.model,
                            "--steps", str(args.steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if jax.stdout.readline().strip() != "ready":
        sys.exit("the jax-cpu process did not start")

    def jax_round() -> tuple[float, float]:
        jax.stdin.write("round\n")
        jax.stdin.flush()
        t, bw = map(float, jax.stdout.readline().split())
        return t, bw

    float_buffers = runners["torch-cpu float32"][2].streamed()
    float_bytes, int8_bytes = (step_bytes(args.model, context, mode) for mode in (None, "int8"))
    sweep = lambda: weight_read_sweep(float_buffers, threads)
    times = {name: [] for name in [*runners, "jax-cpu int8"]}
    bandwidths, jax_bandwidths = [sweep()], []
    for r in range(args.rounds):  # alternate: drift on a shared host hits every variant alike
        for name, (backend, step, _) in runners.items():
            times[name].append(step_time(backend, step, args.steps))
        t, jax_bw = jax_round()
        times["jax-cpu int8"].append(t)
        jax_bandwidths.append(jax_bw)
        bandwidths.append(sweep())
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    jax.stdin.close()
    jax.wait()
    bw = statistics.median(bandwidths)
    tpot = {name: statistics.median(t) for name, t in times.items()}
    ratio = tpot["torch-cpu float32"] / tpot["torch-cpu int8"]
    share = int8_bytes / bw / tpot["torch-cpu int8"]
    jax_ratio = statistics.median(j / t for j, t in zip(times["jax-cpu int8"], times["torch-cpu int8"]))

    print(f"\n{args.model} batch 1, context {context}, {threads} threads on {cpu_model()}; medians of {args.rounds} "
          f"alternating rounds x {args.steps} steps")
    print(f"read bandwidth (ATen sum over the float32 weights): {min(bandwidths) / 1e9:.1f} to "
          f"{max(bandwidths) / 1e9:.1f} GB/s; bytes per token (weights, KV cache, logits): float32 "
          f"{float_bytes / 1e6:.1f} MB, int8 {int8_bytes / 1e6:.1f} MB")
    # Buffers of different processes can read at different speeds on a VM (where their memory
    # landed), so JAX's share is also given against a sweep of its own int8 buffers.
    print(f"jax-cpu's process, the same sweep over its own int8 weights: {min(jax_bandwidths) / 1e9:.1f} to "
          f"{max(jax_bandwidths) / 1e9:.1f} GB/s")
    jax_bw = statistics.median(jax_bandwidths)
    print(f"{'':<20}{'TPOT ms':>9}{'tok/s':>9}{'of ceiling':>12}{'of own':>9}")
    for name, t in tpot.items():
        nbytes = float_bytes if "float32" in name else int8_bytes
        own = f"{nbytes / jax_bw / t:>9.1%}" if name.startswith("jax") and jax_bw else ""
        print(f"{name:<20}{t * 1e3:>9.2f}{1 / t:>9.1f}{nbytes / bw / t:>12.1%}{own}")
    checks = [("torch-cpu int8 / float32 tokens/s", ratio, 2.5, ">="),
              ("torch-cpu int8 share of its ceiling", share, 0.80, ">="),
              ("jax-cpu int8 TPOT / torch-cpu int8 TPOT", jax_ratio, 1.25, "<=")]
    return 0 if report(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
