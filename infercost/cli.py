"""The `infercost` command: parse, dispatch, print. The work is in bench/ (measure),
hardware/ (price) and infercost/present.py and report/ (present)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.markup import escape

from infercost.version import __version__
from infercost.errors import InputError, RunError
from infercost.flags import build_parser, join_negative_values
from infercost.present import (backends_table, case_name, collective_table, cost_table, compare_table, estimate_lines,
                               llm_table, matmul_table, prices_table, result_line)

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
UsageError = InputError  # the name the CLI's callers know


def flat(groups) -> list[str]:
    return [v for g in groups for v in g]


WARNED: set = set()


def warn(text: str) -> None:
    if text not in WARNED:  # once per command, however often a price is rebuilt
        WARNED.add(text)
        errors.print(f"[yellow]warning:[/] {escape(text)}", markup=True, highlight=False)


PRICE_FLAGS = {k: "--" + k.replace("_", "-") for k in ("price_per_hour", "accelerators", "owned", "years",
                                                      "power_w", "kwh_price", "instance")}


def price_bases(args, cpu: bool) -> list:
    from infercost.hardware.cost import price_bases as build
    return build(instances=args.instance, pricing=args.pricing, region=args.region, prices=args.prices,
                 price_per_hour=args.price_per_hour, accelerators=args.accelerators, owned=args.owned,
                 years=args.years, power_w=args.power_w, kwh_price=args.kwh_price, cpu=cpu, warn=warn,
                 names=PRICE_FLAGS, any_device=args.any_device)


def read_results(paths: list[str]) -> list[dict]:
    from infercost.bench.records import read_paths
    return read_paths(paths, warn)


def blend_ratio(text: str) -> float:
    from infercost.numbers import number
    parts = text.split(":")
    if len(parts) != 2:
        raise InputError(f"--blend {text!r} must be input:output, e.g. 3:1")
    return number(parts[0], f"--blend {text!r} input part") / number(parts[1], f"--blend {text!r} output part")


def print_costs(records: list[dict], bases: list, ratio: float = 3.0, max_tpot_s: float | None = None) -> None:
    from infercost.hardware.cost import cheapest_within, over_the_instance, price_records, refused_devices
    from infercost.present import usd
    rows = []
    for basis in bases:
        for device in refused_devices(records, basis):
            console.print("[yellow]not priced:[/] " + escape(f"results from {device!r} with {basis.label}, whose "
                          f"accelerator is {basis.accelerator} (add --any-device to price them with it anyway)"))
        for case in over_the_instance(records, basis):
            console.print("[yellow]not priced:[/] " + escape(f"{case}: more accelerators than {basis.label} covers "
                                                             f"({basis.accelerators_in_price})"))
        priced = price_records(records, basis, ratio)
        if priced:
            console.print(cost_table(priced, f"cost (measured throughput at {basis.label})"))
            console.print(f"[dim]price split: {escape(basis.assumption())}; blended = {ratio:g} input : 1 output[/]")
        rows += priced
    if not rows:
        console.print(escape(f"cost at {'; '.join(b.label for b in bases)}: no valid measurement that these prices "
                             "apply to (an accelerator instance prices GPU/TPU results, a CPU instance CPU results)"))
        return
    if max_tpot_s is not None:
        best = cheapest_within(rows, max_tpot_s)
        if not best:
            console.print(f"no decode point meets TPOT <= {max_tpot_s * 1e3:g} ms")
        for r in best:
            console.print(f"cheapest within TPOT <= {max_tpot_s * 1e3:g} ms: {r['backend']} {escape(str(r['model']))} batch {r['batch']} "
                          f"(TPOT {r['tpot_s'] * 1e3:.3g} ms) at {usd(r['usd_per_m_output'])}/M output tokens")


def cmd_run(args) -> int:
    from infercost.bench import runner
    from infercost.bench.plan import choose_backends, parse_mesh, plan_cases
    from infercost.bench.records import Writer, case_key, done_keys, results_path, run_provenance
    from infercost.bench.timing import Settings
    from infercost.hardware import catalog, cloud
    from infercost.hardware.cost import on_cpu, whole_instance_for_cpu_runs
    from infercost.hardware.host import available_cpus

    path = results_path(args.out, args.resume)
    bases = price_bases(args, cpu=False)  # validated before any measuring
    detection = cloud.Detection() if not bases and cloud.enabled(args.detect_instance) else None
    threads = args.threads or available_cpus()
    if args.threads and args.threads > available_cpus():
        warn(f"--threads {args.threads} exceeds the {available_cpus()} usable CPUs; "
             "CPU results will be marked invalid (oversubscription)")
    console.print(f"infercost {__version__}: looking for backends...")
    backends, probes = choose_backends(flat(args.backend), runner.probe)
    cases, notices = plan_cases(args.suite, backends, probes, workloads=flat(args.workload), dtypes=flat(args.dtype),
                                shapes=args.shape, models=flat(args.model), batches=flat(args.batch),
                                tokens=flat(args.tokens), weights=args.weights, tf32=args.tf32, threads=threads,
                                quant=args.quant, mesh=parse_mesh(args.devices, args.mesh), kv=args.kv_cache)
    for notice in notices:
        console.print(f"[yellow]note:[/] {escape(notice)}")
    writer = Writer(path, warn)  # locked: no other run appends to it while this one does
    try:
        done = done_keys(path) if args.resume else set()
    except InputError:
        writer.close()
        raise
    skipped = len(cases)
    cases = [c for c in cases if case_key(c) not in done]
    skipped -= len(cases)
    for name, info in probes.items():
        state = f"[green]{info['device']}[/]" if info["available"] else f"[dim]unavailable: {info['reason']}[/]"
        console.print(f"  {name:<11} {state}")
    for device in sorted({probes[b]["device"] for b in backends if catalog.lookup(probes[b]["device"]) is None}):
        console.print(f"[yellow]note:[/] {device!r} is not in the hardware catalog: results are recorded under "
                      "that name with no spec peak (no MFU; decode MBU on CPUs uses a bandwidth measured in the run)")
    console.print(f"{len(cases)} cases ({skipped} already recorded) -> {escape(str(path))}")

    defaults = Settings()
    settings = Settings(warmup_s=args.warmup if args.warmup is not None else defaults.warmup_s,
                        min_time_s=args.min_time if args.min_time is not None else defaults.min_time_s,
                        min_blocks=args.repeats or defaults.min_blocks)
    job = {"settings": settings.as_dict(), "seed": args.seed, "threads": threads,
           "host_devices": max((c.get("devices", 1) for c in cases), default=1)}
    total, done_count, started = len(cases), [0], [time.monotonic()]

    def on_event(event):
        if event.kind == "start":
            started[0] = time.monotonic()
        elif event.kind == "record":
            done_count[0] += 1
            console.print(f"[{done_count[0]:>{len(str(total))}}/{total}] {event.backend:<10} "
                          f"{escape(case_name(event.case)):<40} {result_line(event.record)} "
                          f"[dim]({time.monotonic() - started[0]:.1f} s)[/]")

    try:
        records = runner.run(cases, job, writer, run_provenance(args.seed), args.case_timeout, on_event)
    except KeyboardInterrupt:
        errors.print(f"\n[yellow]interrupted[/]: {done_count[0]} finished records are kept in {escape(str(path))}; "
                     f"continue with: infercost run <same options> --resume --out {escape(str(path))}")
        return 130
    finally:
        writer.close()
    kinds = {k: [r for r in records if r["case"]["workload"] in w]
             for k, w in (("matmul", ("matmul",)), ("llm", ("prefill", "decode")), ("collective", ("collective",)))}
    for kind, table in (("matmul", matmul_table), ("llm", llm_table), ("collective", collective_table)):
        if kinds[kind]:
            console.print(table(kinds[kind]))
    if not bases and detection is not None:
        instance = detection.result()
        if instance is None:
            console.print("cost: instance metadata did not answer; this machine's price is unknown")
        else:
            args.instance = [instance]
            try:
                bases = whole_instance_for_cpu_runs(price_bases(args, cpu=False))
            except InputError as e:
                console.print(escape(f"cost: detected {instance}, but {e}"))
    if bases:
        if not args.instance and args.accelerators is None and all(on_cpu(r) for r in records):
            bases = price_bases(args, cpu=True)
        print_costs(records, bases)
    elif detection is None:
        console.print("cost: this machine's price is unknown, so no $/M tokens are shown; give --price-per-hour USD "
                      "or --instance provider:type (see `infercost prices`), or re-price later with `infercost cost`")
    console.print(escape(f"results: {path}  (load with: infercost.load_results({str(path)!r}))"))
    return 0


def cmd_serve(args) -> int:
    from infercost.bench import serve
    from infercost.bench.records import Writer, results_path, run_provenance
    url = serve.check_url(args.url)
    serve.api_key(args.api_key_env)  # a named variable that is unset is an error; its value a secret
    if args.tokenizer:
        serve.Counter(args.tokenizer)  # a missing or broken tokenizer is refused before any request
    bases = price_bases(args, cpu=args.device_kind == "cpu")
    limits = dict(min_duration_s=args.min_duration, min_requests=args.min_requests,
                  warmup_requests=args.warmup_requests, max_duration_s=args.max_duration)
    levels = serve.plan_levels(args.concurrency, args.rate, args.max_concurrency, **limits)
    work = serve.Workload(serve.span(args.input_tokens, "--input-tokens"), serve.span(args.output_tokens, "--output-tokens"),
                          serve.read_prompts(args.prompts) if args.prompts else None, args.seed)
    ep = serve.Endpoint(url, args.model, args.api, args.api_key_env, args.timeout, not args.no_ignore_eos, args.tokenizer)
    slo = serve.parse_slo(args.slo)
    path = results_path(args.out, False, kind="serve")
    writer = Writer(path, warn)
    console.print(escape(f"infercost {__version__}: {len(levels)} levels against {ep.shown_url} ({args.model}, {work.describe()})"))

    def on_level(r):
        m, p = r["metrics"], r["case"]["params"]
        line = (f"{m['output_tokens_per_s']:.4g} output tok/s, TTFT {m['ttft_s'] * 1e3:.3g} ms, TPOT "
                f"{m['tpot_s'] * 1e3:.3g} ms, {m['requests_ok']} ok / {m['requests_failed']} failed"
                if r["status"] == "ok" else f"{r['status']}: {'; '.join(r['reasons'])}")
        console.print(escape(f"{p['mode']} {p['level']:g}: {line}"))

    try:
        records = serve.run(ep, levels, work, slo, writer, run_provenance(args.seed), args.device, args.device_kind,
                            on_level, args.kernel_model)
    finally:
        writer.close()
    if bases:
        print_costs(records, bases)
    console.print(escape(f"results: {path}"))
    return 0


def cmd_cost(args) -> int:
    from infercost.hardware.cost import on_cpu
    if not price_bases(args, cpu=False):  # a missing or bad price is reported before any file is read
        raise InputError("give a price: --instance provider:instance_type (see `infercost prices`) or --price-per-hour USD")
    ratio = blend_ratio(args.blend)
    records = read_results(args.results)
    cpu = all(on_cpu(r) for r in records)
    print_costs(records, price_bases(args, cpu), ratio, args.max_tpot_ms / 1e3 if args.max_tpot_ms else None)
    return 0


def cmd_estimate(args) -> int:
    from infercost.hardware import catalog
    from infercost.hardware.estimate import best_efficiency, estimate
    from infercost.kernels.llama import resolve_config
    try:
        cfg = resolve_config(args.model)
    except ValueError as e:
        raise InputError(str(e)) from None
    acc = catalog.find(args.accelerator)
    if acc is None:
        names = ", ".join(a.name for a in catalog.all_entries())
        raise InputError(f"{args.accelerator!r} is not in the catalog; known: {names}")
    basis_note = ""
    if args.from_results:
        mfu, mbu = best_efficiency(read_results(args.from_results))
        if not (mfu or mbu):
            raise InputError("--from-results holds no valid prefill MFU or decode MBU to scale by")
        args.mfu, args.mbu = mfu or args.mfu, mbu or args.mbu
        basis_note = f" scaled by measured MFU {args.mfu:.1%} and MBU {args.mbu:.1%}"
    try:
        e = estimate(cfg, acc, args.chips, args.batch, args.context, args.dtype, args.prompt,
                     args.mfu, args.mbu, args.price_per_chip_hour, weight_dtype=args.quant, kv_dtype=args.kv_cache)
    except ValueError as err:
        raise InputError(str(err)) from None
    dtypes = args.dtype + (f", weights {args.quant}" if args.quant else "") + (f", KV {args.kv_cache}" if args.kv_cache else "")
    for line in estimate_lines(e, args.model, acc, dtypes, args.price_per_chip_hour, basis_note):
        console.print(line)
    return 0


def cmd_report(args) -> int:
    from infercost.bench.records import result_files
    from infercost.paths import writable_folder
    from infercost.report import write_report
    writable_folder(args.out, "--out")
    from infercost.hardware.cost import on_cpu
    price_bases(args, cpu=False)  # a missing or bad price is reported before any file is read
    ratio = blend_ratio(args.blend)
    records = read_results(args.results)
    if not records:
        raise InputError("no records in the given results")
    bases = price_bases(args, cpu=all(on_cpu(r) for r in records))
    try:
        done = write_report(records, result_files(args.results), args.out, bases, ratio, args.min_user_tps)
    except OSError as e:
        raise InputError(f"cannot write the report to {args.out}: {e.strerror or e}") from None
    console.print(escape(f"wrote {args.out}/report.md, report.html ({len(done['figures'])} figures: "
                         f"{', '.join(done['figures'])}), results.csv and results.parquet ({done['rows']} rows)"))
    return 0


def cmd_compare(args) -> int:
    from infercost.bench.compare import compare
    from infercost.numbers import number
    threshold = number(args.threshold.strip().rstrip("%"), "--threshold (a percentage, e.g. 5%)",
                       low=0, low_open=False, high=100, high_open=True) / 100
    base, new = read_results([args.base]), read_results([args.new])
    if not {r["key"] for r in base} & {r["key"] for r in new}:
        raise InputError("no case appears in both result sets")
    rows = compare(base, new, threshold)
    console.print(compare_table(rows, threshold))
    slower = [r for r in rows if r["verdict"] == "slower"]
    broken = [r for r in rows if r["verdict"] == "error"]
    if slower:
        console.print(f"[red]{len(slower)} case(s) slower beyond {threshold:.0%}[/]")
    if broken:
        console.print(f"[red]{len(broken)} case(s) without a valid measurement on one side[/]")
    return 1 if slower or broken else 0


def cmd_ingest(args) -> int:
    from infercost.bench.ingest import ingest
    from infercost.bench.records import Writer
    from infercost.paths import writable_file
    writable_file(args.out, "--out")
    try:
        records = ingest(args.json)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot ingest {args.json}: {e}") from None
    writer = Writer(args.out, warn)
    for r in records:
        writer.write(r)
    writer.close()
    console.print(escape(f"ingested {len(records)} benchmarks into {args.out}"))
    return 0


def cmd_prices(args) -> int:
    from infercost.hardware import prices
    if args.from_skypilot:
        from infercost.fleet_cli import cmd_prices_from_skypilot
        return cmd_prices_from_skypilot(args, console)
    try:
        if args.import_skypilot:
            from infercost.paths import writable_file
            if not (args.provider and args.as_of and args.out):
                raise InputError("--import-skypilot needs --provider, --as-of (YYYY-MM-DD) and --out")
            writable_file(args.out, "--out")
            rows = prices.import_skypilot(args.import_skypilot, args.provider, args.as_of)
            prices.write(rows, args.out)
            console.print(escape(f"wrote {len(rows)} rows to {args.out} (use with --prices {args.out})"))
            return 0
        rows = prices.load_all(args.prices)
    except (OSError, prices.PriceTableError) as e:
        raise InputError(str(e)) from None
    console.print(prices_table([r for r in rows if args.filter in r.instance]))
    return 0


def cmd_backends(args) -> int:
    from infercost.bench import runner
    from infercost.bench.backend import NAMES
    console.print(backends_table(runner.probe(list(NAMES))))
    return 0


def cmd_fleet(args) -> int:
    from infercost.fleet_cli import cmd_fleet as fleet_command
    return fleet_command(args, console, warn)


COMMANDS = {"run": cmd_run, "serve": cmd_serve, "backends": cmd_backends, "cost": cmd_cost, "estimate": cmd_estimate,
            "prices": cmd_prices, "report": cmd_report, "compare": cmd_compare, "ingest": cmd_ingest, "fleet": cmd_fleet}


def main(argv: list[str] | None = None) -> int:
    """The command, with everything it prints passed through the redaction layer."""
    from infercost.redact import redacted_output
    with redacted_output():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from infercost.redact import clip, control_escaped
    try:
        argv = sys.argv[1:] if argv is None else argv
        for i, a in enumerate(argv):  # no path or name holds one (a shell cannot pass it; the API can)
            if "\x00" in a:
                flag = a.split("=", 1)[0] if a.startswith("--") else argv[i - 1] if i and argv[i - 1].startswith("--") else ""
                raise InputError(f"{control_escaped(flag) + ': its value' if flag else 'an argument'} holds a NUL character")
        args = build_parser().parse_args(join_negative_values(argv))
        return COMMANDS[args.command](args)
    except InputError as e:
        sys.stderr.write(f"infercost: error: {control_escaped(e)}\n")  # one line, never wrapped
        return 2
    except RunError as e:
        sys.stderr.write(f"infercost: error: {control_escaped(e)}\n")
        return 1
    except KeyboardInterrupt:
        errors.print("infercost: interrupted", markup=False)
        return 130
    except Exception as e:  # a bug: still one line for the user; INFERCOST_DEBUG=1 shows the traceback
        import os
        if os.environ.get("INFERCOST_DEBUG"):
            raise
        sys.stderr.write(f"infercost: error: unexpected {type(e).__name__}: {control_escaped(clip(str(e).splitlines()[0] if str(e) else '', 200))}"
                         " (a bug: please report it with INFERCOST_DEBUG=1's traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
