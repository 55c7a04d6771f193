"""The prepared GPU check: one call that measures what the issues ask of a GPU, writes every
record under --out, and prints a short table last.

1. bf16 8192^3 matmul: infercost next to triton.testing.do_bench on the same case (target
   ratio >= 0.97) and next to the catalog's dense peak.
2. The matmul sweep (achieved TFLOP/s curve) on every GPU backend, through `infercost run`.
3. llama-3.1-8b in bf16: decode at batch 1 and a larger batch, prefill of 2048 tokens, on
   torch-cuda and jax-gpu; batch-1 decode against the HBM bandwidth ceiling (target >= 85%).
4. int8 and fp8 batch-1 decode beside bf16 (target int8 >= 1.6x bf16 tokens/s).
5. jax-gpu and torch-cuda sharded on a 1-device mesh beside unsharded, and the collectives sweep
   (one GPU: tp=1 only, and collectives need 2 or more devices: recorded as skipped there).
6. torch-cuda batch-1 decode again in two more processes: the spread of tokens/s across three
   processes (target max/min <= 1.05); energy per token from the board's counter, with power
   and clocks, for batch 1 and the larger batch.
7. qwen3-30b-a3b (a mixture of experts) in bf16: decode at batch 1 and the larger batch on both
   backends (its MBU counts the experts the step's router chose).

    python bench/perf/gpu_check.py --out DIR
    python bench/perf/gpu_check.py --out DIR --dry-run   # the same steps on CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def do_bench_comparison(backend_name: str, n: int, rounds: int) -> dict:
    """infercost's figure and do_bench's for the same bf16 n^3 product, alternating rounds."""
    import torch

    from infercost.bench.backend import open_backend
    from infercost.bench.timing import Settings
    from infercost.bench.measure import measure_case
    from infercost.bench.workloads import MatmulWorkload
    from infercost.kernels.matmul import Matmul

    backend = open_backend(backend_name)
    case = {"backend": backend_name, "workload": "matmul", "params": {"m": n, "n": n, "k": n},
            "dtype": "bfloat16", "tf32": False, "threads": None}
    a, b = (backend.put(x, "bfloat16") for x in Matmul(n, n, n, "bfloat16").inputs(0))
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    flops = 2 * n**3
    ours, theirs, record = [], [], None
    for _ in range(rounds):
        if do_bench is not None:
            ms = do_bench(lambda: torch.matmul(a, b), warmup=100, rep=500)  # mean, L2 flushed per call
            theirs.append(flops / (ms / 1e3) / 1e12)
        record = measure_case(backend, MatmulWorkload(case), case, Settings(warmup_s=0.3, min_time_s=1.0, min_blocks=20), 0, 1)
        ours.append(record["metrics"]["tflops"] if record["status"] == "ok" else float("nan"))
    return {"device": backend.device_name(), "infercost_tflops": statistics.median(ours),
            "do_bench_tflops": statistics.median(theirs) if theirs else None,
            "peak_tflops": record["metrics"].get("peak_tflops") if record.get("metrics") else None,
            "status": record["status"], "reasons": record["reasons"], "check_error": record["check"]["error"]}


def infercost_run(args: list[str], out: Path, log_file: Path, timeout: float) -> None:
    cmd = [sys.executable, "-m", "infercost.cli", "run", "--out", str(out), *args]
    log("$ infercost " + " ".join(cmd[3:]))
    with log_file.open("a") as f:
        try:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  stopped after {timeout:.0f} s; finished records are kept")


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU backends and tiny sizes, to test this script")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    left = lambda: max(30.0, deadline - time.monotonic())

    if args.dry_run:
        torch_b, jax_b, n, model, batches, tokens = "torch-cpu", "jax-cpu", 512, "tiny", "1,4", "64"
        moe_model = "tiny-moe"
        sweep = ["--shape", "256x256x256", "--shape", "512x512x512", "--dtype", "float32"]
    else:
        torch_b, jax_b, n, model, batches, tokens = "torch-cuda", "jax-gpu", 8192, "llama-3.1-8b", "1,16", "2048"
        moe_model = "qwen3-30b-a3b"  # 61 GB in bf16: fits one 80 GB GPU
        sweep = [f"--shape={s}x{s}x{s}" for s in (256, 512, 1024, 2048, 4096, 8192, 16384)] + ["--dtype", "bfloat16"]
    fast = ["--warmup", "0.2", "--min-time", "0.5", "--case-timeout", "300"]
    run_log = args.out / "runs.log"

    log(f"1. bf16 {n}^3 matmul: infercost vs do_bench ({torch_b})")
    try:
        cmp = do_bench_comparison(torch_b, n, rounds=3)
    except Exception as e:
        cmp = {"error": f"{type(e).__name__}: {e}"}
    (args.out / "do_bench.json").write_text(json.dumps(cmp, indent=1))
    log(f"   {cmp}")

    log("2. transformer: batch-1 decode and prefill first, then the larger batch; torch then jax")
    llm = args.out / "llm.jsonl"
    small, large = batches.split(",")
    for backend in (torch_b, jax_b):
        infercost_run(["--backend", backend, "--model", model, "--dtype", "bfloat16", "--workload", "decode",
                       "--batch", small, "--tokens", tokens, *fast], llm, run_log, timeout=min(200, left()))
        infercost_run(["--backend", backend, "--model", model, "--dtype", "bfloat16", "--workload", "prefill",
                       "--batch", "1", "--tokens", tokens, *fast], llm, run_log, timeout=min(120, left()))
    for backend in (torch_b, jax_b):
        infercost_run(["--backend", backend, "--model", model, "--dtype", "bfloat16", "--workload", "decode",
                       "--batch", large, "--tokens", tokens, *fast], llm, run_log, timeout=min(150, left()))

    log("3. quantized decode (int8, fp8) beside bf16 at batch 1, torch then jax (fp8 skipped where the device lacks it)")
    for backend in (torch_b, jax_b):
        for q in ("int8", "fp8"):
            infercost_run(["--backend", backend, "--model", model, "--dtype", "bfloat16", "--workload", "decode",
                           "--batch", "1", "--tokens", tokens, "--quant", q, *fast], llm, run_log,
                          timeout=min(200, left()))

    log("4. tensor-parallel machinery on one device (tp=1 beside unsharded) and the collectives sweep")
    for backend in (jax_b, torch_b):
        infercost_run(["--backend", backend, "--model", model, "--dtype", "bfloat16", "--workload", "decode",
                       "--batch", small, "--tokens", tokens, "--mesh", "tp=1,dp=1", *fast], llm, run_log,
                      timeout=min(150, left()))
    infercost_run(["--backend", jax_b, "--suite", "collectives", *fast], args.out / "collectives.jsonl", run_log,
                  timeout=min(120, left()))

    log("4b. batch-1 decode in two more processes (spread across processes)")
    spread = args.out / "spread.jsonl"
    for _ in range(2):
        infercost_run(["--backend", torch_b, "--model", model, "--dtype", "bfloat16", "--workload", "decode",
                       "--batch", small, "--tokens", tokens, *fast], spread, run_log, timeout=min(150, left()))

    log("4c. a mixture of experts: decode at batch 1 (experts by index, compiled) and the larger batch, torch then jax")
    for backend in (torch_b, jax_b):
        infercost_run(["--backend", backend, "--model", moe_model, "--dtype", "bfloat16", "--workload", "decode",
                       "--batch", batches, "--tokens", tokens, *fast], args.out / "moe.jsonl", run_log,
                      timeout=min(200, left()))

    log("5. matmul sweep on both backends")
    infercost_run(["--backend", f"{torch_b},{jax_b}", *sweep, *fast], args.out / "matmul.jsonl", run_log,
                  timeout=min(180, left()))
    infercost_run(["--backend", f"{torch_b},{jax_b}", f"--shape={n}x{n}x{n}", "--dtype", "float32,float16",
                   *fast, *([] if args.dry_run else ["--tf32"])], args.out / "matmul.jsonl", run_log,
                  timeout=min(90, left()))

    # -- the short table, last --------------------------------------------------------
    print("\n=== summary ===")
    if "error" in cmp:
        print(f"do_bench comparison failed: {cmp['error']}")
    else:
        ratio = cmp["infercost_tflops"] / cmp["do_bench_tflops"] if cmp["do_bench_tflops"] else float("nan")
        peak = cmp["peak_tflops"]
        print(f"bf16 {n}^3 on {cmp['device']}: infercost {cmp['infercost_tflops']:.1f} TFLOP/s, do_bench "
              f"{cmp['do_bench_tflops'] or float('nan'):.1f}, ratio {ratio:.3f} (target >= 0.97); dense peak "
              f"{peak or float('nan')} -> {cmp['infercost_tflops'] / peak if peak else float('nan'):.1%}")
    from rich.console import Console

    from infercost.present import collective_table, llm_table, matmul_table
    console = Console(width=200)
    done = records(llm) + records(args.out / "matmul.jsonl") + records(args.out / "collectives.jsonl")
    moe = records(args.out / "moe.jsonl")
    console.print(matmul_table([r for r in done if r["case"]["workload"] == "matmul"]))
    console.print(llm_table([r for r in done + moe if r["case"]["workload"] in ("prefill", "decode")]))
    collectives = [r for r in done if r["case"]["workload"] == "collective"]
    if collectives:
        console.print(collective_table(collectives))
    rate = {(r["case"]["backend"], r["case"].get("weight_dtype"), r["case"].get("layout")): r["metrics"].get("output_tokens_per_s")
            for r in done if r["case"]["workload"] == "decode" and r["case"]["params"]["batch"] == int(small)
            and r["status"] == "ok"}
    for backend in (torch_b, jax_b):
        base = rate.get((backend, "bfloat16", None))
        for q in ("int8", "fp8"):
            got = rate.get((backend, q, None))
            if base and got:
                print(f"{backend} {q} / bf16 decode tokens/s at batch {small}: {got / base:.2f}"
                      + ("  (target >= 1.6)" if q == "int8" else ""))
        tp1 = rate.get((backend, "bfloat16", "tp=1,dp=1"))
        if base and tp1:
            print(f"{backend} sharded tp=1 / unsharded decode time per token: {base / tp1:.3f}  (target within 3%)")
    first = rate.get((torch_b, "bfloat16", None))
    again = [r["metrics"]["output_tokens_per_s"] for r in records(spread) if r["status"] == "ok"]
    if first and again:
        runs = [first, *again]
        print(f"{torch_b} batch-{small} decode tokens/s in {len(runs)} processes: "
              f"{', '.join(f'{x:.1f}' for x in runs)}; max/min {max(runs) / min(runs):.3f} (target <= 1.05)")
    big = {r["case"]["backend"]: r["metrics"]["tpot_s"] for r in done if r["case"]["workload"] == "decode"
           and r["case"]["params"]["batch"] == int(large) and r["status"] == "ok" and not r["case"].get("layout")
           and r["case"].get("weight_dtype") == "bfloat16"}
    if big.get(torch_b) and big.get(jax_b):
        print(f"{jax_b} / {torch_b} time per token at batch {large}: {big[jax_b] / big[torch_b]:.3f} (target <= 1.2)")
    for r in done + records(spread):
        m, c = r.get("metrics") or {}, r["case"]
        if c["workload"] == "decode" and m.get("tokens_per_joule") and not c.get("layout"):
            state = (r.get("timing") or {}).get("device_state") or {}
            after = state.get("after") or {}
            print(f"{c['backend']} decode b{c['params']['batch']} {c.get('weight_dtype')}: {m['tokens_per_joule']:.3g} "
                  f"tokens/J ({m.get('energy_source')}), {m.get('power_w') or float('nan'):.0f} W, SM clock "
                  f"{after.get('sm_clock_mhz')} of {after.get('max_sm_clock_mhz')} MHz, "
                  f"slowdowns: {', '.join(after.get('slowdowns') or []) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
