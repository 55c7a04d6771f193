"""`infercost run`: plan the cases, measure them backend by backend, print and price the results."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.markup import escape

from infercost.errors import InputError
from infercost.flags import csv_list, positive
from infercost.numbers import flag
from infercost.present import case_name, collective_table, llm_table, matmul_table, result_line
from infercost.version import __version__

from .common import add_price_flags, console, errors, flat, price_bases, print_costs, warn
from .history import after_run, check_store, history_flag

NAME = "run"
HELP = "measure every available backend (default: the quick suite)"


def arguments(p) -> None:
    from infercost.bench.backend import NAMES
    from infercost.bench.plan import SUITES, WORKLOADS
    from infercost.kernels.dtypes import DTYPES
    p.add_argument("--backend", "-b", action="append", type=csv_list, default=[],
                   help=f"backends to run, repeatable or comma-separated ({', '.join(NAMES)}); default: all available")
    p.add_argument("--workload", "-w", action="append", type=csv_list, default=[],
                   help=f"workloads to run ({', '.join(WORKLOADS)}); default: the suite's")
    p.add_argument("--dtype", "-d", action="append", type=csv_list, default=[],
                   help=f"dtypes ({', '.join(DTYPES)}); default: the suite's")
    p.add_argument("--suite", "-s", default="quick", help=f"named suite ({', '.join(SUITES)}); default quick")
    p.add_argument("--shape", action="append", default=[],
                   help="explicit matmul shape MxNxK (repeatable); replaces the suite's shapes")
    p.add_argument("--collective-bytes", action="append", type=csv_list, default=[],
                   help="collectives (all-reduce, all-gather, all-to-all) of these message sizes, e.g. 64K,16M; "
                        "replaces the suite's")
    p.add_argument("--model", "-m", action="append", type=csv_list, default=[],
                   help="transformer cases for these models (a name or a config.json); replaces the suite's")
    p.add_argument("--batch", action="append", type=csv_list, default=[], help="batch sizes for --model (default 1)")
    p.add_argument("--tokens", action="append", type=csv_list, default=[],
                   help="prompt length (prefill) and context length (decode) for --model (default 128)")
    p.add_argument("--devices", type=positive(int), default=None,
                   help="split each transformer case over N devices, tensor parallel")
    p.add_argument("--mesh", default=None, help="a device layout, e.g. tp=4,dp=2 (tensor and data parallel) or ep=4 "
                   "(a mixture of experts' experts and batch split over 4 devices)")
    p.add_argument("--quant", choices=("int8", "fp8"), default=None,
                   help="quantize the transformer cases' weights: int8 (per-channel; a CPU's batch-1 decode also "
                        "quantizes its activations as llama.cpp's Q8_0 does, INFERCOST_INT8_DOT says how) or fp8 "
                        "(e4m3, per-channel scales; only on devices with native fp8); matmul cases are left out")
    p.add_argument("--kv-cache", choices=("int8",), default=None,
                   help="hold the transformer cases' KV cache in int8 (a float32 scale per head and position)")
    p.add_argument("--weights", default=None, help="safetensors file or folder with Hugging Face names (default: seeded random weights)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls on CUDA GPUs")
    p.add_argument("--repeats", type=positive(int), default=None, help="minimum timed blocks per case (default 10)")
    p.add_argument("--min-time", type=positive(float), default=None, help="minimum seconds of timing per case (default 1)")
    p.add_argument("--warmup", type=positive(float), default=None, help="warm-up seconds per case (default 1)")
    p.add_argument("--threads", type=positive(int), default=None, help="CPU threads for CPU backends (default: all usable CPUs)")
    p.add_argument("--seed", type=flag(integer=True, low=0, low_open=False, high=2**32, high_open=True), default=0,
                   help="seed of the input data (default 0)")
    p.add_argument("--out", "-o", type=Path, default=None, help="results file (JSON Lines); default results/run-<time>-<host>.jsonl")
    p.add_argument("--resume", action="store_true", help="skip cases already recorded in --out (default: the newest file in results/)")
    p.add_argument("--case-timeout", type=positive(float), default=600.0, help="seconds before a case is abandoned (default 600)")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="a multi-host run: where host 0 listens (with --num-hosts and --host-rank; on SkyPilot "
                        "nodes these come from SKYPILOT_NODE_IPS, SKYPILOT_NUM_NODES and SKYPILOT_NODE_RANK)")
    p.add_argument("--num-hosts", type=positive(int), default=None, help="hosts in a multi-host run")
    p.add_argument("--host-rank", type=flag(integer=True, low=0, low_open=False), default=None,
                   help="this host's rank in a multi-host run (0 writes the records)")
    p.add_argument("--tpu-pod", action="store_true",
                   help="a multi-host run over this Cloud TPU slice's hosts, read from the TPU VM's metadata "
                        "(every host runs the same command)")
    p.add_argument("--join-timeout", type=positive(float), default=None,
                   help="seconds to wait for every host to join (default 120)")
    add_price_flags(p)
    history_flag(p)
    p.add_argument("--detect-instance", action="store_true",
                   help="ask the cloud's instance-metadata service which instance this is, to price the run "
                        "(off by default; also INFERCOST_DETECT_INSTANCE=1)")


def run(args) -> int:
    from infercost.bench import runner
    from infercost.bench.plan import choose_backends
    from infercost.bench.reading import done_keys
    from infercost.bench.records import Writer, results_path, run_provenance
    from infercost.hardware import catalog, cloud
    from infercost.hardware.cost import whole_instance_for_cpu_runs
    from infercost.hardware.host import available_cpus

    hosts = find_hosts(args, dict(os.environ))
    if hosts is not None and not hosts.leader:
        return follow_hosts(args, hosts)
    path = results_path(args.out, args.resume)
    bases = price_bases(args)  # validated before any measuring
    check_store(args.history)
    detection = cloud.Detection() if not bases and cloud.enabled(args.detect_instance) else None
    threads = args.threads or available_cpus()
    if args.threads and args.threads > available_cpus():
        warn(f"--threads {args.threads} exceeds the {available_cpus()} usable CPUs; "
             "CPU results will be marked invalid (oversubscription)")
    console.print(f"infercost {__version__}: looking for backends...")
    backends, probes = choose_backends(flat(args.backend), runner.probe)
    cases, notices = planned(args, backends, probes, threads, hosts)
    for notice in notices:
        console.print(f"[yellow]note:[/] {escape(notice)}")
    writer = Writer(path, warn)  # locked: no other run appends to it while this one does
    try:
        done = done_keys(path) if args.resume else set()
    except InputError:
        writer.close()
        raise
    skipped, all_cases = len(cases), cases
    cases = [c for c in cases if c.key not in done]
    skipped -= len(cases)
    for name, info in probes.items():
        state = f"[green]{info['device']}[/]" if info["available"] else f"[dim]unavailable: {info['reason']}[/]"
        console.print(f"  {name:<11} {state}")
    for device in sorted({probes[b]["device"] for b in backends if catalog.lookup(probes[b]["device"]) is None}):
        console.print(f"[yellow]note:[/] {device!r} is not in the hardware catalog: results are recorded under "
                      "that name with no spec peak (no MFU; decode MBU on CPUs uses a bandwidth measured in the run)")
    console.print(f"{len(cases)} cases ({skipped} already recorded) -> {escape(str(path))}")

    job = make_job(args, threads, cases, hosts)
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
        if hosts is None:
            records = runner.run(cases, job, writer, run_provenance(args.seed), args.case_timeout, on_event)
        else:
            records = lead_hosts(args, hosts, all_cases, cases, job, writer, on_event)
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
    detected = None
    if not bases and detection is not None:
        instance = detection.result()
        if instance is None:
            console.print("cost: instance metadata did not answer; this machine's price is unknown")
        else:
            detected = instance
            try:
                bases = whole_instance_for_cpu_runs(price_bases(args, instances=[instance]))
            except InputError as e:
                console.print(escape(f"cost: detected {instance}, but {e}"))
    if bases:
        if not detected:  # the flags read for what was measured (a bare price on CPU runs: a CPU machine's)
            bases = price_bases(args, records)
        print_costs(records, bases)
    elif detection is None:
        console.print("cost: this machine's price is unknown, so no $/M tokens are shown; give --price-per-hour USD "
                      "or --instance provider:type (see `infercost prices`), or re-price later with `infercost cost`")
    console.print(escape(f"results: {path}  (load with: infercost.load_results({str(path)!r}))"))
    return after_run(args.history, path, bases, args.pricing) if args.history else 0


def make_job(args, threads: int, cases, hosts) -> dict:
    """What every worker is told: the timing settings, seed, threads and host devices."""
    from infercost.bench.timing import Settings
    defaults = Settings()
    settings = Settings(warmup_s=args.warmup if args.warmup is not None else defaults.warmup_s,
                        min_time_s=args.min_time if args.min_time is not None else defaults.min_time_s,
                        min_blocks=args.repeats or defaults.min_blocks)
    return {"settings": settings.as_dict(), "seed": args.seed, "threads": threads,
            "host_devices": max((c.devices for c in cases), default=1) // (hosts.count if hosts else 1)}


def find_hosts(args, environ):
    from infercost.bench.hosts import find, from_tpu_pod
    if args.tpu_pod:
        if args.num_hosts is not None or args.host_rank is not None:
            raise InputError("--tpu-pod reads the host count and rank from the slice; leave out --num-hosts and --host-rank")
        from infercost.hardware.cloud import tpu_pod
        return from_tpu_pod(tpu_pod(), args.coordinator)
    return find(args.coordinator, args.num_hosts, args.host_rank, environ)


def planned(args, backends, probes, threads, hosts):
    """The run's cases and notices; on several hosts, only cases whose layout spans them all."""
    from infercost.bench.plan import parse_mesh, plan_cases
    from infercost.kernels.dtypes import QuantSpec
    mesh = parse_mesh(args.devices, args.mesh)
    if hosts is not None and mesh is None:
        from infercost.bench.hosts import default_layout
        mesh = default_layout(hosts, max(probes[b].get("devices", 1) for b in backends), flat(args.model))
    cases, notices = plan_cases(args.suite, backends, probes, workloads=flat(args.workload), dtypes=flat(args.dtype),
                                shapes=args.shape, models=flat(args.model), batches=flat(args.batch),
                                tokens=flat(args.tokens), weights=args.weights, tf32=args.tf32, threads=threads,
                                quant=QuantSpec(args.quant, args.kv_cache), mesh=mesh,
                                collective_bytes=flat(args.collective_bytes))
    if hosts is None:
        return cases, notices
    from infercost.bench.hosts import spanning
    kept, more = spanning(cases, mesh, hosts, {b: probes[b].get("devices", 1) for b in backends})
    return kept, notices + more


