"""infercost's matmul as pytest-benchmark benchmarks (see bench/pytest_plugin.py):

    pytest -p infercost.bench.pytest_plugin bench/perf/kernel_benchmarks.py --benchmark-json out.json
    infercost ingest out.json --out results/from-pytest-benchmark.jsonl
"""

import pytest


@pytest.mark.parametrize("backend", ["torch-cpu", "jax-cpu", "torch-cuda", "jax-gpu", "jax-tpu"])
@pytest.mark.parametrize("size", [256, 512])
def test_matmul(benchmark, infercost_kernel, backend, size):
    call, info = infercost_kernel(backend, size, size, size, "float32")
    benchmark.extra_info.update(info)
    benchmark(call)
