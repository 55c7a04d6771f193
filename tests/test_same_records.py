"""The records of a fixed-seed run keep their fields and values across refactors.

tests/fixtures/fixed_seed_run.json was written by the code before the redesign (issue 9) from
the run in RUN below. Timings, and everything derived from them or from the host, are set aside:
what must not change is which fields a record has, the case it describes, what was checked,
and the work counted (FLOPs, bytes).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "fixed_seed_run.json"
RUN = ["--backend", "torch-cpu,jax-cpu", "--shape", "64x64x64", "--model", "tiny", "--batch", "1,2",
       "--tokens", "16", "--seed", "0", "--threads", "1", "--min-time", "0.05", "--warmup", "0.05",
       "--repeats", "3"]

# Values that depend on the clock or the host, compared by name only.
MEASURED = {"timing", "stats", "raw_times_s", "timestamp", "provenance", "status", "valid", "reasons",
            "warnings"}
METRICS_KEPT = {"flops", "bytes", "weight_bytes", "catalog_device", "peak_tflops"}
CASE_HOST = {"device", "launch"}  # the CPU's name; how the step launched can name a compiler error


def fields(value, prefix="") -> list[str]:
    """Dotted paths of every field (lists are leaves)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in fields(v, f"{prefix}{k}.")] or [prefix.rstrip(".")]
    return [prefix.rstrip(".")]


def stable(record: dict) -> dict:
    """The parts of a record that no clock or host can change."""
    out = {k: v for k, v in record.items() if k not in MEASURED and k not in ("check", "metrics", "case")}
    out["case"] = {k: v for k, v in record["case"].items() if k not in CASE_HOST}
    check = record.get("check") or {}
    out["check"] = {k: check.get(k) for k in ("checked", "tolerance", "passed", "finite", "greedy_tokens_agree")
                    if k in check}
    out["metrics"] = {k: v for k, v in (record.get("metrics") or {}).items() if k in METRICS_KEPT}
    return out


def summary(records: list[dict]) -> dict:
    return {r["key"]: {"fields": sorted(f for f in fields(r) if not f.startswith(("provenance.", "raw_times_s"))),
                       "stable": stable(r)} for r in records}


def run(out: Path) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--out", str(out), *RUN],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_a_fixed_seed_run_gives_the_same_record_fields_and_values(tmp_path):
    now = summary(run(tmp_path / "run.jsonl"))
    before = json.loads(FIXTURE.read_text())
    assert sorted(now) == sorted(before)
    for key in before:
        was, is_ = before[key]["stable"], now[key]["stable"]
        # Each part keeps the values it had; later issues may add fields beside them.
        for part, value in was.items():
            if isinstance(value, dict):
                assert {k: is_[part].get(k) for k in value} == value, (key, part)
            else:
                assert is_[part] == value, (key, part)
        # Fields may be added by later issues; none may disappear.
        assert set(before[key]["fields"]) <= set(now[key]["fields"]), (key, set(before[key]["fields"]) - set(now[key]["fields"]))


if __name__ == "__main__":  # python tests/test_same_records.py: rewrite the fixture from this code
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        FIXTURE.write_text(json.dumps(summary(run(Path(d) / "run.jsonl")), indent=1, sort_keys=True) + "\n")
