"""The report's figures (matplotlib, headless): each a function of records or cost rows."""

from __future__ import annotations

import io

import numpy as np

from infercost.hardware import catalog
from infercost.hardware.cost import dtype_label


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
            groups.setdefault((label(r), dtype_label(r["case"])), set()).add((p["m"], r["metrics"]["tflops"]))
    for (name, dtype), xy in sorted(groups.items()):
        xy = sorted(xy)  # (a point measured many times is drawn once)
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
        devices.setdefault(label(r), set()).add((m["flops"] / m["bytes"], tflops, r["case"]["workload"]))
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
    pts = [r for r in rows if r["workload"] in ("decode", "serve") and r.get("per_user_tokens_per_s")]
    if not pts:
        return None
    fig, ax = new_figure()
    groups = {}
    for r in pts:
        # One line a configuration: int8 weights or a split model is another point set, not the same line;
        # one point a batch and context (a case measured again: its fastest)
        line = groups.setdefault((r["device"], r["backend"], r["model"], r.get("config") or r["dtype"]), {})
        at = (r["batch"], r.get("tokens"))
        if at not in line or r["output_tokens_per_s"] > line[at]["output_tokens_per_s"]:
            line[at] = r
    groups = {k: list(v.values()) for k, v in groups.items()}
    for (device, backend, model, dtype), items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        items.sort(key=lambda r: r["per_user_tokens_per_s"])
        x = [r["per_user_tokens_per_s"] for r in items]
        y = [r["output_tokens_per_s"] for r in items]
        engine = backend == "endpoint"  # a serving engine beside the kernels' ceiling
        ax.plot(x, y, marker="s" if engine else "o", ls="--" if engine else "-",
                label=f"{device} {'engine' if engine else f'({backend})'} {model} {'' if engine else dtype}")
        for r, xi, yi in zip(items, x, y):
            if r.get("usd_per_m_output") is not None:
                ax.annotate(f"b{r['batch']} ${r['usd_per_m_output']:.3g}/M", (xi, yi), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    finish(ax, "Throughput versus interactivity (kernels' decode; engines dashed)", "per-user speed (output tokens/s = 1 / TPOT)",
           "output tokens/s per accelerator")
    return fig


MAX_BARS = 45  # bars a reader can tell apart; every row stays in results.csv


def fig_costs(rows):
    """$/M tokens per device and case with 95% CI bars: input, output, blended. A case measured
    several times (repeated runs, many hosts of one kind) is one bar, its cheapest; past MAX_BARS
    the cheapest are drawn and the title says how many there are."""
    best: dict = {}
    for r in rows:
        for kind in ("input", "output", "blended"):
            v = r.get(f"usd_per_m_{kind}")
            if v is not None:
                lo = r.get(f"usd_per_m_{kind}_ci95_low", v)
                hi = r.get(f"usd_per_m_{kind}_ci95_high", v)
                # records made before intervals matched the steady-state figure: clip, never invert
                name = f"{r['device']} ({r['backend']})\n{r['model']} b{r['batch']} {r.get('config', '')} {kind}"
                if name not in best or v < best[name][1]:
                    best[name] = (name, v, max(v - lo, 0.0), max(hi - v, 0.0), kind)
    bars = list(best.values())
    if not bars:
        return None
    cut = len(bars) > MAX_BARS
    if cut:
        bars = sorted(bars, key=lambda b: b[1])[:MAX_BARS]
    fig, ax = new_figure(0.35 * len(bars) + 1.2)
    colours = {"input": "C0", "output": "C1", "blended": "C2"}
    y = np.arange(len(bars))
    ax.barh(y, [b[1] for b in bars], xerr=[[b[2] for b in bars], [b[3] for b in bars]],
            color=[colours[b[4]] for b in bars], capsize=2)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("USD per million tokens (95% CI from throughput)")
    ax.set_title("Cost per million tokens" + (f" (the {MAX_BARS} cheapest of {len(best)}; all in results.csv)" if cut else ""))
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()
