"""The cost model: measured throughput to dollars, each figure naming the price it used.

$/M tokens = price per accelerator-hour x accelerators used / (tokens/s x 3600) x 1e6, for
input (prefill) and output (decode) tokens, blended r:1 (default 3:1). $ per PFLOP from matmul
throughput. Confidence intervals carry over from throughput (a cost bound is the price over the
opposite throughput bound).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace

from infercost.errors import InputError

from .energy import node_estimate


@dataclass(frozen=True)
class Basis:
    """What an hour of the measured hardware costs, and where that figure comes from."""
    usd_per_hour: float          # the whole instance (or the user's figure)
    accelerators_in_price: int   # accelerators the price covers; 0 for a CPU instance
    label: str                   # the price row and its as_of, or the user's flag
    accelerators_used: int = 1   # infercost runs one device per backend
    accelerator: str = ""        # the price row's accelerator ("" for a user's price: any device)
    any_device: bool = False     # price results from other devices too (named in the label)

    def per_hour_used(self, devices: int | None = None) -> float:
        """The share of the price a run pays: N of the M accelerators (chips, as price rows count
        them) the price covers is N/M of it (all of them: the whole instance). A CPU run uses the
        whole instance. A run over more accelerators than the price covers is not priced by it
        (see too_many_devices)."""
        if self.accelerators_in_price <= 0:
            return self.usd_per_hour
        used = devices or self.accelerators_used
        if used > self.accelerators_in_price:
            raise ValueError(f"{used} devices priced with a price for {self.accelerators_in_price}")
        return self.usd_per_hour / self.accelerators_in_price * used

    def assumption(self) -> str:
        if self.accelerators_in_price <= 0:
            return "the whole instance's price (a CPU run uses every core it was given)"
        return (f"the instance price split evenly over its {self.accelerators_in_price} accelerator(s); "
                f"each case pays for the devices it used (N of them: N/{self.accelerators_in_price} of the price)")


OUTPUT = ("decode", "serve")  # workloads priced per output token: the kernels' decode, an engine's serving


def owned_per_hour(purchase_usd: float, years: float, power_w: float, usd_per_kwh: float, pue: float = 1.0) -> float:
    """Owned hardware: the purchase spread evenly over its life, plus electricity at the given draw
    times the facility's PUE (power usage effectiveness: what the building draws per watt of IT)."""
    return purchase_usd / (years * 365 * 24) + power_w * pue / 1000 * usd_per_kwh


def per_million(usd_per_hour: float, tokens_per_s: float | None) -> float | None:
    return usd_per_hour / (tokens_per_s * 3600) * 1e6 if tokens_per_s else None


def per_pflop(usd_per_hour: float, tflops: float | None) -> float | None:
    return usd_per_hour / (tflops * 3600 / 1000) if tflops else None


def blend(input_cost: float | None, output_cost: float | None, ratio: float = 3.0) -> float | None:
    """ratio input tokens to each output token (3:1 by default, as Artificial Analysis blends)."""
    if input_cost is None or output_cost is None:
        return None
    return (ratio * input_cost + output_cost) / (ratio + 1)


def dtype_label(case: dict) -> str:
    """The compute dtype, marked when the device only emulates it ("bfloat16 (emulated)"): an
    emulated figure is never shown or priced as if it were native."""
    return case["dtype"] + (" (emulated)" if case.get("dtype_support") == "emulated" else "")


def config_label(case: dict) -> str:
    """The compute dtype and what else makes a transformer case a configuration of its own:
    quantized weights, an int8 KV cache, the split over devices ("float32 wint8 kv-int8 tp=4,dp=1")."""
    p = case.get("params") or {}
    out = dtype_label(case)
    if p.get("quant"):
        out += f" w{p['quant']}"
    if p.get("kv_cache"):
        out += f" kv-{p['kv_cache']}"
    if isinstance(p.get("mesh"), dict):
        mesh = p["mesh"]
        out += f" tp={mesh.get('tp', 1)},dp={mesh.get('dp', 1)}" + (f",ep={mesh['ep']}" if mesh.get("ep", 1) > 1 else "")
    return out


