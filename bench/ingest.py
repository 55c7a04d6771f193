"""pytest-benchmark JSON to infercost records, and back (each record keeps the original entry)."""

from __future__ import annotations

import json
from pathlib import Path

from . import gates
from .records import record


def ingest(path: str | Path) -> list[dict]:
    """Records of a pytest-benchmark JSON file; ValueError (one line) for anything else."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is not pytest-benchmark JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or "benchmarks" not in data or "machine_info" not in data:
        raise ValueError(f"{path} is not pytest-benchmark JSON (no 'benchmarks' or 'machine_info')")
    try:
        return _records(path, data)
    except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"{path} is not pytest-benchmark JSON as version 4-5 writes it "
                         f"({type(e).__name__}: {str(e)[:120]})") from None


def _records(path, data: dict) -> list[dict]:
    from infercost.numbers import is_figure
    machine, commit = data["machine_info"], data.get("commit_info") or {}
    records = []
    for b in data["benchmarks"]:
        s, info = b["stats"], (b.get("extra_info") or {}).get("infercost") or {}
        case = info.get("case") or {"backend": "unknown", "workload": b["name"], "params": {}, "dtype": "unknown",
                                    "tf32": False, "threads": None, "device": machine.get("cpu", {}).get("brand_raw"),
                                    "device_kind": "cpu"}
        raw = s.get("data")
        for k in ("mean", "median", "min", "max", "stddev", "iqr", "q1", "q3"):
            if not is_figure(s[k]):
                raise ValueError(f"benchmark {b.get('name')!r}: stats.{k} = {s[k]!r} is not a finite time")
        if s["median"] <= 0 or s["mean"] <= 0:
            raise ValueError(f"benchmark {b.get('name')!r}: a mean or median time of zero")
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
