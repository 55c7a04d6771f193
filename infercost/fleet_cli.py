"""`infercost fleet ...` and `infercost prices --from-skypilot`: parse, call infercost/fleet.py or
hardware/prices.py, print."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from infercost import fleet
from infercost.errors import InputError


def cmd_fleet(args, console, warn) -> int:
    if args.fleet_command == "plan":
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            manifest = fleet.plan([i.strip() for i in args.instances.split(",") if i.strip()], args.suite, args.spot,
                                  args.out, args.bucket, args.region, args.prices)
        for w in caught:
            warn(str(w.message))
        table = Table(title=f"fleet plan: suite {manifest['suite']}, results to bucket {manifest['bucket']}")
        for col in ("task", "resources", "$/h", "price as of", "cases", "ESTIMATE minutes", "ESTIMATE $"):
            table.add_column(col)
        for t in manifest["tasks"]:
            r = t["resources"]
            table.add_row(t["name"], " ".join(str(r[k]) for k in ("infra", "instance_type", "accelerators") if k in r),
                          f"{t['usd_per_hour']:g}", t["as_of"], str(t["cases"]), f"{t['est_minutes']:.0f}", f"{t['est_usd']:.2f}")
        console.print(table)
        console.print(escape(f"ESTIMATED cost of the whole fleet run: ${manifest['est_usd']:.2f}; nothing has been launched."))
        console.print(escape(f"  (estimate: {manifest['estimate_formula']})"))
        console.print(escape(f"tasks in {args.out}/ (SkyPilot YAML, edit freely); launch with: infercost fleet launch {args.out}"))
        return 0
    if args.fleet_command == "launch":
        launched = fleet.launch(args.folder, lambda text: console.print(escape(text)))
        console.print(escape(f"{len(launched)} managed jobs launched; follow them with: infercost fleet status {args.folder}"))
        return 0
    if args.fleet_command == "status":
        jobs = fleet.status(args.folder)
        table = Table(title="fleet jobs (SkyPilot managed jobs)")
        for col in ("task", "job", "status"):
            table.add_column(col)
        for j in jobs:
            table.add_row(j["task"], str(j["job"]), j["status"])
        console.print(table)
        return 0
    summary = fleet.collect(args.folder, args.source, warn)
    for name, count in summary.items():
        console.print(escape(f"  {name}: {count} records" if count else f"  {name}: no results yet"))
    out = Path(args.folder) / "collected"
    console.print(escape(f"collected into {out}/; the league table: infercost report {out} --out REPORT_DIR"))
    return 0


def cmd_prices_from_skypilot(args, console) -> int:
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
        console.print(escape(f"  changed  {old.instance} {old.region} {old.pricing}: ${old.usd_per_hour:g}/h (as of "
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
