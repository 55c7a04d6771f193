"""Result records: append-only JSON Lines, one record per case, and the pandas loader."""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

from infercost.errors import InputError

from .backend import device_kind

SCHEMA_VERSION = 1
STATUSES = ("ok", "invalid", "skipped", "error")
DONE = ("ok", "invalid", "skipped")  # statuses that --resume does not run again


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def case_key(case: dict) -> str:
    """A stable identity for a requested case (what --resume matches on)."""
    fields = ("backend", "workload", "params", "dtype", "tf32", "threads")
    return json.dumps({f: case.get(f) for f in fields}, sort_keys=True, separators=(",", ":"))


def record(case: dict, status: str, reasons=(), warnings=(), provenance: dict | None = None,
           **sections) -> dict:
    """The one record builder, for every kind of record: ok, invalid (a gate or the check said
    no), skipped (cannot run here), error (crashed, timed out) and ingested ones.

    sections: check, timing, stats, metrics, raw_times_s, and anything a source adds.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown record status {status!r}")
    out = {"schema": SCHEMA_VERSION, "key": case_key(case), "timestamp": now(), "case": case, **sections,
           "status": status, "valid": status == "ok", "reasons": list(reasons), "warnings": list(warnings)}
    if provenance is not None:
        out["provenance"] = provenance
    return out


def run_provenance(seed: int) -> dict:
    """What is the same for every record of one run."""
    from infercost.version import __version__
    from infercost.hardware.host import git_commit, host_facts
    return {
        "infercost": __version__,
        "git_commit": git_commit(),
        "command": " ".join(["infercost", *sys.argv[1:]]),
        "started": now(),
        "seed": seed,
        "host": host_facts(),
    }


class Writer:
    """Appends records to a JSON Lines file, each flushed to disk as soon as it is written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_records(path: Path) -> list[dict]:
    """Every complete record of a file. A broken line (a crash mid-write) is skipped with a warning."""
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: skipped an incomplete record (interrupted write?)",
                              stacklevel=2)
                continue
            if not isinstance(rec, dict) or "schema" not in rec:
                warnings.warn(f"{path}:{number}: skipped a line that is not an infercost record",
                              stacklevel=2)
                continue
            case = rec.get("case")
            if isinstance(case, dict) and "device_kind" not in case:  # written before the field existed
                case["device_kind"] = device_kind(case.get("backend"))
            records.append(rec)
    return records


def done_keys(path: Path) -> set[str]:
    if not Path(path).exists():
        return set()
    return {r["key"] for r in read_records(path) if r.get("status") in DONE}


def flatten(record: dict) -> dict:
    """One tidy row: case, check, stats, metrics and timing fields as columns."""
    row = {
        "schema": record.get("schema"),
        "status": record.get("status"),
        "valid": record.get("valid"),
        "reasons": "; ".join(record.get("reasons", [])),
        "warnings": "; ".join(record.get("warnings", [])),
        "timestamp": record.get("timestamp"),
    }
    case = record.get("case", {})
    for key, value in case.items():
        if key == "params":
            row.update(value)
        elif key == "precision_flags":
            row["precision_flags"] = json.dumps(value, sort_keys=True)
        else:
            row[key] = value
    for section in ("metrics", "stats", "check", "timing"):
        for key, value in (record.get(section) or {}).items():
            row[key if section == "metrics" else f"{section}_{key}"] = value
    prov = record.get("provenance", {})
    row["git_commit"] = prov.get("git_commit")
    row["host"] = prov.get("host", {}).get("hostname")
    row["cpu_model"] = prov.get("host", {}).get("cpu_model")
    row["versions"] = json.dumps(prov.get("versions", {}), sort_keys=True)
    row["raw_times_s"] = record.get("raw_times_s")
    return row


def result_files(paths) -> list[Path]:
    """The result files named: each path itself, or every *.jsonl in it when it is a folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return files


def results_path(out: Path | None, resume: bool, folder: Path = Path("results")) -> Path:
    """Where a run writes: --out, or with --resume alone the newest file in results/, or a new
    results/run-<time>-<host>.jsonl. Checked writable before anything is measured."""
    if out is not None:
        path = Path(out)
    elif resume:
        runs = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise InputError(f"--resume found no {folder}/*.jsonl to resume; name one with --out")
        path = runs[-1]
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"run-{stamp}-{socket.gethostname()}.jsonl"
    if path.exists() and path.is_dir():
        raise InputError(f"cannot write results to {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as e:
        raise InputError(f"cannot write results to {path}: {e.strerror or e}") from None
    return path


def read_paths(paths, warn) -> list[dict]:
    """Records of result files or folders; lines skipped are passed to warn(text) (3 per file at most)."""
    records = []
    for f in result_files(paths):
        if not f.is_file():
            raise InputError(f"no results at {f}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records += read_records(f)
        for w in caught[:3]:
            warn(str(w.message))
        if len(caught) > 3:
            warn(f"{len(caught) - 3} more lines of {f} skipped")
    return records


def load(*paths):
    """Load result files (paths or folders of *.jsonl) into a tidy DataFrame, one row per case.

    Columns include: backend, device, workload, shape, m/n/k, dtype, tf32, threads, status,
    valid, reasons, tflops (steady state), tflops_median, gbps, stats_median (s), stats_ci95_*,
    check_error, raw_times_s (list) and provenance columns. See the README for the full list.
    """
    import pandas as pd
    rows = []
    for f in result_files(paths):
        for record in read_records(f):
            row = flatten(record)
            row["source_file"] = str(f)
            rows.append(row)
    return pd.DataFrame(rows)
