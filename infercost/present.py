"""Shared formatting: numbers, dollars, case names and the result tables, for the CLI, the
report and the GPU check alike."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from infercost.hardware.cost import config_label, dtype_label, model_label


def usd(x, missing: str = "-") -> str:
    if x is None:
        return missing
    return f"${x:.3g}" if x < 100 else f"${x:,.0f}"


def pct(x) -> str:
    return f"{x:.1%}" if x is not None else "-"


def size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def case_name(case: dict) -> str:
    p = case["params"]
    tf32 = " tf32" if case.get("tf32") else ""
    if case["workload"] == "matmul":
        return f"matmul {p['m']}x{p['n']}x{p['k']} {dtype_label(case)}{tf32}"
    if case["workload"] == "collective":
        return f"{p['op']} {size(p['bytes'])} x{p.get('devices') or 'all'} {case['dtype']}"
    what = "prompt" if case["workload"] == "prefill" else "ctx"
    return f"{case['workload']} {p['model']} b{p['batch']} {what}{p['tokens']} {config_label(case)}{tf32}"


def result_line(record: dict) -> str:
    """One record as the progress line shows it (rich markup)."""
    if record["status"] == "ok":
        m = record["metrics"]
        warn = f" [yellow]({escape(record['warnings'][0])})[/]" if record["warnings"] else ""
        wl = record["case"]["workload"]
        if wl == "collective":
            main = f"bus {m['busbw_gbs']:.3g} GB/s (algorithm {m['algbw_gbs']:.3g} GB/s)"
        elif wl == "prefill":
            main = f"{m['input_tokens_per_s']:.4g} input tok/s, TTFT {m['ttft_s'] * 1e3:.3g} ms"
        elif wl in ("decode", "serve"):
            main = f"{m['output_tokens_per_s']:.4g} output tok/s, TPOT {m['tpot_s'] * 1e3:.3g} ms"
        else:
            main = f"{m['tflops']:.3g} TFLOP/s"
        return f"[green]{main}[/] ±{m['spread']:.0%}{warn}"
    colour = "yellow" if record["status"] == "skipped" else "red"
    return f"[{colour}]{record['status']}: {escape('; '.join(record['reasons']))}[/]"


def validity(r: dict) -> str:
    if r["status"] == "ok":
        return "yes" + (" (warn)" if r["warnings"] else "")
    return f"[red]{r['status']}[/]: {escape('; '.join(r['reasons'])[:70])}"


def _table(title: str, columns: list[str], right: set[str]) -> Table:
    table = Table(title=escape(title))
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    return table


def matmul_table(records: list[dict]) -> Table:
    table = _table("matmul throughput (steady state; spread = IQR/median)",
                   ["backend", "device", "shape", "dtype", "TFLOP/s", "of peak", "spread", "valid"],
                   {"TFLOP/s", "spread", "of peak"})
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        ok = r["status"] == "ok"
        table.add_row(escape(case["backend"]), escape(case.get("device") or "?"), case_name(case).split()[1],
                      dtype_label(case) + (" (tf32)" if case.get("tf32") else ""),
                      f"{m['tflops']:.3g}" if ok else "-", pct(m.get("peak_fraction")) if ok else "-",
                      f"{m['spread']:.1%}" if ok else "-", validity(r))
    return table


def llm_table(records: list[dict]) -> Table:
    numeric = {"batch", "tokens", "tok/s", "TTFT/TPOT ms", "MFU/MBU", "roofline"}
    table = _table("transformer inference (prefill: input tokens; decode: output tokens; "
                   "roofline = share of the max(FLOPs/peak, bytes/bandwidth) bound reached)",
                   ["backend", "device", "model", "phase", "batch", "tokens", "dtype", "tok/s",
                    "TTFT/TPOT ms", "MFU/MBU", "roofline", "valid"], numeric)
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        p, ok, prefill = case["params"], r["status"] == "ok", case["workload"] == "prefill"
        rate = m.get("input_tokens_per_s" if prefill else "output_tokens_per_s")
        latency = m.get("ttft_s" if prefill else "tpot_s")
        util = m.get("mfu" if prefill else "mbu")
        table.add_row(escape(case["backend"]), escape(case.get("device") or "?"), escape(model_label(case)),
                      case["workload"], str(p["batch"]),
                      str(p["tokens"]), config_label(case),
                      f"{rate:.4g}" if ok and rate else "-",
                      f"{latency * 1e3:.3g}" if ok and latency else "-", pct(util) if ok else "-",
                      pct(m.get("roofline_fraction")) if ok else "-", validity(r))
    return table


def collective_table(records: list[dict]) -> Table:
    table = _table("collectives (nccl-tests' bandwidths: algorithm = bytes / time; bus = algorithm x 2(n-1)/n "
                   "for all-reduce, x (n-1)/n for all-gather and all-to-all)",
                   ["backend", "device", "op", "bytes", "devices", "algbw GB/s", "busbw GB/s", "of link", "valid"],
                   {"bytes", "devices", "algbw GB/s", "busbw GB/s", "of link"})
    for r in records:
        case, m = r["case"], r.get("metrics") or {}
        p, ok = case["params"], r["status"] == "ok"
        link = m.get("interconnect_gbs")
        table.add_row(escape(case["backend"]), escape(case.get("device") or "?"), p["op"], size(p["bytes"]),
                      str(case.get("devices") or p.get("devices") or "-"),
                      f"{m['algbw_gbs']:.3g}" if ok else "-", f"{m['busbw_gbs']:.3g}" if ok else "-",
                      pct(m["busbw_gbs"] / link) if ok and link else "-", validity(r))
    return table


def cost_table(rows: list[dict], title: str) -> Table:
    table = _table(title, ["backend", "device", "case", "$/M input", "$/M output", "$/M blended", "$/PFLOP", "95% CI"],
                   {"$/M input", "$/M output", "$/M blended", "$/PFLOP", "95% CI"})
    for r in rows:
        if r["workload"] == "matmul":
            ci = (r["usd_per_pflop_ci95_low"], r["usd_per_pflop_ci95_high"])
            table.add_row(escape(r["backend"]), escape(r["device"] or "?"), f"matmul {r['shape']} {r['dtype']}", "", "", "",
                          usd(r["usd_per_pflop"]), f"{usd(ci[0])}–{usd(ci[1])}")
        else:
            key = "input" if r["workload"] == "prefill" else "output"
            ci = (r[f"usd_per_m_{key}_ci95_low"], r[f"usd_per_m_{key}_ci95_high"])
            table.add_row(escape(r["backend"]), escape(r["device"] or "?"),
                          escape(f"{r['workload']} {r.get('model_label') or r['model']} b{r['batch']} t{r['tokens']} {r['config']}"),
                          usd(r.get("usd_per_m_input")), usd(r.get("usd_per_m_output")),
                          usd(r.get("usd_per_m_blended")), "", f"{usd(ci[0])}–{usd(ci[1])}")
    if any(r.get("cost_split") for r in rows):
        table.caption = ("serving levels (estimate): input tokens get each level's prefill share of the time "
                         "(sum of TTFT / sum of end-to-end), output tokens the rest")
    return table


def prices_table(rows) -> Table:
    table = Table(title="price rows (USD per hour of the whole instance; the basis each is on)")
    for col in ("instance", "accelerators", "region", "basis", "$/h", "$/accelerator-h", "as of", "source"):
        table.add_column(col)
    for r in rows:
        amount = "none" if r.usd_per_hour is None else f"{r.usd_per_hour:g}"
        each = "-" if r.usd_per_hour is None or not r.accelerator_count else f"{r.per_accelerator_hour():.4g}"
        age = r.as_of + (f" [yellow]STALE ({r.age_days()} days)[/]" if r.stale() else "")
        table.add_row(escape(r.instance), escape(f"{r.accelerator_count} {r.accelerator}".strip()), escape(r.region),
                      r.pricing, amount, each, age, escape(r.source[:60] + ("..." if len(r.source) > 60 else "")))
    return table


def backends_table(probes: dict) -> Table:
    table = Table(title="backends")
    for col in ("backend", "available", "device", "notes"):
        table.add_column(col)
    for name, info in probes.items():
        if info["available"]:
            notes = "; ".join(f"no {d}: {r}" for d, r in (info.get("unsupported") or {}).items())
            table.add_row(name, "[green]yes[/]", info["device"], notes)
        else:
            table.add_row(name, "[red]no[/]", "-", info["reason"])
    return table


def compare_table(rows: list[dict], threshold: float) -> Table:
    table = _table(f"NEW vs BASE (throughput ratio = BASE time / NEW time; threshold {threshold:.0%})",
                   ["backend", "device", "case", "dtype", "throughput", "95% CI", "p", "cost", "verdict"],
                   {"throughput", "95% CI", "p", "cost"})
    colour = {"faster": "green", "slower": "red", "flagged": "yellow", "missing": "yellow", "no change": "white",
              "error": "red"}
    for r in rows:
        has = "throughput_ratio" in r
        table.add_row(escape(r["backend"]), escape(r["device"] or "?"), escape(f"{r['workload']} {r['shape']}"), r["dtype"],
                      f"{r['throughput_ratio'] - 1:+.1%}" if has else "-",
                      f"{r['ci95_low'] - 1:+.1%}..{r['ci95_high'] - 1:+.1%}" if has else "-",
                      f"{r['p_value']:.3g}" if has else "-", f"{r['cost_ratio'] - 1:+.1%}" if has else "-",
                      f"[{colour[r['verdict']]}]{r['verdict']}[/] {escape(r['note'])}")
    return table


def estimate_lines(e: dict, model: str, acc, args_dtype: str, price_per_chip_hour, basis_note: str) -> list[str]:
    """An estimate as printed: always labelled, with its formula and the catalog row it used."""
    lines = [f"[bold]ESTIMATE[/] (roofline, not a measurement){basis_note}: {model} on {e['chips']} x "
             f"{acc.name}, {args_dtype}, batch {e['batch']}, context {e['context']}",
             f"  decode step   {e['decode_step_s'] * 1e3:.2f} ms ({e['decode_bound']}-bound) -> "
             f"{e['output_tokens_per_s']:.4g} output tok/s, {e['output_tokens_per_s_per_chip']:.4g} per chip, "
             f"{1 / e['decode_step_s']:.4g} tok/s per user",
             f"  prefill       {e['prefill_s'] * 1e3:.2f} ms for {e['prompt']} tokens x {e['batch']} -> "
             f"{e['input_tokens_per_s']:.4g} input tok/s",
             f"  memory        {e['memory_needed_gb']:.1f} GB needed, {e['memory_available_gb']:.0f} GB on the chips"
             + ("" if e["fits"] else "  [red](does not fit)[/]")]
    if "experts" in e:
        lines.append(f"  experts       {e['total_params'] / 1e9:.4g}B parameters, {e['active_params'] / 1e9:.4g}B active; "
                     f"{e['top_k']} of {e['experts']} experts a token, a decode step reads "
                     f"{e['experts_read_per_layer']:.3g} a layer at batch {e['batch']}")
    if "kv_bytes_per_position" in e:
        lines.append(f"  attention     multi-head latent: {e['kv_bytes_per_position'] / 1e3:.4g} kB of KV cache a position "
                     f"(all layers), {e['batch'] * e['context'] * e['kv_bytes_per_position'] / 1e9:.3g} GB at batch "
                     f"{e['batch']} x {e['context']}")
    if e["chips"] > 1:
        kind = "expert parallel (all-to-all)" if e.get("layout", "").startswith("ep=") else "tensor parallel"
        hosts = e.get("hosts", 1)
        where = f" across {hosts} hosts (their network)" if hosts > 1 else ""
        lines.append(f"  {kind} communication {e['decode_comm_s'] * 1e3:.3f} ms per decode step over "
                     f"{e['link_gbs'] or e['interconnect_gbs']:g} GB/s a chip{where} (in the step above)"
                     if e["decode_comm_s"] is not None else
                     f"  {kind} communication not included: the catalog has no "
                     f"{'across-host network' if hosts > 1 else 'interconnect'} figure for this chip")
    if "usd_per_m_output_floor" in e:
        lines.append(f"  floor cost    {usd(e['usd_per_m_output_floor'])}/M output, "
                     f"{usd(e['usd_per_m_input_floor'])}/M input at ${price_per_chip_hour:g}/chip-hour")
    lines.append(f"[dim]  formula: {e['formula']}; ceilings from the catalog ({acc.source}; as of {acc.as_of})[/]")
    return lines
