"""Bad input gets a one-line error naming the problem and the valid choices, exit 2, no traceback."""

import subprocess
import sys

import pytest

from infercost.bench.plan import plan_cases as plan
from infercost.errors import InputError as UsageError


def infercost(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "infercost.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("infercost: error:")
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--backend", "torch-mps"], ["torch-mps", "torch-cpu", "jax-tpu"]),
    (["--dtype", "float64"], ["float64", "bfloat16"]),
    (["--shape", "0x16x16"], ["0x16x16", "positive"]),
    (["--shape", "-16x16x16"], ["-16x16x16", "positive"]),
    (["--shape", "16x16"], ["MxNxK"]),
    (["--shape", "axbxc"], ["whole numbers"]),
    (["--suite", "huge"], ["huge", "quick", "full"]),
    (["--workload", "conv"], ["conv", "matmul"]),
    (["--threads", "0"], ["threads", "positive"]),
    (["--repeats", "many"], ["repeats"]),
    (["--frobnicate"], ["unrecognized"]),
    (["--collective-bytes", "0"], ["--collective-bytes", "64K"]),
    (["--collective-bytes", "lots"], ["--collective-bytes"]),
    (["--num-hosts", "2"], ["--coordinator", "--host-rank", "together"]),
    (["--coordinator", "h:1", "--num-hosts", "2", "--host-rank", "5"], ["out of range"]),
])
def test_bad_run_arguments(tmp_path, args, words):
    assert_one_line_error(infercost("run", "--out", str(tmp_path / "r.jsonl"), *args, cwd=tmp_path), *words)


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "results.jsonl"
    assert_one_line_error(infercost("run", "--out", str(out)), "cannot write results", str(out))
    assert_one_line_error(infercost("run", "--out", str(tmp_path)), "is a directory")


def test_unavailable_backend_names_the_reason_and_the_available_ones(tmp_path):
    proc = infercost("run", "--backend", "torch-cuda", "--out", str(tmp_path / "r.jsonl"))
    assert_one_line_error(proc, "torch-cuda is not available", "available: torch-cpu")


def test_tf32_without_a_cuda_backend(tmp_path):
    proc = infercost("run", "--backend", "torch-cpu", "--tf32", "--out", str(tmp_path / "r.jsonl"))
    assert_one_line_error(proc, "--tf32", "CUDA")


def test_resume_with_nothing_to_resume(tmp_path):
    assert_one_line_error(infercost("run", "--resume", cwd=tmp_path), "--resume", "--out")


def plan_args(**kw):
    return {"threads": 2, **kw}


def plan_cases(kw, backends, probes):
    return plan("quick", backends, probes, **kw)


def test_a_dtype_the_device_lacks_is_refused_with_the_valid_ones():
    probes = {"torch-cuda": {"available": True, "device": "Tesla T4",
                             "unsupported": {"bfloat16": "Tesla T4 has no native bfloat16"}}}
    with pytest.raises(UsageError, match="bfloat16 is not supported on torch-cuda.*valid: float32, float16"):
        plan_cases(plan_args(dtypes=["bfloat16"]), ["torch-cuda"], probes)
    # From a suite, the dtype is left out with a notice instead of failing the run.
    cases, notices = plan_cases(plan_args(), ["torch-cuda"], probes)
    assert cases and all(c.dtype != "bfloat16" for c in cases)
    assert any("bfloat16" in n for n in notices)


def test_tf32_and_threads_go_only_where_they_apply():
    probes = {n: {"available": True, "unsupported": {}} for n in ("torch-cpu", "torch-cuda")}
    cases, _ = plan_cases(plan_args(shapes=["64x64x64"], dtypes=["float32", "bfloat16"], tf32=True),
                          ["torch-cpu", "torch-cuda"], probes)
    tf32 = {(c.backend, c.dtype): c.tf32 for c in cases}
    assert tf32 == {("torch-cpu", "float32"): False, ("torch-cpu", "bfloat16"): False,
                    ("torch-cuda", "float32"): True, ("torch-cuda", "bfloat16"): False}
    assert {c.backend: c.threads for c in cases} == {"torch-cpu": 2, "torch-cuda": None}


def test_backends_command_lists_every_adapter():
    proc = infercost("backends")
    assert proc.returncode == 0
    for name in ("torch-cpu", "torch-cuda", "jax-cpu", "jax-gpu", "jax-tpu"):
        assert name in proc.stdout
