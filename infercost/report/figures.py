"""Reports: figures, tables and tidy exports from one or many result files.

`write_report(records, files, out_dir, basis)` writes report.md (with PNG figures beside it),
report.html (self-contained: figures inlined, every string from result files escaped),
results.csv and results.parquet. Each figure and table names the runs and prices it used.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from infercost.hardware import catalog

from . import cost as costs
from .records import flatten


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def new_figure(height: float = 4.2):
    """A figure and its axes, the width every report figure shares (headless backend)."""
    return _plt().subplots(figsize=(7, height))


def finish(ax, title: str, xlabel: str, ylabel: str, legend: dict | None = None) -> None:
    """Title, axis labels, legend and grid, the same on every figure."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(**(legend or {"fontsize": 6}))
    ax.grid(alpha=0.3)


def label(rec: dict) -> str:
    c = rec["case"]
    return f"{c.get('device') or '?'} ({c['backend']})"


def fig_matmul_curve(records):
    """Achieved TFLOP/s against problem size, per backend, device and dtype."""
    pts = [r for r in records if r["status"] == "ok" and r["case"]["workload"] == "matmul"]
    if not pts:
        return None
    fig, ax = new_figure()
    groups = {}
    for r in pts:
        p = r["case"]["params"]
        if p["m"] == p["n"] == p["k"]:
            groups.setdefault((label(r), r["case"]["dtype"]), []).append((p["m"], r["metrics"]["tflops"]))
    for (name, dtype), xy in sorted(groups.items()):
        xy.sort()
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=f"{name} {dtype}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    finish(ax, "Matmul throughput curve", "square matmul size N (N x N x N)", "achieved TFLOP/s (steady state)",
           {"fontsize": 7})
    return fig


def fig_roofline(records):
    """Measured points (arithmetic intensity, achieved FLOP/s) under each device's roof."""
    pts = [r for r in records if r["status"] == "ok" and r["metrics"].get("flops") and r["metrics"].get("bytes")]
    if not pts:
        return None
    fig, ax = new_figure()
    devices = {}
    for r in pts:
        m = r["metrics"]
        tflops = m.get("tflops") or m["flops"] / (r["stats"]["mean"]) / 1e12
        devices.setdefault(label(r), []).append((m["flops"] / m["bytes"], tflops, r["case"]["workload"]))
    xs = np.logspace(-1, 4, 200)
    roofs = set()
    measured = measured_roofs(records)
    for i, (name, items) in enumerate(sorted(devices.items())):
        colour = f"C{i}"
        device = name.rsplit(" (", 1)[0]
        acc = catalog.lookup(device)
        if acc and acc.bandwidth and acc.peak("bfloat16") and acc.name not in roofs:
            roofs.add(acc.name)
            roof = np.minimum(acc.peak("bfloat16") / 1e12, xs * acc.bandwidth / 1e12)
            ax.plot(xs, roof, color=colour, lw=1, ls="--", label=f"{acc.name} roof (bf16 dense, spec)")
        elif acc is None and device not in roofs and device in measured:
            roofs.add(device)  # no spec sheet: the best measured throughput and bandwidth make the roof
            peak_tf, bw = measured[device]
            ax.plot(xs, np.minimum(peak_tf, xs * bw / 1e12), color=colour, lw=1, ls=":",
                    label=f"{device} roof (measured: {peak_tf:.3g} TFLOP/s, {bw / 1e9:.0f} GB/s)")
        for marker, wl in (("o", "matmul"), ("s", "prefill"), ("^", "decode")):
            sel = [(x, y) for x, y, w in items if w == wl]
            if sel:
                ax.scatter([x for x, _ in sel], [y for _, y in sel], color=colour, marker=marker, s=18,
                           label=f"{name}: {wl}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    finish(ax, "Roofline: measured points under each device's roof", "arithmetic intensity (FLOP / minimum byte)",
           "achieved TFLOP/s", {"fontsize": 6, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)})
    return fig


