"""`infercost run` end to end: records, resume, and nothing lost to a kill, Ctrl-C, hang or crash."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import infercost

FAST = ["--min-time", "0.05", "--warmup", "0.05", "--repeats", "3"]


def default_sigint() -> None:
    # A run started from a script in the background inherits Ctrl-C ignored (POSIX shells do that
    # without job control), and Python then never raises KeyboardInterrupt: give the run what a
    # terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(out: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infercost.cli", "run", "--out", str(out), *FAST, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def wait_for_records(path: Path, n: int, proc, timeout=120) -> None:
    end = time.monotonic() + timeout
    while len(lines(path)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no records in time"
        time.sleep(0.05)


def workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid and "infercost.bench.worker" in cmd:
                found.append(int(entry.name))
    return found


# Five tiny cases and a last one of several seconds (a 2048^3 matmul on one thread, timed about
# 8 times), so that a run a busy host lets the test see late has still not ended.
SHAPES = [f"--shape={s}x{s}x{s}" for s in (32, 48, 64, 80, 96, 2048)]


@pytest.mark.slow
def test_a_run_writes_one_valid_record_per_case_and_prints_a_table(tmp_path):
    out = tmp_path / "run.jsonl"
    proc = start(out, "--backend", "torch-cpu,jax-cpu", "--shape", "256x256x256", "--dtype", "float32,bfloat16",
                 "--min-time", "0.3", "--repeats", "10")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    df = infercost.load_results(out)
    assert len(df) == 4 and set(df["backend"]) == {"torch-cpu", "jax-cpu"}
    assert df["check_passed"].all()
    # A loaded 2-core machine can make a case's timing fail its gates (too noisy, or twice the calls
    # not taking about twice the time); nothing else may fail.
    assert all(r == "" or r.startswith(("too noisy", "time does not grow")) for r in df["reasons"]), list(df["reasons"])
    assert (df[df["valid"]]["tflops"] > 0).all() and df["valid"].any()
    for col in ("TFLOP/s", "spread", "valid", "torch-cpu", "jax-cpu"):
        assert col in stdout
    record = lines(out)[0]
    prov = record["provenance"]
    assert record["schema"] == 1 and prov["seed"] == 0 and "run" in prov["command"]
    assert prov["host"]["cpu_model"] and prov["versions"]["numpy"]
    assert record["case"]["precision_flags"] and record["case"]["threads"] >= 1
    assert len(record["raw_times_s"]) == record["stats"]["n"] >= 3


@pytest.mark.slow
def test_kill_mid_run_keeps_finished_records_and_resume_completes_the_rest(tmp_path):
    out = tmp_path / "run.jsonl"
    proc = start(out, "--backend", "torch-cpu", "--threads", "1", *SHAPES)
    wait_for_records(out, 2, proc)
    proc.kill()
    proc.wait()
    end = time.monotonic() + 10
    while workers_of(proc.pid) and time.monotonic() < end:  # the worker dies with its runner
        time.sleep(0.1)
    assert not workers_of(proc.pid)
    kept = lines(out)  # every line written is a whole record
    assert 2 <= len(kept) < len(SHAPES)
    resumed = start(out, "--backend", "torch-cpu", "--threads", "1", "--resume", *SHAPES)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"({len(kept)} already recorded)" in stdout
    records = infercost.load_results(out)
    assert len(records) == len(SHAPES) and records["m"].is_unique
    assert records["check_passed"].all()  # every case measured once (tiny shapes may be noisy)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_every_finished_record(tmp_path):
    out = tmp_path / "run.jsonl"
    # A quick first case, then one of ~10 s (a 4096^3 matmul, ~1 s a call, timed about 8 times):
    # however late a busy host lets the test see the first record, the run has not ended.
    proc = start(out, "--backend", "torch-cpu", "--threads", "1", "--shape=32x32x32", "--shape=4096x4096x4096")
    wait_for_records(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout[-500:], stderr[-500:])
    assert "Traceback" not in stderr and "interrupted" in stderr and "--resume" in stderr
    assert len(lines(out)) >= 1


@pytest.mark.slow
def test_a_hung_case_hits_its_time_limit_and_the_run_goes_on(tmp_path):
    out = tmp_path / "run.jsonl"
    # The first case needs 40 timed blocks of ~0.2 s: far past a 2 s limit.
    proc = start(out, "--backend", "torch-cpu", "--threads", "1", "--case-timeout", "2", "--repeats", "40",
                 "--shape", "2048x2048x2048", "--shape", "64x64x64")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    first, second = lines(out)
    assert first["status"] == "error" and "timed out" in first["reasons"][0]
    # the run went on and measured the next case (a busy host's timings may mark it invalid)
    assert second["status"] in ("ok", "invalid") and second["check"]["passed"] and second["case"]["params"]["m"] == 64


@pytest.mark.slow
def test_a_worker_killed_mid_case_is_recorded_and_the_run_goes_on(tmp_path):
    out = tmp_path / "run.jsonl"
    proc = start(out, "--backend", "torch-cpu", "--threads", "1", "--min-time", "30",
                 "--shape", "512x512x512", "--shape", "64x64x64")
    end = time.monotonic() + 60
    while not workers_of(proc.pid):  # wait for the worker to be busy with case 1
        assert time.monotonic() < end and proc.poll() is None
        time.sleep(0.1)
    time.sleep(3)
    for pid in workers_of(proc.pid):
        os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    wait_for_records(out, 1, proc)
    first = lines(out)[0]
    assert first["status"] == "error" and "SIGKILL" in first["reasons"][0]
    proc.send_signal(signal.SIGINT)  # the second case would time 30 s; its start is enough
    proc.communicate(timeout=60)
