"""`infercost fleet plan|launch|status|collect`: the same suite on many cloud instances through
SkyPilot (the work is in infercost/fleet.py)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from infercost.flags import positive

from .common import console, warn
from .history import after_run, check_store, history_flag

NAME = "fleet"
HELP = "the same suite on many cloud instances through SkyPilot: plan, launch, status, collect"


def arguments(p) -> None:
    fsub = p.add_subparsers(dest="fleet_command", required=True, metavar="{plan,launch,status,collect}")
    fp = fsub.add_parser("plan", help="write one SkyPilot task per instance and print the fleet's estimated cost")
    fp.add_argument("--instances", required=True, help="comma-separated provider:instance_type price rows, "
                                                       "e.g. aws:p5en.48xlarge,gcp:tpu-v6e-8 (see `infercost prices`)")
    fp.add_argument("--suite", default="llm", help="the suite every instance runs (default llm)")
    fp.add_argument("--spot", action="store_true", help="spot instances (default on-demand)")
    fp.add_argument("--region", help="region of the price rows (default: each row's first)")
    fp.add_argument("--bucket", help="bucket the results are written to (default: a new infercost-fleet-<date>-<random>)")
    fp.add_argument("--prices", action="append", default=[], help="your own price table(s)")
    fp.add_argument("--out", "-o", type=Path, default=Path("fleet"), help="folder for the tasks (default ./fleet)")
    fp.add_argument("--nodes", type=positive(int), default=1,
                    help="run each task on N instances as one multi-host run (SkyPilot num_nodes; priced N times); "
                         "a TPU slice of several hosts spans them by itself")
    fe = fp.add_argument_group("engine fleets: each instance launches an engine and `infercost serve` loads it there")
    fe.add_argument("--engine", metavar="COMMAND", help='the engine\'s command, e.g. "vllm serve meta-llama/Llama-3.1-8B-Instruct '
                    '--port 8000" (it must listen on --engine-port on 127.0.0.1)')
    fe.add_argument("--model", help="the model name the engine serves (with --engine)")
    fe.add_argument("--engine-setup", help='set-up after infercost\'s own, e.g. "pip install vllm==0.11.0"')
    fe.add_argument("--engine-port", type=positive(int), default=8000, help="the port the engine listens on (default 8000)")
    fe.add_argument("--trace", type=Path, help="replay this Mooncake trace on every instance (it travels with the tasks)")
    fe.add_argument("--time-scale", type=positive(float), default=1.0, help="the trace's times multiplied by this")
    fe.add_argument("--sessions", type=positive(int), help="N multi-turn sessions instead of a trace")
    fe.add_argument("--session-shape", choices=("chat", "agentic"), default="chat")
    fe.add_argument("--concurrency", help="concurrency levels instead of a trace, e.g. 1,4,16,64")
    fla = fsub.add_parser("launch", help="launch every task of a plan as a SkyPilot managed job")
    fla.add_argument("folder", type=Path, help="the plan's folder")
    fst = fsub.add_parser("status", help="the fleet's managed jobs")
    fst.add_argument("folder", type=Path, nargs="?", help="the plan's folder (default: every infercost job)")
    fco = fsub.add_parser("collect", help="gather the tasks' result files into FOLDER/collected, one record per case")
    fco.add_argument("folder", type=Path, help="the plan's folder")
    fco.add_argument("--from", dest="source", type=Path, help="where the bucket was synced (default FOLDER/results)")
    history_flag(fco)


def run(args) -> int:
    from infercost import fleet
    if args.fleet_command == "plan":
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            manifest = fleet.plan([i.strip() for i in args.instances.split(",") if i.strip()], args.suite, args.spot,
                                  args.out, args.bucket, args.region, args.prices, engine_plan(args), args.nodes)
        for w in caught:
            warn(str(w.message))
        table = Table(title=f"fleet plan: suite {manifest['suite']}, results to bucket {manifest['bucket']}")
        work = "engine traffic, min" if manifest.get("engine") else "cases"
        for col in ("task", "resources", "$/h", "price as of", work, "ESTIMATE minutes", "ESTIMATE $"):
            table.add_column(col)
        for t in manifest["tasks"]:
            r = t["resources"]
            table.add_row(t["name"], " ".join(str(r[k]) for k in ("infra", "instance_type", "accelerators") if k in r),
                          f"{t['usd_per_hour']:g}", t["as_of"], f"{t['traffic_min']:.3g}" if "traffic_min" in t else str(t["cases"]),
                          f"{t['est_minutes']:.0f}", f"{t['est_usd']:.2f}")
        console.print(table)
        console.print(escape(f"ESTIMATED cost of the whole fleet run: ${manifest['est_usd']:.2f}; nothing has been launched."))
        console.print(escape(f"  (estimate: {manifest['estimate_formula']})"))
        console.print(escape(f"tasks in {args.out}/ (SkyPilot YAML, edit freely); launch with: infercost fleet launch {args.out}"))
        return 0
    if args.fleet_command == "launch":
        launched = fleet.launch(args.folder, lambda text: console.print(escape(text)))
        console.print(escape(f"{len(launched)} managed jobs launched; follow them with: infercost fleet status {args.folder}"))
        return 0
    if args.fleet_command == "status":
        jobs = fleet.status(args.folder)
        table = Table(title="fleet jobs (SkyPilot managed jobs)")
        for col in ("task", "job", "status"):
            table.add_column(col)
        for j in jobs:
            table.add_row(j["task"], str(j["job"]), j["status"])
        console.print(table)
        return 0
    check_store(args.history)
    summary = fleet.collect(args.folder, args.source, warn)
    for name, count in summary.items():
        console.print(escape(f"  {name}: {count} records" if count else f"  {name}: no results yet"))
    out = Path(args.folder) / "collected"
    console.print(escape(f"collected into {out}/; the league table: infercost report {out} --out REPORT_DIR"))
    if args.history and any(summary.values()):  # each record priced at its own task's price row
        return after_run(args.history, out, [])
    return 0


def engine_plan(args) -> dict | None:
    """An engine fleet's engine and traffic from the flags, checked before anything is written."""
    from infercost.errors import InputError
    if not args.engine:
        if args.model or args.trace or args.sessions or args.concurrency or args.engine_setup:
            raise InputError("--model, --trace, --sessions, --concurrency and --engine-setup plan an engine fleet: give --engine")
        return None
    if not args.model:
        raise InputError("--engine needs --model: the model name the engine serves")
    given = [f for f, v in (("--trace", args.trace), ("--sessions", args.sessions), ("--concurrency", args.concurrency)) if v]
    if len(given) != 1:
        raise InputError("an engine fleet needs one traffic: --trace FILE, --sessions N or --concurrency LIST"
                         + (f" ({' and '.join(given)} were given)" if given else ""))
    files = {}
    if args.trace:
        from infercost.bench.serving import read_trace
        trace = read_trace(args.trace)  # a broken trace is refused here, not on every instance
        dest = f"traces/{args.trace.name}"
        files = {str(args.trace): dest}
        traffic = ["--trace", dest, "--time-scale", f"{args.time_scale:g}"]
        minutes = trace[-1].at_s * args.time_scale / 60 + 2
    elif args.sessions:
        traffic = ["--sessions", str(args.sessions), "--session-shape", args.session_shape]
        minutes = (20 if args.session_shape == "agentic" else 8) * 12 / 60 + 2  # turns x (think time + a reply), at most
    else:
        from infercost.bench.serving import plan_levels
        from infercost.flags import csv_list
        levels = plan_levels(csv_list(args.concurrency), None, 8)
        traffic = ["--concurrency", ",".join(str(int(l.value)) for l in levels)]
        minutes = len(levels) * 2.0  # a level's 10 s to 120 s, and its warm-up
    return {"command": args.engine, "model": args.model, "setup": args.engine_setup, "port": args.engine_port,
            "traffic": traffic, "traffic_min": minutes, "files": files}
