"""Result files: append-only JSON Lines and the pandas loader."""

import json

import pandas as pd
import pytest

import infercost
from infercost.bench.reading import done_keys, read_records
from infercost.bench.records import SCHEMA_VERSION, Writer, case_key


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


def test_a_large_folder_read_in_chunks_over_processes_equals_a_line_by_line_read(tmp_path, monkeypatch):
    # The reader cuts files into chunks at line ends and reads them in a pool of processes when
    # there is much to read; here the thresholds are lowered so a few records take that path.
    from infercost.bench import reading
    folder = tmp_path / "r"
    folder.mkdir()
    expected, skipped = [], []
    for f in range(3):
        lines = []
        for i in range(40):
            rec = record(8 + i, tflops=1.0 + i)
            rec["key"] += f"#{f}-{i}"
            if i == 7:  # a secret another tool wrote: redacted wherever it is read
                rec["provenance"]["command"] = "tool --api-token s3cr3tvalue --tokens 4"
            if i == 13:
                rec["metrics"]["tflops"] = -1.0  # impossible: read, made invalid
            lines.append(json.dumps(rec))
            expected.append((rec["key"], "invalid" if i == 13 else "ok"))
            if i in (20, 31):
                lines.append("{not json")
                skipped.append(f"{folder / f'part-{f}.jsonl'}:{len(lines)}: skipped")
        (folder / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    warned = []
    serial = reading.read_paths([folder], warned.append)
    monkeypatch.setattr(reading, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(reading, "POOL_BYTES", 0)
    chunks = reading.plan(sorted(folder.glob("*.jsonl")))
    assert len(chunks) >= 20 and all(c.end > c.start for c in chunks)
    warned_pool = []
    pooled = reading.read_paths([folder], warned_pool.append)
    assert pooled == serial and [(r["key"], r["status"]) for r in pooled] == expected
    assert [w.split(" (")[0] for w in warned_pool] == [w.split(" (")[0] for w in warned]
    assert [w[:w.index("skipped") + 7] for w in warned_pool] == skipped
    text = json.dumps(pooled)
    assert "s3cr3tvalue" not in text and "--api-token ***" in text
    priced = reading.read_paths([folder], lambda w: None, keep=("key", "status"))
    assert priced == [{"key": k, "status": s} for k, s in expected]
