"""Bad input gets one line and a non-zero exit, never a traceback; nothing finished is ever lost;
no impossible number is ever priced.

Property tests (hypothesis) drive the CLI's number flags and every file reader with generated
values and corrupted, truncated, binary and adversarial files; fault tests cut, fill and share
the results file.
"""

import json
import math
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infercost.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
FAST = ["--min-time", "0.05", "--warmup", "0.05", "--repeats", "3"]
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def record(key="a", status="ok", tflops=1.0, times=(1e-3, 1.1e-3, 0.9e-3), **metrics):
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 8, "n": 8, "k": 8}, "dtype": "float32",
            "tf32": False, "threads": 2, "device": "AMD EPYC", "device_kind": "cpu", "shape": "8x8x8"}
    return {"schema": 1, "key": key, "timestamp": "2026-11-29T00:00:00+00:00", "case": case, "status": status,
            "valid": status == "ok", "reasons": [], "warnings": [], "raw_times_s": list(times),
            "stats": {"n": len(times), "mean": sum(times) / len(times), "median": 1e-3},
            "metrics": {"flops": 1024, "bytes": 768, "tflops": tflops, "tflops_ci95_low": tflops,
                        "tflops_ci95_high": tflops, **metrics}}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(capsys, *argv) -> tuple[int, list[str]]:
    """Run the CLI in this process: its exit status and its stderr lines (no traceback can hide)."""
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def assert_refused(code, err, allowed=(1, 2)):
    assert code in allowed, (code, err)
    assert len(err) == 1 and err[0].startswith("infercost: error:"), err
    assert "Traceback" not in err[0]


# -- numbers from flags --------------------------------------------------------------------

def junk_numbers():
    """Values that are not finite positive numbers: NaN, infinities, zero, negatives, words."""
    specials = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "0", "-0", "-1", "-1e-300", "1e999", "",
                                "0x10", "1,5", "one", "--", " ", "\x00", "1e-400"])
    negatives = st.floats(max_value=0.0).map(repr)
    return st.one_of(specials, negatives, st.text(alphabet="abcxyz%!$", min_size=1, max_size=6))


RUN_NUMBER_FLAGS = ["--min-time", "--warmup", "--case-timeout", "--repeats", "--threads", "--price-per-hour",
                    "--owned", "--years", "--power-w", "--kwh-price"]


@PROPERTY
@given(flag=st.sampled_from(RUN_NUMBER_FLAGS), value=junk_numbers())
def test_run_refuses_every_meaningless_number_before_measuring(capsys, tmp_path, flag, value):
    out = tmp_path / "r.jsonl"
    code, err = cli(capsys, "run", "--out", out, "--shape", "8x8x8", f"{flag}={value}")
    assert_refused(code, err, allowed=(2,))
    assert flag in err[0] and not out.exists()


@PROPERTY
@given(flag=st.sampled_from(["--price-per-hour", "--accelerators", "--max-tpot-ms", "--blend"]), value=junk_numbers())
def test_cost_refuses_meaningless_numbers_and_prints_no_dollar(capsys, tmp_path, flag, value):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(record()) + "\n")
    if flag == "--accelerators" and value.strip() in ("0", "-0"):
        return  # zero accelerators is meaningful: a CPU machine
    extra = [] if flag == "--price-per-hour" else ["--price-per-hour", "1"]
    value = f"{value}:1" if flag == "--blend" else value
    before = snapshot(tmp_path)
    code = main(["cost", str(results), *extra, f"{flag}={value}"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert_refused(code, err, allowed=(2,))
    assert "$" not in captured.out and snapshot(tmp_path) == before


@PROPERTY
@given(flag=st.sampled_from(["--chips", "--batch", "--context", "--mfu", "--mbu", "--price-per-chip-hour"]),
       value=junk_numbers())
def test_estimate_refuses_meaningless_numbers(capsys, flag, value):
    code, err = cli(capsys, "estimate", "-m", "llama-3.1-8b", "-a", "TPU v5e", f"{flag}={value}")
    assert_refused(code, err, allowed=(2,))


def test_numbers_in_range_are_accepted(capsys, tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(record()) + "\n")
    code = main(["cost", str(results), "--price-per-hour", "3.6", "--accelerators", "0", "--blend", "1:1"])
    out = capsys.readouterr().out
    # 1 TFLOP/s at $3.6/h is 3600 TFLOP per dollar... i.e. $1 per PFLOP.
    assert code == 0 and "$1" in out


# -- files ---------------------------------------------------------------------------------

def mutate(data: bytes, draw) -> bytes:
    """A corrupted copy: cut, flipped bytes, inserted binary, or emptied."""
    how = draw(st.sampled_from(["cut", "flip", "insert", "empty", "binary"]))
    if how == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=40)) + data[i:]
    if how == "binary":
        return draw(st.binary(max_size=400))
    return b""


