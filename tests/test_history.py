"""The results history: a store that keeps every record once, change points where they were planted
(a torch upgrade that slows torch-cpu by 8%, a price row 20% dearer), told apart as speed and price,
alarms on regressions, the report's figure, and bad input as one line with the store untouched."""

import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pytest

from infercost.cli import main

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_history", ROOT / "scripts/make_history.py")
make_history = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_history)

TEMPLATE = [r for r in map(json.loads, (ROOT / "examples/results/cpu-quick-amd-epyc-2core.jsonl").read_text().splitlines())
            if r["status"] == "ok"]
START = datetime(2026, 10, 1, 2, 0, tzinfo=timezone.utc)
NIGHTS, UPGRADE_AT, PRICE_AT = 30, 16, 9  # events counted in nights from the end


def write_nights(folder: Path, nights=NIGHTS, **kw) -> list[list[dict]]:
    folder.mkdir(parents=True, exist_ok=True)
    kw = {"upgrade_at": UPGRADE_AT, "price_at": PRICE_AT, **kw}
    by_night = make_history.nightly(TEMPLATE, nights, 0.01, 7, START, **kw)
    for i, recs in enumerate(by_night):
        (folder / f"night-{i:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return by_night


def infercost(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "infercost.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def one_line_error(proc, *words, status=2):
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("infercost: error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def stored(store: Path) -> tuple[int, int]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute("SELECT count(DISTINCT id), count(*) FROM points").fetchall()[0]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    write_nights(tmp / "nights")
    store = tmp / "h.duckdb"
    assert main(["history", "add", str(tmp / "nights"), "--store", str(store)]) == 0
    return tmp, store


def found_changes(store):
    from infercost.history.changes import find
    from infercost.history.store import Store
    with Store(store) as s:
        return find(s.frame())


def test_every_record_is_stored_once_however_often_it_is_added(history, capsys):
    tmp, store = history
    first = stored(store)
    assert first[0] == NIGHTS * len(TEMPLATE)
    assert main(["history", "add", str(tmp / "nights"), str(tmp / "nights" / "night-03.jsonl"), "--store", str(store)]) == 0
    assert stored(store) == first
    assert f"0 records added" in capsys.readouterr().out


def test_records_added_by_mistake_are_removed_whole_and_only_with_yes(history, tmp_path):
    tmp, store = history
    mine = tmp_path / "h.duckdb"
    mine.write_bytes(store.read_bytes())
    night = tmp / "nights" / "night-05.jsonl"
    listed = infercost("history", "remove", "--store", mine, "--source", night)
    assert listed.returncode == 0 and f"{len(TEMPLATE)} records added from {night} would be removed" in listed.stdout
    assert stored(mine) == stored(store)  # nothing went without --yes
    gone = infercost("history", "remove", "--store", mine, "--source", night, "--yes")
    assert gone.returncode == 0 and stored(mine)[0] == stored(store)[0] - len(TEMPLATE)
    assert main(["history", "add", str(night), "--store", str(mine)]) == 0  # and back: the same rows again
    assert stored(mine) == stored(store)
    one_line_error(infercost("history", "remove", "--store", mine), "--source FILE or --machine NAME")
    bucket = tmp_path / "bucket"
    assert main(["history", "add", str(night), "--store", str(bucket)]) == 0
    one_line_error(infercost("history", "remove", "--store", bucket, "--machine", "aws:c7i.large", "--yes"),
                   "Parquet store", "history copy")


def test_a_planted_upgrade_and_a_price_change_are_found_where_planted_and_told_apart(history):
    found, short = found_changes(history[1])
    assert not short
    upgrade, price = NIGHTS - UPGRADE_AT, NIGHTS - PRICE_AT  # the first night after each event
    for f in found:
        torch = f.case_name.startswith("torch-cpu")
        if f.metric.startswith("usd_per"):  # a cost: the price change on every backend, the upgrade on torch's
            near_price = abs(f.change.index - price) <= 1
            assert near_price or (torch and abs(f.change.index - upgrade) <= 1), f
        else:  # a speed: the upgrade, and only torch-cpu's
            assert torch and abs(f.change.index - upgrade) <= 1, f
    by = {(f.case_name, f.metric, abs(f.change.index - price) <= 1): f for f in found}
    for (name, metric, at_price), f in by.items():
        if at_price:
            assert f.kind == "price" and 0.16 < f.change.size < 0.24 and f.regression, f  # planted: 0.0998 / 0.0832 = +20%
            assert "price $0.0832/h -> $0.0998/h (as of 2026-11-01)" in f.what
            assert not any(w.startswith("torch") for w in f.what)
        else:
            assert f.kind == "speed" and f.regression, f
            assert "torch 2.13.0+cpu -> 2.14.0+cpu" in f.what
            want = 1 / 0.92 - 1 if metric in ("tpot_s", "ttft_s") or metric.startswith("usd") else 0.92 - 1
            assert abs(f.change.size - want) < 0.03 and f.change.low < want < f.change.high + 0.01, f
    # every torch-cpu speed series and every cost series moved; no jax-cpu speed series did
    speeds = {(f.case_name, f.metric) for f in found if not f.metric.startswith("usd")}
    torch_cases = {f"{r['case']['backend']} " for r in TEMPLATE if r["case"]["backend"] == "torch-cpu"}
    assert speeds and all(n.startswith(tuple(torch_cases)) for n, _ in speeds)


def test_check_alarms_on_recent_regressions_with_one_line_each_and_per_metric_thresholds(history):
    tmp, store = history
    proc = infercost("history", "check", "--store", store, "--recent", "12")  # the price change 9 nights ago
    assert proc.returncode == 1, proc.stdout + proc.stderr
    alarms = [l for l in proc.stdout.splitlines() if l.startswith("ALARM")]
    assert alarms and all("usd_per" in l and "; price;" in l and "$0.0998/h" in l for l in alarms)
    assert len(alarms) == sum(1 for r in TEMPLATE if r["case"]["workload"] != "collective")  # one per cost series
    quiet = infercost("history", "check", "--store", store, "--recent", "12", "--threshold", "usd_per_m_output=25%",
                      "--threshold", "usd_per_m_input=25%", "--threshold", "usd_per_pflop=25%")
    assert quiet.returncode == 0 and "0 alarm(s)" in quiet.stdout, quiet.stdout
    old = infercost("history", "check", "--store", store, "--recent", "5")  # both changes older than 5 points
    assert old.returncode == 0, old.stdout
    both = infercost("history", "check", "--store", store, "--recent", "20", "--case", "torch-cpu decode", "--metric", "tpot_s")
    # the last change of a torch-cpu decode TPOT series is the upgrade (a price never moves a time)
    assert both.returncode == 1 and all("torch 2.13.0+cpu -> 2.14.0+cpu" in l
                                        for l in both.stdout.splitlines() if l.startswith("ALARM"))


def test_a_case_that_stops_measuring_alarms_with_its_reason_and_changes_print_as_json(history, tmp_path):
    tmp, store = history
    mine = tmp_path / "h.duckdb"
    mine.write_bytes(store.read_bytes())
    last = json.loads((tmp / "nights" / f"night-{NIGHTS - 1:02d}.jsonl").read_text().splitlines()[0])
    broken = {**last, "timestamp": "2027-01-01T02:00:00+00:00", "status": "error", "valid": False,
              "reasons": ["worker killed by SIGKILL (out of memory?)"], "metrics": None, "stats": None}
    (tmp_path / "broken.jsonl").write_text(json.dumps(broken) + "\n")
    assert main(["history", "add", str(tmp_path / "broken.jsonl"), "--store", str(mine)]) == 0
    proc = infercost("history", "check", "--store", mine)
    alarms = [l for l in proc.stdout.splitlines() if l.startswith("ALARM")]
    assert proc.returncode == 1 and len(alarms) == 1, proc.stdout
    assert alarms[0].startswith(f"ALARM aws:c7i.large {last['case']['backend']} ") and \
           "error since 2027-01-01 02:00" in alarms[0] and "worker killed by SIGKILL" in alarms[0]
    lines = infercost("history", "changes", "--store", mine, "--json").stdout.splitlines()
    changes = [json.loads(l) for l in lines]
    assert len(changes) == len(found_changes(store)[0])
    assert {c["kind"] for c in changes} == {"price", "speed"} and all(len(c["ci95"]) == 2 for c in changes)


def test_the_detector_finds_a_5_percent_step_in_2_percent_noise_and_stays_quiet_without_one():
    from infercost.history.detect import changes
    rng = np.random.default_rng(11)
    hits = alarms = 0
    for _ in range(60):
        x = 100 * (1 + 0.02 * rng.standard_normal(60))
        at = int(rng.integers(10, 51))
        x[at:] *= 1.05
        hits += any(abs(c.index - at) <= 3 for c in changes(x))
        alarms += bool(changes(100 * (1 + 0.02 * rng.standard_normal(60))))
    assert hits >= 54 and alarms <= 3, (hits, alarms)


def test_the_parquet_store_holds_the_same_history(history, tmp_path):
    tmp, store = history
    folder = tmp_path / "bucket"
    assert main(["history", "add", str(tmp / "nights"), "--store", str(folder)]) == 0
    assert main(["history", "add", str(tmp / "nights" / "night-00.jsonl"), "--store", str(folder)]) == 0
    files = sorted(folder.glob("points-*.parquet"))
    assert len(files) == 1 and not list(folder.glob(".*"))  # the second add had nothing new: no file
    back = tmp_path / "back.duckdb"  # and copied into a database again (as a bucket's history is read locally)
    assert main(["history", "copy", str(back), "--store", str(folder)]) == 0
    assert stored(back) == stored(store)
    db = [(f.key, f.metric, f.change.index, f.kind, f.what) for f in found_changes(store)[0]]
    assert [(f.key, f.metric, f.change.index, f.kind, f.what) for f in found_changes(folder)[0]] == db
    assert [(f.key, f.metric, f.change.index, f.kind, f.what) for f in found_changes(back)[0]] == db


def test_the_report_draws_the_history_with_its_changes(history, tmp_path):
    tmp, store = history
    out = tmp_path / "report"
    proc = infercost("report", "--history", store, "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## History" in md and "![History](history.png)" in md
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch 2.13.0+cpu -> 2.14.0+cpu" in md and "price $0.0832/h -> $0.0998/h" in md
    assert "History" in (out / "report.html").read_text()


def test_a_real_run_adds_itself_and_a_short_series_has_not_enough_points(tmp_path):
    store = tmp_path / "h.duckdb"
    for i in range(2):
        proc = infercost("run", "-b", "torch-cpu", "-w", "matmul", "--shape", "64x64x64", "--min-time", "0.05",
                         "--warmup", "0.05", "--repeats", "3", "--out", tmp_path / f"r{i}.jsonl", "--history", store,
                         "--price-per-hour", "0.1", cwd=tmp_path)
        assert proc.returncode == 0 and "history" in proc.stdout and "1 records added" in proc.stdout, proc.stdout + proc.stderr
    assert stored(store)[0] == 2
    proc = infercost("history", "check", "--store", store)
    assert proc.returncode == 0
    assert "torch-cpu matmul 64x64x64 float32 tflops: not enough points (2 of 8)" in proc.stdout, proc.stdout


def test_bad_input_is_one_line_and_leaves_the_store_as_it_was(history, tmp_path):
    tmp, store = history
    mine = tmp_path / "h.duckdb"
    mine.write_bytes(store.read_bytes())
    before = stored(mine)
    good = tmp / "nights" / "night-00.jsonl"
    rec = json.loads(good.read_text().splitlines()[0])

    no_time = tmp_path / "no-time.jsonl"
    no_time.write_text(json.dumps({k: v for k, v in rec.items() if k != "timestamp"}) + "\n")
    fresh = tmp_path / "fresh.jsonl"  # a record not yet stored, added together with the bad one: refused too
    fresh.write_text(json.dumps({**rec, "timestamp": "2027-01-01T00:00:00+00:00"}) + "\n")
    one_line_error(infercost("history", "add", fresh, no_time, "--store", mine), "without a time", "nothing was added")

    from infercost.history.points import SPEED
    other = dict(rec, metrics={**rec["metrics"], SPEED[rec["case"]["workload"]][0]: 1.0})
    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps(other) + "\n")
    one_line_error(infercost("history", "add", fresh, changed, "--store", mine), "already in the history with other values")
    twice = tmp_path / "twice.jsonl"
    twice.write_text(json.dumps({**rec, "timestamp": "2027-02-01T00:00:00+00:00"}) + "\n"
                     + json.dumps({**other, "timestamp": "2027-02-01T00:00:00+00:00"}) + "\n")
    one_line_error(infercost("history", "add", twice, "--store", mine), "hold different values")
    no_key = tmp_path / "no-key.jsonl"
    no_key.write_text(json.dumps({k: v for k, v in rec.items() if k != "key"}) + "\n")
    one_line_error(infercost("history", "add", fresh, no_key, "--store", mine), "nothing was added")
    assert stored(mine) == before

    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"not a database, " * 4096)
    one_line_error(infercost("history", "changes", "--store", corrupt), "not a readable infercost history")
    one_line_error(infercost("history", "add", good, "--store", corrupt), "not a readable infercost history")
    assert corrupt.read_bytes() == b"not a database, " * 4096
    one_line_error(infercost("history", "check", "--store", tmp_path / "absent.duckdb"), "no history at")
    one_line_error(infercost("history", "check", "--store", mine, "--threshold", "speed=3%"), "unknown metric 'speed'")
    one_line_error(infercost("history", "check", "--store", mine, "--threshold", "-4%"), "--threshold")
    one_line_error(infercost("history", "changes", "--store", mine, "--case", "no such case"), "holds no point")
    one_line_error(infercost("history", "series", "--store", mine, "--since", "2026-13-01"), "--since", "YYYY-MM-DD")
    one_line_error(infercost("history", "check", "--store", ""), "empty path")
    one_line_error(infercost("history", "copy", no_key / "bucket", "--store", mine), "cannot write the history")
    one_line_error(infercost("run", "--history", corrupt / "x.duckdb", "--out", tmp_path / "r.jsonl"), "--history")


def nightly(tmp_path, **env):
    import os
    base = {k: v for k, v in os.environ.items() if not k.startswith("NIGHTLY_")}
    return subprocess.run(["bash", str(ROOT / "scripts/nightly.sh")], capture_output=True, text=True, timeout=300,
                          env={**base, "INFERCOST": str(Path(sys.executable).parent / "infercost"),
                               "NIGHTLY_DIR": str(tmp_path / "night"), **env})


def test_a_night_is_priced_before_anything_launches_and_refused_above_its_budget(tmp_path):
    proc = nightly(tmp_path, NIGHTLY_INSTANCES="aws:c7i.2xlarge", NIGHTLY_SUITE="quick", NIGHTLY_DRY_RUN="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads((tmp_path / "night" / "fleet.json").read_text())
    assert f"the night is ESTIMATED at ${plan['est_usd']}" in proc.stdout and "dry run: nothing launched" in proc.stdout
    assert 0 < plan["est_usd"] < 25
    poor = nightly(tmp_path, NIGHTLY_INSTANCES="aws:c7i.2xlarge", NIGHTLY_SUITE="quick", NIGHTLY_BUDGET_USD="0.01")
    assert poor.returncode == 3  # refused before `fleet launch`: no SkyPilot call is made at all
    assert poor.stderr.strip().splitlines()[-1].startswith(f"nightly: the night is ESTIMATED at ${plan['est_usd']}, "
                                                           "above NIGHTLY_BUDGET_USD=$0.01: nothing launched")
    unset = nightly(tmp_path)
    assert unset.returncode == 2 and "set NIGHTLY_INSTANCES" in unset.stderr
    import yaml
    workflow = yaml.safe_load((ROOT / ".github/workflows/nightly.yml").read_text())
    assert workflow[True]["schedule"][0]["cron"] == "0 2 * * *"  # YAML 1.1 reads the key `on` as true
    steps = [s.get("run") for s in workflow["jobs"]["night"]["steps"]]
    assert "bash scripts/setup.sh fleet" in steps and "bash scripts/nightly.sh" in steps
