"""`infercost compare`: two result sets case by case; exit 1 if a case got slower."""

from __future__ import annotations

from infercost.errors import InputError
from infercost.present import compare_table

from .common import console, read_results

NAME = "compare"
HELP = "compare two result sets case by case; exit 1 if any case got slower beyond --threshold"


def arguments(p) -> None:
    p.add_argument("base", help="baseline results (file or folder)")
    p.add_argument("new", help="new results (file or folder)")
    p.add_argument("--threshold", default="5%", help="change that counts, e.g. 5%% (default 5%%)")


def run(args) -> int:
    from infercost.bench.compare import compare
    from infercost.numbers import number
    threshold = number(args.threshold.strip().rstrip("%"), "--threshold (a percentage, e.g. 5%)",
                       low=0, low_open=False, high=100, high_open=True) / 100
    base, new = read_results([args.base]), read_results([args.new])
    if not {r["key"] for r in base} & {r["key"] for r in new}:
        raise InputError("no case appears in both result sets")
    rows = compare(base, new, threshold)
    console.print(compare_table(rows, threshold))
    slower = [r for r in rows if r["verdict"] == "slower"]
    broken = [r for r in rows if r["verdict"] == "error"]
    if slower:
        console.print(f"[red]{len(slower)} case(s) slower beyond {threshold:.0%}[/]")
    if broken:
        console.print(f"[red]{len(broken)} case(s) without a valid measurement on one side[/]")
    return 1 if slower or broken else 0
