"""Fleet runs on SkyPilot: the same suite on many cloud instances, results gathered in one place.

plan     DIR/<task>.yaml, one SkyPilot task per instance (a user can read and edit it),
         DIR/fleet.json: each task's instance, price row and the fleet's estimated cost, and
         DIR/workdir/: what the instances get (SkyPilot's workdir): the checkout's tracked source
         files that a run needs, nothing else (no results, environments or local files).
launch   each task as a SkyPilot managed job: a preempted spot run is restarted and `--resume`
         keeps what it had recorded; the instance goes when its job ends.
status   the fleet's managed jobs.
collect  the result files the tasks wrote to the bucket (synced to a local folder) ->
         DIR/collected/<task>.jsonl, deduplicated by record key, each record tagged with its
         task, instance and price row.

SkyPilot is imported only here, and only by launch, status and prices --from-skypilot.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shlex
from datetime import date, datetime, timezone
from pathlib import Path

from infercost.errors import InputError, RunError
from infercost.paths import inside, safe_name, writable_folder

SETUP = "bash scripts/setup.sh"  # the README's set-up command, exactly
RESULTS = "/infercost-results"  # where the bucket is mounted on each instance
INSTALL = "SkyPilot is not installed: pip install 'infercost[fleet]' (or: bash scripts/setup.sh fleet)"
# The fleet's cost before launch is an ESTIMATE: price x (set-up + planned cases x a typical case time).
SETUP_MIN = 10.0
CASE_MIN = {"cpu": 0.15, "accelerator": 0.75}  # a CPU case took ~7 s on a 2-core host; accelerator cases compile bigger models

# infercost's price-table accelerator names that SkyPilot spells differently (its canonical names:
# sky.utils.gpu_names.CANONICAL_GPU_NAMES). A name left out of SkyPilot's vocabulary is not
# requested: the instance type alone decides what the cloud gives.
SKYPILOT_ACCELERATORS = {"A100-80GB (PCIe)": "A100-80GB", "H100 (PCIe)": "H100", "H100 NVL (94GB)": None}


def task_name(instance: str, pricing: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"infercost-{instance}-{pricing}".lower()).strip("-")


def infra(row) -> str:
    """SkyPilot's infra: the provider, and the price row's region (and zone) where it names one, so
    the instance runs where it was priced."""
    region = row.region or ""
    if not re.fullmatch(r"[a-z]+(-[a-z0-9]+)+", region):  # "(all regions)", "US", "(list)": any region
        return row.provider
    if row.provider == "gcp" and re.fullmatch(r"[a-z]+-[a-z]+\d+-[a-z]", region):  # a zone: us-central1-a
        return f"gcp/{region.rsplit('-', 1)[0]}/{region}"
    return f"{row.provider}/{region}"


def resources(row, spot: bool) -> dict:
    """A price row as SkyPilot resources: a TPU slice is an accelerator; any other instance is its
    instance type, with its GPUs named as SkyPilot names them."""
    out = {"infra": infra(row)}
    if row.instance_type.startswith("tpu-"):
        out["accelerators"] = row.instance_type
    else:
        out["instance_type"] = row.instance_type
        name = SKYPILOT_ACCELERATORS.get(row.accelerator, row.accelerator)
        if name and row.accelerator_count > 0:
            out["accelerators"] = f"{name}:{row.accelerator_count}"
    out["use_spot"] = spot
    if spot:  # a preempted job is started again elsewhere, and resumes
        out["job_recovery"] = {"strategy": "FAILOVER", "max_restarts_on_errors": 1}
    return out


def run_script(name: str, suite: str, hosts: int = 1) -> str:
    """The task's run step: `infercost run` on local disk, the file copied to the bucket every minute
    and at the end; a restarted (preempted) job first takes the bucket's copy back and resumes.
    On several hosts SkyPilot runs it on each (SKYPILOT_NODE_RANK and the others say where each
    stands; infercost run joins them), and host 0 alone keeps and copies records."""
    out = f"{RESULTS}/{name}"
    local = "~/infercost-results/run.jsonl"
    run = f".venv/bin/infercost run --suite {shlex.quote(suite)} --detect-instance --resume --out {local}"
    if hosts <= 1:
        return "\n".join([
            f"mkdir -p {out} ~/infercost-results",
            f"[ -f {out}/run.jsonl ] && cp {out}/run.jsonl {local}",
            f"( while sleep 60; do cp {local} {out}/run.jsonl 2>/dev/null; done ) &",
            run, "status=$?",
            f"cp {local} {out}/run.jsonl",
            "exit $status",
        ]) + "\n"
    return "\n".join([
        f"# {hosts} hosts: every one runs this; host 0 keeps the records",
        "mkdir -p ~/infercost-results",
        'if [ "${SKYPILOT_NODE_RANK:-0}" = 0 ]; then',
        f"  mkdir -p {out}",
        f"  [ -f {out}/run.jsonl ] && cp {out}/run.jsonl {local}",
        f"  ( while sleep 60; do cp {local} {out}/run.jsonl 2>/dev/null; done ) &",
        "fi",
        run, "status=$?",
        f'[ "${{SKYPILOT_NODE_RANK:-0}}" = 0 ] && cp {local} {out}/run.jsonl',
        "exit $status",
    ]) + "\n"


# Cloud TPU slices larger than one host (Google Cloud's TPU system-architecture pages for each
# version): v4, v5p and TPU7x hosts hold 4 chips; v5e and v6e hold up to 8, and their slices of
# more than 8 chips are built of 4-chip hosts (v5litepod-16: 4 hosts).
TPU_CHIPS_A_HOST = {"v4": 4, "v5p": 4, "7x": 4, "v5litepod": 4, "v6e": 4}
TPU_ONE_HOST_UP_TO = {"v5litepod": 8, "v6e": 8}


def hosts_of(row) -> int:
    """The hosts one instance of a price row is: a TPU slice's from its size (tpu-v6e-256: 64),
    else 1."""
    m = re.fullmatch(r"tpu-?(v5litepod|v\d+[a-z]*|7x)-\d+", row.instance_type)
    per = TPU_CHIPS_A_HOST.get(m.group(1)) if m else None
    if per is None or row.accelerator_count <= TPU_ONE_HOST_UP_TO.get(m.group(1), per):
        return 1
    return row.accelerator_count // per


# An engine fleet's cost ESTIMATE: set-up, the engine's start (weights downloaded and loaded), the traffic.
ENGINE_START_MIN = 15.0
ENGINE_PORT = 8000


def serve_script(name: str, engine: dict, row) -> str:
    """An engine task's run step: `infercost serve --launch` on the instance itself (the engine
    started, measured at the plan's traffic, stopped), the results copied to the bucket."""
    out = f"{RESULTS}/{name}"
    local = "~/infercost-results/serve.jsonl"
    kind = "cpu" if row.accelerator_count <= 0 else ("tpu" if row.instance_type.startswith("tpu-") else "gpu")
    device = row.accelerator or "CPU"
    serve = [".venv/bin/infercost", "serve", f"http://127.0.0.1:{engine['port']}", "--model", engine["model"],
             "--launch", engine["command"], "--device", device, "--device-kind", kind,
             "--devices", str(max(1, row.accelerator_count)), *engine["traffic"], "--out", local]
    return "\n".join([
        f"mkdir -p {out} ~/infercost-results",
        " ".join(shlex.quote(a) if not a.startswith("~/") else a for a in serve),
        "status=$?",
        f"cp {local} {out}/serve.jsonl",
        f"cp ~/infercost-results/serve.engine.log {out}/serve.engine.log 2>/dev/null",
        "exit $status",
    ]) + "\n"


