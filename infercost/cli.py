"""The `infercost` command."""

from __future__ import annotations

import argparse
import socket
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
                     help="workloads to run (matmul); default: all")
    run.add_argument("--dtype", "-d", action="append", type=csv_list, default=[],
                     help=f"dtypes ({', '.join(DTYPES)}); default: the suite's")
    run.add_argument("--suite", "-s", default="quick", help=f"named suite ({', '.join(SUITES)}); default quick")
    run.add_argument("--shape", action="append", default=[],
                     help="explicit matmul shape MxNxK (repeatable); replaces the suite's shapes")
    run.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls on CUDA GPUs")
    run.add_argument("--repeats", type=positive(int), default=None, help="minimum timed blocks per case (default 10)")
    run.add_argument("--min-time", type=positive(float), default=None, help="minimum seconds of timing per case (default 1)")
    run.add_argument("--warmup", type=positive(float), default=None, help="warm-up seconds per case (default 1)")
    run.add_argument("--threads", type=positive(int), default=None, help="CPU threads for CPU backends (default: all usable CPUs)")
    run.add_argument("--seed", type=int, default=0, help="seed of the input data (default 0)")
    run.add_argument("--out", "-o", type=Path, default=None, help="results file (JSON Lines); default results/run-<time>-<host>.jsonl")
    run.add_argument("--resume", action="store_true", help="skip cases already recorded in --out (default: the newest file in results/)")
    run.add_argument("--case-timeout", type=positive(float), default=600.0, help="seconds before a case is abandoned (default 600)")
    return parser


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


def plan_cases(args, backends: list[str], probes: dict) -> tuple[list[dict], list[str]]:
    from infercost.bench.suites import SUITES, suite_cases
    from infercost.kernels.dtypes import DTYPES

    notices = []
    if args.suite not in SUITES:
        raise UsageError(f"unknown suite {args.suite!r}; valid suites: {', '.join(SUITES)}")
    workloads = [w for group in args.workload for w in group] or ["matmul"]
    for w in workloads:
        if w not in ("matmul",):
            raise UsageError(f"unknown workload {w!r}; valid workloads: matmul")
    dtypes = [d for group in args.dtype for d in group]
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype {d!r}; valid dtypes: {', '.join(DTYPES)}")
    shapes = [parse_shape(s) for s in args.shape]
    if args.tf32 and not any(b in CUDA_BACKENDS for b in backends):
        raise UsageError(f"--tf32 applies to CUDA GPUs only; none of {', '.join(backends)} is one")

    cases = []
    for backend in backends:
        lacks = probes[backend].get("unsupported", {})
        for d in dtypes:
            if d in lacks:
                valid = [x for x in DTYPES if x not in lacks]
                raise UsageError(f"dtype {d} is not supported on {backend}: {lacks[d]} (valid: {', '.join(valid)})")
        if shapes:
            wanted = [(s, d) for s in shapes for d in (dtypes or ["float32"])]
        else:
            wanted = [(s, d) for s, d in suite_cases(args.suite, backend) if not dtypes or d in dtypes]
        for (m, n, k), dtype in wanted:
            if dtype in lacks:
                notices.append(f"{backend}: skipping {dtype} ({lacks[dtype]})")
                continue
            cases.append({
                "backend": backend, "workload": "matmul", "params": {"m": m, "n": n, "k": k},
                "dtype": dtype,
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
    return f"{case['workload']} {p['m']}x{p['n']}x{p['k']} {case['dtype']}{' tf32' if case.get('tf32') else ''}"


def fmt_result(record: dict) -> str:
    if record["status"] == "ok":
        m = record["metrics"]
        warn = f" [yellow]({record['warnings'][0]})[/]" if record["warnings"] else ""
        return f"[green]{m['tflops']:.3g} TFLOP/s[/] ±{m['spread']:.0%}{warn}"
    colour = "yellow" if record["status"] == "skipped" else "red"
    return f"[{colour}]{record['status']}: {'; '.join(record['reasons'])}[/]"


def results_table(records: list[dict]) -> Table:
    table = Table(title="matmul throughput (steady state; spread = IQR/median)")
    for col in ("backend", "device", "shape", "dtype", "TFLOP/s", "spread", "valid"):
        table.add_column(col, justify="right" if col in ("TFLOP/s", "spread") else "left")
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        ok = r["status"] == "ok"
        table.add_row(
            case["backend"], case.get("device") or "?", case.get("shape") or fmt_case(case).split()[1],
            case["dtype"] + (" (tf32)" if case.get("tf32") else ""),
            f"{m['tflops']:.3g}" if ok else "-",
            f"{m['spread']:.1%}" if ok else "-",
            "yes" if ok else f"[red]no[/]: {'; '.join(r['reasons'])[:60]}",
        )
    return table


def cmd_run(args) -> int:
    from infercost.bench import runner
    from infercost.bench.records import Writer, case_key, done_keys, run_provenance
    from infercost.bench.timing import Settings
    from infercost.hardware.host import available_cpus

    path = output_path(args)
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
    for name, info in probes.items():
        state = f"[green]{info['device']}[/]" if info["available"] else f"[dim]unavailable: {info['reason']}[/]"
        console.print(f"  {name:<11} {state}")
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
                          f"{fmt_case(event.case):<34} {fmt_result(event.record)} [dim]({took:.1f} s)[/]")

    writer = Writer(path)
    try:
        records = runner.run(cases, job, writer, run_provenance(args.seed), args.case_timeout, on_event)
    except KeyboardInterrupt:
        writer.close()
        errors.print(f"\n[yellow]interrupted[/]: {done_count[0]} finished records are kept in {path}; "
                     f"continue with: infercost run <same options> --resume --out {path}")
        return 130
    writer.close()
    if records:
        console.print(results_table(records))
    console.print(f"results: {path}  (load with: infercost.load_results({str(path)!r}))")
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
        return {"run": cmd_run, "backends": cmd_backends}[args.command](args)
    except UsageError as e:
        errors.print(f"infercost: error: {e}", markup=False)
        return 2
    except KeyboardInterrupt:
        errors.print("infercost: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
