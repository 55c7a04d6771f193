"""The fleet league table: for each model and weight format, every instance of a fleet run ranked by
$/M output tokens at its cheapest batch whose per-user speed meets a target, with 95% intervals,
the price row and its date, and whether it differs significantly from the next one down. Instances
of the fleet with no valid measurement follow below a line as roofline ESTIMATES, labelled so."""

from __future__ import annotations

from infercost.hardware import catalog
from infercost.hardware import cost as costs
from infercost.hardware.estimate import FORMULA, estimate
from infercost.kernels.dtypes import DTYPES, QuantSpec
from infercost.kernels.models import resolve_config

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def basis(tag: dict) -> costs.Basis:
    return costs.Basis(usd_per_hour=tag["usd_per_hour"], accelerators_in_price=tag["accelerator_count"],
                       label=tag["price_label"], accelerator=tag.get("accelerator") or "")


def measured(records: list[dict], min_user_tps: float, ratio: float) -> dict:
    """{(model, weights): [row per instance]}: each instance's $/M output tokens at min_user_tps per
    user on its measured frontier (cost.at_speed: interpolated between the batches around the
    target, or the cheapest batch meeting it), its best backend's, blended with its cheapest
    prefill of the same model and weights. Each record is priced by the one pricing call
    (cost.price_record) with its task's price row."""
    points: dict = {}
    prefill: dict = {}
    for rec in records:
        tag = rec.get("fleet")
        if not tag or rec["case"]["workload"] not in ("prefill", "decode", "serve"):
            continue
        b = basis(tag)
        priced = costs.price_record(rec, b) if costs.same_device(b, rec) else None
        if priced is None:  # invalid, another device, or more devices than the price covers
            continue
        case = rec["case"]
        # an engine's levels are ranked as that engine ("engine vllm"), beside the kernels' weight formats
        key = (case["params"]["model"], f"engine {engine_name(rec)}" if case["workload"] == "serve"
               else case.get("weight_dtype") or case["dtype"])
        if case["workload"] == "prefill":
            usd = priced["usd_per_m_input"]
            prefill[key + (tag["task"],)] = min(prefill.get(key + (tag["task"],), usd), usd)
            continue
        points.setdefault((key, tag["task"], case["backend"], case.get("devices") or 1), (tag, case, []))[2].append(priced)
    best: dict = {}
    for (key, task, backend, devices), (tag, case, rows) in points.items():
        at = costs.at_speed(rows, min_user_tps)
        if at is None or at["usd_per_m_output"] is None:
            continue
        # an engine's own input price (its levels' prefill share), at its cheapest level meeting the target
        inputs = [r["usd_per_m_input"] for r in rows if r.get("usd_per_m_input") and
                  (r.get("per_user_tokens_per_s") or 0) >= min_user_tps]
        row = {"instance": tag["instance"], "pricing": tag["pricing"], "task": task, "device": case.get("device"),
               "backend": backend, "batch": at["batch"], "devices": devices, "how": at["how"],
               "usd_per_m_output": at["usd_per_m_output"], "ci_low": at["ci_low"], "ci_high": at["ci_high"],
               "usd_per_m_input": min(inputs) if inputs else None,
               "price": tag["price_label"], "as_of": tag["as_of"]}
        group = best.setdefault(key, {})
        if task not in group or row["usd_per_m_output"] < group[task]["usd_per_m_output"]:
            group[task] = row
    out = {}
    for key, group in best.items():
        rows = sorted(group.values(), key=lambda r: r["usd_per_m_output"])
        for r in rows:  # kernels: the instance's cheapest prefill of the model; an engine: its own input price
            r["usd_per_m_input"] = r["usd_per_m_input"] or prefill.get(key + (r["task"],))
            r["usd_per_m_blended"] = costs.blend(r["usd_per_m_input"], r["usd_per_m_output"], ratio)
        for upper, lower in zip(rows, rows[1:]):  # 95% intervals that do not overlap: a real difference
            if None in (upper["ci_high"], lower["ci_low"]):
                upper["vs_next"] = "unknown (no interval)"
            else:
                upper["vs_next"] = "yes" if upper["ci_high"] < lower["ci_low"] else "no (intervals overlap)"
        out[key] = rows
    return out


