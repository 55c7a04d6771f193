"""The `infercost` command."""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infercost import __version__

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

CUDA_BACKENDS = ("torch-cuda", "jax-gpu")
WORKLOADS = ("matmul", "prefill", "decode")


class UsageError(Exception):
    """Bad input: shown as one line, exit status 2, never a traceback."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors, made one line like ours
        raise UsageError(message)


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3:
        raise UsageError(f"shape {text!r} must be MxNxK, e.g. 1024x1024x1024")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"shape {text!r} must be three whole numbers MxNxK") from None
    if any(d <= 0 for d in dims):
        raise UsageError(f"shape {text!r}: every dimension must be positive")
    return dims


def positive(kind):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return convert


def build_parser() -> Parser:
    from infercost.bench.backend import NAMES
    from infercost.bench.suites import SUITES
    from infercost.kernels.dtypes import DTYPES

    parser = Parser(prog="infercost", description="What does a token cost on this hardware?")
    parser.add_argument("--version", action="version", version=f"infercost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("backends", help="list the backends and whether each can run here")

    run = sub.add_parser("run", help="measure every available backend (default: the quick suite)")
    run.add_argument("--backend", "-b", action="append", type=csv_list, default=[],
                     help=f"backends to run, repeatable or comma-separated ({', '.join(NAMES)}); default: all available")
    run.add_argument("--workload", "-w", action="append", type=csv_list, default=[],
                     help=f"workloads to run ({', '.join(WORKLOADS)}); default: the suite's")
    run.add_argument("--dtype", "-d", action="append", type=csv_list, default=[],
                     help=f"dtypes ({', '.join(DTYPES)}); default: the suite's")
    run.add_argument("--suite", "-s", default="quick", help=f"named suite ({', '.join(SUITES)}); default quick")
    run.add_argument("--shape", action="append", default=[],
                     help="explicit matmul shape MxNxK (repeatable); replaces the suite's shapes")
    run.add_argument("--model", "-m", action="append", type=csv_list, default=[],
                     help="transformer cases for these models (a name or a config.json); replaces the suite's")
    run.add_argument("--batch", action="append", type=csv_list, default=[], help="batch sizes for --model (default 1)")
    run.add_argument("--tokens", action="append", type=csv_list, default=[],
                     help="prompt length (prefill) and context length (decode) for --model (default 128)")
    run.add_argument("--weights", default=None, help="safetensors file or folder with Hugging Face names (default: seeded random weights)")
    run.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls on CUDA GPUs")
    run.add_argument("--repeats", type=positive(int), default=None, help="minimum timed blocks per case (default 10)")
    run.add_argument("--min-time", type=positive(float), default=None, help="minimum seconds of timing per case (default 1)")
    run.add_argument("--warmup", type=positive(float), default=None, help="warm-up seconds per case (default 1)")
    run.add_argument("--threads", type=positive(int), default=None, help="CPU threads for CPU backends (default: all usable CPUs)")
    run.add_argument("--seed", type=int, default=0, help="seed of the input data (default 0)")
    run.add_argument("--out", "-o", type=Path, default=None, help="results file (JSON Lines); default results/run-<time>-<host>.jsonl")
    run.add_argument("--resume", action="store_true", help="skip cases already recorded in --out (default: the newest file in results/)")
    run.add_argument("--case-timeout", type=positive(float), default=600.0, help="seconds before a case is abandoned (default 600)")
    add_price_flags(run)
    run.add_argument("--detect-instance", action="store_true",
                     help="ask the cloud's instance-metadata service which instance this is, to price the run "
                          "(off by default; also INFERCOST_DETECT_INSTANCE=1)")

    cost = sub.add_parser("cost", help="re-price stored results without re-running them")
    cost.add_argument("results", nargs="+", help="result files or folders")
    add_price_flags(cost)
    cost.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")
    cost.add_argument("--max-tpot-ms", type=positive(float), default=None,
                      help="also show the cheapest batch whose time per output token meets this limit")

    est = sub.add_parser("estimate", help="roofline estimate for a model on catalog hardware (an estimate, not a measurement)")
    est.add_argument("--model", "-m", required=True, help="model name or config.json")
    est.add_argument("--accelerator", "-a", required=True, help="a catalog name or a device name, e.g. 'TPU v5e', 'NVIDIA H100 80GB HBM3'")
    est.add_argument("--chips", type=positive(int), default=1)
    est.add_argument("--batch", type=positive(int), default=1)
    est.add_argument("--context", type=positive(int), default=2048)
    est.add_argument("--prompt", type=positive(int), default=None, help="prompt length for prefill (default: the context)")
    est.add_argument("--dtype", default="bfloat16", help="float32, bfloat16, float16, fp8 or int8 (weights and KV cache)")
    est.add_argument("--mfu", type=positive(float), default=1.0, help="scale the compute ceiling by a measured MFU")
    est.add_argument("--mbu", type=positive(float), default=1.0, help="scale the bandwidth ceiling by a measured MBU")
    est.add_argument("--price-per-chip-hour", type=positive(float), default=None, help="USD per chip-hour for the floor $/M tokens")
    est.add_argument("--from-results", nargs="+", default=None, metavar="RESULTS",
                     help="scale by the best MFU (prefill) and MBU (decode) measured in these results")

    rep = sub.add_parser("report", help="Markdown and HTML report with figures, plus CSV and Parquet, from result files")
    rep.add_argument("results", nargs="+", help="result files or folders (from one or many machines)")
    rep.add_argument("--out", "-o", type=Path, required=True, help="folder to write the report to")
    add_price_flags(rep)
    rep.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")

    cmp = sub.add_parser("compare", help="compare two result sets case by case; exit 1 if any case got slower beyond --threshold")
    cmp.add_argument("base", help="baseline results (file or folder)")
    cmp.add_argument("new", help="new results (file or folder)")
    cmp.add_argument("--threshold", default="5%", help="change that counts, e.g. 5%% (default 5%%)")

    ing = sub.add_parser("ingest", help="read pytest-benchmark JSON into infercost results")
    ing.add_argument("json", type=Path, help="the file pytest --benchmark-json wrote")
    ing.add_argument("--out", "-o", type=Path, required=True, help="results file to append to")

    pr = sub.add_parser("prices", help="list price rows, or import a SkyPilot catalog CSV")
    pr.add_argument("--import-skypilot", metavar="CSV", help="convert a SkyPilot vms.csv into infercost's format")
    pr.add_argument("--provider", help="provider of the imported catalog (aws, gcp, azure, ...)")
    pr.add_argument("--as-of", help="date the imported catalog was read (YYYY-MM-DD)")
    pr.add_argument("--out", "-o", type=Path, help="where to write the imported table")
    pr.add_argument("--prices", action="append", default=[], help="extra price table(s) to list")
    pr.add_argument("filter", nargs="?", default="", help="show rows whose provider:instance contains this")
    return parser


def add_price_flags(p) -> None:
    p.add_argument("--instance", action="append", default=None,
                   help="price row provider:instance_type, e.g. gcp:tpu-v6e-8 (see `infercost prices`); repeat to give "
                        "a GPU/TPU instance for accelerator results and a CPU instance for CPU results")
    p.add_argument("--pricing", default="on-demand", help="on-demand, spot, 1-year, 3-year or owned (default on-demand)")
    p.add_argument("--region", help="region of the price row (default: the first listed)")
    p.add_argument("--prices", action="append", default=[], help="your own price table(s), same format as hardware/prices.csv")
    p.add_argument("--price-per-hour", type=positive(float), default=None, help="USD per hour of the machine, instead of a price row")
    p.add_argument("--accelerators", type=int, default=None,
                   help="accelerators the --price-per-hour or --owned price covers (default 1; 0 for a CPU machine)")
    p.add_argument("--owned", type=positive(float), default=None, metavar="USD",
                   help="owned hardware: its purchase price (with --years, --power-w and --kwh-price)")
    p.add_argument("--years", type=positive(float), default=4.0, help="amortisation years for --owned (default 4)")
    p.add_argument("--power-w", type=positive(float), default=None, help="power draw in watts for --owned")
    p.add_argument("--kwh-price", type=positive(float), default=None, help="electricity USD per kWh for --owned")


# -- run ----------------------------------------------------------------------------------

def choose_backends(requested: list[str], probes_fn) -> tuple[list[str], dict]:
    from infercost.bench.backend import NAMES
    for name in requested:
        if name not in NAMES:
            raise UsageError(f"unknown backend {name!r}; valid backends: {', '.join(NAMES)}")
    probes = probes_fn(list(NAMES))
    available = [n for n in (requested or NAMES) if probes[n]["available"]]
    for name in requested:
        if not probes[name]["available"]:
            others = ", ".join(n for n in NAMES if probes[n]["available"]) or "none"
            raise UsageError(f"backend {name} is not available here: {probes[name]['reason']} (available: {others})")
    if not available:
        raise UsageError("no backend is available: install torch or jax (see README)")
    return available, probes


def positive_ints(groups: list[list[str]], flag: str, default: list[int]) -> list[int]:
    values = []
    for text in (v for g in groups for v in g):
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{flag} {text!r} is not a whole number") from None
        if value <= 0:
            raise UsageError(f"{flag} {text!r}: must be positive")
        values.append(value)
    return values or default


def requested_cases(args) -> list[dict] | None:
    """Cases from --shape and --model, or None to take the suite's."""
    from infercost.kernels.llama import resolve_config

    dtypes = [d for g in args.dtype for d in g]
    workloads = [w for g in args.workload for w in g]
    shapes = [parse_shape(s) for s in args.shape]
    models = [m for g in args.model for m in g]
    if not shapes and not models:
        return None
    cases = [{"workload": "matmul", "params": {"m": m, "n": n, "k": k}, "dtype": d}
             for (m, n, k) in shapes for d in (dtypes or ["float32"])]
    batches = positive_ints(args.batch, "--batch", [1])
    tokens = positive_ints(args.tokens, "--tokens", [128])
    if args.weights and not Path(args.weights).exists():
        raise UsageError(f"--weights {args.weights}: no such file or folder")
    for model in models:
        try:
            cfg = resolve_config(model)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.weights:
            from infercost.kernels.llama import check_weights, read_safetensors
            try:
                check_weights(cfg, read_safetensors(args.weights))
            except ValueError as e:
                raise UsageError(f"--weights {args.weights}: {e}") from None
        for phase in [w for w in (workloads or ["prefill", "decode"]) if w != "matmul"]:
            for b in batches:
                for t in tokens:
                    params = {"model": model, "batch": b, "tokens": t}
                    if args.weights:
                        params["weights"] = str(Path(args.weights).resolve())
                    cases += [{"workload": phase, "params": params, "dtype": d} for d in (dtypes or ["float32"])]
    return cases


