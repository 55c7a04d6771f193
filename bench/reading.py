"""Reading result files: every line parsed and held to the reader's rules (records.parse_record),
a large folder in chunks over a pool of processes.

A results folder can hold a million records (a fleet's collected runs, a nightly history), about
3 GB of JSON Lines. One process reads ~25,000 records a second; the chunks of a large folder
(~64 MB each, cut at line ends) are read by one process per CPU, and the records come back in
file order with warnings naming file:line as a single read would.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from infercost.errors import InputError
from infercost.redact import might_hold_secret

from .records import DONE, collector_paused, flatten, parse_record, result_files

CHUNK_BYTES = 64 << 20
POOL_BYTES = 128 << 20  # below this, starting processes costs more than it saves


@dataclass
class Chunk:
    path: str
    start: int
    end: int
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # (line number within the chunk, why)
    lines: int = 0
    found: int = 0  # records read
    result: object = None  # then(records), where a caller asked for it


def read_chunk(chunk: Chunk, keep: tuple[str, ...] | None = None, then=None) -> Chunk:
    """The records of bytes start..end of a file (whole lines); keep: only these top-level fields
    of each record (what a caller uses travels back from a worker, not the whole record); then: a
    function of the records whose result travels back instead of them (a price of the piece)."""
    try:
        with open(chunk.path, "rb") as f:
            f.seek(chunk.start)
            data = f.read(chunk.end - chunk.start)
    except OSError as e:
        raise InputError(f"cannot read {chunk.path}: {e.strerror or e}") from None
    scan = might_hold_secret(data)  # one scan for the chunk; a line at a time only where it finds something
    view, start, number = memoryview(data), 0, 0
    with collector_paused():
        while start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            number += 1
            problem, rec = parse_record(view[start:end], scan)  # a view: the line is never copied
            if problem:
                if data[start:end].strip():  # blank lines are not records, nor worth a warning
                    chunk.problems.append((number, problem))
            elif keep:
                chunk.records.append({k: rec[k] for k in keep if k in rec})
            else:
                chunk.records.append(rec)
            start = end + 1
    chunk.lines, chunk.found = number, len(chunk.records)
    if then is not None:
        chunk.result, chunk.records = then(chunk.records), []
    return chunk


def plan(files: list[Path], chunk_bytes: int | None = None) -> list[Chunk]:
    """Each file cut into pieces of about chunk_bytes (CHUNK_BYTES) that end at a line end."""
    chunk_bytes, chunks = chunk_bytes or CHUNK_BYTES, []
    for f in files:
        try:
            with f.open("rb") as handle:
                size, start = os.fstat(handle.fileno()).st_size, 0
                while start < size:
                    end = min(start + chunk_bytes, size)
                    if end < size:
                        handle.seek(end)
                        end += len(handle.readline())  # to the end of the line the cut fell in
                    chunks.append(Chunk(str(f), start, end))
                    start = end
        except OSError as e:
            raise InputError(f"cannot read {f}: {e.strerror or e}") from None
        if size == 0:
            chunks.append(Chunk(str(f), 0, 0))
    return chunks


def workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def read_chunks(chunks: list[Chunk], keep=None, then=None):
    """The chunks read, in order: in a pool of processes when there is enough to read."""
    total = sum(c.end - c.start for c in chunks)
    n = min(workers(), len(chunks))
    if n < 2 or total < POOL_BYTES:
        yield from (read_chunk(c, keep, then) for c in chunks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    done = 0
    try:  # forkserver: workers forked from a fresh process, never from a caller's threads mid-lock
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver")) as pool:
            with collector_paused():  # unpickling builds the records again here
                for chunk in pool.map(read_chunk, chunks, [keep] * len(chunks), [then] * len(chunks)):
                    done += 1
                    yield chunk
    except (BrokenProcessPool, OSError):  # a worker killed (for memory?) or none could start: read here
        yield from (read_chunk(c, keep, then) for c in chunks[done:])


def read_files(files: list[Path], keep=None, then=None) -> tuple[list, dict[str, tuple[int, list]]]:
    """(every record of the files in order, or with then: each chunk's then(records); for each
    file, how many records and the lines skipped: (line number, why))."""
    out: list = []
    by_file: dict[str, list] = {}  # path: [records found, lines before the next chunk, problems]
    for chunk in read_chunks(plan(files), keep, then):
        seen = by_file.setdefault(chunk.path, [0, 0, []])
        seen[2] += [(seen[1] + n, why) for n, why in chunk.problems]
        seen[0] += chunk.found
        seen[1] += chunk.lines
        if then is None:
            out += chunk.records
        else:
            out.append(chunk.result)
    return out, {path: (found, problems) for path, (found, _, problems) in by_file.items()}


def read_paths(paths, warn, keep: tuple[str, ...] | None = None, then=None) -> list:
    """Records of result files or folders; lines skipped are passed to warn(text) (3 per file at
    most). A file with no record at all among lines that are not records is refused. keep: only
    these top-level fields of each record; then: each chunk's then(records) instead of records."""
    files = result_files(paths)
    for f in files:
        if not f.is_file():
            raise InputError(f"no results at {f}")
    out, by_file = read_files(files, keep, then)
    for path, (found, problems) in by_file.items():
        if problems and not found:
            raise InputError(f"{path} holds no infercost record ({problems[0][1]})")
        for number, why in problems[:3]:
            warn(f"{path}:{number}: skipped: {why}")
        if len(problems) > 3:
            warn(f"{len(problems) - 3} more lines of {path} skipped")
    return out


def read_records(path: Path) -> list[dict]:
    """Every well-formed record of a file. A line that is not one (cut by a crash, another
    schema, not text) is skipped with a warning that names file:line; an ok record whose figures
    are impossible (NaN, infinite, negative) is read as invalid, so nothing prices or plots it."""
    records, by_file = read_files([Path(path)])
    for _, problems in by_file.values():
        for number, why in problems:
            warnings.warn(f"{path}:{number}: skipped: {why}", stacklevel=2)
    return records


def done_keys(path: Path) -> set[str]:
    if not Path(path).exists():
        return set()
    return {r["key"] for r in read_records(path) if r.get("status") in DONE}


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