def json_values():
    return st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                        max_leaves=12)


@PROPERTY
@given(data=st.data())
def test_results_readers_never_crash_and_never_price_a_broken_record(capsys, tmp_path, data):
    good = (json.dumps(record("a")) + "\n" + json.dumps(record("b", tflops=2.0)) + "\n").encode()
    results = tmp_path / "r.jsonl"
    results.write_bytes(mutate(good, data.draw))
    before = snapshot(tmp_path)
    for argv in (["cost", results, "--price-per-hour", "1", "--accelerators", "0"],
                 ["compare", results, results]):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if line.strip()]
        assert "Traceback" not in captured.err and "nan" not in captured.out.lower()
        assert code in (0, 1, 2)
        if code == 2 or (code == 1 and argv[0] == "cost"):  # refused: one line (compare's 1 is its verdict)
            assert len(err) == 1 and err[0].startswith("infercost: error:"), err
    assert snapshot(tmp_path) == before


@PROPERTY
@given(field=st.sampled_from(["tflops", "tflops_ci95_low", "gbps", "spread"]),
       value=st.sampled_from([float("nan"), float("inf"), -1.0, -1e-9, float("-inf")]))
def test_impossible_figures_in_a_results_file_are_never_priced(capsys, tmp_path, field, value):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(record(**{field: value})) + "\n")
    code = main(["cost", str(results), "--price-per-hour", "1", "--accelerators", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "no valid measurement" in out and "$" not in out
    code = main(["compare", str(results), str(results)])
    out = capsys.readouterr().out
    assert code == 1 and "error" in out and "no change" not in out  # broken is never "no change"


def test_compare_of_results_with_no_case_in_common_fails(capsys, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(record("x")) + "\n")
    b.write_text(json.dumps(record("y")) + "\n")
    code, err = cli(capsys, "compare", a, b)
    assert code == 2 and "no case appears in both" in err[0]


def test_a_record_of_another_schema_is_skipped_with_its_line(capsys, tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({**record("a"), "schema": 2}) + "\n" + json.dumps(record("b")) + "\n")
    code, err = cli(capsys, "cost", results, "--price-per-hour", "1", "--accelerators", "0")
    assert code == 0 and any(f"{results}:1" in e and "schema 2" in e for e in err)


@PROPERTY
@given(data=st.data())
def test_price_tables_and_skypilot_catalogs_fail_in_one_line(capsys, tmp_path, data):
    table = (Path(__file__).parents[1] / "hardware" / "prices.csv").read_bytes()[:1500]
    sky = (FIXTURES / "skypilot_gcp_vms.csv").read_bytes()[:3000]
    prices = tmp_path / "p.csv"
    prices.write_bytes(mutate(table, data.draw))
    catalog = tmp_path / "vms.csv"
    catalog.write_bytes(mutate(sky, data.draw))
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(record()) + "\n")
    for argv in (["prices", "--prices", prices], ["cost", results, "--instance", "gcp:n1-standard-4", "--prices", prices],
                 ["prices", "--import-skypilot", catalog, "--provider", "gcp", "--as-of", "2026-11-01",
                  "--out", tmp_path / "out.csv"]):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        if code != 0:
            err = [line for line in captured.err.splitlines() if line.strip()]
            assert code in (1, 2) and len(err) == 1 and err[0].startswith("infercost: error:"), err


@PROPERTY
@given(row=st.fixed_dictionaries({"usd_per_hour": st.sampled_from(["nan", "inf", "-1", "0", "1e999", "x"]),
                                  "accelerator_count": st.sampled_from(["-1", "nan", "1.5", "x"])}),
       which=st.sampled_from(["usd_per_hour", "accelerator_count"]))
def test_a_price_row_with_a_meaningless_number_is_refused_by_line_and_field(capsys, tmp_path, row, which):
    header = "provider,instance_type,accelerator,accelerator_count,region,pricing,usd_per_hour,vcpus,memory_gib,as_of,source\n"
    values = {"usd_per_hour": "2.5", "accelerator_count": "1", which: row[which]}
    table = tmp_path / "p.csv"
    table.write_text(header + f"me,box,H100,{values['accelerator_count']},r,on-demand,{values['usd_per_hour']},"
                              f"8,32,2026-11-01,mine\n")
    code, err = cli(capsys, "prices", "--prices", table)
    assert_refused(code, err, allowed=(2,))
    assert f"{table}:2" in err[0] and which in err[0]


@PROPERTY
@given(doc=json_values())
def test_ingest_of_any_json_is_records_or_one_line(capsys, tmp_path, doc):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "out.jsonl"
    code, err = cli(capsys, "ingest", path, "--out", out)
    assert_refused(code, err, allowed=(2,))
    assert not out.exists()


@PROPERTY
@given(data=st.data())
def test_ingest_of_a_corrupted_benchmark_file_is_records_or_one_line(capsys, tmp_path, data):
    stats = {"rounds": 3, "mean": 1e-3, "median": 1e-3, "min": 1e-3, "max": 1e-3, "stddev": 1e-5, "iqr": 1e-5,
             "q1": 1e-3, "q3": 1e-3, "iterations": 1, "data": [1e-3, 1.01e-3, 0.99e-3]}
    good = json.dumps({"machine_info": {"node": "h"}, "commit_info": {}, "datetime": "d", "version": "5",
                       "benchmarks": [{"name": "t", "params": {}, "stats": stats}]}).encode()
    path = tmp_path / "b.json"
    path.write_bytes(mutate(good, data.draw))
    out = tmp_path / "out.jsonl"
    out.unlink(missing_ok=True)  # hypothesis reuses tmp_path across examples
    code = main(["ingest", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code != 0:
        assert code == 2 and not out.exists()
        assert len([line for line in captured.err.splitlines() if line.strip()]) == 1


CONFIG = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 128}


def a_model_can_have(field: str, value) -> bool:
    """Written from the model's definition, not from the code: every size a positive whole number
    of sane magnitude; 4 query heads share 2 KV heads; the 64-wide hidden splits into heads of an
    even size (the rotary embedding turns pairs). KV heads left null mean one a query head, as in
    transformers."""
    if field == "num_key_value_heads" and value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return False
    if value > (10_000 if field == "num_hidden_layers" else 2**31 - 1):
        return False
    if field == "hidden_size":
        return value % 4 == 0 and (value // 4) % 2 == 0
    if field == "num_attention_heads":
        return 64 % value == 0 and (64 // value) % 2 == 0 and value % 2 == 0
    if field == "num_key_value_heads":
        return 4 % value == 0
    return True


@PROPERTY
@given(field=st.sampled_from(sorted(CONFIG)), value=st.one_of(
    st.sampled_from([0, -1, -64, 3, 7, 1.5, None, "64", True, [], {}, float("nan"), 10**30, 2**31, 10_001]),
    st.integers(1, 300)))
@example(field="num_key_value_heads", value=0)  # was read as "not given" (all heads), and estimated
def test_a_config_json_no_model_can_have_is_refused_and_any_other_is_estimated(capsys, tmp_path, field, value):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**CONFIG, field: value}))
    code, err = cli(capsys, "estimate", "-m", config, "-a", "TPU v5e")
    if a_model_can_have(field, value):
        assert code == 0, err
    else:
        assert_refused(code, err, allowed=(2,))
        assert str(config) in err[0] or "model config" in err[0]


@pytest.mark.parametrize("change,words", [
    ({"hidden_size": 65}, "not divisible"), ({"num_attention_heads": 0}, "heads"),
    ({"num_hidden_layers": -2}, "layers"), ({"num_key_value_heads": 3}, "KV heads")])
def test_config_errors_name_what_is_wrong(capsys, tmp_path, change, words):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**CONFIG, **change}))
    code, err = cli(capsys, "estimate", "-m", config, "-a", "TPU v5e")
    assert_refused(code, err, allowed=(2,))
    assert words in err[0]


