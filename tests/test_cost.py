"""Prices and costs: hand-worked arithmetic, the SkyPilot importer, bad tables, re-pricing,
and the roofline estimator pinned to published worked examples."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from infercost.errors import InputError
from infercost.hardware import cost
from infercost.hardware.estimate import estimate
from infercost.hardware import catalog, prices
from infercost.kernels.llama import CONFIGS

FIXTURES = Path(__file__).parent / "fixtures"


def test_dollars_per_million_tokens_by_hand():
    # $2.50 an hour at 1000 tokens/s: 3.6M tokens an hour, so $2.50 / 3.6 per million.
    assert cost.per_million(2.5, 1000) == pytest.approx(0.694444, rel=1e-5)
    # 1 TFLOP/s for an hour is 3.6 PFLOP; at $3.60/h that is $1 per PFLOP.
    assert cost.per_pflop(3.6, 1.0) == pytest.approx(1.0)
    # 3:1 blend of $1 input and $5 output.
    assert cost.blend(1.0, 5.0) == pytest.approx(2.0)
    assert cost.blend(1.0, 5.0, ratio=1.0) == pytest.approx(3.0)


def test_instance_price_is_split_over_its_accelerators():
    basis = cost.Basis(55.04, 8, "aws:p5.48xlarge")
    assert basis.per_hour_used() == pytest.approx(6.88)
    assert "8 accelerator" in basis.assumption()
    assert cost.Basis(0.357, 0, "aws:c7i.2xlarge").per_hour_used() == 0.357  # CPU: whole instance


def decode_record(batch, tps, tpot, model="m", lo=None, hi=None):
    return {"status": "ok", "case": {"backend": "b", "device": "d", "workload": "decode", "dtype": "bfloat16",
                                     "shape": "", "params": {"model": model, "batch": batch, "tokens": 2048}},
            "metrics": {"output_tokens_per_s": tps, "output_tokens_per_s_ci95_low": lo or tps,
                        "output_tokens_per_s_ci95_high": hi or tps, "tpot_s": tpot, "per_user_tokens_per_s": 1 / tpot}}


def test_confidence_interval_of_throughput_carries_into_cost():
    row = cost.price_record(decode_record(1, 100.0, 0.01, lo=90.0, hi=110.0), cost.Basis(3.6, 1, "x"))
    assert row["usd_per_m_output"] == pytest.approx(10.0)
    # $3.60 an hour is $0.001 a second: at 110 tokens/s a million tokens take 9,090.9 s, $9.0909;
    # at 90 tokens/s 11,111.1 s, $11.1111 (the fast end of throughput is the cheap end of cost)
    assert row["usd_per_m_output_ci95_low"] == pytest.approx(9.090909, rel=1e-6)
    assert row["usd_per_m_output_ci95_high"] == pytest.approx(11.111111, rel=1e-6)


def test_blended_price_pairs_decode_with_the_cheapest_prefill():
    prefill = {"status": "ok", "case": {"backend": "b", "device": "d", "workload": "prefill", "dtype": "bfloat16",
                                        "shape": "", "params": {"model": "m", "batch": 1, "tokens": 2048}},
               "metrics": {"input_tokens_per_s": 1000.0}}
    rows = cost.price_records([prefill, decode_record(1, 100.0, 0.01)], cost.Basis(3.6, 1, "x"))
    decode = [r for r in rows if r["workload"] == "decode"][0]
    assert decode["usd_per_m_blended"] == pytest.approx((3 * 1.0 + 10.0) / 4)


def test_frontier_and_cheapest_batch_within_an_interactivity_limit():
    recs = [decode_record(1, 100, 0.010), decode_record(8, 640, 0.0125), decode_record(32, 1600, 0.020),
            decode_record(16, 800, 0.020)]  # batch 16 is dominated by batch 32
    rows = cost.price_records(recs, cost.Basis(3.6, 1, "x"))
    assert [r["batch"] for r in cost.frontier(rows)] == [1, 8, 32]
    (best,) = cost.cheapest_within(rows, max_tpot_s=0.015)
    assert best["batch"] == 8
    assert cost.cheapest_within(rows, max_tpot_s=0.005) == []


def test_invalid_records_are_never_priced():
    assert cost.price_record({"status": "invalid", "case": {}, "metrics": {}}, cost.Basis(1, 1, "x")) is None


def test_skypilot_importer_sums_gcp_host_and_gpu_and_counts_tpu_chips():
    rows = prices.import_skypilot(FIXTURES / "skypilot_gcp_vms.csv", "gcp", "2026-11-01")
    got = {(r["instance_type"], r["pricing"]): r for r in rows}
    a2 = got[("a2-highgpu-8g", "on-demand")]
    assert float(a2["usd_per_hour"]) == pytest.approx(5.91582 + 23.47126, rel=1e-5)
    assert a2["accelerator_count"] == 8 and a2["vcpus"] == "96"
    assert float(got[("a2-highgpu-8g", "spot")]["usd_per_hour"]) == pytest.approx(2.958 + 11.4728, rel=1e-5)
    assert ("a3-highgpu-8g", "spot") not in got  # the GPU's spot price is unknown
    assert got[("tpu-v5p-8", "on-demand")]["accelerator_count"] == 4      # suffix counts TensorCores
    assert got[("tpu-v6e-8", "on-demand")]["accelerator_count"] == 8      # suffix counts chips
    assert got[("tpu-v5litepod-16", "on-demand")]["accelerator_count"] == 16
    assert ("tpu-v6e-8", "spot") not in got       # spot equal to on-demand means unknown
    assert not any(r["instance_type"] == "tpu-v4-32" for r in rows)  # the 700.0 placeholder
    n1 = got[("n1-standard-8", "on-demand")]  # a VM with no accelerator rows is a CPU instance
    assert n1["accelerator_count"] == 0 and float(n1["usd_per_hour"]) == pytest.approx(0.379998)
    assert not any(r["accelerator"] == "T4" for r in rows)  # an attachable GPU has no instance price alone
    assert len([r for r in rows if r["instance_type"] == "a2-highgpu-8g"]) == 2  # zones collapsed


def test_imported_rows_load_as_a_valid_table(tmp_path):
    rows = prices.import_skypilot(FIXTURES / "skypilot_gcp_vms.csv", "gcp", "2026-11-01")
    prices.write(rows, tmp_path / "gcp.csv")
    table = prices.load(tmp_path / "gcp.csv")
    assert prices.find(table, "gcp:tpu-v5p-8", "spot").usd_per_hour == pytest.approx(3.3428)


def test_builtin_table_is_valid_sourced_and_dated():
    rows = prices.load(prices.PRICES_FILE)
    assert len(rows) > 50 and all(r.source and r.as_of for r in rows)
    assert {r.pricing for r in rows} >= {"on-demand", "spot"}
    assert {r.provider for r in rows} >= {"aws", "gcp", "azure", "lambda", "runpod"}
    assert any(r.accelerator_count == 0 for r in rows)  # CPU instances too


def test_old_prices_warn():
    rows = prices.load(prices.PRICES_FILE)
    with pytest.warns(UserWarning, match="days old"):
        prices.find(rows, "aws:p5.48xlarge", max_age_days=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices.find(rows, "aws:p5.48xlarge", max_age_days=100_000)


HEADER = "provider,instance_type,accelerator,accelerator_count,region,pricing,usd_per_hour,vcpus,memory_gib,as_of,source\n"


@pytest.mark.parametrize("body, words", [
    ("aws,x,H100,8,r,on-demand,-3,,,2026-01-01,s\n", ["line 2", "usd_per_hour", "negative"]),
    ("aws,x,H100,8,r,on-demand,cheap,,,2026-01-01,s\n", ["line 2", "usd_per_hour", "not a number"]),
    ("aws,x,H100,8,r,weekly,3,,,2026-01-01,s\n", ["line 2", "pricing", "on-demand"]),
    ("aws,x,H100,8,r,spot,3,,,yesterday,s\n", ["line 2", "as_of"]),
    ("aws,x,H100,eight,r,spot,3,,,2026-01-01,s\n", ["line 2", "accelerator_count"]),
])
def test_bad_tables_name_file_line_and_field(tmp_path, body, words):
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + "aws,ok,H100,8,r,spot,3,,,2026-01-01,s\n" + body)
    with pytest.raises(prices.PriceTableError) as e:
        prices.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}:3:")  # the file, and the line of the bad row
    for w in words[1:]:
        assert w in message


def test_a_row_without_a_price_says_why_is_listed_and_is_never_priced(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + "gcp,tpu7x-8,TPU7x,4,,on-demand,,,,2026-12-01,no public price: none listed\n"
                    + "gcp,tpu7x-8,TPU7x,4,,3-year,8,,,2026-12-01,a commitment quote\n")
    rows = prices.load(path)
    assert rows[0].usd_per_hour is None and rows[1].per_accelerator_hour() == 2.0
    with pytest.raises(prices.PriceTableError, match=r"^gcp:tpu7x-8 has no on-demand price: no public price: none listed"):
        prices.find(rows, "gcp:tpu7x-8")
    assert prices.find(rows, "gcp:tpu7x-8", "3-year").usd_per_hour == 8  # never a fallback from one basis to another
    with pytest.raises(prices.PriceTableError, match="no spot price for gcp:tpu7x-8; have: 3-year , on-demand "):
        prices.find(rows, "gcp:tpu7x-8", "spot")
    path.write_text(HEADER + "gcp,tpu7x-8,TPU7x,4,,on-demand,,,,2026-12-01,forgot it\n")  # a gap with no reason
    with pytest.raises(prices.PriceTableError, match=r"mine.csv:2: field 'usd_per_hour' is empty"):
        prices.load(path)
    # from the command line: one line, exit 2, nothing priced
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"schema": 1, "key": "k", **decode_record(1, 100.0, 0.01)}) + "\n")
    proc = cli("cost", str(records), "--instance", "gcp:tpu7x-8")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no on-demand price" in proc.stderr


def test_a_market_basis_prices_a_gpu_hour_and_names_its_basis():
    (basis,) = cost.price_bases(instances=["market:H100"], pricing="market-retail")
    record = decode_record(8, 1000.0, 0.008)
    record["case"].update(device="NVIDIA H100 80GB HBM3", device_kind="gpu")
    (row,) = cost.price_records([record], basis)
    assert row["usd_per_m_output"] == pytest.approx(2.00 / (1000.0 * 3600) * 1e6)  # $2.00 a GPU-hour, 1000 tok/s
    assert "market:H100 market-retail $2/h (as of 2026-07-01" in row["price"]
    with pytest.raises(InputError, match="unknown pricing 'retail'; valid: on-demand, spot, 1-year, 3-year, owned, "
                                         "market-owning, market-retail"):
        cost.price_bases(instances=["market:H100"], pricing="retail")


def test_a_device_that_is_half_a_chip_is_priced_and_held_to_ceilings_by_physical_chips():
    # Ironwood: each of a chip's two TensorCores is a JAX device of its own
    tpu = catalog.lookup("TPU7x")
    assert catalog.chip_fields("TPU7x", 8) == {"chips": 4, "devices_per_chip": 2}
    assert catalog.chip_fields("TPU7x", 1) == {"chips": 1, "devices_per_chip": 2}  # half a chip still takes the chip
    assert catalog.chip_fields("NVIDIA H100 80GB HBM3", 8) == {"chips": 8, "devices_per_chip": 1}
    assert catalog.chip_fields("AMD EPYC 9R14", 2) == {}
    assert tpu.per_device().peak("bfloat16") == pytest.approx(2307e12 / 2)  # a device's MFU: against half the chip
    assert tpu.per_device().bandwidth == pytest.approx(7.4e12 / 2)
    slice_price = cost.Basis(8.0, 4, "a 4-chip slice at $2 a chip-hour", accelerator="TPU7x")
    record = decode_record(16, 2000.0, 0.008)
    record["case"].update(device="TPU7x", device_kind="tpu", devices=8, chips=4, devices_per_chip=2)
    (row,) = cost.price_records([record], slice_price)
    assert row["chips"] == 4 and row["usd_per_hour_used"] == 8.0  # the whole slice, not 8 of its 4 chips
    assert row["output_tokens_per_s_per_chip"] == 500.0 and row["output_tokens_per_usd"] == pytest.approx(2000 * 3600 / 8.0)
    record["case"].update(devices=1, chips=1)
    (row,) = cost.price_records([record], slice_price)
    assert row["usd_per_hour_used"] == 2.0
    # the reader holds a per-chip figure to the chips the record states, not to its devices
    from infercost.bench.records import checked
    record["case"].update(devices=8, chips=4)
    record["metrics"]["output_tokens_per_s_per_chip"] = 500.0
    record["reasons"] = []
    assert checked(json.loads(json.dumps(record)))["status"] == "ok"
    record["metrics"]["output_tokens_per_s_per_chip"] = 250.0  # over 8 devices: not what 4 chips give
    assert checked(json.loads(json.dumps(record)))["status"] == "invalid"


def test_the_cost_at_a_per_user_speed_is_interpolated_on_the_frontier_with_its_interval():
    # batch 1: 50 tok/s a user and in all; batch 8: 10 a user, 80 in all (interval 70-90); $3.60 an hour
    points = [decode_record(1, 50.0, 0.02), decode_record(8, 80.0, 0.1, lo=70.0, hi=90.0)]
    for p in points:
        p["case"]["device_kind"] = "cpu"
    rows = cost.price_records(points, cost.Basis(3.6, 0, "a CPU machine"))
    at = cost.at_speed(rows, 30.0)  # halfway in per-user speed: 65 tok/s in all, $1000/65 a million
    assert at["usd_per_m_output"] == pytest.approx(1000 / 65) and at["batch"] == "8-1" and "interpolated" in at["how"]
    assert at["ci_low"] == pytest.approx(1000 / 70) and at["ci_high"] == pytest.approx(1000 / 60)  # (50+90)/2, (50+70)/2
    assert cost.at_speed(rows, 5.0)["usd_per_m_output"] == pytest.approx(1000 / 80)  # slower than all: the cheapest
    assert cost.at_speed(rows, 50.0)["how"] == "measured at batch 1"
    assert cost.at_speed(rows, 60.0) is None  # faster than every measured point: no figure


def test_a_stale_price_is_marked_wherever_it_is_named(tmp_path):
    from datetime import date, timedelta
    old, new = ((date.today() - timedelta(days=d)).isoformat() for d in (prices.MAX_AGE_DAYS + 1, 3))
    path = tmp_path / "mine.csv"
    path.write_text(HEADER + f"aws,old,,0,r,on-demand,1.5,,,{old},s\n" + f"aws,new,,0,r,on-demand,1.5,,,{new},s\n")
    rows = prices.load(path)
    with pytest.warns(UserWarning, match="days old"):
        assert f"STALE: {prices.MAX_AGE_DAYS + 1} days old" in prices.find(rows, "aws:old").label()
    assert "STALE" not in prices.find(rows, "aws:new").label()


def test_prices_shows_one_instance_on_every_basis_it_has():
    proc = cli("prices", "market:B200")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if "market:B200" in l]
    # SemiAnalysis' July-2026 TCO rows: $1.73 owning, $3.70 retail a GPU-hour, in the order of the bases
    assert [l.split("│")[4].strip() for l in lines] == ["market-owning", "market-retail"]
    assert [l.split("│")[5].strip() for l in lines] == ["1.73", "3.7"]
    assert prices.tpu_chips("tpu7x-8") == 4  # Ironwood: two TensorCores a chip


def test_a_table_missing_columns_is_refused(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("provider,instance_type\naws,x\n")
    with pytest.raises(prices.PriceTableError, match=r"short.csv:1: missing column\(s\) accelerator_count"):
        prices.load(path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "infercost.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_run_prices_itself_and_stored_results_reprice_by_hand(tmp_path):
    out = tmp_path / "run.jsonl"
    run = cli("run", "--backend", "torch-cpu", "--shape", "256x256x256", "--min-time", "0.1", "--warmup", "0.05",
              "--out", str(out), "--price-per-hour", "0.357", "--accelerators", "0")
    assert run.returncode == 0, run.stderr
    assert "--price-per-hour 0.357" in run.stdout  # priced (or, if too noisy to count, said so at that price)
    # A stored record of 0.5 TFLOP/s: $0.357/h buys 0.5 x 3600 / 1000 = 1.8 PFLOP, $0.198 a PFLOP;
    # at the c7i.2xlarge spot row ($0.1737/h), $0.0965.
    rec = json.loads(out.read_text().splitlines()[0])
    rec.update(status="ok", valid=True, reasons=[])
    rec["metrics"].update(tflops=0.5, tflops_ci95_low=0.4, tflops_ci95_high=0.6)
    stored = tmp_path / "stored.jsonl"
    stored.write_text(json.dumps(rec) + "\n")
    repriced = cli("cost", str(stored), "--price-per-hour", "0.357", "--accelerators", "0")
    assert repriced.returncode == 0, repriced.stderr
    assert "$0.198" in repriced.stdout and "$0.165–$0.248" in repriced.stdout  # 95% CI from 0.6 and 0.4 TFLOP/s
    by_row = cli("cost", str(stored), "--instance", "aws:c7i.2xlarge", "--pricing", "spot")
    assert by_row.returncode == 0 and "as of 2025-12-01" in by_row.stdout and "prices.csv:" in by_row.stdout
    assert "$0.0965" in by_row.stdout


@pytest.mark.slow
def test_a_run_without_a_price_says_so_and_never_invents_one(tmp_path):
    run = cli("run", "--backend", "torch-cpu", "--shape", "64x64x64", "--min-time", "0.1", "--warmup", "0.1",
              "--out", str(tmp_path / "r.jsonl"))
    assert run.returncode == 0 and "price is unknown" in run.stdout
    assert "$/PFLOP" not in run.stdout and "cost (measured" not in run.stdout


@pytest.mark.parametrize("args, words", [
    (["cost", "nowhere.jsonl", "--price-per-hour", "1"], ["no results"]),
    (["cost", "nowhere.jsonl", "--instance", "aws:p99.huge"], ["no price for aws:p99.huge", "p5.48xlarge"]),
    (["cost", "nowhere.jsonl", "--instance", "aws:p5.48xlarge", "--pricing", "weekly"], ["weekly", "on-demand"]),
    (["cost", "nowhere.jsonl"], ["give a price"]),
    (["estimate", "--model", "llama-3.1-8b", "--accelerator", "TPU v9"], ["not in the catalog"]),
])
def test_bad_cost_inputs_get_one_line(args, words):
    proc = cli(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr


def test_estimator_matches_scaling_book_llama3_70b_on_tpu_v5e():
    # jax-ml/scaling-book, applied inference: LLaMA-3-70B in int8, batch 32, 8k context on
    # 8 TPU v5e chips: about 17 ms per decode step, 235 tokens/s per chip.
    e = estimate(CONFIGS["llama-3.1-70b"], catalog.lookup("TPU v5e"), chips=8, batch=32, context=8192, dtype="int8")
    assert e["decode_step_s"] == pytest.approx(17e-3, rel=0.10)
    assert e["output_tokens_per_s_per_chip"] == pytest.approx(235, rel=0.10)
    assert e["decode_bound"] == "memory" and e["estimate"] is True


def test_estimator_matches_llm_analysis_llama_7b_on_a100():
    # cli99/llm-analysis: LLaMA-7B fp16 on A100-80GB, ideal: prefill of 512 tokens in 22.41 ms,
    # decode at 6.73 ms per token.
    e = estimate(CONFIGS["llama-7b"], catalog.lookup("NVIDIA A100-SXM4-80GB"), chips=1, batch=1, context=512,
                 dtype="float16", prompt=512)
    assert e["prefill_s"] == pytest.approx(22.41e-3, rel=0.10)
    assert e["decode_step_s"] == pytest.approx(6.73e-3, rel=0.10)


def test_measured_efficiency_scales_an_estimate_and_prices_the_floor():
    acc = catalog.lookup("NVIDIA H200")
    ideal = estimate(CONFIGS["llama-3.1-8b"], acc, 1, 1, 2048, "bfloat16", usd_per_chip_hour=7.9)
    real = estimate(CONFIGS["llama-3.1-8b"], acc, 1, 1, 2048, "bfloat16", mbu=0.5, usd_per_chip_hour=7.9)
    assert real["decode_step_s"] == pytest.approx(2 * ideal["decode_step_s"])
    assert real["usd_per_m_output_floor"] == pytest.approx(2 * ideal["usd_per_m_output_floor"])


def test_each_configuration_is_priced_under_its_own_label():
    # float32, int8 weights, int8 weights with an int8 KV cache, and a 4-way split of the same model,
    # batch and length: four configurations a buyer compares, never merged into one row or line.
    from infercost.present import cost_table
    from rich.console import Console

    records = []
    for extra in ({}, {"quant": "int8"}, {"quant": "int8", "kv_cache": "int8"}, {"mesh": {"tp": 4, "dp": 1}}):
        r = decode_record(1, 100.0, 0.01)
        r["case"]["params"].update(extra)
        records.append(r)
    rows = [cost.price_record(r, cost.Basis(3.6, 1, "x")) for r in records]
    assert [row["config"] for row in rows] == ["bfloat16", "bfloat16 wint8", "bfloat16 wint8 kv-int8", "bfloat16 tp=4,dp=1"]
    console = Console(width=200, record=True)
    console.print(cost_table(rows, "t"))
    text = console.export_text()
    for label in ("t2048 bfloat16 wint8 kv-int8", "t2048 bfloat16 wint8 ", "t2048 bfloat16 tp=4,dp=1"):
        assert label in text
    # The run table's dtype column names the split once (the record also carries it as `layout`).
    from infercost.present import llm_table
    split = records[3]
    split["case"]["layout"] = "tp=4,dp=1"
    split.update(warnings=[], reasons=[])
    console = Console(width=250, record=True)
    console.print(llm_table([split]))
    assert console.export_text().count("tp=4,dp=1") == 1


def test_a_serving_level_prices_its_input_tokens_from_its_prefill_share():
    # $3.60 an hour is $0.001 a second. A level that spent 25% of its requests' time before the
    # first token: input 0.00025 $/s over 1000 input tokens/s, $0.25 a million; output 0.00075 $/s
    # over 100 tokens/s (interval 90-110), $7.50 a million ($6.8182-$8.3333); blended 3:1,
    # (3 x 0.25 + 7.5) / 4 = $2.0625.
    level = decode_record(8, 100.0, 0.05, lo=90.0, hi=110.0)
    level["case"]["workload"] = "serve"
    level["metrics"].update(input_tokens_per_s=1000.0, prefill_share=0.25)
    (row,) = cost.price_records([level], cost.Basis(3.6, 1, "x"))
    assert row["usd_per_m_input"] == pytest.approx(0.25) and row["usd_per_m_output"] == pytest.approx(7.5)
    assert row["usd_per_m_output_ci95_low"] == pytest.approx(0.00075 * 1e6 / 110)
    assert row["usd_per_m_output_ci95_high"] == pytest.approx(0.00075 * 1e6 / 90)
    assert row["usd_per_m_blended"] == pytest.approx(2.0625) and "prefill share 0.250" in row["cost_split"]
    assert row["input_tokens_per_usd"] == pytest.approx(4e6) and row["output_tokens_per_usd"] == pytest.approx(100 / 0.00075)
    # without the server's input counts the whole time stays with the output tokens, as before
    level["metrics"]["input_tokens_per_s"] = None
    (row,) = cost.price_records([level], cost.Basis(3.6, 1, "x"))
    assert row["usd_per_m_output"] == pytest.approx(10.0) and "usd_per_m_input" not in row and "cost_split" not in row


def test_the_level_summary_counts_input_tokens_and_the_time_before_first_tokens():
    from infercost.bench.serving.client import Request
    from infercost.bench.serving.metrics import summarize_level
    reqs = []
    for i, (ttft, e2e, prompt) in enumerate([(0.1, 1.0, 30), (0.3, 1.0, 50)]):
        r = Request(prompt="p", max_tokens=10)
        r.start, r.ttft, r.e2e, r.output_tokens, r.prompt_tokens = 0.0, ttft, e2e, 10, prompt
        r.chunks = [r.start + ttft + k * 0.09 for k in range(10)]
        reqs.append(r)
    metrics, _, _ = summarize_level(reqs, 0.0, 2.0, {})
    assert metrics["input_tokens"] == 80 and metrics["input_tokens_per_s"] == pytest.approx(40.0)
    assert metrics["prefill_share"] == pytest.approx(0.4 / 2.0)  # (0.1 + 0.3) / (1.0 + 1.0)
    reqs[1].prompt_tokens = None  # a server that sent no usage for one request: no input count at all
    assert summarize_level(reqs, 0.0, 2.0, {})[0]["input_tokens_per_s"] is None


def test_energy_figures_say_their_boundary_and_the_node_is_an_estimate_from_sourced_power():
    # 8 H100s at 1.37 kW all-in each: 10.96 kW. 10,000 tokens/s is 36M tokens an hour, over
    # 10.96 kWh = 0.01096 MWh: 3,284,671,533 tokens a MWh. The board's counter said 2e9.
    record = decode_record(64, 10000.0, 0.05)
    record["case"].update(device="NVIDIA H100 80GB HBM3", device_kind="gpu", devices=8, chips=8)
    record["metrics"].update(tokens_per_mwh=2e9, energy_boundary="board")
    (row,) = cost.price_records([record], cost.Basis(24.0, 8, "x", accelerator="H100"))
    assert row["tokens_per_mwh"] == 2e9 and row["energy_boundary"] == "board"
    assert row["tokens_per_mwh_node_estimate"] == pytest.approx(36e6 / 0.01096)
    assert row["energy_boundary_node"].startswith("node (estimate): 1.37 kW all-in a chip x 8")
    record["case"]["device"] = "AMD EPYC 9R14"  # no sourced all-in power: no node figure, none invented
    (row,) = cost.price_records([record], cost.Basis(24.0, 8, "x"))
    assert "tokens_per_mwh_node_estimate" not in row


def test_a_run_over_two_hosts_pays_for_both_instances():
    # two 8-GPU nodes at $55.04/h each, 16 H100s, 1000 output tok/s: $110.08/h over 3.6e6 tokens an hour
    rec = {"status": "ok", "case": {"backend": "jax-gpu", "workload": "decode", "device": "NVIDIA H100 80GB HBM3",
                                    "devices": 16, "dtype": "bfloat16", "device_kind": "gpu",
                                    "params": {"model": "m", "batch": 64, "tokens": 128, "mesh": {"tp": 8, "dp": 2}}},
           "hosts": {"count": 2, "devices_per_host": 8},
           "metrics": {"output_tokens_per_s": 1000.0, "tpot_s": 0.064, "per_user_tokens_per_s": 15.625}}
    basis = cost.Basis(55.04, 8, "aws:p5.48xlarge", accelerator="H100")
    row = cost.price_record(rec, basis)
    assert row["usd_per_hour_used"] == pytest.approx(110.08) and row["hosts"] == 2
    assert row["usd_per_m_output"] == pytest.approx(110.08 / 3.6)
    assert "2 instances" in row["assumption"]
    one_host = {**rec, "hosts": {"count": 1}}  # the same 16 devices claimed on one 8-GPU instance: not priced
    assert cost.price_record(one_host, basis) is None
    cpu = {**rec, "case": {**rec["case"], "device_kind": "cpu", "device": "AMD EPYC", "devices": 2}}
    assert cost.price_record(cpu, cost.Basis(0.5, 0, "aws:c7i"))["usd_per_hour_used"] == pytest.approx(1.0)
