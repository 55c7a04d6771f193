"""int8 decode on CPUs against float32, measured side by side in one run.

~125M Llama (small-125m), batch 1, context 128: torch-cpu float32 and int8 (infercost's step
kernel, kernels/decode_f32_cpu.h, by default each matrix's input quantized to int8 as llama.cpp's
Q8_0 does and summed with the best int8 dot product the CPU has; beside the int8 one, the kernel's
other vector forms and int8 dots (among them "float32 activations", int8 rows converted in its
loops) and inductor's compiled step with the int8 GEMV op, on the same model) and jax-cpu float32
and int8 (the same kernel through XLA's FFI), every figure the median of alternating rounds.
As in `infercost run` (one worker process a backend), JAX runs in a process of its own,
answering one round at a time. The ceiling is the read bandwidth of bench/sweep.py's read of the float32
model's own weight buffers, swept before the first timed block and after every one (each model or
form's steps, JAX's round); each block is held against the mean of the sweeps on either side of it
(a shared host's memory speed moved 30 to 64 GB/s between sweeps 0.3 s apart, and a round-wide
pair of sweeps would hold one state's times against another's), and the share printed is the
median over rounds. A step's ceiling time is its bytes over that bandwidth,
counted as `infercost run` counts them for MBU (weights as stored, so int8 values and scales,
plus the KV cache, the embedding row and the logits). JAX's process also sweeps its own
float32 and int8 weights, each right before and after that model's steps ("of own"): on a VM, two processes'
buffers can read at different speeds. After each round the int8 GEMV op runs on a matrix that stays in cache: the arithmetic
rate of the "float32 activations" dot's loop, which bounds that form wherever memory reads faster
than it converts (the step's int8 weights over that rate). Targets (the quantization issue and issue 30):
torch int8 >= 2.5x torch float32 tokens/s; torch int8 >= 80% of its ceiling, jax int8 >= 80% of
its own; jax int8 time per token within 1.25x of torch int8; float32 >= 90% of the ceiling, torch's
of its own, jax's of its own (decode_vs_hf.py holds both against one set of buffers in one process).

    python bench/perf/quant_decode.py [--rounds 5] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from targets import cap_isa, report  # bench/perf/targets.py, beside this script

HOST = cap_isa()  # before torch and jax start (INFERCOST_CPU_ISA=avx2 measures an AVX2-only host's paths)


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
    from infercost.kernels.dtypes import QuantSpec
    from infercost.kernels.llama import CONFIGS

    cfg = CONFIGS[model]
    backend = open_backend(backend_name, threads=available_cpus())
    backend.configure("float32", False)
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, context))
    out = {}
    for fmt in models:
        kw = dict(seed=0) if fmt == "float32" else dict(weights=quant.quantize_seeded(cfg, 0, fmt), quant=QuantSpec(fmt))
        runner = backend.load_model(cfg, "float32", 1, context + 1, **kw)
        runner.prefill_step(prompt)()
        step = runner.decode_step([[1]], context)
        step_time(backend, step, 5, warmup=0)  # compile and warm up
        print(f"{backend_name} {fmt}: {runner.launch}", file=sys.stderr)
        out[f"{backend_name} {fmt}"] = (backend, step, runner)
    return out


def child(backend_name: str, model: str, context: int, steps: int) -> None:
    """Answer each line on stdin with one round of `backend_name`'s float32 and int8 models, as a
    JSON line: name -> [median step time, read bandwidth of sweeps over that model's own buffers,
    the mean of one right before its steps and one right after]."""
    models = decode_steps(backend_name, ["float32", "int8"], model, context)
    print("ready", flush=True)
    sweep = lambda backend, runner: (backend.read_bandwidth(runner.streamed()) or (0.0,))[0]
    for _ in sys.stdin:
        out = {}
        for name, (backend, step, runner) in models.items():
            before = sweep(backend, runner)
            t = step_time(backend, step, steps)
            out[name] = [t, (before + sweep(backend, runner)) / 2]
        print(json.dumps(out), flush=True)


def kernel_rate(rows: int = 1024, cols: int = 768, calls: int = 200) -> float | None:
    """Weights per second that torch's int8 one-row kernel (its default form) converts and sums from
    cache (a 0.75 MB matrix, in L2), the median of `calls`; None where the kernel is not built."""
    import torch

    from infercost.kernels import int8_gemv_torch_cpu
    if not int8_gemv_torch_cpu.available():
        return None
    gen = torch.Generator().manual_seed(0)
    w = torch.randint(-127, 128, (rows, cols), dtype=torch.int8, generator=gen)
    x, scale = torch.randn(1, cols, generator=gen), torch.rand(rows, generator=gen)
    times = []
    for _ in range(calls + 10):
        t0 = time.perf_counter()
        int8_gemv_torch_cpu.int8_gemv(x, w, scale)
        times.append(time.perf_counter() - t0)
    return rows * cols / statistics.median(times[10:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--model", default="small-125m")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a backend, run as the other process
    args = parser.parse_args()
    from infercost.kernels.llama import CONFIGS
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.model not in CONFIGS:
        parser.error(f"unknown --model {args.model!r}; known: {', '.join(sorted(CONFIGS))}")
    context = 128
    if args.child:
        child(args.child, args.model, context, args.steps)
        return 0

    from infercost.bench.sweep import read_sweep
    from infercost.bench.adapters.torch_backend import host_views
    from infercost.hardware.host import available_cpus

    threads = available_cpus()
    runners = decode_steps("torch-cpu", ["float32", "int8"], args.model, context)
    jax = subprocess.Popen([sys.executable, __file__, "--child", "jax-cpu", "--model", args.model,
                            "--steps", str(args.steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if jax.stdout.readline().strip() != "ready":
        sys.exit("the jax-cpu process did not start")

    def jax_round() -> dict:
        jax.stdin.write("round\n")
        jax.stdin.flush()
        return json.loads(jax.stdout.readline())

    float_buffers = runners["torch-cpu float32"][2].streamed()
    float_bytes, int8_bytes = (step_bytes(args.model, context, mode) for mode in (None, "int8"))
    sweep = lambda: read_sweep(host_views(float_buffers), threads)
    # The int8 step's other forms on the very same model and buffers, so the default's choice can be
    # checked on any host ("torch-cpu int8" is the default): the step kernel's other vector forms
    # where it runs the step, and inductor's compiled step (the int8 GEMV op between its loops).
    from infercost.kernels import decode_f32, decode_f32_torch_cpu, llama_torch_cpu
    int8_runner = runners["torch-cpu int8"][2]
    default_decode = int8_runner._decode
    variants = {}
    if "decode step" in int8_runner.launch:
        default, default_dot = decode_f32.chosen_form()[0], decode_f32.chosen_int8_dot()[0]
        variants = {f"  int8 {f} form": decode_f32_torch_cpu.step(int8_runner.model, f)
                    for f in decode_f32.runnable_forms() if f not in (default, "plain C++")}
        variants |= {f"  int8 dot {d}": decode_f32_torch_cpu.step(int8_runner.model, int8_dot=d)
                     for d in decode_f32.runnable(decode_f32.INT8_DOTS) if d not in (default_dot, "plain C++")}
        variants["  int8 inductor + GEMV op"] = llama_torch_cpu.inductor(int8_runner._eager_decode, int8_runner.model)
    jax_names = ("jax-cpu float32", "jax-cpu int8")
    times = {name: [] for name in [*runners, *variants, *jax_names]}
    ceilings = {name: [] for name in times}  # per timed block: the mean of the sweeps either side of it
    bandwidths, jax_bandwidths, rates = [sweep()], {name: [] for name in jax_names}, []

    def swept(*names: str) -> None:  # a sweep after these names' latest blocks, which it closes
        bandwidths.append(sweep())
        for name in names:
            ceilings[name].append((bandwidths[-2] + bandwidths[-1]) / 2)

    for r in range(args.rounds):  # alternate: drift on a shared host hits every variant alike
        for name, (backend, step, _) in runners.items():
            times[name].append(step_time(backend, step, args.steps))
            swept(name)
        for name, decode in variants.items():
            int8_runner._decode = decode
            backend, step, _ = runners["torch-cpu int8"]
            times[name].append(step_time(backend, step, args.steps))
            int8_runner._decode = default_decode
            swept(name)
        for name, (t, jax_bw) in jax_round().items():
            times[name].append(t)
            jax_bandwidths[name].append(jax_bw)
        swept(*jax_names)
        rates.append(kernel_rate())
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    jax.stdin.close()
    jax.wait()
    tpot = {name: statistics.median(t) for name, t in times.items()}
    ratio = tpot["torch-cpu float32"] / tpot["torch-cpu int8"]

    def share(name: str, bws: list[float]) -> float:
        nbytes = float_bytes if name.endswith("float32") else int8_bytes
        return statistics.median(nbytes / bw / t for bw, t in zip(bws, times[name], strict=True))
    jax_ratio = statistics.median(j / t for j, t in zip(times["jax-cpu int8"], times["torch-cpu int8"]))

    print(f"\n{args.model} batch 1, context {context}, {threads} threads on {HOST}; medians of {args.rounds} "
          f"alternating rounds x {args.steps} steps; torch's int8 step: {int8_runner.launch}")
    print(f"read bandwidth (bench/sweep.py over the float32 weights): {min(bandwidths) / 1e9:.1f} to "
          f"{max(bandwidths) / 1e9:.1f} GB/s; bytes per token (weights, KV cache, logits): float32 "
          f"{float_bytes / 1e6:.1f} MB, int8 {int8_bytes / 1e6:.1f} MB")
    # Buffers of different processes can read at different speeds on a VM (where their memory
    # landed), so JAX's share is also given against a sweep of its own int8 buffers.
    for name, bws in jax_bandwidths.items():
        print(f"jax-cpu's process, the same sweep over its own {name.split()[-1]} weights: {min(bws) / 1e9:.1f} to "
              f"{max(bws) / 1e9:.1f} GB/s")
    if all(rates):
        int8_weights = sum(b.numel() for b in runners["torch-cpu int8"][2].streamed() if b.element_size() == 1)
        print(f"torch's int8 GEMV op from cache (the loop of the step kernel's \"float32 activations\" int8 dot): "
              f"{min(rates) / 1e9:.1f} to "
              f"{max(rates) / 1e9:.1f} G weights/s (the step's "
              f"{int8_weights / 1e6:.1f} M int8 weights in {int8_weights / max(rates) * 1e3:.2f} ms at best); read "
              f"bandwidth over arithmetic rate per round: "
              + ", ".join(f"{c / r:.2f}" for c, r in zip(ceilings["torch-cpu int8"], rates)))
    if max(bandwidths) > 1.25 * min(bandwidths):
        print(f"note: the host's read bandwidth moved by {max(bandwidths) / min(bandwidths) - 1:.0%} during this run; "
              "each timed block is held against the sweeps on either side of it")
    print(f"{'':<32}{'TPOT ms':>9}{'tok/s':>9}{'of ceiling':>12}{'of own':>9}")
    for name, t in tpot.items():
        own = f"{share(name, jax_bandwidths[name]):>9.1%}" if all(jax_bandwidths.get(name, [0])) else ""
        print(f"{name:<32}{t * 1e3:>9.2f}{1 / t:>9.1f}{share(name, ceilings[name]):>12.1%}{own}")
    checks = [("torch-cpu int8 / float32 tokens/s", ratio, 2.5, ">="),
              ("torch-cpu int8 share of its ceiling", share("torch-cpu int8", ceilings["torch-cpu int8"]), 0.80, ">="),
              ("jax-cpu int8 share of its own ceiling", share("jax-cpu int8", jax_bandwidths["jax-cpu int8"]), 0.80, ">="),
              ("jax-cpu int8 TPOT / torch-cpu int8 TPOT", jax_ratio, 1.25, "<="),
              ("torch-cpu float32 share of its ceiling", share("torch-cpu float32", ceilings["torch-cpu float32"]), 0.90, ">="),
              ("jax-cpu float32 share of its own ceiling",
               share("jax-cpu float32", jax_bandwidths["jax-cpu float32"]), 0.90, ">=")]
    return 0 if report(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
