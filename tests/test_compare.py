"""`infercost compare`: verdicts from raw times, a CI exit status, and flagged mismatches."""

import json
import subprocess
import sys

import numpy as np
import pytest

from infercost.bench.compare import compare
from infercost.bench.records import case_key


def record(mean_s, seed, torch_version="2.13.0", device="Test CPU", n=40):
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 64, "n": 64, "k": 64},
            "dtype": "float32", "tf32": False, "threads": 2, "device": device, "shape": "64x64x64"}
    times = list(mean_s * (1 + 0.02 * np.random.default_rng(seed).standard_normal(n)))
    return {"schema": 1, "key": case_key(case), "status": "ok", "valid": True, "reasons": [], "warnings": [],
            "case": case, "metrics": {"tflops": 2 * 64**3 / mean_s / 1e12}, "raw_times_s": times,
            "provenance": {"versions": {"torch": torch_version, "numpy": "2.4"}}}


def test_a_real_slowdown_is_slower_and_noise_is_no_change():
    (slow,) = compare([record(1e-3, 1)], [record(1.2e-3, 2)])
    assert slow["verdict"] == "slower" and slow["throughput_ratio"] == pytest.approx(1 / 1.2, rel=0.02)
    assert slow["ci95_high"] < 1 and slow["p_value"] < 0.01 and slow["cost_ratio"] > 1.15
    (same,) = compare([record(1e-3, 1)], [record(1e-3, 2)])
    assert same["verdict"] == "no change" and same["ci95_low"] < 1 < same["ci95_high"]
    (fast,) = compare([record(1e-3, 1)], [record(0.8e-3, 2)])
    assert fast["verdict"] == "faster"


def test_a_small_significant_change_inside_the_threshold_is_no_change():
    (row,) = compare([record(1e-3, 1, n=400)], [record(1.02e-3, 2, n=400)], threshold=0.05)
    assert row["verdict"] == "no change" and row["ci95_high"] < 1  # real, but within 5%


def test_different_library_versions_or_devices_are_flagged_not_compared():
    (row,) = compare([record(1e-3, 1)], [record(2e-3, 2, torch_version="2.11.0")])
    assert row["verdict"] == "flagged" and "torch 2.13.0 -> 2.11.0" in row["note"]
    (row,) = compare([record(1e-3, 1)], [record(1e-3, 2, device="Other CPU")])
    assert row["verdict"] == "flagged" and "device" in row["note"]


def write(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_exit_status_fails_ci_only_beyond_the_threshold(tmp_path):
    base = write(tmp_path / "base.jsonl", record(1e-3, 1))
    slow = write(tmp_path / "slow.jsonl", record(1.3e-3, 2))
    same = write(tmp_path / "same.jsonl", record(1e-3, 3))
    run = lambda *a: subprocess.run([sys.executable, "-m", "infercost.cli", "compare", *a],
                                    capture_output=True, text=True, timeout=120)
    assert run(base, slow).returncode == 1
    assert run(base, slow, "--threshold", "50%").returncode == 0
    assert run(base, same).returncode == 0
    bad = run(base, same, "--threshold", "lots")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
