"""pytest-benchmark: the kernels as benchmarks with the accelerator's identity, and a lossless ingest."""

import json
import subprocess
import sys
from pathlib import Path

import infercost
from infercost.bench.ingest import export, ingest

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_run_under_pytest_benchmark_and_ingest_without_loss(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "infercost.bench.pytest_plugin",
                           str(ROOT / "bench" / "kernel_benchmarks.py"), "-k", "256",
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
        if r["status"] == "ok":
            assert r["metrics"]["tflops"] == 2 * 256**3 / b["stats"]["mean"] / 1e12
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
