"""pytest-benchmark: the kernels as benchmarks with the accelerator's identity, and a lossless ingest."""

import json

import pytest
import subprocess
import sys
from pathlib import Path

import infercost
from infercost.bench.ingest import export, ingest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmarks_run_under_pytest_benchmark_and_ingest_without_loss(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "infercost.bench.pytest_plugin",
                           str(ROOT / "bench" / "perf" / "kernel_benchmarks.py"), "-k", "256",
                           "--benchmark-json", str(out), "--benchmark-save-data", "--benchmark-min-time=0.01",
                           "--benchmark-max-time=0.2", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    data = json.loads(out.read_text())
    assert {b["params"]["backend"] for b in data["benchmarks"]} == {"torch-cpu", "jax-cpu"}  # others skip here
    assert data["machine_info"]["infercost"]["devices"]["torch-cpu"]  # the device's identity is stored

    records = ingest(out)
    assert len(records) == len(data["benchmarks"])
    for r, b in zip(records, data["benchmarks"]):
        assert r["raw_times_s"] == b["stats"]["data"]
        assert r["stats"]["mean"] == b["stats"]["mean"] and r["stats"]["n"] == b["stats"]["rounds"]
        assert r["case"]["backend"] == b["params"]["backend"] and r["check"]["error"] < 1e-4
        assert r["status"] == "ok" or r["reasons"][0].startswith(("too noisy", "time does not grow")), r["reasons"]
        assert r["metrics"]["flops"] == 33554432  # 2 x 256^3, counted by the plugin
    assert export(records) == data  # nothing lost: the original file comes back

    res = tmp_path / "ingested.jsonl"
    cli = subprocess.run([sys.executable, "-m", "infercost.cli", "ingest", str(out), "--out", str(res)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert len(infercost.load_results(res)) == len(records)


def test_ingest_refuses_what_is_not_pytest_benchmark(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "ingest", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not pytest-benchmark JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_ingested_throughput_comes_from_the_benchmarks_mean(tmp_path):
    # A hand-written pytest-benchmark file: a 256^3 matmul (33,554,432 FLOPs) at a mean of 1 ms
    # is 0.033554432 TFLOP/s; a median of 0.8 ms is 0.04194304.
    stats = {"rounds": 5, "mean": 1e-3, "median": 0.8e-3, "min": 0.7e-3, "max": 1.5e-3, "stddev": 3e-4,
             "iqr": 0.05e-3, "q1": 0.78e-3, "q3": 0.83e-3, "iterations": 1,
             "data": [0.7e-3, 0.78e-3, 0.8e-3, 0.83e-3, 1.89e-3]}
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 256, "n": 256, "k": 256},
            "dtype": "float32", "tf32": False, "threads": 2}
    data = {"machine_info": {"node": "h", "python_version": "3.11"}, "commit_info": {}, "datetime": "2026-11-29",
            "version": "5.1.0", "benchmarks": [{"name": "test_matmul", "params": {}, "stats": stats,
                                                "extra_info": {"infercost": {"case": case, "flops": 33554432}}}]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    (r,) = ingest(path)
    assert r["status"] == "ok"
    assert r["metrics"]["tflops"] == pytest.approx(0.033554432)
    assert r["metrics"]["tflops_median"] == pytest.approx(0.04194304)
