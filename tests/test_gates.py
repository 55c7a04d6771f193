"""Each validity gate is fed a deliberately broken measurement and must catch it."""

import numpy as np
import pytest

from infercost.bench import gates
from infercost.bench.backend import open_backend
from infercost.bench.stats import summarize
from infercost.bench.timing import Settings
from infercost.bench.adapters.torch_backend import TorchCPU
from infercost.bench.measure import measure_case
from infercost.bench.workloads import MatmulWorkload

FAST = Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=5)
rng = np.random.default_rng(0)


def levels(findings):
    return [level for level, _ in findings]


def test_steady_times_pass_every_timing_gate():
    t = list(1e-3 * (1 + 0.01 * rng.standard_normal(30)))
    assert gates.noise_gate(summarize(t)) == []
    assert gates.timer_gate(t) == []
    assert gates.warmup_gate(t) == []


def test_noisy_times_are_invalid_and_mildly_noisy_ones_warn():
    wild = list(1e-3 * rng.uniform(0.5, 2.0, 40))
    assert levels(gates.noise_gate(summarize(wild))) == ["invalid"]
    mild = list(1e-3 * (1 + rng.uniform(0, 0.3, 40)))
    assert levels(gates.noise_gate(summarize(mild))) == ["warn"]


def test_zero_variance_and_zero_time_timings_are_invalid():
    assert levels(gates.timer_gate([1e-3] * 10)) == ["invalid"]
    assert levels(gates.timer_gate([1e-3, 0.0, 1e-3])) == ["invalid"]


def test_throughput_above_the_dense_peak_is_physically_impossible():
    peak, bw = 989.4e12, 4.8e12
    assert gates.peak_gate(800e12, peak, 1e12, bw) == []
    assert levels(gates.peak_gate(1100e12, peak, None, None)) == ["invalid"]
    assert levels(gates.peak_gate(None, None, 6e12, bw)) == ["invalid"]
    assert gates.peak_gate(1e18, None, None, None) == []  # unknown peak: no claim either way


def test_time_that_does_not_grow_with_work_is_invalid():
    assert gates.scaling_gate(1e-3, 2.02e-3) == []
    assert levels(gates.scaling_gate(1e-3, 1.05e-3)) == ["invalid"]


@pytest.mark.parametrize("bad", [np.zeros((16, 16), np.float32),
                                 np.full((16, 16), 3.0, np.float32),
                                 np.where(np.eye(16) > 0, np.nan, 1.0).astype(np.float32)])
def test_zero_constant_or_nonfinite_inputs_are_invalid(bad):
    assert "invalid" in levels(gates.inputs_gate([bad]))


def test_mostly_random_inputs_with_few_zeros_pass():
    a = rng.standard_normal((64, 64)).astype(np.float32)
    a[0, :20] = 0  # 0.5% zeros
    assert gates.inputs_gate([a]) == []


def test_more_threads_than_cpus_is_oversubscription():
    assert gates.threads_gate(2, 2) == []
    assert levels(gates.threads_gate(8, 2)) == ["invalid"]


def test_a_drifting_series_and_a_slow_first_block_warn():
    drifting = list(np.linspace(1.0, 1.3, 30) * 1e-3)
    assert "warn" in levels(gates.warmup_gate(drifting))
    first_slow = [50e-3] + [1e-3] * 20
    assert any("first timed block" in r for _, r in gates.warmup_gate(first_slow))


def run_case(backend, case, settings, seed, cpus_available):
    return measure_case(backend, MatmulWorkload(case), case, settings, seed, cpus_available)


class NoSync(TorchCPU):
    """A broken adapter: it times one call however many it is asked for, like a timer that
    stops before the device has finished the queued work."""

    def time_block(self, fn, args, number):
        return super().time_block(fn, args, 1)


