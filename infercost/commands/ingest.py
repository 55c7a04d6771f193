"""`infercost ingest`: pytest-benchmark JSON into infercost records."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from infercost.errors import InputError

from .common import console, warn

NAME = "ingest"
HELP = "read pytest-benchmark JSON into infercost results"


def arguments(p) -> None:
    p.add_argument("json", type=Path, help="the file pytest --benchmark-json wrote")
    p.add_argument("--out", "-o", type=Path, required=True, help="results file to append to")


def run(args) -> int:
    from infercost.bench.ingest import ingest
    from infercost.bench.records import Writer
    from infercost.paths import writable_file
    writable_file(args.out, "--out")
    try:
        records = ingest(args.json)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot ingest {args.json}: {e}") from None
    writer = Writer(args.out, warn)
    for r in records:
        writer.write(r)
    writer.close()
    console.print(escape(f"ingested {len(records)} benchmarks into {args.out}"))
    return 0
