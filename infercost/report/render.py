"""The report's text: Markdown and a self-contained HTML page (figures inlined, every string
from result files escaped), with CSV and Parquet exports beside them.

`write_report(records, files, out_dir, bases)` writes report.md (with PNG figures beside it),
report.html, results.csv and results.parquet. Each figure and table names the runs and prices
it used.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from infercost.bench.records import flatten
from infercost.hardware import catalog
from infercost.hardware import cost as costs
from infercost.present import usd

from . import accuracy, league
from .figures import fig_costs, fig_frontier, fig_matmul_curve, fig_roofline, png


def util_rows(records):
    out = []
    for r in records:
        if r["status"] != "ok":
            continue
        c, m = r["case"], r["metrics"]
        util = {"matmul": m.get("peak_fraction"), "prefill": m.get("mfu"), "decode": m.get("mbu")}.get(c["workload"])
        what = {"matmul": "of dense peak", "prefill": "MFU", "decode": "MBU"}.get(c["workload"], "")
        out.append([c["backend"], c.get("device") or "?", c["workload"], c.get("shape") or "", costs.dtype_label(c),
                    f"{m.get('tflops'):.4g}" if m.get("tflops") else "-",
                    f"{util:.1%} {what}" if util is not None else "-"])
    return out


def peak_rows(records):
    """The best matmul throughput measured per device and dtype, beside the catalog's dense peak."""
    best = {}
    for r in records:
        c = r["case"]
        if r["status"] == "ok" and c["workload"] == "matmul":
            k = (c.get("device") or "?", costs.dtype_label(c) + (" tf32" if c.get("tf32") else ""))
            if r["metrics"]["tflops"] > best.get(k, (0, None))[0]:
                best[k] = (r["metrics"]["tflops"], r)
    rows = []
    for (device, dtype), (tflops, r) in sorted(best.items()):
        acc = catalog.lookup(device)
        spec = acc.peak(r["case"]["dtype"], bool(r["case"].get("tf32"))) if acc else None
        rows.append([device, dtype, f"{tflops:.4g}", r["case"].get("shape") or "",
                     f"{spec / 1e12:.4g}" if spec else "not in catalog",
                     f"{tflops * 1e12 / spec:.1%}" if spec else "-"])
    return rows


def engine_rows(records):
    """Each engine level beside the kernels' decode of the same model on the same device at the
    same batch (or the largest smaller one): engine tokens/s over the kernels', the ceiling."""
    kernels = [r for r in records if r["status"] == "ok" and r["case"]["workload"] == "decode"]
    out = []
    for r in records:
        c = r["case"]
        if r["status"] != "ok" or c["workload"] != "serve":
            continue
        p = c["params"]
        model = p.get("kernel_model") or p["model"]
        same = [k for k in kernels if k["case"]["params"]["model"] == model and k["case"].get("device") == c.get("device")
                and k["case"]["params"]["batch"] <= p["batch"]]
        if not same:
            continue
        best = max(same, key=lambda k: (k["case"]["params"]["batch"], k["metrics"]["output_tokens_per_s"]))
        engine, ceiling = r["metrics"]["output_tokens_per_s"], best["metrics"]["output_tokens_per_s"]
        server = (c.get("engine") or {}).get("server") or "engine"
        out.append([c.get("device") or "?", f"{server} {p['model']}", f"{p['mode']} {p['level']:g}", f"{engine:.4g}",
                    f"{best['case']['backend']} b{best['case']['params']['batch']}", f"{ceiling:.4g}", f"{engine / ceiling:.0%}"])
    return out


