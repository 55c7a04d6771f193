"""A synthetic results history, made from real records (no downloaded data): one result file a
night for --nights nights, each night's records copies of the template's valid records with their
figures moved by planted events and noise. For the README's history figure, the tests and
bench/perf/history.py.

    python scripts/make_history.py --out /tmp/nightly [--nights 40] [--noise 0.02] [--seed 0]
        [--template examples/results/cpu-quick-amd-epyc-2core.jsonl]

Planted events (each a night, from the end): a torch upgrade that slows every torch-cpu figure by
8% (night 25, "torch 2.13.0+cpu" -> "2.14.0+cpu"), and a price row change (night 12: the instance's
on-demand price from $0.0832/h to $0.0998/h, as of a later date) that moves every cost and no speed.
Every record is tagged as a fleet task's would be (`fleet collect`), so each night is priced at its
own price row.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "examples/results/cpu-quick-amd-epyc-2core.jsonl"
SUFFIXES = ("_ci95_low", "_ci95_high", "_median", "_per_chip")
PRICE_BEFORE, PRICE_AFTER = 0.0832, 0.0998


def faster(rec: dict, factor: float) -> dict:
    """The record as if it ran `factor` times as fast: rates and shares up, times down."""
    m = rec["metrics"]
    for k, v in list(m.items()):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or k in ("flops", "bytes"):
            continue
        base = k
        for s in SUFFIXES:
            base = base.removesuffix(s)
        if base.endswith("_s") and not base.endswith("per_s"):
            m[k] = v / factor
        elif any(w in base for w in ("per_s", "tflops", "gbps", "mbu", "mfu", "fraction", "per_watt", "busbw", "algbw")):
            m[k] = v * factor
    if rec.get("raw_times_s"):
        rec["raw_times_s"] = [t / factor for t in rec["raw_times_s"]]
    for k, v in (rec.get("stats") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n":
            rec["stats"][k] = v / factor
    return rec


def nightly(template: list[dict], nights: int, noise: float, seed: int, start: datetime,
            upgrade_at: int | None = 25, price_at: int | None = 12, slowdown: float = 0.92) -> list[list[dict]]:
    """The records of each night (a list a night); events counted in nights from the end."""
    rng = random.Random(seed)
    out = []
    for night in range(nights):
        left = nights - night
        upgraded = upgrade_at is not None and left <= upgrade_at
        repriced = price_at is not None and left <= price_at
        when = start + timedelta(days=night)
        recs = []
        for t in template:
            rec = copy.deepcopy(t)
            factor = (slowdown if upgraded and rec["case"]["backend"] == "torch-cpu" else 1.0) * (1 + rng.gauss(0, noise))
            faster(rec, factor)
            rec["timestamp"] = (when + timedelta(seconds=len(recs))).isoformat(timespec="seconds")
            prov = rec.setdefault("provenance", {})
            prov["started"] = when.isoformat(timespec="seconds")
            prov["git_commit"] = hashlib.sha1(f"night {night}".encode()).hexdigest()
            versions = prov.setdefault("versions", {})
            if "torch" in versions:
                versions["torch"] = "2.14.0+cpu" if upgraded else "2.13.0+cpu"
            price = PRICE_AFTER if repriced else PRICE_BEFORE
            as_of = "2026-11-01" if repriced else "2026-06-01"
            rec["fleet"] = {"task": "c7i-large", "instance": "aws:c7i.large", "pricing": "on-demand", "region": "us-east-1",
                            "accelerator": "", "accelerator_count": 0, "usd_per_hour": price, "as_of": as_of,
                            "price_label": f"aws:c7i.large us-east-1 on-demand ${price:g}/h (as of {as_of}; synthetic)"}
            recs.append(rec)
        out.append(recs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--nights", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--template", type=Path, default=TEMPLATE)
    a = ap.parse_args()
    template = [r for r in map(json.loads, a.template.read_text().splitlines()) if r["status"] == "ok"]
    start = datetime(2026, 10, 1, 2, 0, tzinfo=timezone.utc)
    a.out.mkdir(parents=True, exist_ok=True)
    for recs in nightly(template, a.nights, a.noise, a.seed, start):
        name = f"night-{recs[0]['timestamp'][:10]}.jsonl"
        (a.out / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    print(f"{a.nights} nights of {len(template)} records in {a.out}/")


if __name__ == "__main__":
    main()
