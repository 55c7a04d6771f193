"""The history's detector and store against issue 28's targets, measured in one run:

1. Detection: 200 series of 60 points with 2% noise and a 5% step planted at a random point (10-50),
   and 200 with no step. Target: the step found within 3 points in >= 90%, and <= 5% of the flat
   series raising an alarm. Each candidate is timed on the same series: infercost's detector
   (ruptures' PELT search + Welch's t-test, infercost/history/detect.py), ruptures' binary
   segmentation with the same penalty and test, and, with --edivisive-python, MongoDB's E-Divisive
   means (signal-processing-algorithms, permutation test p < 0.05) in an interpreter of its own
   (it pins numpy < 2, which this project's torch and jax have left behind).
2. Scale: --records (100,000) synthetic records from scripts/make_history.py over several
   instances, `infercost history add` and `infercost history changes` each timed in a process of
   its own. Target: each within 60 s on a 2-core machine.

    python bench/perf/history.py [--records 100000] [--edivisive-python /path/to/python] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

EDIVISIVE = """
import json, sys, time
from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive
series = json.load(sys.stdin)
t = time.perf_counter()
found = [sorted(int(i) for i in e_divisive(x, pvalue=0.05, permutations=100)) for x in series]
print(json.dumps({"found": found, "seconds": time.perf_counter() - t}))
"""


def planted(rng, n_series: int, n: int = 60, noise: float = 0.02, step: float = 0.05):
    stepped, at, flat = [], [], []
    for _ in range(n_series):
        x = 100 * (1 + noise * rng.standard_normal(n))
        k = int(rng.integers(10, 51))
        x[k:] *= 1 + step
        stepped.append(x)
        at.append(k)
        flat.append(100 * (1 + noise * rng.standard_normal(n)))
    return stepped, at, flat


def binseg(x):
    """ruptures' binary segmentation with infercost's penalty and t-test (a candidate)."""
    import math

    import ruptures

    from infercost.history import detect
    y = x / np.median(x)
    sigma = max(detect.noise(y), 1e-9)
    cuts = ruptures.Binseg(model="l2", min_size=detect.MIN_SEGMENT).fit(y).predict(
        pen=detect.PENALTY * 2 * sigma ** 2 * math.log(len(y)))[:-1]
    bounds = [0] + cuts + [len(y)]
    return [c for i, c in enumerate(cuts) if detect.welch(x, bounds[i], c, bounds[i + 2]).p < detect.ALPHA]


def score(name, found_stepped, at, found_flat, seconds, big=None):
    n = len(at)
    hit = sum(any(abs(c - k) <= 3 for c in f) for f, k in zip(found_stepped, at)) / n
    anywhere = sum(bool(f) for f in found_stepped) / n
    false = sum(bool(f) for f in found_flat) / len(found_flat)
    line = (f"{name:<46} found {anywhere:6.1%}  within 3 points {hit:6.1%} (target >= 90%: {'met' if hit >= 0.9 else 'NOT met'})"
            f"  flat series with a change {false:5.1%} (target <= 5%: {'met' if false <= 0.05 else 'NOT met'})"
            f"  {seconds / (2 * n) * 1e3:.2f} ms a series")
    if big is not None:
        line += f"  alarms beyond 3% on flat series {big:5.1%}"
    print(line, flush=True)


def detection(seed: int, edivisive_python: str | None) -> None:
    from infercost.history.detect import changes
    rng = np.random.default_rng(seed)
    stepped, at, flat = planted(rng, 200)
    print(f"detection: 200 series with a 5% step in 2% noise, 200 without (60 points, seed {seed})")
    t = time.perf_counter()
    ours_s = [changes(x) for x in stepped]
    ours_f = [changes(x) for x in flat]
    dt = time.perf_counter() - t
    big = sum(any(abs(c.size) >= 0.03 for c in f) for f in ours_f) / len(ours_f)
    score("infercost (ruptures PELT + Welch t-test)", [[c.index for c in f] for f in ours_s], at,
          [[c.index for c in f] for f in ours_f], dt, big)
    t = time.perf_counter()
    bs, bf = [binseg(x) for x in stepped], [binseg(x) for x in flat]
    score("ruptures Binseg + Welch t-test", bs, at, bf, time.perf_counter() - t)
    if edivisive_python:
        proc = subprocess.run([edivisive_python, "-c", EDIVISIVE], input=json.dumps([list(x) for x in stepped + flat]),
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(f"E-Divisive means: could not run ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})")
        else:
            out = json.loads(proc.stdout)
            score("E-Divisive means (signal-processing-algorithms)", out["found"][:200], at, out["found"][200:], out["seconds"])
    else:
        print("E-Divisive means: not compared (give --edivisive-python, an interpreter with signal-processing-algorithms)")


def scale(records: int, seed: int) -> None:
    spec = importlib.util.spec_from_file_location("make_history", ROOT / "scripts/make_history.py")
    mh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mh)
    template = [r for r in map(json.loads, (ROOT / "examples/results/cpu-quick-amd-epyc-2core.jsonl").read_text().splitlines())
                if r["status"] == "ok"]
    instances = 20
    nights = max(records // (instances * len(template)), 1)
    with tempfile.TemporaryDirectory(prefix="infercost-history-") as tmp:
        folder = Path(tmp) / "results"
        folder.mkdir()
        start = datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc)
        total = 0
        for i in range(instances):
            by_night = mh.nightly(template, nights, 0.02, seed + i, start, upgrade_at=nights // 3, price_at=None)
            with (folder / f"instance-{i:02d}.jsonl").open("w") as f:
                for recs in by_night:
                    for r in recs:
                        r["fleet"]["instance"] = f"aws:synthetic-{i:02d}"
                        f.write(json.dumps(r) + "\n")
                        total += 1
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"scale: {total:,} records ({size / 1e6:.0f} MB of JSON Lines), {instances} instances x {len(template)} cases "
              f"x {nights} nights, on {os.cpu_count()} CPUs")
        store = Path(tmp) / "h.duckdb"
        cli = [sys.executable, "-m", "infercost.cli", "history"]
        for what, args in (("add", ["add", str(folder), "--store", str(store)]),
                           ("changes", ["changes", "--store", str(store)]),
                           ("check", ["check", "--store", str(store)])):
            t = time.perf_counter()
            proc = subprocess.run(cli + args, capture_output=True, text=True, timeout=900)
            dt = time.perf_counter() - t
            tail = [l for l in proc.stdout.splitlines() if l.strip()][-1:] or proc.stderr.strip().splitlines()[-1:]
            ok = proc.returncode in (0, 1)
            print(f"  history {what:<8} {dt:6.1f} s (target <= 60 s: {'met' if dt <= 60 and ok else 'NOT met'})"
                  f"  exit {proc.returncode}: {tail[0][:140] if tail else ''}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--edivisive-python", help="a Python with signal-processing-algorithms installed, for the comparison")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from infercost.hardware.host import cpu_model
    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs")
    detection(a.seed, a.edivisive_python)
    if a.records:
        scale(a.records, a.seed)


if __name__ == "__main__":
    main()
