"""Correct before fast: every result is checked against float64, and wrong kernels are caught."""

import numpy as np
import pytest

from infercost.bench.backend import open_backend
from infercost.bench.timing import Settings
from infercost.bench.measure import measure_case
from infercost.bench.workloads import MatmulWorkload
from infercost.kernels.matmul import FULL_CHECK_MAX_MACS, Matmul

FAST = Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=5)


def case(backend, m, n, k, dtype="float32"):
    return {"backend": backend, "workload": "matmul", "params": {"m": m, "n": n, "k": k},
            "dtype": dtype, "tf32": False, "threads": 1}


def run_case(backend, c, settings, seed, cpus_available, workload=None):
    return measure_case(backend, workload or MatmulWorkload(c), c, settings, seed, cpus_available)


class TransposedB(MatmulWorkload):
    """A plausible bug: multiplies by B transposed (square shapes hide it from shape checks)."""

    def kernel(self, backend):
        return lambda a, b: a @ b.T


class DropsLastK(MatmulWorkload):
    """A subtler bug: the reduction skips the last slice of K."""

    def kernel(self, backend):
        return lambda a, b: a[:, :-8] @ b[:-8, :]


class ProducesNaN(MatmulWorkload):
    def kernel(self, backend):
        return lambda a, b: (a @ b) * float("nan")


@pytest.mark.parametrize("name", ["torch-cpu", "jax-cpu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_correct_kernel_passes_within_dtype_tolerance(name, dtype):
    record = run_case(open_backend(name), case(name, 96, 80, 64, dtype), FAST, seed=0, cpus_available=2)
    assert record["check"]["passed"] and record["check"]["checked"] == "full"
    assert record["check"]["error"] < (1e-6 if dtype == "float32" else 1e-2)
    # A 0.1 s timing of a tiny kernel on a busy machine may be too noisy to count; that is a
    # measurement verdict, not a correctness one.
    assert all(r.startswith(("too noisy", "time does not grow")) for r in record["reasons"]), record["reasons"]
    assert record["metrics"]["flops"] == 983040 and record["metrics"]["bytes"] == (96 * 64 + 64 * 80 + 96 * 80) * (
        4 if dtype == "float32" else 2)  # 2 x 96 x 80 x 64 multiply-adds; A, B and C once each
    assert (record["metrics"]["tflops"] is None) == (record["status"] != "ok")


@pytest.mark.parametrize("name", ["torch-cpu", "jax-cpu"])
@pytest.mark.parametrize("bug", [TransposedB, DropsLastK, ProducesNaN])
def test_wrong_kernel_is_invalid_and_reports_no_throughput(name, bug):
    c = case(name, 64, 64, 64)
    record = run_case(open_backend(name), c, FAST, seed=0, cpus_available=2,
                      workload=bug(c))
    assert record["status"] == "invalid"
    assert not record["check"]["passed"]
    assert "metrics" not in record and "raw_times_s" not in record
    assert record["reasons"][0].startswith(("wrong result", "NaN"))


def test_check_measures_relative_error_against_float64():
    w = Matmul(8, 8, 8, "float32")
    a, b = (x.astype(np.float64) for x in w.inputs(0))
    exact = a @ b
    assert w.check(exact, [a, b], 0)["error"] == 0.0
    off = exact.copy()
    off[3, 4] += 0.01 * np.abs(exact).max()
    assert w.check(off, [a, b], 0)["error"] == pytest.approx(0.01)
    assert w.check(exact[:, :7], [a, b], 0)["error"] == float("inf")


def test_large_products_are_checked_on_a_sample_that_still_catches_a_bad_row():
    m = n = 2048
    k = FULL_CHECK_MAX_MACS // (m * n) * 2  # just over the full-check limit
    w = Matmul(m, n, k, "float32")
    a, b = (x.astype(np.float64) for x in w.inputs(0))
    out = a @ b
    result = w.check(out, [a, b], 0)
    assert "rows" in result["checked"] and result["error"] < 1e-12
    out[-1, :] = 0.0  # the last row is always in the sample
    assert w.check(out, [a, b], 0)["error"] > 0.5
