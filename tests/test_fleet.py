"""Fleet runs on SkyPilot: tasks SkyPilot itself parses, results collected from real local runs laid
out as the tasks write them, the league table, and prices from SkyPilot's catalog cache.

SkyPilot lives in .venv-fleet (scripts/setup.sh test builds it): its click pin fights transformers 5's.
Its parts run there, in subprocesses, with HOME in a temporary folder holding a catalog cache made
from rows of infercost's own price table (which came from SkyPilot's hosted catalog), so SkyPilot
never reaches for the network."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLEET_PY = ROOT / ".venv-fleet" / "bin" / "python"
INFERCOST = [sys.executable, "-m", "infercost.cli"]


def fleet_env_python() -> Path:
    if not FLEET_PY.exists():
        if os.environ.get("INFERCOST_REQUIRE_FLEET_ENV"):
            pytest.fail("no .venv-fleet: bash scripts/setup.sh fleet")
        pytest.skip("no .venv-fleet (bash scripts/setup.sh test builds it)")
    return FLEET_PY


def sky_home(tmp_path: Path, bump: float = 1.0) -> Path:
    """A HOME whose SkyPilot catalog cache holds the AWS and GCP rows of infercost's price table
    (prices times `bump`), in SkyPilot's vms.csv columns."""
    home = tmp_path / "home"
    by = defaultdict(dict)
    for r in csv.DictReader((ROOT / "hardware" / "prices.csv").open()):
        if r["provider"] in ("aws", "gcp") and r["usd_per_hour"]:  # (a row with no public price has none)
            by[(r["provider"], r["instance_type"], r["region"])].update({"row": r, r["pricing"]: float(r["usd_per_hour"]) * bump})
    cols = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo", "Price", "SpotPrice",
            "Region", "AvailabilityZone"]
    out = defaultdict(list)
    for (provider, itype, region), d in by.items():
        r, od, spot = d["row"], d.get("on-demand", ""), d.get("spot", "")
        if itype.startswith("tpu-"):  # SkyPilot lists a TPU slice as an accelerator of a "TPU-VM"
            out[provider].append(["TPU-VM", itype, 1, "", "", "", od, spot, region.rsplit("-", 1)[0], region])
        else:
            zone = f"{region}-a" if provider == "gcp" else f"{region}a"
            out[provider].append([itype, r["accelerator"], r["accelerator_count"] if r["accelerator"] else "",
                                  r["vcpus"], r["memory_gib"], "", od, spot, region, zone])
    for provider, rows in out.items():
        path = home / ".sky" / "catalogs" / "v8" / provider / "vms.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([cols, *rows])
    return home