def safetensors_file(path: Path, header, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def tiny_weights_header():
    from infercost.kernels.llama import CONFIGS
    header, offset = {}, 0
    for name, shape in CONFIGS["tiny"].param_shapes().items():
        n = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    return header, offset


BAD_HEADERS = {
    "a list": lambda h, n: [1, 2],
    "no data_offsets": lambda h, n: {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in h.items()},
    "beyond the file": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"], "data_offsets": [n, n + 256]}},
    "negative offset": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"], "data_offsets": [-256, 0]}},
    "overlapping": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"],
                                                           "data_offsets": h["model.embed_tokens.weight"]["data_offsets"][:1]
                                                           + [h["model.embed_tokens.weight"]["data_offsets"][0] + 256]}},
    "a -1 in a shape": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"], "shape": [-1]}},
    "sized wrong for its shape": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"], "shape": [32]}},
    "quantized": lambda h, n: {**h, "model.norm.weight": {**h["model.norm.weight"], "dtype": "I8"}},
}


@pytest.mark.parametrize("what", sorted(BAD_HEADERS))
def test_a_safetensors_header_is_checked_against_the_file_before_any_tensor_is_read(capsys, tmp_path, what):
    header, size = tiny_weights_header()
    weights = tmp_path / "model.safetensors"
    safetensors_file(weights, BAD_HEADERS[what](header, size), bytes(size))
    code, err = cli(capsys, "run", "--model", "tiny", "--weights", weights, "--out", tmp_path / "r.jsonl")
    assert_refused(code, err, allowed=(2,))
    assert str(weights) in err[0] and not (tmp_path / "r.jsonl").exists()