def lead_hosts(args, hosts, all_cases, cases, job, writer, on_event):
    from infercost.bench import hostlink, multihost
    from infercost.bench.hosts import JOIN_TIMEOUT_S, hosts_section
    from infercost.bench.records import run_provenance
    timeout = args.join_timeout or JOIN_TIMEOUT_S
    console.print(f"host 0 of {hosts.count}: waiting up to {timeout:.0f} s for the other hosts at {hosts.coordinator}")
    started = time.monotonic()
    link = hostlink.lead(hosts, hostlink.hello(hosts, [c.key for c in all_cases], __version__), timeout)
    console.print(f"all {hosts.count} hosts joined in {time.monotonic() - started:.1f} s")
    todo = {c.key for c in cases}
    indexed = [(i, c.as_dict()) for i, c in enumerate(all_cases) if c.key in todo]
    try:
        return multihost.lead(indexed, job, writer, run_provenance(args.seed), args.case_timeout, on_event, link,
                              hosts, hosts_section(hosts))
    finally:
        link.close()


def follow_hosts(args, hosts) -> int:
    """Hosts 1..n-1: plan the same cases, join host 0, run what it says; host 0 keeps the records."""
    from infercost.bench import hostlink, multihost, runner
    from infercost.bench.hosts import JOIN_TIMEOUT_S
    from infercost.bench.plan import choose_backends
    from infercost.hardware.host import available_cpus
    threads = args.threads or available_cpus()
    console.print(f"infercost {__version__}: host {hosts.rank} of {hosts.count}; looking for backends...")
    backends, probes = choose_backends(flat(args.backend), runner.probe)
    cases, _ = planned(args, backends, probes, threads, hosts)
    timeout = args.join_timeout or JOIN_TIMEOUT_S
    console.print(f"joining host 0 at {hosts.coordinator} (waiting up to {timeout:.0f} s)")
    link = hostlink.join(hosts, hostlink.hello(hosts, [c.key for c in cases], __version__), timeout)
    job = make_job(args, threads, cases, hosts)

    def on_event(event):
        what = "started" if event.kind == "start" else event.record["status"]
        console.print(f"host {hosts.rank}: {event.backend:<10} {escape(case_name(event.case))}: {what}")
    try:
        ran = multihost.follow(cases, job, args.case_timeout, link, on_event)
    finally:
        link.close()
    console.print(f"host {hosts.rank}: {ran} cases run; host 0 keeps the records")
    return 0
