"""`infercost history add|changes|check|series`: a store of every result over time, series per
instance x case x metric, their change points and regression alarms (the work is in
infercost/history/)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from infercost.errors import InputError
from infercost.flags import positive

from .common import add_price_flags, console, price_bases

NAME = "history"
HELP = "keep results over time: add them, list each series' change points, alarm on regressions"


def store_flag(p) -> None:
    from infercost.history.store import DEFAULT
    p.add_argument("--store", default=str(DEFAULT),
                   help=f"the history: a DuckDB file, or a folder or object-store prefix (s3://, gs://) of Parquet "
                        f"(default {DEFAULT})")


def add_arguments(p, with_machine: bool = True) -> None:
    """The flags of an add: also on run, serve and fleet collect (--history)."""
    if with_machine:
        p.add_argument("--machine", help="the series' instance or host name (default: a fleet task's instance, the "
                                         "--instance price row's, else host:<hostname>)")


def arguments(p) -> None:
    hsub = p.add_subparsers(dest="history_command", required=True, metavar="{add,changes,check,series,copy,remove}")
    ha = hsub.add_parser("add", help="add result files to the history (a record already there is skipped)")
    ha.add_argument("results", nargs="+", help="result files or folders")
    store_flag(ha)
    add_arguments(ha)
    add_price_flags(ha)
    hc = hsub.add_parser("changes", help="each series' change points: when, how much, and what changed there")
    store_flag(hc)
    filters(hc)
    hc.add_argument("--json", action="store_true", help="one JSON object a change, a line each (for other tools)")
    hk = hsub.add_parser("check", help="exit 1 where a series' newest points form a regression beyond a threshold, "
                                       "or a case's newest record is no longer valid")
    store_flag(hk)
    filters(hk)
    hk.add_argument("--threshold", action="append", default=[], metavar="[METRIC=]PCT",
                    help="the smallest regression that alarms, e.g. 3%% (default 3%%), or per metric: tpot_s=5%% "
                         "(repeatable)")
    hk.add_argument("--recent", type=positive(int), default=7,
                    help="a regression alarms while it is among a series' newest N points (default 7)")
    hs = hsub.add_parser("series", help="the series in the history, with their points and time span")
    store_flag(hs)
    filters(hs)
    hy = hsub.add_parser("copy", help="copy the history into another store, e.g. a bucket's Parquet prefix "
                                      "(what the other store holds already is skipped)")
    hy.add_argument("to", help="the store to copy into: a DuckDB file, a folder, or s3://bucket/prefix")
    store_flag(hy)
    hr = hsub.add_parser("remove", help="take records out of a DuckDB history: those added from a file, or an "
                                        "instance's (lists them; --yes removes them)")
    store_flag(hr)
    hr.add_argument("--source", help="the records added from this result file (as `history add` was given it)")
    hr.add_argument("--machine", help="the records of this instance or host")
    hr.add_argument("--since", help="only records from this date on (YYYY-MM-DD, UTC)")
    hr.add_argument("--yes", action="store_true", help="remove them (without it: only say what would go)")


def filters(p) -> None:
    p.add_argument("--machine", help="only this instance or host (as the series name it)")
    p.add_argument("--metric", help="only this metric, e.g. output_tokens_per_s or usd_per_m_output")
    p.add_argument("--case", help="only cases whose name contains this text, e.g. 'torch-cuda decode llama-3.1-8b b1'")
    p.add_argument("--since", help="only points from this date on (YYYY-MM-DD, UTC)")


def run(args) -> int:
    from infercost.history.store import Store
    if args.history_command == "add":
        bases = price_bases(args)  # bad price flags are refused before any file is read
        added, known, rows = add(args.results, args.store, args.machine, bases, args.pricing)
        console.print(escape(f"history {args.store}: {added} records added ({rows} rows), {known} already there"))
        return 0
    if args.history_command == "copy":
        with Store(args.store) as source:
            rows = source.rows()
        with Store(args.to, write=True) as dest:
            added, known = dest.add(rows)
        console.print(escape(f"history {args.to}: {added} records copied from {args.store}, {known} already there"))
        return 0
    if args.history_command == "remove":
        return remove(args)
    with Store(args.store) as store:
        where, params = selection(args)
        df = store.frame(where, params)
        failing = store.failing(*selection(args, metric=False)) if args.history_command == "check" and not args.metric else []
    if df.empty and not failing:
        raise InputError(f"the history at {args.store} holds no point" + (" that the filters select" if params else ""))
    if args.history_command == "series":
        return print_series(df)
    from infercost.history.changes import alarms, find
    found, short = find(df) if not df.empty else ([], [])
    if args.history_command == "changes":
        if args.json:
            for f in found:
                print(json.dumps(as_json(f)))
            return 0
        print_changes(found)
        print_short(short)
        return 0
    default, per_metric = thresholds(args.threshold)
    hit = alarms(found, per_metric, default, args.recent)
    print_short(short)
    for f in hit:
        console.print(escape(f"ALARM {f.instance} {f.case_name} {f.metric}: {f.change.size:+.1%} "
                             f"(95% interval {f.change.low:+.1%} to {f.change.high:+.1%}) since {f.time:%Y-%m-%d %H:%M}, "
                             f"{f.after} points; {f.kind}" + (f"; {', '.join(f.what)}" if f.what else "")), soft_wrap=True)
    for instance, case, newest, status, reason, last_ok in failing:  # a case that stopped measuring is a regression too
        console.print(escape(f"ALARM {instance} {case}: {status} since {newest:%Y-%m-%d %H:%M} (last valid "
                             f"{last_ok:%Y-%m-%d %H:%M})" + (f": {reason}" if reason else "")), soft_wrap=True)
    series_n = df.groupby(["instance", "key", "metric"]).ngroups if not df.empty else 0
    n = len(hit) + len(failing)
    console.print(escape(f"{n} alarm(s) over {series_n} series ({len(short)} with fewer points than a verdict needs; "
                         f"{len(failing)} case(s) no longer valid); threshold {default:.0%}"
                         + "".join(f", {m} {v:.0%}" for m, v in per_metric.items()) + f", newest {args.recent} points"))
    return 1 if n else 0


def remove(args) -> int:
    from infercost.history.store import Store
    if not args.source and not args.machine:
        raise InputError("history remove needs --source FILE or --machine NAME (or both): which records to take out")
    clauses, params = since(args.since)
    for column, value in (("source", args.source), ("instance", args.machine)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    with Store(args.store, write=args.yes) as store:
        n = store.remove(" AND ".join(clauses), params, really=args.yes)
    what = " and ".join(f"{k} {v}" for k, v in (("added from", args.source), ("of", args.machine)) if v)
    if not args.yes:
        console.print(escape(f"{n} records {what} would be removed from {args.store}; add --yes to remove them"))
    else:
        console.print(escape(f"{n} records {what} removed from {args.store}"))
    return 0


def as_json(f) -> dict:
    """A change as one JSON object (history changes --json)."""
    c = f.change
    return {"instance": f.instance, "case": f.case_name, "key": f.key, "metric": f.metric, "at": f.time.isoformat(),
            "size": c.size, "ci95": [c.low, c.high], "p": c.p, "before": c.before, "after": c.after,
            "regression": f.regression, "kind": f.kind, "what_changed": list(f.what), "points": f.points,
            "points_since": f.after}


def add(paths, store_path, machine, bases, pricing) -> tuple[int, int, int]:
    """(records added, records already there, rows written) of result files added to a store;
    InputError, with nothing added, where any line is not a record that can enter the history."""
    from functools import partial

    from infercost.bench.reading import read_files
    from infercost.bench.records import result_files
    from infercost.history.points import rows_of_chunk
    from infercost.history.store import Store
    files = result_files(paths)
    for f in files:
        if not f.is_file():
            raise InputError(f"no results at {f}")
    rows, bad = [], []
    for f in files:
        pieces, by_file = read_files([f], then=partial(rows_of_chunk, source=str(f), machine=machine, bases=bases,
                                                       pricing=pricing))
        for _, (_, problems) in by_file.items():
            bad += [f"{f}:{number}: {why}" for number, why in problems]
        for got, problems in pieces:
            rows += got
            bad += [f"{f}: the record of {key}: {why}" if key else f"{f}: {why}" for why, key in problems]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}{more}: nothing was added")
    if not rows:
        raise InputError("no records in the given results")
    with Store(store_path, write=True) as store:
        added, known = store.add(rows)
    return added, known, len(rows)


def selection(args, metric: bool = True) -> tuple[str, list]:
    clauses, params = since(args.since)
    for column, value, op in (("instance", args.machine, "="), ("metric", args.metric if metric else None, "="),
                              ("case_name", args.case, "contains")):
        if value:
            clauses.append(f"contains({column}, ?)" if op == "contains" else f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def since(text: str | None) -> tuple[list[str], list]:
    """--since as an SQL clause and its parameter (none without it)."""
    from datetime import datetime
    if not text:
        return [], []
    try:
        return ["time >= ?"], [datetime.strptime(text, "%Y-%m-%d")]
    except ValueError:
        raise InputError(f"--since {text!r}: a date as YYYY-MM-DD") from None


def thresholds(given: list[str]) -> tuple[float, dict]:
    from infercost.history.points import METRICS as known
    from infercost.numbers import number
    default, per_metric = 0.03, {}
    for text in given:
        metric, _, pct = text.rpartition("=")
        value = number(pct.strip().rstrip("%"), f"--threshold {text!r} (a percentage, e.g. 3%)",
                       low=0, low_open=False, high=100, high_open=True) / 100
        if not metric:
            default = value
        elif metric not in known:
            raise InputError(f"--threshold {text!r}: unknown metric {metric!r}; known: {', '.join(sorted(known))}")
        else:
            per_metric[metric] = value
    return default, per_metric


def print_changes(found) -> None:
    if not found:
        console.print("no change found in any series")
        return
    table = Table(title=f"changes ({len(found)}): E-divisive-style search (ruptures PELT + Welch's t-test, p < 0.01)")
    for col in ("instance", "case", "metric", "at", "size", "95% interval", "kind", "what changed there"):
        table.add_column(col)
    for f in found:
        table.add_row(escape(f.instance), escape(f.case_name), f.metric, f"{f.time:%Y-%m-%d %H:%M}",
                      f"{f.change.size:+.1%}" + (" worse" if f.regression else " better"),
                      f"{f.change.low:+.1%} to {f.change.high:+.1%}", f.kind, escape(", ".join(f.what) or "-"))
    console.print(table)


def print_short(short) -> None:
    from infercost.history.detect import MIN_POINTS
    for instance, case, metric, n in short[:10]:
        console.print(escape(f"{instance} {case} {metric}: not enough points ({n} of {MIN_POINTS}) for a verdict"))
    if len(short) > 10:
        console.print(f"... and {len(short) - 10} more series with fewer than {MIN_POINTS} points")


def print_series(df) -> int:
    table = Table(title="series in the history")
    for col in ("instance", "case", "metric", "points", "first", "last", "newest value"):
        table.add_column(col)
    for (instance, key, metric), rows in df.groupby(["instance", "key", "metric"], sort=True):
        table.add_row(escape(instance), escape(rows["case_name"].iloc[-1]), metric, str(len(rows)),
                      f"{rows['time'].min():%Y-%m-%d}", f"{rows['time'].max():%Y-%m-%d}", f"{rows['value'].iloc[-1]:.4g}")
    console.print(table)
    return 0


def history_flag(p) -> None:
    """--history [STORE] of run, serve and fleet collect."""
    from infercost.history.store import DEFAULT
    p.add_argument("--history", nargs="?", const=str(DEFAULT), default=None, metavar="STORE",
                   help=f"add the records to the history when done (default store {DEFAULT}; see `infercost history`)")


def check_store(where) -> None:
    """A store that a run will add to, checked before anything is measured."""
    from infercost.history.store import is_remote, kind_of
    from infercost.paths import writable_file, writable_folder
    if where is None or is_remote(str(where)):
        return
    (writable_file if kind_of(str(where)) == "duckdb" else writable_folder)(Path(where), "--history")


def after_run(store, path: Path, bases, pricing=None) -> int:
    """The records just written, added to the history: 0, or 1 with one line where they could not
    be (the result file keeps them: the line says how to add them later)."""
    from infercost.errors import RunError
    from .common import errors
    try:
        added, known, _ = add([str(path)], store, None, bases, pricing)
    except (InputError, RunError) as e:
        errors.print(escape(f"history: not added ({e}); the results are kept in {path}: add them later with "
                            f"infercost history add {path} --store {store}"), markup=False)
        return 1
    console.print(escape(f"history {store}: {added} records added" + (f", {known} already there" if known else "")))
    return 0