def plan_cases(args, backends: list[str], probes: dict) -> tuple[list[dict], list[str]]:
    from infercost.bench.suites import SUITES, suite_cases
    from infercost.kernels.dtypes import DTYPES

    notices = []
    if args.suite not in SUITES:
        raise UsageError(f"unknown suite {args.suite!r}; valid suites: {', '.join(SUITES)}")
    workloads = [w for g in args.workload for w in g]
    for w in workloads:
        if w not in WORKLOADS:
            raise UsageError(f"unknown workload {w!r}; valid workloads: {', '.join(WORKLOADS)}")
    dtypes = [d for g in args.dtype for d in g]
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype {d!r}; valid dtypes: {', '.join(DTYPES)}")
    explicit = requested_cases(args)
    if args.tf32 and not any(b in CUDA_BACKENDS for b in backends):
        raise UsageError(f"--tf32 applies to CUDA GPUs only; none of {', '.join(backends)} is one")

    cases = []
    for backend in backends:
        lacks = probes[backend].get("unsupported", {})
        for d in dtypes:
            if d in lacks:
                valid = [x for x in DTYPES if x not in lacks]
                raise UsageError(f"dtype {d} is not supported on {backend}: {lacks[d]} (valid: {', '.join(valid)})")
        if explicit is not None:
            wanted = explicit
        else:
            wanted = [c for c in suite_cases(args.suite, backend)
                      if (not dtypes or c["dtype"] in dtypes) and (not workloads or c["workload"] in workloads)]
        for spec in wanted:
            dtype = spec["dtype"]
            if dtype in lacks:
                notices.append(f"{backend}: skipping {dtype} ({lacks[dtype]})")
                continue
            cases.append({
                "backend": backend, **spec,
                "tf32": bool(args.tf32 and dtype == "float32" and backend in CUDA_BACKENDS),
                "threads": args.threads_resolved if backend.endswith("-cpu") else None,
            })
    return cases, sorted(set(notices))