def provenance(records, files) -> list[str]:
    """One line per machine and infercost commit: how many runs and records, and when."""
    groups: dict = {}
    for r in records:
        p = r.get("provenance", {})
        host = p.get("host", {})
        devices = groups.setdefault((host.get("hostname"), host.get("cpu_model"), p.get("git_commit")),
                                    {"records": 0, "starts": set(), "devices": set()})
        devices["records"] += 1
        devices["starts"].add(p.get("started") or "?")
        devices["devices"].add(r.get("case", {}).get("device") or "?")
    lines = [f"{len(records)} records from {len(files)} file(s): {', '.join(Path(f).name for f in files)}"]
    for (host, cpu, commit), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        starts = sorted(g["starts"])
        lines.append(f"host {host} ({cpu}), devices {', '.join(sorted(g['devices']))}, infercost commit "
                     f"{commit or 'unknown'}: {g['records']} records from {len(starts)} run(s), {starts[0]} to {starts[-1]}")
    return lines


def fleet_manifests(files: list) -> list[dict]:
    """fleet.json beside collected fleet results (infercost fleet collect puts it there)."""
    import json
    found = []
    for folder in sorted({Path(f).parent for f in files}):
        try:
            found.append(json.loads((folder / "fleet.json").read_text()))
        except (OSError, ValueError):
            pass
    return found


def league_md(sections, min_user_tps) -> list[str]:
    md = [f"## League table: $/M output tokens at >= {min_user_tps:g} tokens/s per user", "", f"*{league.NOTE}*", ""]
    for sec in sections:
        md += [f"### {sec['model']}, weights {sec['weights']}", "", _md_table(league.HEAD, league.table_rows(sec, usd_cell)), ""]
    return md


def league_html(sections, min_user_tps) -> str:
    e = html.escape
    parts = [f"<h2>League table: $/M output tokens at &gt;= {min_user_tps:g} tokens/s per user</h2><p>{e(league.NOTE)}</p>"]
    for sec in sections:
        parts.append(f"<h3>{e(sec['model'])}, weights {e(sec['weights'])}</h3>" + _html_table(league.HEAD, league.table_rows(sec, usd_cell)))
    return "".join(parts)


# Above this many records the report's tables show their first rows and say how many more the
# data files hold, and results.csv is not written (a million records make a 1.7 GB CSV; the
# Parquet file holds every row).
TABLE_ROWS = 200
CSV_ROWS = 100_000


def flat_piece(records: list[dict]):
    """A piece of the folder's records and their tidy rows, made where the piece was read (a
    reading worker, bench/reading.py): (records with what the report's sections read of them,
    DataFrame of every field). Times, settings and versions travel in the DataFrame only."""
    import pandas as pd
    return [sectioned(r) for r in records], pd.DataFrame([flatten(r) for r in records])


def sectioned(r: dict) -> dict:
    p = r.get("provenance") or {}
    host = p.get("host") or {}
    return {**{k: r[k] for k in SECTION_FIELDS if k in r},
            "provenance": {"git_commit": p.get("git_commit"), "started": p.get("started"),
                           "host": {"hostname": host.get("hostname"), "cpu_model": host.get("cpu_model")}}}


SECTION_FIELDS = ("schema", "key", "case", "status", "valid", "reasons", "metrics", "stats", "fleet", "settings")


def capped(rows: list, what: str = "rows") -> tuple[list, str]:
    """The first TABLE_ROWS rows, and a note of how many more there are ('' when none)."""
    more = len(rows) - TABLE_ROWS
    return (rows[:TABLE_ROWS], f"{more:,} more {what} in results.parquet") if more > 0 else (rows, "")