def measured_roofs(records) -> dict:
    """Per device: (best matmul TFLOP/s measured, bandwidth measured in the run in B/s), where both exist."""
    peak, bw = {}, {}
    for r in records:
        if r["status"] != "ok":
            continue
        device, m = r["case"].get("device"), r["metrics"]
        if r["case"]["workload"] == "matmul" and m.get("tflops"):
            peak[device] = max(peak.get(device, 0.0), m["tflops"])
        if (m.get("bandwidth_basis") or "").startswith("measured") and m.get("bandwidth_gbs"):
            bw[device] = max(bw.get(device, 0.0), m["bandwidth_gbs"] * 1e9)
    return {d: (peak[d], bw[d]) for d in peak if d in bw}


def fig_frontier(rows):
    """Throughput per accelerator against per-user speed (decode), each point with its cost."""
    pts = [r for r in rows if r["workload"] == "decode"]
    if not pts:
        return None
    fig, ax = new_figure()
    groups = {}
    for r in pts:
        groups.setdefault((r["device"], r["backend"], r["model"], r["dtype"]), []).append(r)
    for (device, backend, model, dtype), items in sorted(groups.items()):
        items.sort(key=lambda r: r["per_user_tokens_per_s"])
        x = [r["per_user_tokens_per_s"] for r in items]
        y = [r["per_user_tokens_per_s"] * r["batch"] for r in items]
        ax.plot(x, y, marker="o", label=f"{device} ({backend}) {model} {dtype}")
        for r, xi, yi in zip(items, x, y):
            if r.get("usd_per_m_output") is not None:
                ax.annotate(f"b{r['batch']} ${r['usd_per_m_output']:.3g}/M", (xi, yi), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    finish(ax, "Throughput versus interactivity (decode)", "per-user speed (output tokens/s = 1 / TPOT)",
           "output tokens/s per accelerator")
    return fig


def fig_costs(rows):
    """$/M tokens per device and case with 95% CI bars: input, output, blended."""
    bars = []
    for r in rows:
        for kind in ("input", "output", "blended"):
            v = r.get(f"usd_per_m_{kind}")
            if v is not None:
                lo = r.get(f"usd_per_m_{kind}_ci95_low", v)
                hi = r.get(f"usd_per_m_{kind}_ci95_high", v)
                # records made before intervals matched the steady-state figure: clip, never invert
                bars.append((f"{r['device']} ({r['backend']})\n{r['model']} b{r['batch']} {kind}", v,
                             max(v - lo, 0.0), max(hi - v, 0.0), kind))
    if not bars:
        return None
    fig, ax = new_figure(0.35 * len(bars) + 1.2)
    colours = {"input": "C0", "output": "C1", "blended": "C2"}
    y = np.arange(len(bars))
    ax.barh(y, [b[1] for b in bars], xerr=[[b[2] for b in bars], [b[3] for b in bars]],
            color=[colours[b[4]] for b in bars], capsize=2)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("USD per million tokens (95% CI from throughput)")
    ax.set_title("Cost per million tokens")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def util_rows(records):
    out = []
    for r in records:
        if r["status"] != "ok":
            continue
        c, m = r["case"], r["metrics"]
        util = m.get("peak_fraction") if c["workload"] == "matmul" else m.get("mfu" if c["workload"] == "prefill" else "mbu")
        what = {"matmul": "of dense peak", "prefill": "MFU", "decode": "MBU"}[c["workload"]]
        out.append([c["backend"], c.get("device") or "?", c["workload"], c.get("shape") or "", c["dtype"],
                    f"{m.get('tflops'):.4g}" if m.get("tflops") else "-",
                    f"{util:.1%} {what}" if util is not None else "-"])
    return out


def peak_rows(records):
    """The best matmul throughput measured per device and dtype, beside the catalog's dense peak."""
    best = {}
    for r in records:
        c = r["case"]
        if r["status"] == "ok" and c["workload"] == "matmul":
            k = (c.get("device") or "?", c["dtype"] + (" tf32" if c.get("tf32") else ""))
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


def write_report(records: list[dict], files: list, out: Path, bases=(), ratio: float = 3.0) -> dict:
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([flatten(r) for r in records])
    df.to_csv(out / "results.csv", index=False)
    df.drop(columns=["raw_times_s"], errors="ignore").to_parquet(out / "results.parquet", index=False)
    bases = [bases] if isinstance(bases, costs.Basis) else list(bases or [])
    rows = [row for b in bases for row in costs.price_records(records, b, ratio)]
    runs = provenance(records, files)
    price_note = ("Prices: " + "; ".join(f"{b.label} ({b.assumption()})" for b in bases) + f"; blended {ratio:g}:1."
                  if bases else "Prices: none given, so no costs are shown (use --instance or --price-per-hour).")
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
    table = util_rows(records)
    head = ["backend", "device", "workload", "case", "dtype", "TFLOP/s", "utilisation"]
    cost_head = ["backend", "device", "case", "$/M input", "$/M output", "$/M blended", "$/PFLOP"]
    cost_table = [[r["backend"], r["device"] or "?", f"{r['workload']} {r.get('model', r.get('shape'))} "
                   f"b{r.get('batch', '')}".strip(), _usd(r.get("usd_per_m_input")), _usd(r.get("usd_per_m_output")),
                   _usd(r.get("usd_per_m_blended")), _usd(r.get("usd_per_pflop"))] for r in rows]
    invalid = [[r["case"]["backend"], r["case"].get("device") or "?", r["case"]["workload"],
                r["case"].get("shape") or "", r["status"], "; ".join(r["reasons"])]
               for r in records if r["status"] != "ok"]

    md = ["# infercost report", "", *[f"- {l}" for l in runs], f"- {price_note}", ""]
    for name, (title, _) in images.items():
        md += [f"## {title}", "", f"![{title}]({name}.png)", "", f"*Source: the runs above. {price_note}*", ""]
    peaks = peak_rows(records)
    peak_head = ["device", "dtype", "measured peak TFLOP/s", "at shape", "spec dense peak", "measured / spec"]
    if peaks:
        md += ["## Measured peaks beside spec peaks", "", _md_table(peak_head, peaks), ""]
    md += ["## MFU / MBU and throughput", "", _md_table(head, table), ""]
    if cost_table:
        md += ["## Costs", "", f"*{price_note}*", "", _md_table(cost_head, cost_table), ""]
    if invalid:
        md += ["## Cases without a valid measurement", "", _md_table(["backend", "device", "workload", "case", "status", "reasons"], invalid), ""]
    md += ["Data: `results.csv`, `results.parquet` (one row per case)."]
    (out / "report.md").write_text("\n".join(md) + "\n")

    e = html.escape
    body = [f"<h1>infercost report</h1><ul>{''.join(f'<li>{e(l)}</li>' for l in runs)}<li>{e(price_note)}</li></ul>"]
    for title, data in images.values():
        b64 = base64.b64encode(data).decode()
        body.append(f'<figure><img class="figure" alt="{e(title)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{e(title)}. Source: the runs above. {e(price_note)}</figcaption></figure>")
    if peaks:
        body.append("<h2>Measured peaks beside spec peaks</h2>" + _html_table(peak_head, peaks))
    body.append("<h2>MFU / MBU and throughput</h2>" + _html_table(head, table))
    if cost_table:
        body.append(f"<h2>Costs</h2><p>{e(price_note)}</p>" + _html_table(cost_head, cost_table))
    if invalid:
        body.append("<h2>Cases without a valid measurement</h2>" + _html_table(
            ["backend", "device", "workload", "case", "status", "reasons"], invalid))
    page = HTML.replace("{BODY}", "\n".join(body)).replace("{N}", str(len(images)))
    (out / "report.html").write_text(page)
    return {"figures": list(images), "rows": len(df)}


def _usd(x):
    return "" if x is None else f"${x:.3g}"


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