def model_label(case: dict) -> str:
    """A transformer case's model as a reader compares it: a mixture of experts with its total and
    active parameters ("small-moe (MoE 364M, 100M active)"), so a dense and a sparse model of
    similar quality can be told apart, and priced side by side, in any table."""
    name, moe = str((case.get("params") or {}).get("model")), case.get("moe")
    if not isinstance(moe, dict) or not moe.get("params_total"):
        return name
    size = lambda n: f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"
    return f"{name} (MoE {size(moe['params_total'])}, {size(moe['params_active'])} active)"


def cpu_only(records: list[dict]) -> bool:
    """Whether every record is a CPU run: then a bare --price-per-hour or --owned prices a CPU
    machine (no accelerators in the price) rather than one accelerator."""
    return bool(records) and all(on_cpu(r) for r in records)


def chips_used(case: dict) -> int:
    """The accelerators a case occupies as price rows count them: physical chips (a record says
    how its devices map to chips, catalog.chip_fields), else its devices."""
    return case.get("chips") or case.get("devices") or 1


def hosts_of(record: dict) -> int:
    """The hosts a run spanned (bench/multihost.py): each is one instance of the price row, unless
    the row is itself a whole multi-host slice (a TPU pod slice's row covers every chip)."""
    count = (record.get("hosts") or {}).get("count", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else 1


def too_many_devices(basis: Basis, record: dict) -> bool:
    """A record over more accelerators than the price covers (8 GPUs priced with a 1-GPU instance;
    on N hosts, N instances): the price does not say what those devices cost, so it is not priced
    with it (never capped)."""
    return basis.accelerators_in_price > 0 and chips_used(record["case"]) > basis.accelerators_in_price * hosts_of(record)


def price_record(record: dict, basis: Basis) -> dict | None:
    """The cost figures of one valid record (None for invalid ones: they have no throughput)."""
    if record.get("status") != "ok" or record["case"]["workload"] not in ("matmul", "prefill", *OUTPUT):
        return None  # a collective is a property of the machine, not something a price buys per unit
    if too_many_devices(basis, record):
        return None
    case, m = record["case"], record["metrics"]
    chips, hosts = chips_used(case), hosts_of(record)
    assumption = basis.assumption()
    if basis.accelerators_in_price <= 0:  # a CPU run: the whole instance, once a host
        rate = basis.usd_per_hour * hosts
        if hosts > 1:
            assumption += f"; the run spans {hosts} hosts: {hosts} instances"
    else:  # per chip: N hosts' instances cover N times the row's chips
        rate = basis.usd_per_hour / basis.accelerators_in_price * chips
        if chips > basis.accelerators_in_price:
            assumption += f"; the run spans {hosts} hosts: {chips / basis.accelerators_in_price:g} instances"
    row = {"backend": case["backend"], "device": case.get("device"), "workload": case["workload"],
           "shape": case.get("shape"), "dtype": dtype_label(case), "usd_per_hour_used": rate, "chips": chips,
           "hosts": hosts, "price": basis.label, "assumption": assumption}
    if case["workload"] == "matmul":
        row.update(usd_per_pflop=per_pflop(rate, m["tflops"]),
                   usd_per_pflop_ci95_low=per_pflop(rate, m.get("tflops_ci95_high")),
                   usd_per_pflop_ci95_high=per_pflop(rate, m.get("tflops_ci95_low")))
    else:
        p = case["params"]
        row.update(model=p["model"], model_label=model_label(case), batch=p["batch"], tokens=p["tokens"],
                   config=config_label(case))
        key = "input" if case["workload"] == "prefill" else "output"
        tps = m[f"{key}_tokens_per_s"]
        share = serving_split(case, m)
        if share is not None:  # a serving level's time split between its input and output tokens
            in_tps = m["input_tokens_per_s"]
            row.update(usd_per_m_input=per_million(rate * share, in_tps), input_tokens_per_usd=in_tps * 3600 / (rate * share),
                       cost_split=f"estimate: input tokens get the prefill share {share:.3f} of the time "
                                  f"(sum of TTFT / sum of end-to-end over the level's requests), output the rest")
        part = rate * (1 - share) if share is not None else rate
        row.update({f"usd_per_m_{key}": per_million(part, tps),
                    f"usd_per_m_{key}_ci95_low": per_million(part, m.get(f"{key}_tokens_per_s_ci95_high")),
                    f"usd_per_m_{key}_ci95_high": per_million(part, m.get(f"{key}_tokens_per_s_ci95_low"))})
        row[f"{key}_tokens_per_usd"] = tps * 3600 / part if tps else None
        row[f"{key}_tokens_per_s_per_chip"] = tps / chips if tps else None
        if m.get("tokens_per_mwh"):  # measured, at the boundary the record states (the board's counter)
            row.update(tokens_per_mwh=m["tokens_per_mwh"], energy_boundary=m.get("energy_boundary"))
        row.update(node_estimate(case.get("device"), chips, tps))
        if key == "output":
            row.update(tpot_s=m["tpot_s"], per_user_tokens_per_s=m["per_user_tokens_per_s"], output_tokens_per_s=tps)
    return row


def serving_split(case: dict, m: dict) -> float | None:
    """The prefill share of a serving level's time (bench/serving/metrics.py), where the level
    counted its input tokens and the share is a fraction strictly inside (0, 1); else None (all of
    the time is then priced to the output tokens, as for the kernels' decode)."""
    share = m.get("prefill_share")
    if case["workload"] != "serve" or not m.get("input_tokens_per_s") or not isinstance(share, float) or not 0 < share < 1:
        return None
    return share


def on_cpu(record: dict) -> bool:
    return record.get("case", {}).get("device_kind") == "cpu"


def applies(basis: Basis, record: dict) -> bool:
    """A price covering accelerators prices accelerator runs; a CPU instance's, CPU runs."""
    return on_cpu(record) == (basis.accelerators_in_price <= 0)


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def same_device(basis: Basis, record: dict) -> bool:
    """Whether a record's device is the accelerator of the price row (any device for a user's price).

    Same catalog entry, or the row's model name (H200, A100, MI300X, TPU v5e) inside the device's."""
    if not basis.accelerator or basis.accelerators_in_price <= 0 or on_cpu(record):
        return True
    from . import catalog
    device = record.get("case", {}).get("device") or ""
    a, b = catalog.find(basis.accelerator), catalog.lookup(device)
    if a is not None and b is not None:
        return a == b
    model = _alnum(basis.accelerator.replace("(", " ").split()[0].split("-")[0]) if basis.accelerator.split() else ""
    tokens = {_alnum(t) for t in re.split(r"[^A-Za-z0-9]+", device)}
    return bool(model) and model in tokens


def over_the_instance(records: list[dict], basis: Basis) -> list[str]:
    """Cases of valid records that ran on more accelerators than the price covers."""
    return sorted({f"{r['case']['backend']} {r['case'].get('shape')} on {r['case'].get('devices')} devices"
                   for r in records if r.get("status") == "ok" and applies(basis, r) and too_many_devices(basis, r)})


def refused_devices(records: list[dict], basis: Basis) -> list[str]:
    """Devices of valid records this price applies to by kind but not by accelerator."""
    if basis.any_device:
        return []
    return sorted({r["case"].get("device") or "?" for r in records
                   if r.get("status") == "ok" and applies(basis, r) and not same_device(basis, r)})


def price_records(records: list[dict], basis: Basis, ratio: float = 3.0) -> list[dict]:
    """Cost rows for every valid record the price applies to (its device is the row's
    accelerator, unless any_device); decode rows get a blended figure with the cheapest prefill
    of the same backend, device, model and dtype."""
    return blend_rows(priced_rows(records, basis), ratio)


def priced_rows(records: list[dict], basis: Basis) -> list[dict]:
    """The rows of price_records before blending: each record alone (so a large folder is priced in
    pieces, bench/reading.py, and blended once)."""
    return [r for r in (price_record(rec, basis) for rec in records
                        if applies(basis, rec) and (basis.any_device or same_device(basis, rec))) if r]


def blend_rows(rows: list[dict], ratio: float) -> list[dict]:
    """Each decode row's blended $/M with the cheapest prefill of its backend, device, model and dtype."""
    best_input = {}
    for r in rows:
        if r["workload"] == "prefill":
            k = (r["backend"], r["device"], r["model"], r["dtype"])
            best_input[k] = min(best_input.get(k, float("inf")), r["usd_per_m_input"])
    for r in rows:
        if r["workload"] in OUTPUT:  # a serving level with its own input price blends that
            r["usd_per_m_blended"] = blend(r.get("usd_per_m_input") or best_input.get(
                (r["backend"], r["device"], r["model"], r["dtype"])), r["usd_per_m_output"], ratio)
    return rows


def price_piece(records: list[dict], cpu_bases: list[Basis], accelerator_bases: list[Basis]) -> dict:
    """One piece of a large folder priced where it was read (a reading worker): unblended rows per
    basis, by both readings of a bare price (cpu_bases: the results are CPU runs only), and whether
    the piece held a record of an accelerator run, which decides which reading stands once every
    piece is in (see price_pieces)."""
    rows = lambda bases: [priced_rows(records, b) for b in bases]
    return {"records": len(records), "accelerator": not all(on_cpu(r) for r in records),
            "cpu": rows(cpu_bases) if cpu_bases != accelerator_bases else None, "accelerator_rows": rows(accelerator_bases)}


def price_pieces(pieces: list[dict], ratio: float) -> list[dict]:
    """The rows of price_records over every piece's records: the CPU reading of a bare price where
    all the records are CPU runs (cpu_only), else the accelerator one; blended per basis."""
    cpu = bool(sum(p["records"] for p in pieces)) and not any(p["accelerator"] for p in pieces)
    key = "cpu" if cpu and pieces[0]["cpu"] is not None else "accelerator_rows"
    per_basis = zip(*(p[key] for p in pieces)) if pieces else []
    return [row for rows in per_basis for row in blend_rows([r for part in rows for r in part], ratio)]


def frontier(rows: list[dict]) -> list[dict]:
    """Decode points that no other point beats on both cost and per-user speed, fastest first,
    per (backend, device, model, dtype, context)."""
    groups: dict = {}
    for r in rows:
        if r["workload"] in OUTPUT:
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


def at_speed(points: list[dict], min_user_tps: float) -> dict | None:
    """The $/M output tokens of one configuration (priced decode rows of one backend, device,
    model and weights at several batches) at a per-user speed target, on its measured frontier:
    where the target lies between two frontier points, throughput (and each bound of its 95%
    interval) is interpolated linearly in per-user speed between them and priced; at or below
    the slowest point, the cheapest point meeting it; faster than every point: None. Returns
    {"usd_per_m_output", "ci_low", "ci_high", "batch", "how"}."""
    front = [p for p in frontier(points) if p.get("per_user_tokens_per_s")]  # fastest first, cost falling
    meeting = [p for p in front if p["per_user_tokens_per_s"] >= min_user_tps]
    if not meeting:
        return None
    fast = meeting[-1]  # the cheapest point that meets the target
    slower = [p for p in front if p["per_user_tokens_per_s"] < min_user_tps]
    pick = lambda p, how: {"usd_per_m_output": p["usd_per_m_output"], "ci_low": p.get("usd_per_m_output_ci95_low"),
                           "ci_high": p.get("usd_per_m_output_ci95_high"), "batch": str(p["batch"]), "how": how}
    if not slower or fast["per_user_tokens_per_s"] == min_user_tps:
        return pick(fast, f"measured at batch {fast['batch']}")
    slow = slower[0]
    f = (min_user_tps - slow["per_user_tokens_per_s"]) / (fast["per_user_tokens_per_s"] - slow["per_user_tokens_per_s"])
    rate = fast["usd_per_hour_used"]

    def cost_at(key_fast: str, key_slow: str) -> float | None:
        # throughput from each point's cost at the same price: tokens/s = rate / ($/M) x 1e6 / 3600
        a, b = fast.get(key_fast), slow.get(key_slow)
        if a is None or b is None:
            return None
        tps = (1 - f) * (rate / b * 1e6 / 3600) + f * (rate / a * 1e6 / 3600)
        return per_million(rate, tps)
    return {"usd_per_m_output": cost_at("usd_per_m_output", "usd_per_m_output"),
            "ci_low": cost_at("usd_per_m_output_ci95_low", "usd_per_m_output_ci95_low"),
            "ci_high": cost_at("usd_per_m_output_ci95_high", "usd_per_m_output_ci95_high"),
            "batch": f"{slow['batch']}-{fast['batch']}",
            "how": f"interpolated between batch {fast['batch']} ({fast['per_user_tokens_per_s']:.3g} tok/s a user) "
                   f"and batch {slow['batch']} ({slow['per_user_tokens_per_s']:.3g})"}


def cheapest_within(rows: list[dict], max_tpot_s: float) -> list[dict]:
    """Per (backend, device, model, dtype, context): the cheapest decode point whose time per
    output token meets the limit."""
    best: dict = {}
    for r in rows:
        if r["workload"] in OUTPUT and r["tpot_s"] is not None and r["tpot_s"] <= max_tpot_s:
            k = (r["backend"], r["device"], r["model"], r["dtype"], r["tokens"])
            if k not in best or r["usd_per_m_output"] < best[k]["usd_per_m_output"]:
                best[k] = r
    return list(best.values())


def price_bases(*, instances=(), pricing: str = "on-demand", region: str | None = None, prices=(),
                price_per_hour: float | None = None, accelerators: int | None = None,
                owned: float | None = None, years: float = 4.0, power_w: float | None = None,
                kwh_price: float | None = None, pue: float = 1.0, cpu: bool = False, warn=None, names: dict | None = None,
                any_device: bool = False) -> list[Basis]:
    """Every price basis the user gave ([] for none): a price per hour, owned hardware, or price rows
    (one accelerator instance and one CPU instance may be given together). The CLI and the Python
    API both build their prices here.

    cpu: the results are CPU runs only, so a bare --price-per-hour or --owned covers no
    accelerators unless `accelerators` says so. warn: called with the text of each warning (an
    old price row); default: Python's warnings. names: how errors name each argument (the CLI
    passes its flags); default: the keyword names.
    """
    from infercost.numbers import number

    from . import prices as tables

    name = lambda key: (names or {}).get(key, key)
    for value, key in ((price_per_hour, "price_per_hour"), (owned, "owned"), (years, "years"),
                       (power_w, "power_w"), (kwh_price, "kwh_price"), (pue, "pue")):
        if value is not None:
            number(value, name(key))
    if accelerators is not None:
        number(accelerators, name("accelerators"), integer=True, low=0, low_open=False)
    instances = [i for i in (instances or []) if i]
    given = [name(k) for k, v in (("price_per_hour", price_per_hour), ("instance", instances or None),
                                  ("owned", owned)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give one price: {' and '.join(given)} were both given")
    n = accelerators if accelerators is not None else (0 if cpu else 1)
    if owned is not None:
        if power_w is None or kwh_price is None:
            raise InputError(f"{name('owned')} needs {name('power_w')} (the machine's draw) and "
                             f"{name('kwh_price')} (USD per kWh)")
        if pue < 1:
            raise InputError(f"{name('pue')} {pue:g}: a facility draws at least the power of what it hosts (PUE >= 1)")
        hourly = owned_per_hour(owned, years, power_w, kwh_price, pue)
        return [Basis(hourly, n, f"owned: ${owned:,.0f} over {years:g} years + {power_w:g} W x PUE {pue:g} at "
                                 f"${kwh_price:g}/kWh = ${hourly:.4g}/h ({n} accelerator(s))")]
    if price_per_hour is not None:
        return [Basis(price_per_hour, n, f"--price-per-hour {price_per_hour:g} (user, {n} accelerator(s))")]
    if not instances:
        return []
    if pricing not in tables.PRICINGS:
        raise InputError(f"unknown pricing {pricing!r}; valid: {', '.join(tables.PRICINGS)}")
    bases = []
    try:
        rows = tables.load_all(list(prices))
        for instance in instances:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                row = tables.find(rows, instance, pricing, region)
            for w in caught:
                (warn or (lambda text: warnings.warn(text, stacklevel=3)))(str(w.message))
            label = row.label() + (f" (priced for any device, not only {row.accelerator})"
                                   if any_device and row.accelerator else "")
            bases.append(Basis(row.usd_per_hour, row.accelerator_count, label, accelerator=row.accelerator,
                               any_device=any_device))
    except tables.PriceTableError as e:
        raise InputError(str(e)) from None
    kinds = [b.accelerators_in_price > 0 for b in bases]
    if len(set(kinds)) != len(kinds):
        raise InputError("give several instances only as one accelerator instance and one CPU instance")
    return bases


def whole_instance_for_cpu_runs(bases: list[Basis]) -> list[Basis]:
    """A detected instance prices every backend the machine ran, its CPUs included: add, for each
    accelerator price, the same price for CPU runs (the whole instance)."""
    return bases + [replace(b, accelerators_in_price=0, label=b.label + " (whole instance, CPU runs)")
                    for b in bases if b.accelerators_in_price > 0]
