"""Workloads by name: what `measure_case` measures for a case."""

from __future__ import annotations

import time

import numpy as np

from infercost.kernels.dtypes import ITEMSIZE, tolerance
from infercost.kernels.matmul import Matmul

from . import gates
from .measure import Prepared
from .stats import rate_interval


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
            # the steady-state figure's interval
            **dict(zip(("tflops_ci95_low", "tflops_ci95_high"), rate_interval(flops / 1e12, stats))),
            "peak_fraction": flops / steady / peak if peak else None,
            "tflops_per_watt": flops / steady / 1e12 / power if power else None,
            **({"energy_boundary": "board"} if power else {}),  # the board's own draw, nothing around it
        }
        findings = self.input_findings + gates.peak_gate(flops / stats["min"], peak, nbytes / stats["min"],
                                                         acc.bandwidth if acc else None)
        return out, findings


class CollectiveWorkload:
    """An all-reduce, all-gather or all-to-all over N devices, reported as nccl-tests does: algorithm
    bandwidth = message bytes / time, bus bandwidth = algbw x 2(n-1)/n (all-reduce) or x (n-1)/n
    (all-gather, all-to-all), where the message is each device's buffer (all-reduce, all-to-all:
    its whole send buffer, n chunks of which it keeps one) or the gathered result (all-gather).
    An all-to-all is what a mixture of experts' dispatch and combine are under expert parallelism."""

    def __init__(self, case: dict):
        self.case, p = case, case["params"]
        self.op, self.nbytes = p["op"], p["bytes"]
        self.item = ITEMSIZE[case["dtype"]]
        self.requested = p.get("devices")
        self.n = None
        self.fn = self.args = None

    def describe(self) -> dict:
        return {"shape": f"{self.op} {self.nbytes} B"}

    def fit(self, backend) -> str | None:
        self.n = self.requested or backend.device_count()
        if self.n < 2:
            return f"{backend.name} sees {backend.device_count()} device(s); a collective needs 2 or more"
        if self.n > backend.device_count():
            return f"{self.n} devices asked for; {backend.name} sees {backend.device_count()}"
        per = self.nbytes // self.item // (self.n if self.op == "all-gather" else 1)
        if per < 1:
            return f"{self.nbytes} bytes is less than one element a device"
        if self.op == "all-to-all" and per % self.n:
            return f"an all-to-all of {per} elements a device does not split into {self.n} equal chunks"
        free = backend.memory_bytes()
        if free is not None and 3 * self.nbytes * (self.n if backend.kind == "cpu" else 1) > 0.9 * free:
            return f"needs {3 * self.nbytes / 1e9:.1f} GB a device, {free / 1e9:.1f} GB free"
        return None

    def check(self, backend, seed: int) -> tuple[dict, dict]:
        per = self.nbytes // self.item // (self.n if self.op == "all-gather" else 1)
        start = time.perf_counter()
        self.fn, self.args, fetch = backend.collective(self.op, per, self.case["dtype"], self.n,
                                                       bool(self.case["params"].get("within_host")))
        got = fetch(self.fn(*self.args))
        first_s = time.perf_counter() - start
        host = backend.fetch(self.args[0]).reshape(self.n, per)  # the inputs as the devices hold them
        if self.op == "all-reduce":
            want = np.repeat(host.sum(axis=0, keepdims=True), self.n, axis=0)
        elif self.op == "all-to-all":  # device j: chunk j of every device, in device order
            want = host.reshape(self.n, self.n, -1).transpose(1, 0, 2).reshape(self.n, -1)
        else:
            want = np.repeat(host.reshape(1, -1), self.n, axis=0)
        finite = bool(np.isfinite(got).all())
        error = float(np.abs(got - want).max() / np.abs(want).max()) if finite and got.shape == want.shape else float("inf")
        tol = tolerance(self.case["dtype"]) if self.op == "all-reduce" else 0.0  # a move is exact
        check = {"error": error, "tolerance": tol, "finite": finite, "passed": bool(finite and error <= tol),
                 "checked": f"every element on all {self.n} devices against float64"}
        return check, {"compile_and_first_call_s": first_s}

    def prepare(self, backend, seed: int) -> Prepared:
        return Prepared(self.fn, self.args, {}, {"devices": self.n})

    def work(self) -> tuple[int, int]:
        return 0, self.nbytes

    def before_timing(self, backend) -> None:
        pass

    def metrics(self, backend, acc, stats: dict, m: dict) -> tuple[dict, list]:
        steady = sum(m["times"]) / len(m["times"])
        factor = 2 * (self.n - 1) / self.n if self.op == "all-reduce" else (self.n - 1) / self.n
        algbw = self.nbytes / steady
        out = {"message_bytes": self.nbytes, "algbw_gbs": algbw / 1e9, "busbw_gbs": algbw * factor / 1e9,
               "busbw_gbs_median": self.nbytes / stats["median"] * factor / 1e9,
               "interconnect_gbs": acc.interconnect_gbs if acc else None}
        link = acc.interconnect if acc else None
        best = self.nbytes / stats["min"] * factor
        findings = []
        if link and best > gates.PEAK_MARGIN * link:
            findings.append((gates.INVALID, f"physically impossible: bus bandwidth {best / 1e9:.0f} GB/s is above "
                                            f"{gates.PEAK_MARGIN}x the interconnect's {link / 1e9:.0f} GB/s"))
        return out, findings


def make_workload(case: dict):
    if case["workload"] == "matmul":
        return MatmulWorkload(case)
    if case["workload"] == "collective":
        return CollectiveWorkload(case)
    if case["workload"] in ("prefill", "decode"):
        from .llm import TransformerWorkload
        return TransformerWorkload(case)
    raise ValueError(f"unknown workload {case['workload']!r}")
