"""Pricing a large results folder: how long the loader and the one pricing call take over N records.

Real records first (a short `infercost run` of torch-cpu: matmul, prefill and decode cases), then
copied to N lines over 10 files in a temporary folder, each copy with its own key, as a fleet's
collected results would be. Timed, each in a fresh process: `infercost.price_results(folder,
price_per_hour=...)` (reading, validation, pricing), and with --report `infercost report` over
the same folder. Targets (the cost-bases issue): pricing 1,000,000 records in under 30 s on a
2-core machine, the report in under 2 minutes. Peak memory is printed beside each.

    python bench/perf/pricing_scale.py [--records 1000000] [--report]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from targets import report  # noqa: E402  (bench/perf/targets.py, beside this script)

PRICE = """
import sys, time, resource
t = time.perf_counter()
import infercost
rows = infercost.price_results(sys.argv[1], price_per_hour=1.0)
print(len(rows), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def seed_records(folder: Path) -> list[str]:
    out = folder / "seed.jsonl"
    subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu", "--model", "tiny",
                    "--shape", "256x256x256", "--batch", "1,2", "--tokens", "16", "--min-time", "0.05",
                    "--warmup", "0.05", "--out", str(out)], check=True, capture_output=True, text=True, timeout=600)
    return [line for line in out.read_text().splitlines() if line.strip()]


def write_copies(lines: list[str], folder: Path, n: int, files: int = 10) -> None:
    records = [json.loads(line) for line in lines]
    for f in range(files):
        with (folder / f"part-{f:02d}.jsonl").open("w") as out:
            for i in range(f, n, files):
                rec = dict(records[i % len(records)])
                rec["key"] = f"{rec['key']}#{i}"
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--report", action="store_true", help="time `infercost report` over the folder too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines = seed_records(tmp)
        data = tmp / "results"
        data.mkdir()
        write_copies(lines, data, args.records)
        size = sum(p.stat().st_size for p in data.iterdir())
        print(f"{args.records:,} records ({len(lines)} real ones copied) in 10 files, {size / 1e9:.2f} GB")
        proc = subprocess.run([sys.executable, "-c", PRICE, str(data)], capture_output=True, text=True, check=True)
        rows, seconds, rss_kb = proc.stdout.split()
        print(f"price_results: {int(rows):,} priced rows in {float(seconds):.1f} s, peak memory {int(rss_kb) / 1e6:.2f} GB")
        checks = [("pricing N records, seconds (scaled to 1,000,000)", float(seconds) * 1e6 / args.records, 30.0, "<=")]
        if args.report:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "infercost.cli", "report", str(data), "--price-per-hour", "1",
                            "--out", str(tmp / "report")], check=True, capture_output=True, text=True)
            took = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
            print(f"report: {took:.1f} s, peak memory {peak:.2f} GB")
            checks.append(("report over N records, seconds (scaled to 1,000,000)", took * 1e6 / args.records, 120.0, "<="))
    return 0 if report(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
