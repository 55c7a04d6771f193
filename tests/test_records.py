"""Result files: append-only JSON Lines and the pandas loader."""

import json

import pandas as pd
import pytest

import infercost
from infercost.bench.records import SCHEMA_VERSION, Writer, case_key, done_keys, read_records


def record(m, status="ok", tflops=1.5):
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": m, "n": 8, "k": 8},
            "dtype": "float32", "tf32": False, "threads": 2, "device": "Test CPU", "shape": f"{m}x8x8"}
    return {"schema": SCHEMA_VERSION, "key": case_key(case), "status": status, "valid": status == "ok",
            "reasons": [] if status == "ok" else ["why"], "warnings": [], "case": case,
            "metrics": {"tflops": tflops if status == "ok" else None},
            "stats": {"median": 1e-3, "n": 3}, "raw_times_s": [1e-3, 1.1e-3, 0.9e-3],
            "provenance": {"git_commit": "abc", "host": {"hostname": "h", "cpu_model": "Test CPU"},
                           "versions": {"torch": "2.13"}}}


def test_records_round_trip_into_one_tidy_row_each(tmp_path):
    path = tmp_path / "run.jsonl"
    w = Writer(path)
    w.write(record(8, tflops=1.25))
    w.write(record(16, status="invalid"))
    w.close()
    df = infercost.load_results(path)
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert list(df["m"]) == [8, 16]
    assert df.loc[0, "tflops"] == 1.25 and pd.isna(df.loc[1, "tflops"])
    assert df.loc[1, "reasons"] == "why" and not df.loc[1, "valid"]
    assert df.loc[0, "raw_times_s"] == [1e-3, 1.1e-3, 0.9e-3]
    assert df.loc[0, "device"] == "Test CPU" and df.loc[0, "stats_median"] == 1e-3
    assert json.loads(df.loc[0, "versions"]) == {"torch": "2.13"}


def test_each_record_is_on_disk_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "run.jsonl"
    w = Writer(path)
    w.write(record(8))
    assert len(read_records(path)) == 1  # readable before close
    w.close()


def test_a_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "run.jsonl"
    good = json.dumps(record(8))
    path.write_text(good + "\n" + json.dumps(record(16)) + "\n" + good[: len(good) // 2])
    with pytest.warns(UserWarning, match="incomplete record"):
        df = infercost.load_results(path)
    assert list(df["m"]) == [8, 16]


def test_a_folder_loads_every_run_file(tmp_path):
    for i, m in enumerate((8, 16)):
        Writer(tmp_path / f"run{i}.jsonl").write(record(m))
    assert sorted(infercost.load_results(tmp_path)["m"]) == [8, 16]


def test_done_keys_skip_errors_so_resume_retries_them(tmp_path):
    path = tmp_path / "run.jsonl"
    w = Writer(path)
    w.write(record(8))
    w.write(record(16, status="error"))
    w.close()
    assert done_keys(path) == {record(8)["key"]}
