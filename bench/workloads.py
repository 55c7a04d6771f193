"""Workloads by name: what `measure_case` measures for a case."""

from __future__ import annotations

import time

from infercost.kernels.dtypes import tolerance
from infercost.kernels.matmul import Matmul

from . import gates
from .measure import Prepared


class MatmulWorkload:
    """C = A @ B on seeded inputs, checked against the float64 product of the same rounded inputs."""

    def __init__(self, case: dict):
        self.case = case
        self.mm = Matmul(dtype=case["dtype"], **case["params"])
        self.fn = self.args = None
        self.input_findings: list = []

    def describe(self) -> dict:
        return {"shape": self.mm.shape}

    def fit(self, backend) -> str | None:
        free, need = backend.memory_bytes(), self.mm.bytes()
        if free is not None and need > 0.9 * free:
            return f"needs {need / 1e9:.1f} GB, device has {free / 1e9:.1f} GB free"
        return None

    def kernel(self, backend):
        return backend.matmul(self.case["dtype"], bool(self.case.get("tf32")))

    def check(self, backend, seed: int) -> tuple[dict, dict]:
        dtype, tf32 = self.case["dtype"], bool(self.case.get("tf32"))
        host_inputs = self.mm.inputs(seed)
        self.input_findings = gates.inputs_gate(host_inputs)
        self.args = [backend.put(x, dtype) for x in host_inputs]
        start = time.perf_counter()
        self.fn = backend.compile(self.kernel(backend), self.args)
        compiled_s = time.perf_counter() - start
        result = self.fn(*self.args)
        backend.sync(result)
        first_s = time.perf_counter() - start
        check = self.mm.check(backend.fetch(result), [backend.fetch(a) for a in self.args], seed)
        check["tolerance"] = tolerance(dtype, tf32)
        check["passed"] = bool(check["finite"] and check["error"] <= check["tolerance"])
        return check, {"compile_s": compiled_s, "compile_and_first_call_s": first_s}

    def prepare(self, backend, seed: int) -> Prepared:
        return Prepared(self.fn, self.args, {})

    def work(self) -> tuple[int, int]:
        return self.mm.flops(), self.mm.bytes()

    def before_timing(self, backend) -> None:
        pass

    def metrics(self, backend, acc, stats: dict, m: dict) -> tuple[dict, list]:
        flops, nbytes = self.work()
        steady = sum(m["times"]) / len(m["times"])
        peak = acc.peak(self.case["dtype"], bool(self.case.get("tf32"))) if acc else None
        power = m.get("power_w")
        out = {
            "tflops_median": flops / stats["median"] / 1e12,
            "tflops_ci95_low": flops / stats["mean_ci95_high"] / 1e12,  # the steady-state figure's interval
            "tflops_ci95_high": flops / stats["mean_ci95_low"] / 1e12,
            "peak_fraction": flops / steady / peak if peak else None,
            "tflops_per_watt": flops / steady / 1e12 / power if power else None,
        }
        findings = self.input_findings + gates.peak_gate(flops / stats["min"], peak, nbytes / stats["min"],
                                                         acc.bandwidth if acc else None)
        return out, findings


def make_workload(case: dict):
    if case["workload"] == "matmul":
        return MatmulWorkload(case)
    if case["workload"] in ("prefill", "decode"):
        from .llm import TransformerWorkload
        return TransformerWorkload(case)
    raise ValueError(f"unknown workload {case['workload']!r}")