def sky_run(script: str, home: Path, *args) -> dict:
    env = {**os.environ, "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    proc = subprocess.run([str(fleet_env_python()), "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Failed to fetch" not in proc.stderr  # the catalog came from the cache, not the network
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(out: Path, instances: str, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([*INFERCOST, "fleet", "plan", "--instances", instances, "--suite", "quick", "--out", str(out),
                           *extra], capture_output=True, text=True, timeout=300)


PARSE = """
    import json, sys
    from pathlib import Path
    import sky
    from sky.catalog import get_tpus
    from sky.utils import gpu_names
    out = {}
    for path in sorted(Path(sys.argv[1]).glob("*.yaml")):
        task = sky.Task.from_yaml(str(path))  # SkyPilot's parser, schema and catalog checks
        (r,) = task.resources
        accs = list((r.accelerators or {}).keys())
        out[task.name] = {"cloud": str(r.cloud), "region": r.region, "zone": r.zone, "instance_type": r.instance_type,
                          "accelerators": r.accelerators, "use_spot": r.use_spot, "setup": task.setup, "run": task.run,
                          "mounts": sorted(task.storage_mounts), "num_nodes": task.num_nodes,
                          "known_names": all(a in gpu_names.CANONICAL_GPU_NAMES or a in get_tpus() for a in accs)}
    print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("spot", [False, True])
def test_every_task_parses_with_skypilots_own_parser_and_runs_the_readme_setup(tmp_path, spot):
    out = tmp_path / "fleet"
    proc = plan(out, "aws:p5en.48xlarge,gcp:tpu-v6e-8,aws:c7i.2xlarge", *(["--spot"] if spot else []))
    assert proc.returncode == 0, proc.stderr
    tasks = sky_run(PARSE, sky_home(tmp_path), out)
    pricing = "spot" if spot else "on-demand"
    gpu, tpu, cpu = (tasks[f"infercost-{n}-{pricing}"] for n in ("aws-p5en-48xlarge", "gcp-tpu-v6e-8", "aws-c7i-2xlarge"))
    assert gpu["cloud"] == "AWS" and gpu["instance_type"] == "p5en.48xlarge" and gpu["accelerators"] == {"H200": 8}
    assert tpu["cloud"] == "GCP" and tpu["accelerators"] == {"tpu-v6e-8": 1} and tpu["zone"] == "us-central1-a"
    assert cpu["instance_type"] == "c7i.2xlarge" and not cpu["accelerators"]
    readme = (ROOT / "README.md").read_text()
    run_command = readme.split("```bash\n", 1)[1].split("\n", 1)[0]  # the README's first command
    setup_command = run_command.split(" && ")[0]
    for t in (gpu, tpu, cpu):
        assert t["use_spot"] is spot and t["known_names"]
        assert t["setup"].strip() == setup_command  # exactly the README's set-up command
        assert "infercost run --suite quick --detect-instance --resume" in t["run"]
        assert t["mounts"] == ["/infercost-results"]  # results survive the instance, in the bucket


@pytest.mark.slow
def test_multi_host_tasks_parse_with_skypilot_and_run_on_every_host_with_host_0_keeping_records(tmp_path):
    nodes, pod = tmp_path / "nodes", tmp_path / "pod"
    for out, instances, extra in ((nodes, "aws:p5.48xlarge", ["--nodes", "2"]), (pod, "gcp:tpu-v5litepod-16", [])):
        proc = plan(out, instances, *extra)
        assert proc.returncode == 0, proc.stderr
    home = sky_home(tmp_path)
    (gpu,) = sky_run(PARSE, home, nodes).values()
    (tpu,) = sky_run(PARSE, home, pod).values()
    assert gpu["num_nodes"] == 2 and gpu["accelerators"] == {"H100": 8}  # two 8-GPU nodes
    assert tpu["num_nodes"] == 1 and tpu["accelerators"] == {"tpu-v5litepod-16": 1}  # SkyPilot runs it on each host
    for t in (gpu, tpu):
        assert 'if [ "${SKYPILOT_NODE_RANK:-0}" = 0 ]' in t["run"] and "infercost run --suite quick" in t["run"]
    (two,) = json.loads((nodes / "fleet.json").read_text())["tasks"]
    (four,) = json.loads((pod / "fleet.json").read_text())["tasks"]
    assert (two["nodes"], two["hosts"], four["nodes"], four["hosts"]) == (2, 2, 1, 4)  # v5e-16: 4 hosts of 4 chips
    # the estimate pays for both nodes: $55.04/h x 2 over the same minutes
    assert two["est_usd"] == pytest.approx(55.04 * 2 * two["est_minutes"] / 60)
    refused = plan(tmp_path / "x", "gcp:tpu-v5litepod-16", "--nodes", "2")
    assert refused.returncode == 2 and "TPU slice of 4 hosts" in refused.stderr and "Traceback" not in refused.stderr


def test_the_plan_prints_the_fleet_estimate_before_anything_is_launched(tmp_path):
    proc = plan(tmp_path / "f", "aws:p5en.48xlarge,aws:c7i.2xlarge", "--spot")
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "ESTIMATED cost of the whole fleet run: $" in said and "nothing has been launched" in said
    manifest = json.loads((tmp_path / "f" / "fleet.json").read_text())
    gpu, cpu = manifest["tasks"]
    # By hand from the quick suite: an accelerator runs 2 float32 + 4 bfloat16 + 1 float16 matmuls,
    # a prefill and 2 decodes (10 a backend, torch and JAX: 20); a CPU 4 + 2 matmuls, a prefill and
    # 2 decodes of the dense model and a decode of the small MoE (10, 20). At the plan's stated 10 min
    # of set-up and 0.75 min an accelerator case, 0.15 a CPU case: 25 min at $16.5551/h spot =
    # $6.89796; 13 min at $0.1737/h = $0.037635.
    assert (gpu["cases"], cpu["cases"]) == (20, 20)
    assert (gpu["est_minutes"], cpu["est_minutes"]) == pytest.approx((25.0, 13.0))
    assert (gpu["est_usd"], cpu["est_usd"]) == pytest.approx((6.89796, 0.037635), rel=1e-5)
    assert manifest["est_usd"] == pytest.approx(6.935595, rel=1e-5)
    yaml_text = (tmp_path / "f" / f"{gpu['name']}.yaml").read_text()
    assert "ESTIMATE" in yaml_text and manifest["bucket"] in yaml_text


@pytest.mark.parametrize("instances,words", [("aws:nope.1xlarge", "no price for aws:nope.1xlarge"),
                                              ("p5en", "must be provider:instance_type"),
                                              ("gcp:a2-ultragpu-8g", "no spot price"),
                                              # no adapter runs Trainium: once it was planned as a GPU
                                              ("aws:trn2.48xlarge", "no infercost backend runs Trainium2")])
def test_a_plan_for_an_unknown_instance_is_one_line(tmp_path, instances, words):
    proc = plan(tmp_path / "f", instances, "--spot")
    assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "f").exists()


def test_launch_without_skypilot_says_how_to_install_it(tmp_path):
    assert plan(tmp_path / "f", "aws:c7i.2xlarge").returncode == 0
    proc = subprocess.run([*INFERCOST, "fleet", "launch", str(tmp_path / "f")], capture_output=True, text=True, timeout=120)
    if proc.returncode == 2 and "SkyPilot is not installed" not in proc.stderr:
        pytest.skip("SkyPilot is installed in this environment")
    assert proc.returncode == 2 and "pip install 'infercost[fleet]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def run_cases(out: Path, *extra, background: bool = False):
    cmd = [*INFERCOST, "run", "--backend", "torch-cpu", "--model", "tiny", "--workload", "prefill,decode",
           "--batch", "1,2", "--tokens", "16", "--min-time", "0.05", "--warmup", "0.05", "--repeats", "3",
           "--out", str(out), *extra]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_collect_gathers_what_the_tasks_wrote_including_a_preempted_and_resumed_run(tmp_path):
    fleet = tmp_path / "fleet"
    assert plan(fleet, "aws:c7i.2xlarge,aws:m8i.2xlarge,aws:m8g.2xlarge,gcp:tpu-v6e-8").returncode == 0
    names = [t["name"] for t in json.loads((fleet / "fleet.json").read_text())["tasks"]]
    results = fleet / "results"  # the bucket, synced: one folder per task, run.jsonl in it
    whole, preempted, cut, _never = (results / n / "run.jsonl" for n in names)
    run_cases(whole)
    # A spot instance taken away mid-run: the run is killed after its first record, and the
    # copy in the bucket ends in half a line (cut off mid-copy); the restarted job resumes it.
    proc = run_cases(preempted, background=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (preempted.exists() and preempted.read_text().count("\n") >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = preempted.read_text().count("\n")
    assert 1 <= first < 4, f"{first} records written before the kill"
    with preempted.open("a") as f:
        f.write('{"schema": 1, "key": "half a rec')
    run_cases(preempted, "--resume")
    # A copy cut off mid-line that was never resumed.
    cut.parent.mkdir(parents=True)
    text = whole.read_text()
    cut.write_text(text[: text.index("\n", len(text) // 2) + 40])

    store = tmp_path / "history.duckdb"
    proc = subprocess.run([*INFERCOST, "fleet", "collect", str(fleet), "--history", str(store)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    collected = {n: [json.loads(l) for l in (fleet / "collected" / f"{n}.jsonl").read_text().splitlines()]
                 for n in names[:3]}
    # the history holds every collected record once, each series under its task's instance
    import duckdb
    with duckdb.connect(str(store), read_only=True) as con:
        stored = dict(con.execute("SELECT instance, count(DISTINCT id) FROM points GROUP BY instance").fetchall())
    tasks = {t["name"]: t["instance"] for t in json.loads((fleet / "fleet.json").read_text())["tasks"]}
    assert stored == {tasks[n]: len(collected[n]) for n in names[:3]}
    again = subprocess.run([*INFERCOST, "fleet", "collect", str(fleet), "--history", str(store)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "0 records added" in again.stdout, again.stdout + again.stderr
    assert not (fleet / "collected" / f"{names[3]}.jsonl").exists() and "no results yet" in proc.stdout
    assert "skipped" in proc.stderr or "partial" in proc.stderr  # the cut lines were noticed, not loaded
    cases = {r["key"] for r in collected[names[0]]}
    assert len(cases) == 4 and len(collected[names[0]]) == 4
    assert sorted(r["key"] for r in collected[names[1]]) == sorted(cases)  # every case once, after the resume
    assert 0 < len(collected[names[2]]) < 4
    for n in names[:3]:
        for r in collected[n]:
            assert r["fleet"]["task"] == n and r["fleet"]["usd_per_hour"] > 0 and r["fleet"]["instance"].startswith("aws:")

    report = tmp_path / "report"
    proc = subprocess.run([*INFERCOST, "report", str(fleet / "collected"), "--out", str(report), "--min-user-tps", "20"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    md = (report / "report.md").read_text()
    # Which instances the league can rank is decided by the measurements: on a busy host a real
    # decode case can be too noisy to count, and an instance without a valid one is not ranked
    # (never ranked on an invalid figure). The expectation follows the records, not a quiet host.
    measured = [n for n in names[:3] if any(r["status"] == "ok" and r["case"]["workload"] == "decode"
                                             and r["metrics"]["per_user_tokens_per_s"] >= 20 for r in collected[n])]
    if not measured:
        assert "## League table" not in md
        return
    league = md.split("## League table", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in league.splitlines() if l.startswith("| ") and "instance" not in l]
    ranked = [l for l in rows if l.split("|")[1].strip().isdigit()]
    instances = {t["name"]: t["instance"] for t in json.loads((fleet / "fleet.json").read_text())["tasks"]}
    assert sorted(l.split("|")[2].strip() for l in ranked) == sorted(instances[n] for n in measured)
    costs = [float(l.split("|")[5].split("(")[0].strip().lstrip("$")) for l in ranked]
    assert costs == sorted(costs)  # cheapest first
    estimates = [l for l in rows if "ESTIMATE" in l]
    assert estimates and all("tpu-v6e-8" in l for l in estimates)  # never measured: a labelled estimate
    assert "as of 2025-12-01" in league


@pytest.mark.slow
def test_prices_from_skypilots_catalog_cache_show_the_changes_then_write_a_dated_table(tmp_path):
    home = sky_home(tmp_path, bump=1.1)  # a cache 10% dearer than the current table
    out = tmp_path / "new.csv"
    env = {**os.environ, "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    proc = subprocess.run([str(fleet_env_python()), "-m", "infercost.cli", "prices", "--from-skypilot", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "changed  aws:p5en.48xlarge us-east-1 on-demand" in proc.stdout and "rows differ" in proc.stdout
    assert proc.stdout.index("rows differ") < proc.stdout.index("wrote")  # the diff comes before the write
    rows = list(csv.DictReader(out.open()))
    today = time.strftime("%Y-%m-%d")
    assert rows and all(r["as_of"] == today and "SkyPilot catalog cache" in r["source"] for r in rows)
    p5en = next(r for r in rows if r["instance_type"] == "p5en.48xlarge" and r["pricing"] == "on-demand")
    assert float(p5en["usd_per_hour"]) == pytest.approx(63.296 * 1.1, rel=1e-4)


@pytest.mark.parametrize("manifest", ['{not json', '[1, 2]', '{"tasks": [{"name": 3}]}'])
def test_a_broken_fleet_manifest_is_one_line(tmp_path, manifest):
    (tmp_path / "results").mkdir()
    (tmp_path / "fleet.json").write_text(manifest)
    proc = subprocess.run([*INFERCOST, "fleet", "collect", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a fleet manifest" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_broken_skypilot_catalog_cache_is_one_line(tmp_path):
    home = tmp_path / "home"
    bad = home / ".sky" / "catalogs" / "v8" / "aws" / "vms.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("foo,bar\n1,2\n")
    env = {**os.environ, "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    proc = subprocess.run([str(fleet_env_python()), "-m", "infercost.cli", "prices", "--from-skypilot", "--out",
                           str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "not a SkyPilot catalog" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.csv").exists()


def test_a_fleet_plans_the_backends_that_declare_they_run_the_instance():
    from infercost.fleet import backends_of
    from infercost.hardware import prices
    rows = prices.load_all([])
    row = {(r.provider + ":" + r.instance_type): r for r in rows}
    assert backends_of(row["aws:c7i.2xlarge"]) == ["torch-cpu", "jax-cpu"]
    assert backends_of(row["aws:p5.48xlarge"]) == ["torch-cuda", "jax-gpu"]      # NVIDIA H100
    assert backends_of(row["oci:BM.GPU.MI300X.8"]) == ["torch-cuda"]             # AMD: torch's ROCm build
    assert backends_of(row["gcp:tpu-v6e-1"]) == ["jax-tpu"]
    assert backends_of(row["aws:g5.xlarge"]) == ["torch-cuda", "jax-gpu"]        # A10G: not in the catalog
    assert backends_of(row["aws:trn2.48xlarge"]) == [] and backends_of(row["aws:inf2.24xlarge"]) == []


@pytest.mark.slow
def test_an_engine_fleet_launches_the_engine_and_replays_the_trace_on_every_instance(tmp_path):
    out = tmp_path / "fleet"
    engine = "vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000"
    proc = plan(out, "aws:p5en.48xlarge,gcp:tpu-v6e-8", "--engine", engine, "--model", "meta-llama/Llama-3.1-8B-Instruct",
                "--engine-setup", "pip install vllm==0.11.0", "--trace", str(ROOT / "examples" / "traces" / "agentic.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "engine start" in proc.stdout and "nothing has been launched" in proc.stdout
    tasks = sky_run(PARSE, sky_home(tmp_path), out)  # SkyPilot's own parser takes every task
    gpu = tasks["infercost-aws-p5en-48xlarge-on-demand"]
    assert gpu["setup"].splitlines() == ["bash scripts/setup.sh", "pip install vllm==0.11.0"]
    run = gpu["run"]
    assert f"--launch '{engine}'" in run and "--trace traces/agentic.jsonl" in run
    assert "--device H200 --device-kind gpu --devices 8" in run and "infercost serve http://127.0.0.1:8000" in run
    assert (out / "workdir" / "traces" / "agentic.jsonl").read_bytes() == (ROOT / "examples" / "traces" / "agentic.jsonl").read_bytes()
    manifest = json.loads((out / "fleet.json").read_text())
    assert manifest["engine"]["command"] == engine and all(t["engine"] == engine for t in manifest["tasks"])
    # the estimate counts set-up, the engine's start and the trace's span as replayed
    t = manifest["tasks"][0]
    assert t["traffic_min"] == pytest.approx(127.335 / 60 + 2, abs=0.01)
    assert t["est_usd"] == pytest.approx(t["usd_per_hour"] * (10 + 15 + t["traffic_min"]) / 60)


@pytest.mark.parametrize("extra,words", [
    (["--engine", "vllm serve m"], "--engine needs --model"),
    (["--engine", "vllm serve m", "--model", "m"], "needs one traffic"),
    (["--engine", "vllm serve m", "--model", "m", "--sessions", "4", "--concurrency", "1,2"], "were given"),
    (["--trace", "t.jsonl"], "give --engine")])
def test_a_broken_engine_fleet_is_one_line(tmp_path, extra, words):
    proc = plan(tmp_path / "f", "aws:p5en.48xlarge", *extra)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("warning:")]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
    assert not (tmp_path / "f").exists()


def test_the_league_ranks_engines_by_instance_with_their_own_input_price():
    # Two instances, one engine, two levels each: concurrency 1 at 50 tok/s a user (50 in all), 8 at
    # 10 a user (80 in all); 20% of each level's time before first tokens, 400 input tokens/s.
    # At $3.60/h ($0.001/s), output gets $0.0008/s: at 30 tok/s a user, halfway, 65 tok/s in all:
    # 0.0008e6 / 65 = $12.31 a million; input $0.0002/s over 400 tok/s = $0.50 (the level meeting 30).
    from infercost.report.league import league, table_rows
    recs = []
    for task, price in (("cheap", 3.6), ("dear", 7.2)):
        for level, user, total in ((1, 50.0, 50.0), (8, 10.0, 80.0)):
            recs.append({"status": "ok", "key": f"{task}{level}", "settings": {"launched": {"engine": "vllm"}},
                         "case": {"backend": "endpoint", "workload": "serve", "dtype": "engine", "device": "H200",
                                  "device_kind": "gpu", "devices": 1, "engine": {"server": "uvicorn"},
                                  "params": {"model": "llama", "batch": level, "tokens": 128, "mode": "concurrency", "level": level}},
                         "metrics": {"output_tokens_per_s": total, "output_tokens_per_s_ci95_low": total,
                                     "output_tokens_per_s_ci95_high": total, "tpot_s": 1 / user,
                                     "per_user_tokens_per_s": user, "input_tokens_per_s": 400.0, "prefill_share": 0.2},
                         "fleet": {"task": task, "instance": f"x:{task}", "pricing": "on-demand", "region": "r",
                                   "accelerator": "H200", "accelerator_count": 1, "usd_per_hour": price,
                                   "as_of": "2026-12-01", "price_label": f"x:{task} ${price}/h"}})
    (section,) = league(recs, [], min_user_tps=30.0)
    assert (section["model"], section["weights"]) == ("llama", "engine vllm") and section["estimates"] == []
    cheap, dear = section["rows"]
    assert cheap["instance"] == "x:cheap" and cheap["usd_per_m_output"] == pytest.approx(0.0008e6 / 65)
    assert cheap["usd_per_m_input"] == pytest.approx(0.5) and dear["usd_per_m_output"] == pytest.approx(2 * 0.0008e6 / 65)
    assert cheap["usd_per_m_blended"] == pytest.approx((3 * 0.5 + 0.0008e6 / 65) / 4)
    row = table_rows(section, lambda x: f"{x:.4f}")[0]
    assert row[5] == "0.5000" and "interpolated" in row[8]
