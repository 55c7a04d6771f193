"""The guarantees on the surfaces added after the first hardening pass: multi-device, serving and
ingested records held to one schema at the writer and the reader; device counts checked before
any price; names read from a fleet manifest kept inside their folder; a fleet's workdir holding
only the source a run needs; one-line refusals for every malformed URL, path and number of
serve, fleet, prices and ingest."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infercost.bench.reading import read_records
from infercost.bench.records import Writer
from infercost.cli import main
from infercost.hardware import cost

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def decode(devices=1, tps=100.0, per_chip=None, mesh=None, device="NVIDIA H100 80GB HBM3", kind="gpu"):
    params = {"model": "tiny", "batch": 1, "tokens": 16, **({"mesh": mesh} if mesh is not None else {})}
    case = {"backend": "torch-cuda", "workload": "decode", "params": params, "dtype": "bfloat16", "tf32": False,
            "threads": None, "device": device, "device_kind": kind, "shape": "tiny b1 ctx16", "devices": devices}
    return {"schema": 1, "key": json.dumps({"params": params, "devices": str(devices)}), "timestamp": "2026-12-06T00:00:00+00:00",
            "case": case, "status": "ok", "valid": True, "reasons": [], "warnings": [],
            "raw_times_s": [0.01, 0.011, 0.0105],
            "stats": {"n": 3, "mean": 0.0105, "median": 0.0105},
            "metrics": {"output_tokens_per_s": tps, "output_tokens_per_s_ci95_low": tps, "output_tokens_per_s_ci95_high": tps,
                        "tpot_s": 0.01, "per_user_tokens_per_s": 100.0,
                        "output_tokens_per_s_per_chip": tps / devices if per_chip is None and isinstance(devices, (int, float))
                        and devices else per_chip}}


def write(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def one_line(code, err, allowed=(2,)):
    lines = [l for l in err.splitlines() if l.strip()]
    assert code in allowed and len(lines) == 1 and lines[0].startswith("infercost: error:"), (code, err)
    assert "unexpected" not in lines[0] and "Traceback" not in err
    return lines[0]


# -- records: one schema at the writer and the reader ------------------------------------------

@pytest.mark.parametrize("devices", [-4, 0, 2.5, True, "2", None])
def test_a_record_whose_device_count_is_impossible_is_never_priced(capsys, tmp_path, devices):
    results = write(tmp_path / "r.jsonl", decode(devices=devices, per_chip=100.0))
    (rec,) = read_records(results)
    assert rec["status"] == "invalid" and "devices" in rec["reasons"][0]
    code = main(["cost", str(results), "--price-per-hour", "8", "--accelerators", "8"])
    out = capsys.readouterr().out
    assert code == 0 and "no valid measurement" in out and "$" not in out


def test_per_chip_figures_must_agree_with_the_total_and_the_layout_with_the_devices(tmp_path):
    wrong_chip = decode(devices=4, per_chip=100.0)  # 100 tok/s in all cannot be 100 on each of 4 chips
    wrong_mesh = decode(devices=4, mesh={"tp": 2, "dp": 1})
    right = decode(devices=4, mesh={"tp": 4, "dp": 1})
    got = read_records(write(tmp_path / "r.jsonl", wrong_chip, wrong_mesh, right))
    assert [r["status"] for r in got] == ["invalid", "invalid", "ok"]
    assert "over 4 devices" in got[0]["reasons"][0] and "spans 2 devices" in got[1]["reasons"][0]


def test_a_utilisation_above_its_ceiling_is_impossible(tmp_path):
    rec = decode()
    rec["metrics"]["mbu"] = 1.3
    (got,) = read_records(write(tmp_path / "r.jsonl", rec))
    assert got["status"] == "invalid" and "mbu = 1.3" in got["reasons"][0]


def test_the_writer_holds_records_to_the_readers_rules(tmp_path):
    # An ok record with negative FLOPs (as ingest once wrote) or -4 devices is written as invalid, with
    # its reason, never as ok; its times are kept (nothing measured is lost).
    bad = decode(devices=-4)
    bad["metrics"]["flops"] = -1
    w = Writer(tmp_path / "w.jsonl")
    w.write(bad)
    w.close()
    raw = json.loads((tmp_path / "w.jsonl").read_text())
    assert raw["status"] == "invalid" and raw["valid"] is False and raw["raw_times_s"] == [0.01, 0.011, 0.0105]
    assert "impossible figure" in raw["reasons"][0]


def test_ingest_writes_an_impossible_benchmark_as_invalid(capsys, tmp_path):
    # A pytest-benchmark file whose matmul claims a negative FLOP count: ingested, but not as ok.
    stats = {"rounds": 3, "mean": 1e-3, "median": 1e-3, "min": 0.9e-3, "max": 1.1e-3, "stddev": 1e-4,
             "iqr": 0.05e-3, "q1": 0.98e-3, "q3": 1.02e-3, "iterations": 1, "data": [0.9e-3, 1e-3, 1.1e-3]}
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 256, "n": 256, "k": 256},
            "dtype": "float32", "tf32": False, "threads": 2}
    data = {"machine_info": {"node": "h", "python_version": "3.11"}, "commit_info": {}, "datetime": "2026-11-29",
            "version": "5.1.0", "benchmarks": [{"name": "test_matmul", "params": {}, "stats": stats,
                                                "extra_info": {"infercost": {"case": case, "flops": -33554432}}}]}
    src = tmp_path / "b.json"
    src.write_text(json.dumps(data))
    assert main(["ingest", str(src), "--out", str(tmp_path / "i.jsonl")]) == 0
    (rec,) = [json.loads(l) for l in (tmp_path / "i.jsonl").read_text().splitlines()]
    assert rec["status"] == "invalid" and "flops = -33554432" in rec["reasons"][0]


def serve_record(ok=0, failed=0, tokens=0):
    case = {"backend": "endpoint", "workload": "serve", "dtype": "engine", "tf32": False, "threads": None,
            "params": {"endpoint": "http://127.0.0.1:8000", "model": "m", "api": "completions", "mode": "concurrency",
                       "level": 1, "batch": 1, "tokens": 16}, "device": "NVIDIA H100 80GB HBM3", "device_kind": "gpu",
            "shape": "m concurrency 1"}
    return {"schema": 1, "key": "s", "timestamp": "2026-12-06T00:00:00+00:00", "case": case, "status": "ok",
            "valid": True, "reasons": [], "warnings": [], "raw_times_s": [0.01],
            "metrics": {"output_tokens_per_s": 100.0, "tpot_s": 0.01, "per_user_tokens_per_s": 100.0,
                        "requests_ok": ok, "requests_failed": failed, "output_tokens": tokens}}


def test_a_serving_level_without_a_successful_request_is_never_priced(capsys, tmp_path):
    results = write(tmp_path / "s.jsonl", serve_record(ok=0, failed=20), serve_record(ok=20, tokens=320) | {"key": "t"})
    got = read_records(results)
    assert [r["status"] for r in got] == ["invalid", "ok"] and "successful requests" in got[0]["reasons"][0]
    code = main(["cost", str(results), "--price-per-hour", "3.6", "--any-device"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("$10") == 1  # the level with 20 good requests only: $3.6/h at 100 tok/s


def test_a_record_over_more_accelerators_than_the_instance_has_is_not_priced(capsys, tmp_path):
    # 8 devices priced with a 2-accelerator price: not capped at 2 (a cost 4x too low), not priced.
    results = write(tmp_path / "r.jsonl", decode(devices=8, mesh={"tp": 8, "dp": 1}))
    code = main(["cost", str(results), "--price-per-hour", "10", "--accelerators", "2"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "not priced" in out and "more accelerators than" in out and "$/M" not in out
    # with a price for all 8, it is priced: $10/h at 100 tok/s is $27.8 per million
    assert main(["cost", str(results), "--price-per-hour", "10", "--accelerators", "8"]) == 0
    assert "$27.8 " in capsys.readouterr().out
    with pytest.raises(ValueError):
        cost.Basis(10.0, 2, "x").per_hour_used(8)


def test_compare_counts_an_impossible_device_count_as_an_error(capsys, tmp_path):
    base = write(tmp_path / "a.jsonl", decode(devices=4, mesh={"tp": 4, "dp": 1}))
    for devices in (-4, 0):
        new = decode(devices=4, mesh={"tp": 4, "dp": 1})
        new["case"]["devices"] = devices
        assert main(["compare", str(base), str(write(tmp_path / "b.jsonl", new))]) == 1
        out = capsys.readouterr().out
        assert "error" in out and "no change" not in out


figure = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10), st.none(), st.booleans())


@PROPERTY
@given(devices=st.one_of(st.integers(-3, 9), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=2)),
       tps=figure, per_chip=figure, mbu=figure, tp=st.one_of(st.integers(-2, 9), st.floats(), st.none()))
def test_every_priced_record_has_a_possible_shape(tmp_path_factory, devices, tps, per_chip, mbu, tp):
    rec = decode(devices=1)
    rec["case"]["devices"] = devices
    rec["metrics"].update(output_tokens_per_s=tps, output_tokens_per_s_per_chip=per_chip, mbu=mbu)
    if tp is not None:
        rec["case"]["params"]["mesh"] = {"tp": tp, "dp": 1}
    (got,) = read_records(write(tmp_path_factory.mktemp("r") / "r.jsonl", rec))
    rows = cost.price_records([got], cost.Basis(16.0, 8, "x"))
    if got["status"] == "ok":  # then everything a price or a plot reads is possible
        n = got["case"]["devices"]
        assert isinstance(n, int) and not isinstance(n, bool) and 1 <= n
        assert isinstance(tps, (int, float)) and math.isfinite(tps) and tps > 0
        assert per_chip is None or math.isclose(per_chip * n, tps, rel_tol=1e-9)
        assert mbu is None or 0 <= mbu <= 1.05
        assert tp is None or tp == n
        assert all(r["usd_per_m_output"] > 0 and math.isfinite(r["usd_per_m_output"]) for r in rows)
        assert bool(rows) == (n <= 8)
    else:
        assert rows == []


# -- paths from files ---------------------------------------------------------------------------

def manifest(folder: Path, name: str) -> None:
    task = {"name": name, "instance": "aws:c7i.2xlarge", "pricing": "on-demand", "region": "us-east-1",
            "accelerator": "", "accelerator_count": 0, "usd_per_hour": 0.357, "as_of": "2025-12-01",
            "price_label": "aws:c7i.2xlarge"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fleet.json").write_text(json.dumps({"tasks": [task]}))


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "a/../../b", "..", "x\ny", "UPPER", ""])
def test_a_task_name_that_is_not_a_plain_name_is_refused_before_any_file_is_touched(capsys, tmp_path, name):
    plan = tmp_path / "a" / "b" / "plan"
    manifest(plan, name)
    (plan / "results").mkdir()
    before = sorted(p for p in tmp_path.rglob("*"))
    err = one_line(main(["fleet", "collect", str(plan)]), capsys.readouterr().err)
    assert "task name" in err and "\n" not in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing read or written elsewhere


def test_a_results_folder_that_links_outside_the_plan_is_refused(capsys, tmp_path):
    plan = tmp_path / "plan"
    manifest(plan, "infercost-aws-c7i-2xlarge-on-demand")
    (plan / "results").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.jsonl").write_text("")
    (plan / "results" / "infercost-aws-c7i-2xlarge-on-demand").symlink_to(outside)
    err = one_line(main(["fleet", "collect", str(plan)]), capsys.readouterr().err)
    assert "outside" in err


def test_a_fleet_task_uploads_only_the_tracked_source_a_run_needs(tmp_path):
    out = tmp_path / "plan"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "fleet", "plan", "--instances", "aws:c7i.2xlarge",
                           "--suite", "quick", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (yaml_file,) = out.glob("*.yaml")
    workdir = next(l for l in yaml_file.read_text().splitlines() if l.startswith("workdir:")).split(":", 1)[1].strip()
    assert Path(json.loads(workdir)) == (out / "workdir").resolve()
    shipped = {str(p.relative_to(out / "workdir")) for p in (out / "workdir").rglob("*") if p.is_file()}
    assert {"pyproject.toml", "README.md", "scripts/setup.sh", "infercost/cli.py", "kernels/llama.py"} <= shipped
    assert not any(s.startswith(("results", ".venv", "tests", ".git", "fleet")) for s in shipped)
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if tracked.returncode == 0:  # nothing git does not track (a local secret, a run's output) is shipped
        assert shipped <= set(tracked.stdout.splitlines())
    commit = json.loads((out / "fleet.json").read_text())["workdir"]["git_commit"]
    assert commit is None or commit in yaml_file.read_text()  # the instance records the plan's commit


# -- one-line refusals --------------------------------------------------------------------------

BAD = [
    (["serve", "http://[::1", "--model", "m"], "not a valid URL"),
    (["serve", "http://h:abc", "--model", "m"], "not a valid URL"),
    (["serve", "http://h:99999", "--model", "m"], "out of range"),
    (["serve", "http://h:0", "--model", "m"], "port 0"),
    (["serve", "http://h\n:80", "--model", "m"], "control characters"),
    (["serve", "ftp://h", "--model", "m"], "not an http(s) URL"),
    (["serve", "http://h/?a=1", "--model", "m"], "without a query"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--tokenizer", "/nonexistent/tok.json"], "no such file"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--rate", "0.001"], "fewer than --min-requests"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--rate", "1e9"], "at most"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--concurrency", "99999"], "at most"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--max-duration", "1", "--min-duration", "5"], "shorter than"),
    (["serve", "http://127.0.0.1:9", "--model", "m", "--api-key-env", "A B"], "not an environment variable name"),
    (["run", "--backend", "jax-cpu", "--model", "tiny", "--devices", "100000"], "at most 64"),
    (["run", "--backend", "torch-cpu", "--model", "tiny\x1b[2J\nfake second line"], "unknown model"),
]


@pytest.mark.parametrize("argv, words", BAD)
def test_bad_input_on_the_new_surfaces_is_one_line(capsys, tmp_path, argv, words):
    line = one_line(main([*argv, "--out", str(tmp_path / "o.jsonl")]), capsys.readouterr().err)
    assert words in line
    assert not (tmp_path / "o.jsonl").exists()


def test_output_paths_are_checked_before_any_work(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv in (["fleet", "plan", "--instances", "aws:c7i.2xlarge", "--out", str(afile)],
                 ["fleet", "plan", "--instances", "aws:c7i.2xlarge", "--out", str(afile / "plan")],
                 ["ingest", str(afile), "--out", str(afile / "x.jsonl")],
                 ["report", str(afile), "--out", str(afile / "r")],
                 ["prices", "--import-skypilot", str(afile), "--provider", "aws", "--as-of", "2026-01-01",
                  "--out", str(afile / "p.csv")]):
        line = one_line(main(argv), capsys.readouterr().err)
        assert "is a file, not a folder" in line, argv
    assert afile.read_text() == "x" and sorted(tmp_path.iterdir()) == [afile]


def test_a_price_table_goes_into_a_folder_that_does_not_exist_yet(capsys, tmp_path):
    from infercost.hardware import prices
    prices.write([], tmp_path / "new" / "deeper" / "p.csv")
    assert (tmp_path / "new" / "deeper" / "p.csv").read_text().startswith("provider")


# Every flag of serve, fleet, prices and ingest given junk: a one-line refusal (or a run that goes
# on when the junk happens to be valid), never an "unexpected" error or a traceback.
JUNK = st.one_of(st.sampled_from(["", " ", "-1", "0", "nan", "inf", "1e999", "../../x", "/dev/null", "a\nb", "\x00",
                                  "http://", "http://[::1", "http://h:99999", "%", "x:y:z", "1-", "5-2", "ttft=",
                                  "ttft=abc", "tpot=-1ms", "-", "--", "aws:", ":c7i"]),
                 st.text(max_size=12))
SERVE_FLAGS = ["url", "--model", "--concurrency", "--rate", "--input-tokens", "--output-tokens", "--prompts",
               "--tokenizer", "--slo", "--timeout", "--api-key-env", "--min-requests", "--max-concurrency", "--seed",
               "--device", "--kernel-model", "--warmup-requests"]


def refused_or_ran(code, err):
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("warning:")]
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("infercost: error:"), err
    else:
        assert code == 0, (code, err)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(SERVE_FLAGS), value=JUNK)
def test_serve_flags_given_junk_never_end_in_an_unexpected_error(capsys, tmp_path_factory, flag, value):
    out = tmp_path_factory.mktemp("s") / "s.jsonl"
    args = {"url": "http://127.0.0.1:9", "--model": "m", "--concurrency": "1", "--min-requests": "1",
            "--min-duration": "0.01", "--max-duration": "0.5", "--timeout": "0.5", "--warmup-requests": "0"}
    if flag == "--rate":
        args.pop("--concurrency")
        args["--max-duration"] = "5"
    args[flag] = value
    argv = ["serve", args.pop("url"), *[f"{k}={v}" for k, v in args.items()], "--out", str(out)]
    refused_or_ran(main(argv), capsys.readouterr().err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["plan --instances", "plan --bucket", "plan --region", "plan --suite", "plan --out",
                              "collect", "collect --from", "prices --import-skypilot", "prices --provider",
                              "prices --as-of", "ingest", "ingest --out"]), value=JUNK)
def test_fleet_prices_and_ingest_given_junk_never_end_in_an_unexpected_error(capsys, monkeypatch, tmp_path_factory,
                                                                           which, value):
    tmp = tmp_path_factory.mktemp("f")
    monkeypatch.chdir(tmp)  # a relative junk path lands here, never in the checkout
    catalog = Path(__file__).parent / "fixtures" / "skypilot_gcp_vms.csv"
    command, _, flag = which.partition(" ")
    if which in ("plan --out", "ingest --out"):  # a path written to: kept inside tmp whatever the junk
        value = f"{tmp}/out/{value.replace('..', '__')}"
    if command == "plan":
        args = {"--instances": "aws:c7i.2xlarge", "--suite": "quick", "--out": str(tmp / "plan"), flag: value}
        argv = ["fleet", "plan", *[f"{k}={v}" for k, v in args.items()]]
    elif command == "collect":
        argv = ["fleet", "collect", value] if not flag else ["fleet", "collect", str(tmp), f"--from={value}"]
    elif command == "prices":
        args = {"--import-skypilot": str(catalog), "--provider": "gcp", "--as-of": "2026-11-01",
                "--out": str(tmp / "p.csv"), flag: value}
        argv = ["prices", *[f"{k}={v}" for k, v in args.items()]]
    else:
        argv = ["ingest", value, "--out", str(tmp / "i.jsonl")] if not flag else ["ingest", str(catalog), f"--out={value}"]
    code = main(argv)
    refused_or_ran(code, capsys.readouterr().err)


def test_a_poisson_level_never_sleeps_past_its_maximum_duration():
    # At 0.2 requests/s the gaps average 5 s (seed 1 draws 15.6 s first): the level still ends at its
    # 1 s limit (it once slept until the next arrival, however far away).
    import asyncio
    import time

    from infercost.bench import serving as serve
    ep = serve.Endpoint("http://127.0.0.1:9", "m", timeout_s=0.5)
    level = serve.Level("rate", 0.2, min_duration_s=0.5, min_requests=50, warmup_requests=0, max_duration_s=1.0)
    start = time.monotonic()
    done, first, last = asyncio.run(serve.run_level(ep, level, serve.Prompts(seed=1), serve.Counter(None)))
    assert last - first < 1.6 and time.monotonic() - start < 3.0
