"""Result records: append-only JSON Lines, one record per case, and the pandas loader."""

from __future__ import annotations

import gc
import json
import math
import os
import socket
import sys
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

try:  # 5-10x faster on long result files; json stays the reference (and reads what orjson refuses)
    from orjson import OPT_SORT_KEYS
    from orjson import dumps as fast_dumps
    from orjson import loads as fast_loads
except ImportError:  # an image without it (the GPU machine's): the standard library alone
    OPT_SORT_KEYS = None

    def fast_loads(raw):
        return json.loads(bytes(raw) if isinstance(raw, memoryview) else raw)

    def fast_dumps(value, option=None):
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

from infercost.errors import InputError, RunError
from infercost.redact import has_secret, redact_argv, redact_tree

from .case import case_key

from .backend import device_kind
from .layout import Layout

SCHEMA_VERSION = 1
STATUSES = ("ok", "invalid", "skipped", "error")
DONE = ("ok", "invalid", "skipped")  # statuses that --resume does not run again


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def finished(rec: dict, provenance: dict, settings: dict | None = None) -> dict:
    """A measured record made ready to write: the run's provenance and, for a run of cases, the
    run's settings as fields and the framework versions its worker reported ({} where no worker
    answered). Every run finishes its records here."""
    if settings is not None:
        rec["settings"] = settings
        rec["provenance"] = {**provenance, "versions": rec.pop("versions", {})}
    else:
        rec["provenance"] = provenance
    return rec


def run_provenance(seed: int) -> dict:
    """What is the same for every record of one run."""
    from infercost.version import __version__
    from infercost.hardware.host import git_commit, host_facts
    return {
        "infercost": __version__,
        "git_commit": git_commit(),
        "command": " ".join(["infercost", *redact_argv(sys.argv[1:])]),  # a command line can hold secrets
        "started": now(),
        "seed": seed,
        "host": host_facts(),
    }