def test_weights_without_a_model_are_refused_not_ignored(capsys, tmp_path):
    # Without --model the suite's seeded models would run and the checkpoint be silently unused.
    header, size = tiny_weights_header()
    weights = tmp_path / "model.safetensors"
    safetensors_file(weights, header, bytes(size))
    code, err = cli(capsys, "run", "--weights", weights, "--out", tmp_path / "r.jsonl")
    assert_refused(code, err, allowed=(2,))
    assert "--model" in err[0] and not (tmp_path / "r.jsonl").exists()


@PROPERTY
@given(data=st.data())
def test_corrupted_safetensors_files_fail_in_one_line(tmp_path, data):
    from infercost.kernels.llama import read_safetensors
    header, size = tiny_weights_header()
    raw = json.dumps(header).encode()
    good = struct.pack("<Q", len(raw)) + raw + bytes(size)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(mutate(good, data.draw))
    try:
        read_safetensors(weights)
    except ValueError as e:
        assert "\n" not in str(e)


# -- records on disk -----------------------------------------------------------------------

def run(out: Path, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--out", str(out), *FAST, *args],
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_a_cut_last_line_is_moved_aside_and_resume_loses_no_case(tmp_path):
    out = tmp_path / "r.jsonl"
    first = run(out, "--backend", "torch-cpu", "--shape", "16x16x16", "--shape", "24x24x24")
    assert first.returncode == 0, first.stderr
    whole = out.read_text().splitlines()
    out.write_text(whole[0] + "\n" + whole[1][:40])  # a crash in the middle of the second record
    again = run(out, "--backend", "torch-cpu", "--shape", "16x16x16", "--shape", "24x24x24", "--resume")
    assert again.returncode == 0, again.stderr
    assert "last line was cut" in again.stderr and "1 already recorded" in again.stdout
    lines = [json.loads(l) for l in out.read_text().splitlines()]  # every line parses
    assert [json.loads(l["key"])["params"]["m"] for l in lines] == [16, 24]
    (aside,) = tmp_path.glob("r.jsonl.partial-*")
    assert aside.read_text() == whole[1][:40]


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_leaves_no_partial_record(tmp_path):
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    proc = run(Path("/dev/full"), "--backend", "torch-cpu", "--shape", "16x16x16")
    assert proc.returncode == 1, proc.stderr
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and "No space left" in err[0] and "--resume" in err[0] and "Traceback" not in proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_keeps_every_whole_record(small_disk):
    out = small_disk / "r.jsonl"
    shapes = [f"--shape={s}x{s}x{s}" for s in (8, 12, 16, 20, 24, 28)]  # ~3 KB a record: the 12 KB disk fills
    proc = run(out, "--backend", "torch-cpu", *shapes)
    assert proc.returncode == 1 and "No space left" in proc.stderr and "Traceback" not in proc.stderr
    text = out.read_text()
    assert text.endswith("\n")  # no partial record
    kept = [json.loads(l) for l in text.splitlines()]
    assert 1 <= len(kept) < len(shapes) and f"the {len(kept)} records written before it are kept" in proc.stderr


@pytest.mark.slow
def test_two_runs_on_one_file_cannot_both_run_a_case(tmp_path):
    out = tmp_path / "r.jsonl"
    # The first run holds the file for as long as its one long case takes (a ~0.1 s product timed for 20 s).
    first = subprocess.Popen([sys.executable, "-m", "infercost.cli", "run", "--out", str(out), "--backend", "torch-cpu",
                              "--shape", "2048x2048x2048", "--min-time", "30", "--warmup", "0.05"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.exists():  # created, and locked, when the first run starts its cases
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    try:
        second = run(out, "--backend", "torch-cpu", "--shape", "64x64x64")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert second.returncode == 1 and "another infercost run is writing" in second.stderr
    assert len([l for l in second.stderr.splitlines() if l.strip()]) == 1
    keys = [json.loads(l)["key"] for l in out.read_text().splitlines()]
    assert len(keys) <= 1  # the second run wrote nothing


@pytest.mark.slow
def test_records_carry_the_runs_settings_as_fields(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run(out, "--backend", "torch-cpu", "--shape", "16x16x16", "--seed", "7", "--case-timeout", "90")
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(l) for l in out.read_text().splitlines()]
    assert rec["settings"]["seed"] == 7 and rec["settings"]["case_timeout_s"] == 90
    assert rec["settings"]["min_time_s"] == 0.05 and rec["settings"]["min_blocks"] == 3


def test_results_from_another_accelerator_are_not_priced_with_an_instance_row(capsys, tmp_path):
    rec = record()
    rec["case"].update(backend="torch-cuda", device="NVIDIA H200", device_kind="gpu")
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(rec) + "\n")
    code = main(["cost", str(results), "--instance", "aws:p5.48xlarge"])  # 8 x H100
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "not priced" in out and "H100" in out and "$/PFLOP" not in out
    code = main(["cost", str(results), "--instance", "aws:p5.48xlarge", "--any-device"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "$/PFLOP" in out and "priced for any device" in out
