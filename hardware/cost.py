"""The cost model: measured throughput to dollars, each figure naming the price it used.

$/M tokens = price per accelerator-hour x accelerators used / (tokens/s x 3600) x 1e6, for
input (prefill) and output (decode) tokens, blended r:1 (default 3:1). $ per PFLOP from matmul
throughput. Confidence intervals carry over from throughput (a cost bound is the price over the
opposite throughput bound).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Basis:
    """What an hour of the measured hardware costs, and where that figure comes from."""
    usd_per_hour: float          # the whole instance (or the user's figure)
    accelerators_in_price: int   # accelerators the price covers; 0 for a CPU instance
    label: str                   # the price row and its as_of, or the user's flag
    accelerators_used: int = 1   # infercost runs one device per backend

    def per_hour_used(self) -> float:
        if self.accelerators_in_price <= 0:
            return self.usd_per_hour  # a CPU run uses the whole instance
        return self.usd_per_hour / self.accelerators_in_price * self.accelerators_used

    def assumption(self) -> str:
        if self.accelerators_in_price <= 0:
            return "the whole instance's price (a CPU run uses every core it was given)"
        return (f"the instance price split evenly over its {self.accelerators_in_price} accelerator(s); "
                f"the run used {self.accelerators_used}")


def owned_per_hour(purchase_usd: float, years: float, power_w: float, usd_per_kwh: float) -> float:
    """Owned hardware: the purchase spread evenly over its life, plus electricity at the given draw."""
    return purchase_usd / (years * 365 * 24) + power_w / 1000 * usd_per_kwh


def per_million(usd_per_hour: float, tokens_per_s: float | None) -> float | None:
    return usd_per_hour / (tokens_per_s * 3600) * 1e6 if tokens_per_s else None


def per_pflop(usd_per_hour: float, tflops: float | None) -> float | None:
    return usd_per_hour / (tflops * 3600 / 1000) if tflops else None


def blend(input_cost: float | None, output_cost: float | None, ratio: float = 3.0) -> float | None:
    """ratio input tokens to each output token (3:1 by default, as Artificial Analysis blends)."""
    if input_cost is None or output_cost is None:
        return None
    return (ratio * input_cost + output_cost) / (ratio + 1)


def price_record(record: dict, basis: Basis) -> dict | None:
    """The cost figures of one valid record (None for invalid ones: they have no throughput)."""
    if record.get("status") != "ok":
        return None
    case, m = record["case"], record["metrics"]
    rate = basis.per_hour_used()
    row = {"backend": case["backend"], "device": case.get("device"), "workload": case["workload"],
           "shape": case.get("shape"), "dtype": case["dtype"], "usd_per_hour_used": rate,
           "price": basis.label, "assumption": basis.assumption()}
    if case["workload"] == "matmul":
        row.update(usd_per_pflop=per_pflop(rate, m["tflops"]),
                   usd_per_pflop_ci95_low=per_pflop(rate, m.get("tflops_ci95_high")),
                   usd_per_pflop_ci95_high=per_pflop(rate, m.get("tflops_ci95_low")))
    else:
        p = case["params"]
        row.update(model=p["model"], batch=p["batch"], tokens=p["tokens"])
        key = "input" if case["workload"] == "prefill" else "output"
        tps = m[f"{key}_tokens_per_s"]
        row.update({f"usd_per_m_{key}": per_million(rate, tps),
                    f"usd_per_m_{key}_ci95_low": per_million(rate, m.get(f"{key}_tokens_per_s_ci95_high")),
                    f"usd_per_m_{key}_ci95_high": per_million(rate, m.get(f"{key}_tokens_per_s_ci95_low"))})
        if key == "output":
            row.update(tpot_s=m["tpot_s"], per_user_tokens_per_s=m["per_user_tokens_per_s"])
    return row


def applies(basis: Basis, record: dict) -> bool:
    """A price covering accelerators prices accelerator runs; a CPU instance's, CPU runs."""
    on_cpu = record.get("case", {}).get("backend", "").endswith("-cpu")
    return on_cpu == (basis.accelerators_in_price <= 0)


def price_records(records: list[dict], basis: Basis, ratio: float = 3.0) -> list[dict]:
    """Cost rows for every valid record the price applies to; decode rows get a blended figure
    with the cheapest prefill of the same backend, device, model and dtype."""
    rows = [r for r in (price_record(rec, basis) for rec in records if applies(basis, rec)) if r]
    best_input = {}
    for r in rows:
        if r["workload"] == "prefill":
            k = (r["backend"], r["device"], r["model"], r["dtype"])
            best_input[k] = min(best_input.get(k, float("inf")), r["usd_per_m_input"])
    for r in rows:
        if r["workload"] == "decode":
            r["usd_per_m_blended"] = blend(best_input.get((r["backend"], r["device"], r["model"], r["dtype"])),
                                           r["usd_per_m_output"], ratio)
    return rows


def frontier(rows: list[dict]) -> list[dict]:
    """Decode points that no other point beats on both cost and per-user speed, fastest first,
    per (backend, device, model, dtype, context)."""
    groups: dict = {}
    for r in rows:
        if r["workload"] == "decode":
            groups.setdefault((r["backend"], r["device"], r["model"], r["dtype"], r["tokens"]), []).append(r)
    out = []
    for points in groups.values():
        points.sort(key=lambda r: -r["per_user_tokens_per_s"])
        cheapest = float("inf")
        for r in points:
            if r["usd_per_m_output"] < cheapest:
                out.append(r)
                cheapest = r["usd_per_m_output"]
    return out


def cheapest_within(rows: list[dict], max_tpot_s: float) -> list[dict]:
    """Per (backend, device, model, dtype, context): the cheapest decode point whose time per
    output token meets the limit."""
    best: dict = {}
    for r in rows:
        if r["workload"] == "decode" and r["tpot_s"] <= max_tpot_s:
            k = (r["backend"], r["device"], r["model"], r["dtype"], r["tokens"])
            if k not in best or r["usd_per_m_output"] < best[k]["usd_per_m_output"]:
                best[k] = r
    return list(best.values())