def write_report(records: list[dict], files: list, out: Path, bases=(), ratio: float = 3.0,
                 min_user_tps: float = 20.0, df=None, history=None) -> dict:
    """df: the records' tidy rows where the reader made them (flat_piece); else made here.
    history: the history section (report/history.py's section) to add, with its figure."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if df is None:
        df = pd.DataFrame([flatten(r) for r in records])
    csv = len(df) <= CSV_ROWS
    if csv:
        df.to_csv(out / "results.csv", index=False)
    df.drop(columns=["raw_times_s"], errors="ignore").to_parquet(out / "results.parquet", index=False)
    bases = [bases] if isinstance(bases, costs.Basis) else list(bases or [])
    rows = [row for b in bases for row in costs.price_records(records, b, ratio)]
    fleet_runs: dict = {}
    for r in records:  # a fleet's records carry their own instance's price row
        if r.get("fleet"):
            fleet_runs.setdefault(r["fleet"]["task"], []).append(r)
    if not bases:
        rows += [row for recs in fleet_runs.values() for row in costs.price_records(recs, league.basis(recs[0]["fleet"]), ratio)]
    runs = provenance(records, files)
    price_note = ("Prices: " + "; ".join(f"{b.label} ({b.assumption()})" for b in bases) + f"; blended {ratio:g}:1."
                  if bases else "Prices: each fleet instance's own price row (see the league table)." if fleet_runs and not bases
                  else "Prices: none given, so no costs are shown (use --instance or --price-per-hour).")
    figures = [
        ("cost", "Cost per million tokens (input, output, blended) with 95% intervals", fig_costs(rows) if rows else None),
        ("frontier", "Throughput versus interactivity, with the cost of each point", fig_frontier(rows) if rows else None),
        ("roofline", "Roofline: measured points under each device's roof", fig_roofline(records)),
        ("matmul", "Achieved matmul TFLOP/s against size", fig_matmul_curve(records)),
    ]
    images = {}
    for name, title, fig in figures:
        if fig is not None:
            images[name] = (title, png(fig))
            (out / f"{name}.png").write_bytes(images[name][1])
    table, table_more = capped(util_rows(records))
    head = ["backend", "device", "workload", "case", "dtype", "TFLOP/s", "utilisation"]
    cost_head = ["backend", "device", "case", "$/M input", "$/M output", "$/M blended", "$/PFLOP"]
    shown, cost_more = capped(rows, "priced rows")
    cost_table = [[r["backend"], r["device"] or "?", f"{r['workload']} {r.get('model', r.get('shape'))} "
                   f"b{r.get('batch', '')} {r.get('config') or r['dtype']}".strip(),
                   usd_cell(r.get("usd_per_m_input")), usd_cell(r.get("usd_per_m_output")),
                   usd_cell(r.get("usd_per_m_blended")), usd_cell(r.get("usd_per_pflop"))] for r in shown]
    invalid, invalid_more = capped([[r["case"]["backend"], r["case"].get("device") or "?", r["case"]["workload"],
                                     r["case"].get("shape") or "", r["status"], "; ".join(r["reasons"])]
                                    for r in records if r["status"] != "ok"], "records")

    sections = league.league(records, fleet_manifests(files), min_user_tps, ratio) \
        if any(r.get("fleet") for r in records) else []
    md = ["# infercost report", "", *[f"- {l}" for l in runs], f"- {price_note}", ""]
    if sections:  # a fleet's results: the answer first
        md += league_md(sections, min_user_tps)
    for name, (title, _) in images.items():
        md += [f"## {title}", "", f"![{title}]({name}.png)", "", f"*Source: the runs above. {price_note}*", ""]
    peaks = peak_rows(records)
    peak_head = ["device", "dtype", "measured peak TFLOP/s", "at shape", "spec dense peak", "measured / spec"]
    if peaks:
        md += ["## Measured peaks beside spec peaks", "", _md_table(peak_head, peaks), ""]
    md += ["## MFU / MBU and throughput", "", _md_table(head, table), *more_md(table_more)]
    engines, engines_more = capped(engine_rows(records), "levels")
    engine_head = ["device", "engine", "level", "engine tok/s", "ceiling (kernels' decode)", "ceiling tok/s", "engine / ceiling"]
    if engines:
        md += ["## Serving engines against the kernels' ceiling", "", _md_table(engine_head, engines), *more_md(engines_more)]
    if cost_table:
        md += ["## Costs", "", f"*{price_note}*", "", _md_table(cost_head, cost_table), *more_md(cost_more)]
    estimated = accuracy.cells(records)
    if estimated:
        md += ["## Estimates against measurements", "", f"*{accuracy.NOTE} {accuracy.summary(estimated)}.*", "",
               _md_table(accuracy.HEAD, accuracy.table_rows(estimated)), ""]
    if invalid:
        md += ["## Cases without a valid measurement", "", _md_table(["backend", "device", "workload", "case", "status", "reasons"], invalid),
               *more_md(invalid_more)]
    data_note = ("Data: `results.csv`, `results.parquet` (one row per case)." if csv else
                 f"Data: `results.parquet` (one row per case; results.csv is not written above {CSV_ROWS:,} rows).")
    if history is not None:
        md += history[0]
        if history[2]:
            (out / "history.png").write_bytes(history[2])
    md += [data_note]
    (out / "report.md").write_text("\n".join(md) + "\n")

    e = html.escape
    body = [f"<h1>infercost report</h1><ul>{''.join(f'<li>{e(l)}</li>' for l in runs)}<li>{e(price_note)}</li></ul>"]
    if sections:
        body.append(league_html(sections, min_user_tps))
    for title, data in images.values():
        b64 = base64.b64encode(data).decode()
        body.append(f'<figure><img class="figure" alt="{e(title)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{e(title)}. Source: the runs above. {e(price_note)}</figcaption></figure>")
    if peaks:
        body.append("<h2>Measured peaks beside spec peaks</h2>" + _html_table(peak_head, peaks))
    body.append("<h2>MFU / MBU and throughput</h2>" + _html_table(head, table) + more_html(table_more))
    if engines:
        body.append("<h2>Serving engines against the kernels' ceiling</h2>" + _html_table(engine_head, engines)
                    + more_html(engines_more))
    if cost_table:
        body.append(f"<h2>Costs</h2><p>{e(price_note)}</p>" + _html_table(cost_head, cost_table) + more_html(cost_more))
    if estimated:
        body.append(f"<h2>Estimates against measurements</h2><p>{e(accuracy.NOTE)} {e(accuracy.summary(estimated))}.</p>"
                    + _html_table(accuracy.HEAD, accuracy.table_rows(estimated)))
    if invalid:
        body.append("<h2>Cases without a valid measurement</h2>" + _html_table(
            ["backend", "device", "workload", "case", "status", "reasons"], invalid) + more_html(invalid_more))
    if history is not None:
        body.append(history[1])
        if history[2]:
            body.append(f'<figure><img class="figure" alt="History" src="data:image/png;base64,'
                        f'{base64.b64encode(history[2]).decode()}"><figcaption>History of each series and its change points.'
                        '</figcaption></figure>')
    body.append(f"<p>{e(data_note)}</p>")
    page = HTML.replace("{BODY}", "\n".join(body)).replace("{N}", str(len(images)))
    (out / "report.html").write_text(page)
    return {"figures": list(images) + (["history"] if history is not None and history[2] else []), "rows": len(df), "league": len(sections),
            "data": "results.csv and results.parquet" if csv else "results.parquet"}


def more_md(note: str) -> list[str]:
    return [f"*... {note}.*", ""] if note else [""]


def more_html(note: str) -> str:
    return f"<p><em>... {html.escape(note)}.</em></p>" if note else ""


def usd_cell(x) -> str:
    return usd(x, missing="")


def _md_table(head, rows):
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def _html_table(head, rows):
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>infercost report</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
img.figure{max-width:100%}figure{margin:1.5em 0}figcaption{font-size:12px;color:#444}</style>
<script>
window.addEventListener("error", function (e) { document.documentElement.dataset.errors =
  (document.documentElement.dataset.errors || "") + (e.message || "resource failed") + ";"; }, true);
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img.figure"), shown = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) shown++; });
  document.documentElement.dataset.figuresExpected = "{N}";
  document.documentElement.dataset.figuresShown = String(shown);
});
</script></head><body>
{BODY}
</body></html>
"""