def engine_name(rec: dict) -> str:
    """The engine behind a serving record: what --launch started, else the server it named."""
    launched = (rec.get("settings") or {}).get("launched") or {}
    served = rec["case"].get("engine") or {}
    return launched.get("engine") or served.get("server") or "endpoint"


def estimated(key: tuple, tasks: list[dict], measured_tasks: set, min_user_tps: float, context: int) -> list[dict]:
    """Roofline ESTIMATES for the fleet's instances without a measurement of this model and weights:
    the largest batch that fits and keeps min_user_tps per user, at 100% of the catalog's peaks."""
    model, weights = key
    if weights.startswith("engine "):  # no roofline stands for an engine
        return []
    try:
        cfg = resolve_config(model)
    except ValueError:
        return []
    out = []
    for t in tasks:
        acc = catalog.find(t.get("accelerator") or "")
        if t["name"] in measured_tasks or acc is None or t["accelerator_count"] <= 0:
            continue
        chosen = None
        for batch in BATCHES:
            try:
                e = estimate(cfg, acc, t["accelerator_count"], batch, context, "bfloat16",
                             QuantSpec(None if weights in DTYPES else weights))
            except ValueError:
                break
            if not e["fits"] or 1 / e["decode_step_s"] < min_user_tps:
                break
            chosen = e
        if chosen is not None:
            out.append({"instance": t["instance"], "pricing": t["pricing"], "batch": chosen["batch"],
                        "per_user_tps": 1 / chosen["decode_step_s"],
                        "usd_per_m_output": costs.per_million(t["usd_per_hour"], chosen["output_tokens_per_s"]),
                        "price": t["price_label"], "as_of": t["as_of"]})
    return sorted(out, key=lambda r: r["usd_per_m_output"])


def league(records: list[dict], manifests: list[dict], min_user_tps: float = 20.0, ratio: float = 3.0) -> list[dict]:
    """One section per (model, weights): {"model", "weights", "rows", "estimates"}."""
    tasks = [t for m in manifests for t in m.get("tasks", [])]
    contexts = {}
    for rec in records:
        if rec.get("fleet") and rec["case"]["workload"] == "decode":
            p = rec["case"]["params"]
            contexts.setdefault((p["model"], rec["case"].get("weight_dtype") or rec["case"]["dtype"]), p["tokens"])
    sections = []
    for key, rows in sorted(measured(records, min_user_tps, ratio).items()):
        est = estimated(key, tasks, {r["task"] for r in rows}, min_user_tps, contexts.get(key, 2048))
        sections.append({"model": key[0], "weights": key[1], "rows": rows, "estimates": est})
    return sections


HEAD = ["rank", "instance", "pricing", "batch", "$/M output (95% CI)", "$/M input", "$/M blended", "differs from next",
        "how", "price row"]


def table_rows(section: dict, usd) -> list[list[str]]:
    rows = [[str(i + 1), r["instance"], r["pricing"], str(r["batch"]),
             f"{usd(r['usd_per_m_output'])} ({usd(r['ci_low'])}-{usd(r['ci_high'])})", usd(r["usd_per_m_input"]),
             usd(r["usd_per_m_blended"]), r.get("vs_next", "-"), r["how"], r["price"]] for i, r in enumerate(section["rows"])]
    if section["estimates"]:
        rows.append(["---"] * len(HEAD))
        rows += [["ESTIMATE", r["instance"], r["pricing"], str(r["batch"]),
                  f"{usd(r['usd_per_m_output'])} (roofline ESTIMATE)", "-", "-", "-",
                  f"largest batch keeping {r['per_user_tps']:.3g} tok/s a user", r["price"]] for r in section["estimates"]]
    return rows


NOTE = ("Ranked by $/M output tokens at the per-user speed target on each instance's measured frontier (an engine's: "
        "its serving levels, input tokens priced by each level's prefill share): "
        "throughput interpolated between the two batches around the target (or the cheapest batch meeting it, "
        "where none is slower); 95% intervals from the measured throughput's, interpolated alike; "
        "'differs from next' is yes when the two intervals do not "
        "overlap. Below the line: instances of the fleet with no valid measurement, as roofline ESTIMATES "
        f"(bf16 compute, 100% of catalog peaks; {FORMULA}).")
