"""`infercost report`: Markdown and HTML with figures, CSV and Parquet, from result files."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from infercost.errors import InputError
from infercost.flags import positive

from .common import add_price_flags, blend_ratio, console, price_bases, read_results

NAME = "report"
HELP = "Markdown and HTML report with figures, plus CSV and Parquet, from result files"


def arguments(p) -> None:
    p.add_argument("results", nargs="*", help="result files or folders (from one or many machines)")
    p.add_argument("--out", "-o", type=Path, required=True, help="folder to write the report to")
    add_price_flags(p)
    p.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")
    p.add_argument("--min-user-tps", type=positive(float), default=20.0,
                   help="fleet league table: the slowest per-user speed (tokens/s) a batch may give (default 20)")
    p.add_argument("--history", metavar="STORE", help="add the history's series and change points (a store of "
                                                     "`infercost history`), with or without result files")


def run(args) -> int:
    from infercost.bench.records import result_files
    from infercost.paths import writable_folder
    from infercost.report import write_report
    from infercost.report.render import flat_piece
    writable_folder(args.out, "--out")
    if not args.results and not args.history:
        raise InputError("give result files or folders, or --history STORE, or both")
    price_bases(args)  # a missing or bad price is reported before any file is read
    ratio = blend_ratio(args.blend)
    history = history_section(args.history) if args.history else None
    import pandas as pd
    records, df = [], pd.DataFrame()
    if args.results:
        # each piece of the results is made into tidy rows where it is read (over processes when large)
        pieces = read_results(args.results, then=flat_piece)
        records = [r for recs, _ in pieces for r in recs]
        if not records:
            raise InputError("no records in the given results")
        df = pd.concat([d for _, d in pieces if len(d)], ignore_index=True)
    bases = price_bases(args, records)
    try:
        done = write_report(records, result_files(args.results), args.out, bases, ratio, args.min_user_tps, df, history)
    except OSError as e:
        raise InputError(f"cannot write the report to {args.out}: {e.strerror or e}") from None
    console.print(escape(f"wrote {args.out}/report.md, report.html ({len(done['figures'])} figures: "
                         f"{', '.join(done['figures'])}), {done['data']} ({done['rows']} rows)"))
    return 0


def history_section(store: str):
    from infercost.history.changes import find
    from infercost.history.store import Store
    from infercost.report.history import section
    with Store(store) as s:
        df = s.frame()
    if df.empty:
        raise InputError(f"the history at {store} holds no point")
    found, _ = find(df)
    return section(df, found, store)