def output_path(args) -> Path:
    if args.out is not None:
        path = args.out
    elif args.resume:
        runs = sorted(Path("results").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError("--resume found no results/*.jsonl to resume; name one with --out")
        path = runs[-1]
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("results") / f"run-{stamp}-{socket.gethostname()}.jsonl"
    if path.exists() and path.is_dir():
        raise UsageError(f"cannot write results to {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write results to {path}: {e.strerror or e}") from None
    return path


def fmt_case(case: dict) -> str:
    p = case["params"]
    tf32 = " tf32" if case.get("tf32") else ""
    if case["workload"] == "matmul":
        return f"matmul {p['m']}x{p['n']}x{p['k']} {case['dtype']}{tf32}"
    what = "prompt" if case["workload"] == "prefill" else "ctx"
    return f"{case['workload']} {p['model']} b{p['batch']} {what}{p['tokens']} {case['dtype']}{tf32}"


def fmt_result(record: dict) -> str:
    if record["status"] == "ok":
        m = record["metrics"]
        warn = f" [yellow]({record['warnings'][0]})[/]" if record["warnings"] else ""
        wl = record["case"]["workload"]
        if wl == "prefill":
            main = f"{m['input_tokens_per_s']:.4g} input tok/s, TTFT {m['ttft_s'] * 1e3:.3g} ms"
        elif wl == "decode":
            main = f"{m['output_tokens_per_s']:.4g} output tok/s, TPOT {m['tpot_s'] * 1e3:.3g} ms"
        else:
            main = f"{m['tflops']:.3g} TFLOP/s"
        return f"[green]{main}[/] ±{m['spread']:.0%}{warn}"
    colour = "yellow" if record["status"] == "skipped" else "red"
    return f"[{colour}]{record['status']}: {'; '.join(record['reasons'])}[/]"


def validity(r: dict) -> str:
    if r["status"] == "ok":
        return "yes" + (" (warn)" if r["warnings"] else "")
    return f"[red]{r['status']}[/]: {'; '.join(r['reasons'])[:70]}"


def pct(x) -> str:
    return f"{x:.1%}" if x is not None else "-"


def matmul_table(records: list[dict]) -> Table:
    table = Table(title="matmul throughput (steady state; spread = IQR/median)")
    for col in ("backend", "device", "shape", "dtype", "TFLOP/s", "of peak", "spread", "valid"):
        table.add_column(col, justify="right" if col in ("TFLOP/s", "spread", "of peak") else "left")
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        ok = r["status"] == "ok"
        table.add_row(case["backend"], case.get("device") or "?", fmt_case(case).split()[1],
                      case["dtype"] + (" (tf32)" if case.get("tf32") else ""),
                      f"{m['tflops']:.3g}" if ok else "-", pct(m.get("peak_fraction")) if ok else "-",
                      f"{m['spread']:.1%}" if ok else "-", validity(r))
    return table


def llm_table(records: list[dict]) -> Table:
    table = Table(title="transformer inference (prefill: input tokens; decode: output tokens; "
                        "roofline = share of the max(FLOPs/peak, bytes/bandwidth) bound reached)")
    for col in ("backend", "device", "model", "phase", "batch", "tokens", "dtype", "tok/s",
                "TTFT/TPOT ms", "MFU/MBU", "roofline", "valid"):
        table.add_column(col, justify="right" if col in ("batch", "tokens", "tok/s", "TTFT/TPOT ms", "MFU/MBU", "roofline") else "left")
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        p, ok, prefill = case["params"], r["status"] == "ok", case["workload"] == "prefill"
        rate = m.get("input_tokens_per_s" if prefill else "output_tokens_per_s")
        latency = m.get("ttft_s" if prefill else "tpot_s")
        util = m.get("mfu" if prefill else "mbu")
        table.add_row(case["backend"], case.get("device") or "?", p["model"], case["workload"], str(p["batch"]),
                      str(p["tokens"]), case["dtype"], f"{rate:.4g}" if ok and rate else "-",
                      f"{latency * 1e3:.3g}" if ok and latency else "-", pct(util) if ok else "-",
                      pct(m.get("roofline_fraction")) if ok else "-", validity(r))
    return table


def cmd_run(args) -> int:
    from infercost.bench import runner
    from infercost.bench.records import Writer, case_key, done_keys, run_provenance
    from infercost.bench.timing import Settings
    from infercost.hardware.host import available_cpus

    from infercost.hardware import cloud
    path = output_path(args)
    bases = price_bases(args, cpu=False)  # validated before any measuring
    detection = cloud.Detection() if not bases and cloud.enabled(args.detect_instance) else None
    args.threads_resolved = args.threads or available_cpus()
    if args.threads and args.threads > available_cpus():
        errors.print(f"[yellow]warning:[/] --threads {args.threads} exceeds the {available_cpus()} "
                     "usable CPUs; CPU results will be marked invalid (oversubscription)")
    console.print(f"infercost {__version__}: looking for backends...")
    backends, probes = choose_backends([b for g in args.backend for b in g], runner.probe)
    cases, notices = plan_cases(args, backends, probes)
    for notice in notices:
        console.print(f"[yellow]note:[/] {notice}")
    skipped = 0
    if args.resume:
        done = done_keys(path)
        before = len(cases)
        cases = [c for c in cases if case_key(c) not in done]
        skipped = before - len(cases)
    from infercost.hardware import catalog
    for name, info in probes.items():
        state = f"[green]{info['device']}[/]" if info["available"] else f"[dim]unavailable: {info['reason']}[/]"
        console.print(f"  {name:<11} {state}")
    for device in sorted({probes[b]["device"] for b in backends if catalog.lookup(probes[b]["device"]) is None}):
        console.print(f"[yellow]note:[/] {device!r} is not in the hardware catalog: results are recorded under "
                      "that name with no spec peak (no MFU; decode MBU on CPUs uses a bandwidth measured in the run)")
    console.print(f"{len(cases)} cases ({skipped} already recorded) -> {path}")

    defaults = Settings()
    settings = Settings(
        warmup_s=args.warmup if args.warmup is not None else defaults.warmup_s,
        min_time_s=args.min_time if args.min_time is not None else defaults.min_time_s,
        min_blocks=args.repeats or defaults.min_blocks,
    )
    job = {"settings": settings.as_dict(), "seed": args.seed, "threads": args.threads_resolved}
    total, done_count, started = len(cases), [0], [time.monotonic()]

    def on_event(event):
        if event.kind == "start":
            started[0] = time.monotonic()
        elif event.kind == "record":
            done_count[0] += 1
            took = time.monotonic() - started[0]
            console.print(f"[{done_count[0]:>{len(str(total))}}/{total}] {event.backend:<10} "
                          f"{fmt_case(event.case):<40} {fmt_result(event.record)} [dim]({took:.1f} s)[/]")

    writer = Writer(path)
    try:
        records = runner.run(cases, job, writer, run_provenance(args.seed), args.case_timeout, on_event)
    except KeyboardInterrupt:
        writer.close()
        errors.print(f"\n[yellow]interrupted[/]: {done_count[0]} finished records are kept in {path}; "
                     f"continue with: infercost run <same options> --resume --out {path}")
        return 130
    writer.close()
    matmuls = [r for r in records if r["case"]["workload"] == "matmul"]
    llms = [r for r in records if r["case"]["workload"] != "matmul"]
    if matmuls:
        console.print(matmul_table(matmuls))
    if llms:
        console.print(llm_table(llms))
    if not bases and detection is not None:
        instance = detection.result()
        if instance is None:
            console.print("cost: instance metadata did not answer; this machine's price is unknown")
        else:
            args.instance = [instance]
            try:
                bases = price_bases(args, cpu=False)
            except UsageError as e:
                console.print(f"cost: detected {instance}, but {e}")
            # a detected instance prices every backend the machine ran, CPUs included
            bases += [replace(b, accelerators_in_price=0, label=b.label + " (whole instance, CPU runs)")
                      for b in list(bases) if b.accelerators_in_price > 0]
    if bases:
        cpu_only = all(r["case"]["backend"].endswith("-cpu") for r in records)
        if not args.instance and args.accelerators is None and cpu_only:
            bases = price_bases(args, cpu=True)
        print_costs(records, bases)
    elif detection is None:
        console.print("cost: this machine's price is unknown, so no $/M tokens are shown; give --price-per-hour USD "
                      "or --instance provider:type (see `infercost prices`), or re-price later with `infercost cost`")
    console.print(f"results: {path}  (load with: infercost.load_results({str(path)!r}))")
    return 0


def price_bases(args, cpu: bool) -> list:
    """Every Basis the flags give ([] when no price was given)."""
    instances = args.instance or []
    if len(instances) <= 1:
        b = price_basis(args, cpu)
        return [b] if b is not None else []
    bases = []
    for inst in instances:
        args.instance = [inst]
        bases.append(price_basis(args, cpu))
    args.instance = instances
    kinds = [b.accelerators_in_price > 0 for b in bases]
    if len(set(kinds)) != len(kinds):
        raise UsageError("repeat --instance only to give one accelerator instance and one CPU instance")
    return bases


def price_basis(args, cpu: bool):
    """The Basis from --price-per-hour, --owned or one --instance, or None when no price was given."""
    import warnings as _w

    from infercost.bench.cost import Basis
    from infercost.hardware import prices
    instance = args.instance[0] if args.instance else None
    given = [f for f, v in (("--price-per-hour", args.price_per_hour), ("--instance", instance),
                            ("--owned", args.owned)) if v is not None]
    if len(given) > 1:
        raise UsageError(f"give one price: {' and '.join(given)} were both given")
    if args.owned is not None:
        from infercost.bench.cost import owned_per_hour
        if args.power_w is None or args.kwh_price is None:
            raise UsageError("--owned needs --power-w (the machine's draw) and --kwh-price (USD per kWh)")
        n = args.accelerators if args.accelerators is not None else (0 if cpu else 1)
        hourly = owned_per_hour(args.owned, args.years, args.power_w, args.kwh_price)
        return Basis(hourly, n, f"owned: ${args.owned:,.0f} over {args.years:g} years + {args.power_w:g} W at "
                                f"${args.kwh_price:g}/kWh = ${hourly:.4g}/h ({n} accelerator(s))")
    if args.price_per_hour is not None:
        n = args.accelerators if args.accelerators is not None else (0 if cpu else 1)
        return Basis(args.price_per_hour, n, f"--price-per-hour {args.price_per_hour:g} (user, {n} accelerator(s))")
    if not instance:
        return None
    if args.pricing not in prices.PRICINGS:
        raise UsageError(f"unknown pricing {args.pricing!r}; valid: {', '.join(prices.PRICINGS)}")
    try:
        rows = prices.load_all(args.prices)
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            row = prices.find(rows, instance, args.pricing, args.region)
    except prices.PriceTableError as e:
        raise UsageError(str(e)) from None
    for w in caught:
        errors.print(f"[yellow]warning:[/] {w.message}")
    return Basis(row.usd_per_hour, row.accelerator_count, row.label())


def fmt_usd(x) -> str:
    return "-" if x is None else (f"${x:.3g}" if x < 100 else f"${x:,.0f}")


def cost_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in ("backend", "device", "case", "$/M input", "$/M output", "$/M blended", "$/PFLOP", "95% CI"):
        table.add_column(col, justify="left" if col in ("backend", "device", "case") else "right")
    for r in rows:
        if r["workload"] == "matmul":
            ci = (r["usd_per_pflop_ci95_low"], r["usd_per_pflop_ci95_high"])
            table.add_row(r["backend"], r["device"], f"matmul {r['shape']} {r['dtype']}", "", "", "",
                          fmt_usd(r["usd_per_pflop"]), f"{fmt_usd(ci[0])}–{fmt_usd(ci[1])}")
        else:
            key = "input" if r["workload"] == "prefill" else "output"
            ci = (r[f"usd_per_m_{key}_ci95_low"], r[f"usd_per_m_{key}_ci95_high"])
            table.add_row(r["backend"], r["device"], f"{r['workload']} {r['model']} b{r['batch']} t{r['tokens']} {r['dtype']}",
                          fmt_usd(r.get("usd_per_m_input")), fmt_usd(r.get("usd_per_m_output")),
                          fmt_usd(r.get("usd_per_m_blended")), "", f"{fmt_usd(ci[0])}–{fmt_usd(ci[1])}")
    return table


def print_costs(records: list[dict], bases, ratio: float = 3.0, max_tpot_s: float | None = None) -> None:
    from infercost.bench.cost import cheapest_within, price_records
    rows = []
    for basis in (bases if isinstance(bases, list) else [bases]):
        priced = price_records(records, basis, ratio)
        if priced:
            console.print(cost_table(priced, f"cost (measured throughput at {basis.label})"))
            console.print(f"[dim]price split: {basis.assumption()}; blended = {ratio:g} input : 1 output[/]")
        rows += priced
    if not rows:
        console.print("cost: no valid measurement that these prices apply to "
                      "(an accelerator instance prices GPU/TPU results, a CPU instance CPU results)")
        return
    if max_tpot_s is not None:
        best = cheapest_within(rows, max_tpot_s)
        if not best:
            console.print(f"no decode point meets TPOT <= {max_tpot_s * 1e3:g} ms")
        for r in best:
            console.print(f"cheapest within TPOT <= {max_tpot_s * 1e3:g} ms: {r['backend']} {r['model']} batch {r['batch']} "
                          f"(TPOT {r['tpot_s'] * 1e3:.3g} ms) at {fmt_usd(r['usd_per_m_output'])}/M output tokens")


def read_results(paths: list[str]) -> list[dict]:
    """Records of result files or folders; skipped lines are reported as warnings, not tracebacks."""
    import warnings as _w

    from infercost.bench.records import read_records, result_files
    records = []
    for f in result_files(paths):
        if not f.is_file():
            raise UsageError(f"no results at {f}")
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            records += read_records(f)
        for w in caught[:3]:
            errors.print(f"[yellow]warning:[/] {w.message}", markup=True, highlight=False)
        if len(caught) > 3:
            errors.print(f"[yellow]warning:[/] {len(caught) - 3} more lines of {f} skipped")
    return records


def cmd_cost(args) -> int:
    if not price_bases(args, cpu=False):  # a missing or bad price is reported before any file is read
        raise UsageError("give a price: --instance provider:instance_type (see `infercost prices`) or --price-per-hour USD")
    records = read_results(args.results)
    ratio = blend_ratio(args.blend)
    cpu = all((r.get("case", {}).get("backend", "")).endswith("-cpu") for r in records)
    print_costs(records, price_bases(args, cpu), ratio, args.max_tpot_ms / 1e3 if args.max_tpot_ms else None)
    return 0


def cmd_estimate(args) -> int:
    from infercost.bench.estimate import estimate
    from infercost.hardware import catalog
    from infercost.kernels.llama import resolve_config
    try:
        cfg = resolve_config(args.model)
    except ValueError as e:
        raise UsageError(str(e)) from None
    acc = catalog.lookup(args.accelerator) or next(
        (a for a in catalog.all_entries() if a.name.lower() == args.accelerator.lower()), None)
    if acc is None:
        names = ", ".join(a.name for a in catalog.all_entries())
        raise UsageError(f"{args.accelerator!r} is not in the catalog; known: {names}")
    basis_note = ""
    if args.from_results:
        ok = [r for r in read_results(args.from_results) if r.get("status") == "ok"]
        mfus = [r["metrics"].get("mfu") for r in ok if r["case"]["workload"] == "prefill" and r["metrics"].get("mfu")]
        mbus = [r["metrics"].get("mbu") for r in ok if r["case"]["workload"] == "decode" and r["metrics"].get("mbu")]
        if not (mfus or mbus):
            raise UsageError("--from-results holds no valid prefill MFU or decode MBU to scale by")
        args.mfu = max(mfus) if mfus else args.mfu
        args.mbu = max(mbus) if mbus else args.mbu
        basis_note = f" scaled by measured MFU {args.mfu:.1%} and MBU {args.mbu:.1%}"
    try:
        e = estimate(cfg, acc, args.chips, args.batch, args.context, args.dtype, args.prompt,
                     args.mfu, args.mbu, args.price_per_chip_hour)
    except ValueError as err:
        raise UsageError(str(err)) from None
    console.print(f"[bold]ESTIMATE[/] (roofline, not a measurement){basis_note}: {args.model} on {args.chips} x "
                  f"{acc.name}, {args.dtype}, batch {args.batch}, context {args.context}")
    console.print(f"  decode step   {e['decode_step_s'] * 1e3:.2f} ms ({e['decode_bound']}-bound) -> "
                  f"{e['output_tokens_per_s']:.4g} output tok/s, {e['output_tokens_per_s_per_chip']:.4g} per chip, "
                  f"{1 / e['decode_step_s']:.4g} tok/s per user")
    console.print(f"  prefill       {e['prefill_s'] * 1e3:.2f} ms for {e['prompt']} tokens x {args.batch} -> "
                  f"{e['input_tokens_per_s']:.4g} input tok/s")
    console.print(f"  memory        {e['memory_needed_gb']:.1f} GB needed, {e['memory_available_gb']:.0f} GB on the chips"
                  + ("" if e["fits"] else "  [red](does not fit)[/]"))
    if "usd_per_m_output_floor" in e:
        console.print(f"  floor cost    {fmt_usd(e['usd_per_m_output_floor'])}/M output, "
                      f"{fmt_usd(e['usd_per_m_input_floor'])}/M input at ${args.price_per_chip_hour:g}/chip-hour")
    console.print(f"[dim]  formula: {e['formula']}; ceilings from the catalog ({acc.source}; as of {acc.as_of})[/]")
    return 0


def blend_ratio(text: str) -> float:
    try:
        a, b = (float(x) for x in text.split(":"))
        return a / b
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--blend {text!r} must be input:output, e.g. 3:1") from None


def cmd_report(args) -> int:
    from infercost.bench.report import write_report
    bases = price_bases(args, cpu=False)
    ratio = blend_ratio(args.blend)
    from infercost.bench.records import result_files
    files = result_files(args.results)
    records = read_results(args.results)
    if not records:
        raise UsageError("no records in the given results")
    try:
        done = write_report(records, files, args.out, bases, ratio)
    except OSError as e:
        raise UsageError(f"cannot write the report to {args.out}: {e.strerror or e}") from None
    console.print(f"wrote {args.out}/report.md, report.html ({len(done['figures'])} figures: "
                  f"{', '.join(done['figures'])}), results.csv and results.parquet ({done['rows']} rows)")
    return 0


def cmd_compare(args) -> int:
    from infercost.bench.compare import compare
    text = args.threshold.strip().rstrip("%")
    try:
        threshold = float(text) / 100
    except ValueError:
        raise UsageError(f"--threshold {args.threshold!r} must be a percentage, e.g. 5%") from None
    if not 0 <= threshold < 1:
        raise UsageError(f"--threshold {args.threshold!r} must be between 0% and 100%")
    rows = compare(read_results([args.base]), read_results([args.new]), threshold)
    if not rows:
        raise UsageError("no case appears in both result sets")
    table = Table(title=f"NEW vs BASE (throughput ratio = BASE time / NEW time; threshold {threshold:.0%})")
    for col in ("backend", "device", "case", "dtype", "throughput", "95% CI", "p", "cost", "verdict"):
        table.add_column(col, justify="right" if col in ("throughput", "95% CI", "p", "cost") else "left")
    colour = {"faster": "green", "slower": "red", "flagged": "yellow", "missing": "yellow", "no change": "white"}
    for r in rows:
        has = "throughput_ratio" in r
        table.add_row(r["backend"], r["device"] or "?", f"{r['workload']} {r['shape']}", r["dtype"],
                      f"{r['throughput_ratio'] - 1:+.1%}" if has else "-",
                      f"{r['ci95_low'] - 1:+.1%}..{r['ci95_high'] - 1:+.1%}" if has else "-",
                      f"{r['p_value']:.3g}" if has else "-", f"{r['cost_ratio'] - 1:+.1%}" if has else "-",
                      f"[{colour[r['verdict']]}]{r['verdict']}[/] {r['note']}")
    console.print(table)
    slower = [r for r in rows if r["verdict"] == "slower"]
    if slower:
        console.print(f"[red]{len(slower)} case(s) slower beyond {threshold:.0%}[/]")
        return 1
    return 0


def cmd_ingest(args) -> int:
    from infercost.bench.ingest import ingest
    from infercost.bench.records import Writer
    try:
        records = ingest(args.json)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot ingest {args.json}: {e}") from None
    writer = Writer(args.out)
    for r in records:
        writer.write(r)
    writer.close()
    console.print(f"ingested {len(records)} benchmarks into {args.out}")
    return 0


def cmd_prices(args) -> int:
    from infercost.hardware import prices
    if args.import_skypilot:
        if not (args.provider and args.as_of and args.out):
            raise UsageError("--import-skypilot needs --provider, --as-of (YYYY-MM-DD) and --out")
        try:
            rows = prices.import_skypilot(args.import_skypilot, args.provider, args.as_of)
        except (OSError, prices.PriceTableError) as e:
            raise UsageError(str(e)) from None
        prices.write(rows, args.out)
        console.print(f"wrote {len(rows)} rows to {args.out} (use with --prices {args.out})")
        return 0
    try:
        rows = prices.load_all(args.prices)
    except prices.PriceTableError as e:
        raise UsageError(str(e)) from None
    table = Table(title="price rows (USD per hour of the whole instance)")
    for col in ("instance", "accelerators", "region", "pricing", "$/h", "as of"):
        table.add_column(col)
    for r in rows:
        if args.filter in r.instance:
            table.add_row(r.instance, f"{r.accelerator_count} {r.accelerator}".strip(), r.region, r.pricing,
                          f"{r.usd_per_hour:g}", r.as_of)
    console.print(table)
    return 0


def cmd_backends(args) -> int:
    from infercost.bench import runner
    from infercost.bench.backend import NAMES
    probes = runner.probe(list(NAMES))
    table = Table(title="backends")
    for col in ("backend", "available", "device", "notes"):
        table.add_column(col)
    for name, info in probes.items():
        if info["available"]:
            lacks = info.get("unsupported") or {}
            notes = "; ".join(f"no {d}: {r}" for d, r in lacks.items())
            table.add_row(name, "[green]yes[/]", info["device"], notes)
        else:
            table.add_row(name, "[red]no[/]", "-", info["reason"])
    console.print(table)
    return 0


def join_negative_values(argv: list[str]) -> list[str]:
    """`--shape -4x4x4` would read as an unknown option; keep it as --shape's value so the
    error can say what is wrong with it."""
    out = []
    for token in argv:
        if out and out[-1] == "--shape" and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"--shape={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
        commands = {"run": cmd_run, "backends": cmd_backends, "cost": cmd_cost, "estimate": cmd_estimate,
                    "prices": cmd_prices, "report": cmd_report, "compare": cmd_compare,
                    "ingest": cmd_ingest}
        return commands[args.command](args)
    except UsageError as e:
        sys.stderr.write(f"infercost: error: {e}\n")  # one line, never wrapped
        return 2
    except KeyboardInterrupt:
        errors.print("infercost: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