def test_an_adapter_that_does_not_see_the_work_is_caught_end_to_end():
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 128, "n": 128, "k": 128},
            "dtype": "float32", "tf32": False, "threads": 1}
    record = run_case(NoSync(threads=1), case, FAST, seed=0, cpus_available=2)
    assert record["status"] == "invalid"
    assert any("does not grow with work" in r for r in record["reasons"])
    assert record["metrics"]["tflops"] is None  # no throughput for an invalid result


def test_oversubscribed_cpu_run_is_invalid_end_to_end():
    case = {"backend": "torch-cpu", "workload": "matmul", "params": {"m": 64, "n": 64, "k": 64},
            "dtype": "float32", "tf32": False, "threads": 4}
    record = run_case(open_backend("torch-cpu", threads=4), case, FAST, seed=0, cpus_available=2)
    assert record["status"] == "invalid"
    assert any("oversubscription" in r for r in record["reasons"])


def test_launch_overhead_dominating_a_small_kernel_warns():
    assert gates.overhead_gate(10e-6, 11e-6) == []
    assert levels(gates.overhead_gate(6e-6, 9e-6)) == ["warn"]
    assert gates.overhead_gate(None, 9e-6) == []  # host timers cannot tell


def test_calibration_ignores_the_first_calls_one_time_cost():
    # A kernel whose first call compiles for 0.3 s and then takes ~2 ms: a block of 20 ms holds
    # about ten calls (five at least, if a busy host doubles every sleep); sizing blocks by the
    # first call would time one call a block. The first call's time is kept, apart.
    import time
    from infercost.bench.timing import measure
    calls = []

    def kernel():
        calls.append(1)
        time.sleep(0.3 if len(calls) == 1 else 0.002)

    out = measure(TorchCPU(threads=1), kernel, [], FAST)
    assert out["first_call_s"] >= 0.3
    assert 5 <= out["calls_per_block"] <= 10
    assert max(out["times"]) < 0.05  # no timed block holds the compile


def test_the_mean_interval_covers_the_true_mean_95_times_in_100():
    # Skewed times (1 ms + an exponential 0.2 ms tail, as timings are) have a known mean, 1.2 ms.
    # Over 400 independent runs of 50 times a 95% interval must hold it about 95% of the time
    # (a bootstrap interval of the mean undercovers a little at n=50: 0.90-0.98 is accepted),
    # and be about as wide as the normal theory's 2 x 1.96 x 0.2 ms / sqrt(50) = 0.111 ms.
    held, widths = 0, []
    for seed in range(400):
        t = 1e-3 + np.random.default_rng(seed).exponential(0.2e-3, 50)
        s = summarize(list(t), seed=seed)
        held += s["mean_ci95_low"] <= 1.2e-3 <= s["mean_ci95_high"]
        widths.append(s["mean_ci95_high"] - s["mean_ci95_low"])
    assert 0.90 <= held / 400 <= 0.98
    assert 0.095e-3 <= np.median(widths) <= 0.125e-3


def test_a_gpu_held_down_or_reclocked_during_a_case_is_flagged():
    from infercost.bench.gates import clock_gate
    steady = {"sm_clock_mhz": 1980, "slowdowns": []}
    assert clock_gate(steady, dict(steady)) == []
    hot = {"sm_clock_mhz": 1500, "slowdowns": ["hardware thermal slowdown"]}
    found = clock_gate(steady, hot)
    assert [kind for kind, _ in found] == ["warn", "warn"]
    assert "after the case: hardware thermal slowdown" in found[0][1] and "1980 -> 1500 MHz" in found[1][1]
    assert clock_gate(None, None) == []  # no NVML: nothing to say


def test_a_rate_interval_is_the_work_over_the_time_interval_turned_round():
    from infercost.bench.stats import rate_interval
    # 1,000 tokens a call, mean time between 0.8 and 1.25 s: 800 to 1,250 tokens/s
    assert rate_interval(1000, {"mean_ci95_low": 0.8, "mean_ci95_high": 1.25}) == (800.0, 1250.0)