class Writer:
    """Appends records to a JSON Lines file as whole lines, each on disk before the next case.

    While open it holds an exclusive lock on the file, so two runs cannot both write (and both
    run) the same cases. A partial last line left by a crash is moved aside before the first
    new record, so the next record is never glued onto it. A write that fails (a full disk)
    is rolled back to the last whole record and raises RunError saying what was kept.
    """

    def __init__(self, path: Path, warn=None):
        import fcntl

        self.path = Path(path)
        self.written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        except OSError as e:
            raise InputError(f"cannot write results to {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise RunError(f"another infercost run is writing {self.path}; wait for it, or give another --out") from None
        self._repair(warn or (lambda text: warnings.warn(text, stacklevel=3)))

    def _repair(self, warn) -> None:
        if not self.path.is_file():  # a device such as /dev/full: nothing to read back
            return
        with self.path.open("rb") as f:
            data = f.read()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        aside = self.path.with_name(f"{self.path.name}.partial-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        aside.write_bytes(data[keep:])
        os.truncate(self.path, keep)
        warn(f"{self.path}: its last line was cut ({len(data) - keep} bytes, a crash mid-write?); "
             f"moved it to {aside.name} before appending")

    def write(self, record: dict) -> None:
        record = checked(record)  # the writer holds records to the reader's rules
        line = json.dumps(record, separators=(",", ":"))
        if has_secret(line):  # a URL's credentials, an API key a server echoed: never on disk
            line = json.dumps(redact_tree(record), separators=(",", ":"))
        line = (line + "\n").encode("utf-8")
        start = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            try:  # leave no partial record behind
                self._file = _reopen_truncated(self._file, self.path, start)
            except OSError:
                pass
            raise RunError(f"cannot write to {self.path} ({e.strerror or e}); the {self.written} records written "
                           f"before it are kept; free space and continue with: infercost run <same options> "
                           f"--resume --out {self.path}") from None
        self.written += 1

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def _reopen_truncated(f, path: Path, size: int):
    """Drop what a failed write left past `size` (Python's buffer may still hold it)."""
    import fcntl
    try:
        f.close()
    except OSError:
        pass
    os.truncate(path, size)
    g = path.open("ab")
    fcntl.flock(g.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return g


@contextmanager
def collector_paused():
    """Python's cycle collector off while records are built, and what was built moved out of its
    reach after: parsed JSON holds no cycles, and the collector walking a million growing records
    again and again took two thirds of the reading time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def parse_record(raw: bytes | memoryview | str, scan: bool = True) -> tuple[str | None, dict | None]:
    """(why the line is not a readable record, or None; the record). scan=False: the caller has
    found no secret anywhere in the text this line is part of."""
    text = None
    try:
        try:
            rec = fast_loads(raw)  # (orjson checks the UTF-8 itself)
        except ValueError:  # NaN or Infinity (then read, and made invalid below), a huge integer, or not JSON
            text = as_text(raw)
            rec = json.loads(text)
    except UnicodeDecodeError:
        return "not UTF-8 text", None
    except (json.JSONDecodeError, RecursionError):
        return "an incomplete record (interrupted write?)", None
    if not isinstance(rec, dict) or "schema" not in rec:
        return "not an infercost record", None
    if rec["schema"] != SCHEMA_VERSION:
        return f"a record of schema {rec['schema']!r}; this infercost reads schema {SCHEMA_VERSION}", None
    case = rec.get("case")
    if not isinstance(case, dict) or not all(isinstance(case.get(k), str) for k in ("backend", "workload", "dtype")) \
            or not isinstance(case.get("params"), dict) or rec.get("status") not in STATUSES \
            or not isinstance(rec.get("key"), str):
        return "a record without its case, key or status", None
    for section in ("metrics", "stats", "check", "timing"):
        if rec.get(section) is not None and not isinstance(rec[section], dict):
            return f"a record whose {section} is not an object", None
    if not isinstance(rec.get("reasons", []), list) or not isinstance(rec.get("warnings", []), list):
        return "a record whose reasons or warnings are not lists", None
    if scan and has_secret(text or as_text(raw)):  # another tool's file, an older infercost's: no secret is shown
        rec = redact_tree(rec)
        case = rec["case"]
    rec.setdefault("reasons", [])
    rec.setdefault("warnings", [])
    if "device_kind" not in case:  # written before the field existed
        case["device_kind"] = device_kind(case["backend"])
    return None, checked(rec)


def as_text(raw: bytes | memoryview | str) -> str:
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8")


def checked(rec: dict) -> dict:
    """The record as it may be priced: an ok record whose figures no measurement can give is made
    invalid with the reason (at the writer and at the reader alike, so neither a file from another
    tool nor a buggy source gets an impossible number priced, plotted or compared)."""
    if rec["status"] == "ok":
        bad = missing_figures(rec) or impossible_figures(rec) or inconsistent(rec)
        if bad:
            rec.update(status="invalid", valid=False, reasons=[f"impossible figure: {bad}"] + list(rec["reasons"]))
    return rec


# What a valid record of each workload must report for it to be priced and plotted.
FIGURES = {"matmul": ("tflops",), "prefill": ("input_tokens_per_s", "ttft_s"),
           "decode": ("output_tokens_per_s", "tpot_s", "per_user_tokens_per_s"),
           "serve": ("output_tokens_per_s", "tpot_s", "per_user_tokens_per_s"),
           "collective": ("busbw_gbs", "algbw_gbs")}


def missing_figures(rec: dict) -> str:
    case, metrics = rec["case"], rec.get("metrics")
    need = FIGURES.get(case["workload"])
    if need is None:
        return f"unknown workload {case['workload']!r}"
    if not isinstance(metrics, dict):
        return "no metrics"
    if case["workload"] not in ("matmul", "collective"):
        p = case["params"]
        if not (isinstance(p.get("model"), str) and all(isinstance(p.get(k), int) and not isinstance(p.get(k), bool)
                                                        and p[k] > 0 for k in ("batch", "tokens"))):
            return "params lack a model, batch or length"
    absent = [k for k in need if not isinstance(metrics.get(k), (int, float)) or isinstance(metrics.get(k), bool)]
    return f"{', '.join(absent)} missing" if absent else ""


def impossible_figures(rec: dict) -> str:
    """The figures of a record that no measurement can give (empty when all are possible)."""
    bad = bad_numbers(rec.get("metrics") or {}, "", False)
    times = rec.get("raw_times_s")
    if times is not None and (not isinstance(times, list) or not times  # (min and max: one pass each, in C)
                              or not set(map(type, times)) <= {float, int}  # (no flags, no text)
                              or not (min(times) > 0 and math.isfinite(max(times)))):
        bad.append("raw_times_s holds a time that is not positive and finite")
    bad += bad_numbers(rec.get("stats") or {}, "stats.", True)
    return ", ".join(bad)


def bad_numbers(tree: dict, prefix: str, nested: bool) -> list[str]:
    """"name = value" of every number in the dict that is not a figure (NaN, infinite, negative),
    and of anything that is not a number, text, flag or None; nested: look inside dicts and let
    lists be. One loop without calls: it runs over every figure of a million records."""
    bad = []
    for k, v in tree.items():
        t = type(v)
        if t is float:
            if not (v >= 0 and v != math.inf):
                bad.append(f"{prefix}{k} = {v!r}")
        elif t is int:
            if v < 0:
                bad.append(f"{prefix}{k} = {v!r}")
        elif v is None or t is str or t is bool:
            continue
        elif nested and t is dict:
            bad += bad_numbers(v, f"{prefix}{k}.", True)
        elif not (nested and t is list):
            bad.append(f"{prefix}{k} = {v!r}")
    return bad


# Utilisations: a share of a ceiling above this is a broken measurement or record, never a result.
UTILISATIONS = ("mfu", "mbu", "peak_fraction", "roofline_fraction")
PEAK_MARGIN = 1.05


def devices_of(rec: dict):
    """The devices a record says it used (1 when it does not say)."""
    return rec["case"].get("devices", 1)


def inconsistent(rec: dict) -> str:
    """What in a record's shape is impossible: a device count that is not a positive whole number
    (or disagrees with its layout), a per-chip figure that is not its total over the devices, a
    utilisation above its ceiling, a serving level without one successful request."""
    case, m = rec["case"], rec.get("metrics") or {}
    n = devices_of(rec)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return f"devices = {n!r} (a positive whole number)"
    mesh = case["params"].get("mesh")
    if mesh is not None:
        if not isinstance(mesh, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                 for v in mesh.values()):
            return f"layout {mesh!r} is not positive whole numbers"
        if (spans := Layout.of(mesh).devices) != n:
            return f"layout {mesh!r} spans {spans} devices, the record says {n}"
    chips = case.get("chips") or n  # physical chips where the record says how its devices map to them
    if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
        return f"chips = {chips!r} (a positive whole number)"
    unit = "chips" if case.get("chips") else "devices"
    for key, value in m.items():
        if key.endswith("_per_chip") and value is not None:
            total = m.get(key.removesuffix("_per_chip"))
            if not isinstance(total, (int, float)) or abs(value * chips - total) > 1e-9 * max(abs(total), 1e-300):
                return f"{key} = {value!r} is not {key.removesuffix('_per_chip')} = {total!r} over {chips} {unit}"
    zero = [f"{k} = {m[k]!r}" for k in FIGURES.get(case["workload"], ()) if m.get(k) == 0]
    if zero:
        return f"{', '.join(zero)} (a measured rate or time is never zero)"
    over = [f"{k} = {m[k]!r}" for k in UTILISATIONS if isinstance(m.get(k), (int, float)) and m[k] > PEAK_MARGIN]
    if over:
        return f"{', '.join(over)} (above the ceiling it is a share of)"
    if case["workload"] == "serve":
        ok = m.get("requests_ok")
        if isinstance(ok, bool) or not isinstance(ok, int) or ok < 1 or not m.get("output_tokens"):
            return f"a serving level with {ok!r} successful requests and {m.get('output_tokens')!r} tokens"
    return ""


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
        elif isinstance(value, (dict, list)):  # precision flags, an engine's identity: one text column
            row[key] = as_json(value)
        else:
            row[key] = value
    for section in ("metrics", "stats", "check", "timing"):
        for key, value in (record.get(section) or {}).items():
            name = key if section == "metrics" else f"{section}_{key}"
            if isinstance(value, dict):  # a serving level's latency percentiles: stats_ttft_s_p99, ...
                row.update({f"{name}_{k}": v for k, v in value.items() if not isinstance(v, dict)})
            else:
                row[name] = value
    prov = record.get("provenance", {})
    row["git_commit"] = prov.get("git_commit")
    row["host"] = prov.get("host", {}).get("hostname")
    row["cpu_model"] = prov.get("host", {}).get("cpu_model")
    row["versions"] = as_json(prov.get("versions", {}))
    row["raw_times_s"] = record.get("raw_times_s")
    return row


def as_json(value) -> str:
    """Compact JSON with sorted keys (orjson where installed: a million records' columns)."""
    try:
        return fast_dumps(value, option=OPT_SORT_KEYS).decode()
    except TypeError:  # what orjson will not write (an integer over 64 bits): the standard library
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


def result_files(paths) -> list[Path]:
    """The result files named: each path itself, or every *.jsonl in it when it is a folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.jsonl")) if p.is_dir() else [p])
    return files


def results_path(out: Path | None, resume: bool, folder: Path = Path("results"), kind: str = "run") -> Path:
    """Where a run writes: --out, or with --resume alone the newest file in results/, or a new
    results/<kind>-<time>-<host>.jsonl. Checked writable, but not created, before anything runs."""
    if out is not None:
        path = Path(out)
    elif resume:
        runs = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise InputError(f"--resume found no {folder}/*.jsonl to resume; name one with --out")
        path = runs[-1]
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = folder / f"{kind}-{stamp}-{socket.gethostname()}.jsonl"
    if path.is_dir():
        raise InputError(f"cannot write results to {path}: it is a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())  # created only when the run starts
    if not os.access(existing, os.W_OK) or (existing != path and not existing.is_dir()):
        raise InputError(f"cannot write results to {path}: {existing} is not writable")
    return path
