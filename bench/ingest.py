"""pytest-benchmark JSON to infercost records, and back (each record keeps the original entry)."""

from __future__ import annotations

import json
from pathlib import Path

from . import gates
from .records import record


def ingest(path: str | Path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    if "benchmarks" not in data or "machine_info" not in data:
        raise ValueError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' or 'machine_info')")
    machine, commit = data["machine_info"], data.get("commit_info") or {}
    records = []
    for b in data["benchmarks"]:
        s, info = b["stats"], (b.get("extra_info") or {}).get("infercost") or {}
        case = info.get("case") or {"backend": "unknown", "workload": b["name"], "params": {}, "dtype": "unknown",
                                    "tf32": False, "threads": None, "device": machine.get("cpu", {}).get("brand_raw"),
                                    "device_kind": "cpu"}
        raw = s.get("data")
        stats = {"n": s["rounds"], "mean": s["mean"], "median": s["median"], "min": s["min"], "max": s["max"],
                 "std": s["stddev"], "iqr": s["iqr"], "q1": s["q1"], "q3": s["q3"], "iterations": s["iterations"]}
        findings = gates.noise_gate(stats) + (gates.timer_gate(raw) if raw else [])
        verdict = gates.verdict(findings)
        flops = info.get("flops")
        metrics = {"flops": flops, "bytes": info.get("bytes"), "spread": s["iqr"] / s["median"] if s["median"] else None,
                   "tflops": flops / s["mean"] / 1e12 if flops and verdict["valid"] else None,
                   "tflops_median": flops / s["median"] / 1e12 if flops and verdict["valid"] else None}
        records.append(record(
            case, "ok" if verdict["valid"] else "invalid", verdict["reasons"], verdict["warnings"],
            check=info.get("check"), stats=stats, metrics=metrics, raw_times_s=raw,
            provenance={"source": f"pytest-benchmark {data.get('version')} ({Path(path).name})",
                        "git_commit": commit.get("id"), "started": data.get("datetime"),
                        "host": {"hostname": machine.get("node"),
                                 "cpu_model": (machine.get("infercost") or {}).get("cpu_model")},
                        "versions": {"python": machine.get("python_version")}},
            pytest_benchmark={"benchmark": b, "machine_info": machine, "commit_info": commit,
                              "datetime": data.get("datetime"), "version": data.get("version")},
        ))
    return records


def export(records: list[dict]) -> dict:
    """The pytest-benchmark JSON that ingested records came from."""
    first = records[0]["pytest_benchmark"]
    return {"machine_info": first["machine_info"], "commit_info": first["commit_info"],
            "benchmarks": [r["pytest_benchmark"]["benchmark"] for r in records],
            "datetime": first["datetime"], "version": first["version"]}