def yaml_value(value, indent: int) -> str:
    """YAML text of plain data (JSON strings are YAML's double-quoted scalars; a run script is a block)."""
    pad = " " * indent
    if isinstance(value, dict):
        return "".join(f"\n{pad}{k}:" + (yaml_value(v, indent + 2) if isinstance(v, dict)
                                          else " " + yaml_value(v, indent + 2)) for k, v in value.items())
    if isinstance(value, str) and "\n" in value:
        return "|\n" + "".join(f"{pad}{line}\n" for line in value.rstrip("\n").split("\n")).rstrip("\n")
    return json.dumps(value)


# What an instance needs of the checkout to set up and run (scripts/setup.sh installs the project).
WORKDIR_PARTS = ("pyproject.toml", "README.md", "infercost", "bench", "kernels", "hardware", "scripts")


def export_workdir(root: Path, dest: Path) -> int:
    """Copy into dest the files of WORKDIR_PARTS that git tracks in the checkout (every file under
    them, caches left out, when it is not a git checkout); returns how many."""
    import shutil
    import subprocess
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", *WORKDIR_PARTS],
                                capture_output=True, timeout=30)
        files = [f for f in listed.stdout.decode().split("\0") if f] if listed.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:
        files = [str(p.relative_to(root)) for part in WORKDIR_PARTS for p in sorted((root / part).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts and not any(x.endswith(".egg-info") for x in p.parts)]
        files += [part for part in WORKDIR_PARTS if (root / part).is_file()]
    if dest.exists():
        shutil.rmtree(dest)
    for f in files:
        if (root / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dest / f)
    return len(files)


def task_yaml(task: dict, workdir: Path, suite: str, bucket: str, commit: str | None, engine: dict | None = None,
              row=None) -> str:
    nodes = task.get("nodes", 1)
    what = (f"{task['cases']} cases x {task['case_min']:g} min" if engine is None else
            f"{ENGINE_START_MIN:g} min engine start + {task['traffic_min']:.3g} min of traffic")
    times = f" x {nodes} nodes" if nodes > 1 else ""
    head = [f"# infercost fleet task: {task['instance']} ({task['accelerator_count']} {task['accelerator'] or 'CPU'})"
            f"{times}, {task['pricing']}" + (f", engine: {engine['command']}" if engine else "")
            + (f"; {task['hosts']} hosts" if task.get("hosts", 1) > 1 else ""),
            f"# price row: {task['price_label']}",
            f"# cost ESTIMATE: ${task['est_usd']:.2f} = ${task['usd_per_hour']:g}/h{times} x ({SETUP_MIN:g} min set-up + {what})"]
    setup = SETUP if engine is None or not engine.get("setup") else f"{SETUP}\n{engine['setup']}"
    body = {"name": task["name"], "resources": task["resources"], **({"num_nodes": nodes} if nodes > 1 else {}),
            "workdir": str(workdir.resolve()),
            "file_mounts": {RESULTS: {"name": bucket, "mode": "MOUNT_CACHED"}},
            **({"envs": {"INFERCOST_GIT_COMMIT": commit}} if commit else {}),
            "setup": setup,
            "run": run_script(task["name"], suite, task.get("hosts", 1)) if engine is None else serve_script(task["name"], engine, row)}
    return "\n".join(head) + yaml_value(body, 0) + "\n"


def backends_of(row) -> list[str]:
    """The adapters that run on this instance, by what they declare they run (a CPU machine, or
    the vendor of its accelerators); none for a chip no adapter runs yet (e.g. AWS Trainium)."""
    from infercost.bench.backend import backends_for
    from infercost.hardware.catalog import vendor_of
    return backends_for(vendor_of(row.accelerator) if row.accelerator_count > 0 else None, row.accelerator_count)


def planned_cases(row, suite: str, hosts: int = 1) -> int:
    """How many cases `infercost run --suite` plans on this instance (for the cost estimate); on
    several hosts, its transformer cases split over them all (as `run` plans them there)."""
    from infercost.bench.plan import plan_cases
    backends = backends_of(row)
    per_host = max(row.accelerator_count, 1) // (hosts if row.accelerator_count >= hosts else 1)
    probes = {b: {"available": True, "devices": max(per_host, 1), "unsupported": {}} for b in backends}
    mesh = {"tp": max(per_host, 1), "dp": hosts} if hosts > 1 else None
    cases, _ = plan_cases(suite, backends, probes, mesh=mesh)
    return len([c for c in cases if hosts == 1 or c.workload in ("prefill", "decode")])


def checkout() -> Path:
    """The infercost checkout the tasks sync to their instances (SkyPilot's workdir)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "scripts" / "setup.sh").is_file():
        raise InputError(f"fleet plan needs an infercost checkout to send to the instances; {root} has no scripts/setup.sh")
    return root


def plan(instances: list[str], suite: str, spot: bool, out: Path, bucket: str | None = None,
         region: str | None = None, extra_prices=(), engine: dict | None = None, nodes: int = 1) -> dict:
    """Write one task per instance and the fleet manifest; nothing is launched. engine: an engine
    fleet ({"command", "model", "traffic": serve flags, "traffic_min", "setup", "port", "files"}):
    each task launches the engine on its instance and loads it with `infercost serve`. nodes: each
    task runs on that many instances as one multi-host run (SkyPilot's num_nodes); a TPU slice of
    several hosts is one run over its hosts by itself."""
    from infercost.bench.plan import SUITES
    from infercost.hardware import prices
    if suite not in SUITES:
        raise InputError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    if not instances:
        raise InputError("--instances: give at least one provider:instance_type (see `infercost prices`)")
    if bucket is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise InputError(f"--bucket {bucket!r}: 3-63 lower-case letters, digits, dots and dashes")
    pricing = "spot" if spot else "on-demand"
    out = Path(out)
    writable_folder(out, "--out")
    try:
        rows = prices.load_all(extra_prices)
    except (OSError, prices.PriceTableError) as e:
        raise InputError(str(e)) from None
    root = checkout()
    bucket = bucket or f"infercost-fleet-{date.today():%Y%m%d}-{secrets.token_hex(3)}"
    tasks, rows_used = [], []
    for instance in instances:
        try:
            row = prices.find(rows, instance, pricing, region)
        except (LookupError, ValueError) as e:
            raise InputError(str(e).strip("'\"")) from None
        rows_used.append(row)
        if engine is None and not backends_of(row):
            from infercost.bench.backend import NAMES
            raise InputError(f"no infercost backend runs {row.accelerator or 'this machine'} ({row.instance}) yet; "
                             f"the backends ({', '.join(NAMES)}) run CPUs, NVIDIA and AMD GPUs and Google TPUs")
        kind = "cpu" if row.accelerator_count <= 0 else "accelerator"
        slice_hosts = hosts_of(row)
        if nodes > 1 and (engine is not None or slice_hosts > 1):
            raise InputError(f"--nodes {nodes}: " + ("an engine fleet runs on one node a task" if engine is not None else
                             f"{row.instance} is a TPU slice of {slice_hosts} hosts already; "
                             "a bigger slice is the way to more hosts"))
        hosts = nodes * slice_hosts
        cases = planned_cases(row, suite, hosts) if engine is None else 0
        minutes = SETUP_MIN + (cases * CASE_MIN[kind] if engine is None else ENGINE_START_MIN + engine["traffic_min"])
        tasks.append({"name": task_name(row.instance + (f"-x{nodes}" if nodes > 1 else ""), pricing),
                      "instance": row.instance, "pricing": pricing, "nodes": nodes, "hosts": hosts,
                      **({"engine": engine["command"], "traffic_min": engine["traffic_min"]} if engine else {}),
                      "region": row.region, "accelerator": row.accelerator, "accelerator_count": row.accelerator_count,
                      "usd_per_hour": row.usd_per_hour, "as_of": row.as_of, "price_label": row.label(),
                      "resources": resources(row, spot), "cases": cases, "case_min": CASE_MIN[kind],
                      "est_minutes": minutes, "est_usd": row.usd_per_hour * nodes * minutes / 60})
    if len({t["name"] for t in tasks}) < len(tasks):
        raise InputError("--instances names the same instance twice")
    from infercost.hardware.host import git_commit
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = export_workdir(root, out / "workdir")
        for src, dest in (engine or {}).get("files", {}).items():  # a trace the tasks replay travels in the workdir
            (out / "workdir" / dest).parent.mkdir(parents=True, exist_ok=True)
            (out / "workdir" / dest).write_bytes(Path(src).read_bytes())
        for t, row in zip(tasks, rows_used):
            (out / f"{t['name']}.yaml").write_text(task_yaml(t, out / "workdir", suite, bucket, git_commit(), engine, row))
    except OSError as e:
        raise InputError(f"--out {out}: cannot write the plan ({e.strerror or e})") from None
    formula = (f"price/h x nodes x ({SETUP_MIN:g} min set-up + planned cases x {CASE_MIN['accelerator']:g} min on accelerators, "
               f"{CASE_MIN['cpu']:g} min on CPUs)") if engine is None else \
        f"price/h x ({SETUP_MIN:g} min set-up + {ENGINE_START_MIN:g} min engine start + the traffic's minutes)"
    manifest = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "suite": suite, "bucket": bucket,
                **({"engine": {k: engine[k] for k in ("command", "model", "traffic", "setup")}} if engine else {}),
                "workdir": {"files": files, "parts": list(WORKDIR_PARTS), "git_commit": git_commit()},
                "results_mount": RESULTS, "tasks": tasks, "est_usd": sum(t["est_usd"] for t in tasks),
                "estimate_formula": formula}
    (out / "fleet.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# What collect and the league table read of each planned task.
TASK_FIELDS = {"name": str, "instance": str, "pricing": str, "region": str, "accelerator": str,
               "accelerator_count": int, "usd_per_hour": (int, float), "as_of": str, "price_label": str}


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / "fleet.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), list):
            raise ValueError("no task list")
        for i, t in enumerate(manifest["tasks"]):
            bad = [k for k, kind in TASK_FIELDS.items() if not isinstance(t, dict) or not isinstance(t.get(k), kind)
                   or isinstance(t.get(k), bool)]
            if bad:
                raise ValueError(f"task {i + 1}: {', '.join(bad)} missing or of the wrong type")
            if not (math.isfinite(t["usd_per_hour"]) and t["usd_per_hour"] > 0) or t["accelerator_count"] < 0:
                raise ValueError(f"task {i + 1}: a price that is not a positive finite number, or a negative "
                                 "accelerator count")
            safe_name(t["name"], f"{path}: task {i + 1}")  # it becomes a file name: no path may hide in it
        if len({t["name"] for t in manifest["tasks"]}) < len(manifest["tasks"]):
            raise ValueError("two tasks share a name")
    except FileNotFoundError:
        raise InputError(f"{folder} is not a fleet plan (no fleet.json; make one with `infercost fleet plan`)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a fleet manifest ({e})") from None
    return manifest


# -- SkyPilot ---------------------------------------------------------------------------------
def import_sky():
    try:
        import sky
    except ImportError:
        raise InputError(INSTALL) from None
    return sky


def skypilot_catalog_dir() -> Path:
    """Where the installed SkyPilot keeps the catalogs it has fetched (asked of SkyPilot itself)."""
    import_sky()
    from sky.catalog import common
    return Path(common.get_catalog_path("aws/vms.csv")).parent.parent


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def launch(folder: Path, echo) -> list[dict]:
    """Every task of the plan as a managed job. All tasks are parsed by SkyPilot before any is
    launched; a launch SkyPilot refuses stops the fleet there, with its own message."""
    sky = import_sky()
    manifest = read_manifest(folder)
    tasks = []
    for t in manifest["tasks"]:
        path = inside(folder, f"{t['name']}.yaml", "fleet launch")
        try:
            tasks.append((t["name"], sky.Task.from_yaml(str(path))))
        except Exception as e:  # SkyPilot's parser and catalog say what is wrong
            raise InputError(f"{path}: {first_line(e)}") from None
    launched = []
    for name, task in tasks:
        try:
            job = sky.stream_and_get(sky.jobs.launch(task, name=name))
        except Exception as e:
            done = ", ".join(x["task"] for x in launched) or "none"
            raise RunError(f"SkyPilot could not launch {name}: {first_line(e)} (launched before it: {done})") from None
        launched.append({"task": name, "job": job})
        echo(f"launched {name}: managed job {job}")
    return launched


def status(folder: Path | None) -> list[dict]:
    """The fleet's managed jobs, as SkyPilot's job queue reports them."""
    sky = import_sky()
    names = {t["name"] for t in read_manifest(folder)["tasks"]} if folder else None
    try:
        jobs = sky.get(sky.jobs.queue(refresh=False))
    except Exception as e:
        raise RunError(f"SkyPilot could not read the job queue: {first_line(e)}") from None
    out = []
    for job in jobs:
        j = job if isinstance(job, dict) else (job.model_dump() if hasattr(job, "model_dump") else vars(job))
        name = j.get("job_name") or j.get("task_name") or ""
        if (names is None and name.startswith("infercost-")) or (names is not None and name in names):
            out.append({"task": name, "job": j.get("job_id"), "status": str(j.get("status", "?")).split(".")[-1]})
    return out


# -- results ----------------------------------------------------------------------------------
def collect(folder: Path, source: Path | None, warn) -> dict:
    """Gather each task's result files into DIR/collected/<task>.jsonl: partial lines (a run stopped
    mid-write) skipped, one record per record key (the newest), tagged with the task's instance
    and price row."""
    from infercost.bench.reading import read_paths
    folder = Path(folder)
    manifest = read_manifest(folder)
    source = Path(source) if source is not None else folder / "results"
    if not source.is_dir():
        raise InputError(f"no results at {source}: sync the bucket there first (e.g. "
                         f"aws s3 sync s3://{manifest.get('bucket')} {source}, or gcloud storage rsync -r "
                         f"gs://{manifest.get('bucket')} {source})")
    out = folder / "collected"
    out.mkdir(exist_ok=True)
    summary = {}
    for t in manifest["tasks"]:
        where = inside(source, t["name"], "fleet collect")
        if not where.is_dir() or not any(where.glob("*.jsonl")):
            summary[t["name"]] = 0
            continue
        newest: dict = {}
        for rec in read_paths([where], warn):
            if rec["key"] not in newest or rec["timestamp"] >= newest[rec["key"]]["timestamp"]:
                newest[rec["key"]] = rec
        tag = {k: t[k] for k in ("instance", "pricing", "region", "accelerator", "accelerator_count",
                                 "usd_per_hour", "as_of", "price_label")}
        lines = [json.dumps({**rec, "fleet": {"task": t["name"], **tag}}) for rec in newest.values()]
        inside(out, f"{t['name']}.jsonl", "fleet collect").write_text("\n".join(lines) + "\n")
        summary[t["name"]] = len(lines)
    (out / "fleet.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return summary
