"""A result record as rows of the history: one row a metric of its series (instance x case x
metric), each carrying what may explain a change at that point: the time, the git commit and
versions it ran with, the host, and the price row its cost came from."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from infercost.bench.records import as_json
from infercost.hardware import cost as costs

# The figures tracked for each workload: its speeds and, where a price applies, its costs.
SPEED = {"matmul": ("tflops",), "prefill": ("input_tokens_per_s", "ttft_s"),
         "decode": ("output_tokens_per_s", "tpot_s"), "serve": ("output_tokens_per_s", "tpot_s"),
         "collective": ("busbw_gbs",)}
PRICED = {"matmul": ("usd_per_pflop",), "prefill": ("usd_per_m_input",), "decode": ("usd_per_m_output",),
          "serve": ("usd_per_m_output",)}
LOWER_IS_BETTER = {"ttft_s", "tpot_s", "usd_per_pflop", "usd_per_m_input", "usd_per_m_output"}
PRICE_METRICS = {m for ms in PRICED.values() for m in ms}
METRICS = {m for ms in SPEED.values() for m in ms} | PRICE_METRICS

COLUMNS = ("id", "digest", "instance", "key", "case_name", "workload", "backend", "device", "metric", "time",
           "value", "low", "high", "status", "reason", "git_commit", "infercost", "versions", "host", "cpu_model",
           "price", "pricing", "usd_per_hour", "price_as_of", "source")


def direction(metric: str) -> int:
    """+1 where higher is better (rates), -1 where lower is (times, costs)."""
    return -1 if metric in LOWER_IS_BETTER else 1


def record_time(rec: dict) -> datetime | None:
    """The record's time in UTC (a time without a zone is read as UTC); None where it has none."""
    stamp = rec.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        t = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)


def fleet_basis(tag: dict) -> costs.Basis | None:
    try:
        return costs.Basis(usd_per_hour=float(tag["usd_per_hour"]), accelerators_in_price=int(tag["accelerator_count"]),
                           label=str(tag["price_label"]), accelerator=tag.get("accelerator") or "")
    except (KeyError, TypeError, ValueError):
        return None


def priced(rec: dict, bases: list) -> tuple[costs.Basis | None, dict | None]:
    """(the basis that prices this record, its cost figures): the record's own fleet price row
    first, else the first of the given bases that applies to its device."""
    tag = rec.get("fleet")
    candidates = [b for b in [fleet_basis(tag) if isinstance(tag, dict) else None] if b] or bases
    for b in candidates:
        if costs.applies(b, rec) and costs.same_device(b, rec):
            row = costs.price_record(rec, b)
            if row is not None:
                return b, row
    return (candidates[0] if candidates else None), None


AS_OF = re.compile(r"as of (\d{4}-\d{2}-\d{2})")


def rows_of(rec: dict, source: str, machine: str | None, bases: list, pricing: str | None) -> tuple[str | None, list]:
    """(why the record cannot enter the history, or None; its rows). machine: the series' instance
    name the user gave (else the fleet task's instance, the price row's, or host:<hostname>)."""
    from infercost.present import case_name
    key, when = rec.get("key"), record_time(rec)
    if not isinstance(key, str) or not key:
        return "a record without a key", []
    if when is None:
        return "a record without a time (its timestamp is missing or not an ISO time)", []
    case, prov = rec["case"], rec.get("provenance") or {}
    host = prov.get("host") or {}
    tag = rec.get("fleet") if isinstance(rec.get("fleet"), dict) else {}
    basis, cost = priced(rec, bases)
    instance = machine or tag.get("instance") or _row_instance(basis) or f"host:{host.get('hostname') or 'unknown'}"
    try:
        name = f"{case['backend']} {case_name(case)}"
    except (KeyError, TypeError):
        name = key
    price = basis.label if basis else None
    digest = hashlib.blake2b((as_json(rec) + "\x00" + (price or "")).encode(), digest_size=16).hexdigest()
    rid = hashlib.blake2b("\x00".join((instance, key, when.isoformat())).encode(), digest_size=16).hexdigest()
    versions = dict(prov.get("versions") or {})
    if case.get("engine"):  # an engine's identity (name, version) is what moves a serving series
        versions["engine"] = case["engine"]
    common = {"id": rid, "digest": digest, "instance": instance, "key": key, "case_name": name,
              "workload": case["workload"], "backend": case["backend"], "device": case.get("device"),
              "time": when, "status": rec["status"], "reason": "; ".join(map(str, rec.get("reasons") or []))[:300] or None,
              "git_commit": prov.get("git_commit"),
              "infercost": prov.get("infercost"), "versions": as_json(versions), "host": host.get("hostname"),
              "cpu_model": host.get("cpu_model"), "price": price,
              "pricing": tag.get("pricing") or (pricing if basis else None),
              "usd_per_hour": basis.usd_per_hour if basis else None,
              "price_as_of": tag.get("as_of") or (m.group(1) if price and (m := AS_OF.search(price)) else None),
              "source": source}
    if rec["status"] != "ok":  # kept (what broke, and when) but no point of any series
        return None, [{**common, "metric": None, "value": None, "low": None, "high": None}]
    m = rec.get("metrics") or {}
    rows = []
    for metric in SPEED.get(case["workload"], ()):
        if isinstance(m.get(metric), (int, float)):
            rows.append({**common, "metric": metric, "value": float(m[metric]),
                         "low": _num(m.get(f"{metric}_ci95_low")), "high": _num(m.get(f"{metric}_ci95_high"))})
    for metric in PRICED.get(case["workload"], ()) if cost else ():
        if isinstance(cost.get(metric), (int, float)):
            rows.append({**common, "metric": metric, "value": float(cost[metric]),
                         "low": _num(cost.get(f"{metric}_ci95_low")), "high": _num(cost.get(f"{metric}_ci95_high"))})
    return None, rows or [{**common, "metric": None, "value": None, "low": None, "high": None}]


def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _row_instance(basis) -> str | None:
    """provider:instance_type of a price-row basis (its label starts with it)."""
    if basis is None:
        return None
    first = basis.label.split(" ", 1)[0]
    return first if ":" in first and not first.startswith("--") else None


def rows_of_chunk(records: list, source: str, machine, bases, pricing) -> tuple[list, list]:
    """(rows, problems as (why, the record's key)) of a chunk of records: run where the chunk was read."""
    rows, problems = [], []
    for rec in records:
        why, got = rows_of(rec, source, machine, bases, pricing)
        if why:
            problems.append((why, rec.get("key")))
        rows += got
    return rows, problems
