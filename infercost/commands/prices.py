"""`infercost prices`: list price rows, import a SkyPilot catalog, or read SkyPilot's fetched ones."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from infercost.errors import InputError
from infercost.present import prices_table

from .common import console

NAME = "prices"
HELP = "list price rows, or import a SkyPilot catalog CSV"


def arguments(p) -> None:
    p.add_argument("--from-skypilot", action="store_true",
                   help="read the catalogs an installed SkyPilot has fetched into a new dated table, after showing "
                        "how they differ from the current one")
    p.add_argument("--import-skypilot", metavar="CSV", help="convert a SkyPilot vms.csv into infercost's format")
    p.add_argument("--provider", help="provider of the imported catalog (aws, gcp, azure, ...)")
    p.add_argument("--as-of", help="date the imported catalog was read (YYYY-MM-DD)")
    p.add_argument("--out", "-o", type=Path, help="where to write the imported table")
    p.add_argument("--prices", action="append", default=[], help="extra price table(s) to list")
    p.add_argument("filter", nargs="?", default="",
                   help="show rows whose provider:instance contains this (a whole provider:instance: all its bases)")


def run(args) -> int:
    from infercost.hardware import prices
    if args.from_skypilot:
        return from_skypilot(args)
    try:
        if args.import_skypilot:
            from infercost.paths import writable_file
            if not (args.provider and args.as_of and args.out):
                raise InputError("--import-skypilot needs --provider, --as-of (YYYY-MM-DD) and --out")
            writable_file(args.out, "--out")
            rows = prices.import_skypilot(args.import_skypilot, args.provider, args.as_of)
            prices.write(rows, args.out)
            console.print(escape(f"wrote {len(rows)} rows to {args.out} (use with --prices {args.out})"))
            return 0
        rows = prices.load_all(args.prices)
    except (OSError, prices.PriceTableError) as e:
        raise InputError(str(e)) from None
    shown = [r for r in rows if args.filter in r.instance]
    if any(r.instance == args.filter for r in rows):  # one instance: every basis it has, in BASES' order
        shown = sorted((r for r in rows if r.instance == args.filter), key=lambda r: prices.PRICINGS.index(r.pricing))
    console.print(prices_table(shown))
    return 0


def from_skypilot(args) -> int:
    """A new dated table from the catalogs SkyPilot has fetched, after showing how they differ."""
    from infercost import fleet
    from infercost.hardware import prices
    from infercost.paths import writable_file
    if args.out is not None:
        writable_file(args.out, "--out")  # before the catalogs are read and the diff printed
    try:
        new = prices.from_skypilot_cache(fleet.skypilot_catalog_dir())
    except (OSError, prices.PriceTableError) as e:
        raise InputError(f"SkyPilot's catalog cache: {e}") from None
    if not new:
        raise InputError("SkyPilot has fetched no catalog on this machine yet (run e.g. `sky show-gpus` once)")
    changed, added = prices.diff(new, prices.load_all(args.prices))
    for old, row in changed:
        was = "no public price" if old.usd_per_hour is None else f"${old.usd_per_hour:g}/h"
        console.print(escape(f"  changed  {old.instance} {old.region} {old.pricing}: {was} (as of "
                             f"{old.as_of}) -> ${float(row['usd_per_hour']):g}/h (as of {row['as_of']})"))
    console.print(escape(f"{len(changed)} rows differ from the current table; {len(added)} rows are new"))
    stamp = max(r["as_of"] for r in new)
    out = args.out or Path(f"prices-skypilot-{stamp}.csv")
    try:
        prices.write(new, out)
    except OSError as e:
        raise InputError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    console.print(escape(f"wrote {len(new)} rows to {out} (use with --prices {out})"))
    return 0
