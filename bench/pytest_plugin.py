"""pytest-benchmark integration: infercost's kernels as benchmarks.

    pytest -p infercost.bench.pytest_plugin bench/perf/kernel_benchmarks.py --benchmark-json out.json

The `infercost_kernel` fixture returns a call that synchronises the device after the kernel
(pytest-benchmark's clock then sees the work, not the launch), checked against float64 before
it is handed out, and the case description for `benchmark.extra_info`. The accelerators used
are added to pytest-benchmark's stored machine info.
"""

from __future__ import annotations

import pytest

OPENED: dict[str, str] = {}  # backend -> device name, for the machine info


@pytest.fixture
def infercost_kernel():
    from infercost.bench.backend import Unavailable, open_backend
    from infercost.kernels.dtypes import tolerance
    from infercost.kernels.matmul import Matmul

    def make(backend_name: str, m: int, n: int, k: int, dtype: str = "float32", seed: int = 0):
        try:
            backend = open_backend(backend_name)
        except Unavailable as e:
            pytest.skip(f"{backend_name}: {e}")
        if backend.unsupported(dtype):
            pytest.skip(f"{backend_name}: {backend.unsupported(dtype)}")
        flags = backend.configure(dtype, False)
        work = Matmul(m, n, k, dtype)
        args = [backend.put(x, dtype) for x in work.inputs(seed)]
        fn = backend.compile(backend.matmul(dtype), args)
        out = fn(*args)
        check = work.check(backend.fetch(out), [backend.fetch(a) for a in args], seed)
        assert check["finite"] and check["error"] <= tolerance(dtype), f"wrong result: {check}"
        OPENED[backend.name] = backend.device_name()

        def call():
            backend.sync(fn(*args))

        case = {"backend": backend.name, "workload": "matmul", "params": {"m": m, "n": n, "k": k},
                "dtype": dtype, "tf32": False, "threads": backend.threads, "device_kind": backend.kind,
                "framework": backend.framework, "device": backend.device_name(), "shape": work.shape,
                "cache_policy": "hot", "precision_flags": flags}
        return call, {"infercost": {"case": case, "flops": work.flops(), "bytes": work.bytes(), "check": check}}

    return make


def pytest_benchmark_update_machine_info(config, machine_info):
    from infercost.hardware.host import cpu_model
    machine_info["infercost"] = {"cpu_model": cpu_model(), "devices": dict(OPENED)}
