"""The backend contract, and the registry of adapters by name.

An adapter hides one framework on one kind of device. Everything above it (planning, the
measurement pipeline, records, prices) only calls these methods and never imports torch or
jax itself; the per-framework model files (kernels/llama_torch*.py, kernels/llama_jax.py) are
reached only through `load_model`.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass

import numpy as np

from infercost.kernels.dtypes import NO_QUANT, QuantSpec

@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do, declared beside its name so that planning, pricing and fleets ask
    the capability instead of sorting adapters into kinds by name. Facts of the device found at
    run time (fp8 on this GPU, bfloat16 units on this CPU) stay with the adapter's methods."""
    device_kind: str                 # "cpu", "gpu", "tpu", ...: which suite it gets, which price applies
    vendors: tuple[str, ...] = ()    # catalog vendors whose accelerators it runs (none: the host's CPUs)
    collective: str | None = None    # how its devices exchange data when a model is split
    monitor: str | None = None       # the power and clock counters it reads around a case
    quant: tuple[str, ...] = ("int8",)  # weight quantizations it can run (fp8 where the device has it)
    tf32: bool = False               # float32 matmuls may run as TF32

    def runs(self, vendor: str | None, accelerators: int) -> bool:
        """Whether it runs on a machine with these accelerators (0: a CPU machine)."""
        return accelerators <= 0 if self.device_kind == "cpu" else accelerators > 0 and vendor in self.vendors


# name -> (module, class, capabilities). Modules are imported only when a backend is opened, so a
# machine without JAX can still run torch, and the other way round. Adding an adapter is its module
# and one line here.
REGISTRY = {
    "torch-cpu": ("infercost.bench.adapters.torch_backend", "TorchCPU",
                  Capabilities("cpu", collective="gloo")),
    "torch-cuda": ("infercost.bench.adapters.torch_backend", "TorchCUDA",
                   Capabilities("gpu", ("NVIDIA", "AMD"), "nccl", "nvml", ("int8", "fp8"), tf32=True)),
    "jax-cpu": ("infercost.bench.adapters.jax_backend", "JaxCPU", Capabilities("cpu", collective="xla")),
    "jax-gpu": ("infercost.bench.adapters.jax_backend", "JaxGPU", Capabilities("gpu", ("NVIDIA",), "xla", None, ("int8", "fp8"),
                                                                       tf32=True)),
    "jax-tpu": ("infercost.bench.adapters.jax_backend", "JaxTPU", Capabilities("tpu", ("Google",), "xla", None, ("int8", "fp8"))),
}
NAMES = tuple(REGISTRY)


def capabilities(name: str) -> Capabilities | None:
    return REGISTRY[name][2] if name in REGISTRY else None


def device_kind(name: str) -> str:
    """"cpu", "gpu" or "tpu" for a backend name ("accelerator" for one this version does not know)."""
    return REGISTRY[name][2].device_kind if name in REGISTRY else "accelerator"


def backends_for(vendor: str | None, accelerators: int) -> list[str]:
    """The adapters that run on a machine with these accelerators (for planning a fleet)."""
    return [name for name, (_, _, caps) in REGISTRY.items() if caps.runs(vendor, accelerators)]


def module_of(name: str) -> str:
    return REGISTRY[name][0]


class Unavailable(Exception):
    """The backend cannot run here; the message says why (no framework, no device)."""


class Backend:
    name: str = ""
    framework: str = ""
    kind: str = ""              # "cpu", "gpu" or "tpu" (as in REGISTRY)
    threads: int | None = None  # CPU threads the backend uses (CPU backends only)
    cache_policy: str = "hot"   # inputs stay in cache between calls unless flush() does work
    device_timer: bool = False  # time_block times device work only (CUDA events), not the host

    # -- identity -------------------------------------------------------------------
    def device_name(self) -> str:
        raise NotImplementedError

    def device_info(self) -> dict:
        """Memory, runtime and driver versions: whatever the framework can tell."""
        return {}

    def memory_bytes(self) -> int | None:
        """Device memory free for this run, when known."""
        return None

    def unsupported(self, dtype: str, tf32: bool = False) -> str | None:
        """Why this device cannot run the dtype, or None when it can."""
        if tf32:
            return f"TF32 is a mode of NVIDIA GPUs; {self.name} has none"
        return None

    def emulated(self, dtype: str) -> str | None:
        """Why the device has no native arithmetic for a dtype it still runs (a CPU without bfloat16
        units emulates it through float32), or None. Such a dtype is left out of suites and labelled
        emulated wherever it is measured."""
        if self.kind == "cpu":
            from infercost.hardware.host import dtype_emulated
            return dtype_emulated(dtype)
        return None

    def mesh_unsupported(self, mesh: dict) -> str | None:
        """Why this backend cannot split a model over the layout {"tp": n, "dp": m}, or None."""
        return f"{self.name} runs a model on one device"

    def quant_unsupported(self, quant: QuantSpec) -> str | None:
        """Why this device cannot store a model as `quant` says, or None when it can: the one check,
        from the adapter's declared capabilities and the device's fp8 units. fp8 is never upcast
        silently: only devices with native fp8 arithmetic run it."""
        if quant.weights == "fp8" and (why := self.fp8_missing()):
            return why
        caps = capabilities(self.name)
        if quant.weights and caps is not None and quant.weights not in caps.quant:
            return f"{self.name} runs no {quant.weights} weights (it runs {', '.join(caps.quant) or 'none'})"
        return None

    def fp8_missing(self) -> str | None:
        """Why this device has no native fp8 (e4m3) arithmetic, or None where it has (adapters of
        devices that can have it ask the device)."""
        return (f"{self.device_name()} has no native fp8 (e4m3) arithmetic; fp8 runs on GPUs that do "
                "(NVIDIA compute capability 8.9+, AMD MI300)")

    # -- data -----------------------------------------------------------------------
    def configure(self, dtype: str, tf32: bool) -> dict:
        """Set the framework's precision flags explicitly; return them for the record."""
        return {}

    def put(self, array: np.ndarray, dtype: str):
        """Copy a host array to the device in the given dtype."""
        raise NotImplementedError

    def fetch(self, x) -> np.ndarray:
        """Copy a device array to the host as float64."""
        raise NotImplementedError

    # -- execution ------------------------------------------------------------------
    def compile(self, fn, args, donate: tuple[int, ...] = ()):
        """Prepare fn for these arguments (jit, graph capture...); returns a callable."""
        return fn

    def sync(self, out=None) -> None:
        """Wait until the device has finished all work (and `out` is ready)."""

    def flush(self) -> None:
        """Evict the device cache between timed blocks when the policy asks for it."""

    def time_block(self, fn, args, number: int) -> float:
        """Seconds for `number` back-to-back calls, the device synchronised at both ends."""
        self.sync()
        start = time.perf_counter()
        out = None
        if hasattr(fn, "repeat"):  # ranks driven by one command a block (bench/adapters/torch_dist.py)
            out = fn.repeat(number)
        else:
            for _ in range(number):
                out = fn(*args)
        self.sync(out)
        return time.perf_counter() - start

    # On several hosts: True where every host runs the same program (JAX's multi-controller model);
    # False where host 0's process drives the others (torch ranks): those call follow_case instead.
    spmd = True

    def case_scope(self, case: dict, index: int):
        """A context around one case of a multi-host run (torch forms its group across hosts there)."""
        return contextlib.nullcontext()

    def follow_case(self, case: dict) -> str | None:
        """A host other than 0 of a backend that is not spmd: take part in host 0's case until it
        ends; why this host failed, or None."""
        raise NotImplementedError

    def agree(self, value):
        """Host 0's `value`, on every host of a multi-host run: a decision that changes which device
        work runs next (how many calls a block, one more block or not, skip or measure) must be the
        same everywhere, or the hosts' collectives stop matching. On one host, the value itself."""
        return value

    def monitor(self):
        """The device's energy, power and clocks (bench/power.py Monitor), or None."""
        return None

    # -- workloads ------------------------------------------------------------------
    def matmul(self, dtype: str, tf32: bool = False):
        """C = A @ B as a plain function of two device arrays, in true `dtype` precision
        (TF32 only when asked)."""
        raise NotImplementedError

    def load_model(self, cfg, dtype: str, batch: int, max_seq: int, *, seed: int = 0,
                   weights: dict | None = None, compile_decode: bool = True, keep_weights: bool = False,
                   mesh=None, quant: QuantSpec = NO_QUANT):
        """A Llama-family model on this device, ready to run (see ModelRunner below), or Unavailable
        with the reason where this adapter cannot split it over `mesh` or store it as `quant` says.

        weights: host arrays by Hugging Face name, or None for the seeded weights; with quantized
        weights (quant.weights "int8", "fp8") they hold kernels.quant.QWeight for every quantized
        parameter (made once on the host, the same for every backend). mesh: a device layout
        {"tp", "dp"}. quant.kv "int8": the KV cache held as int8 with a scale per head and position.
        """
        if mesh is not None and (why := self.mesh_unsupported(mesh)):
            raise Unavailable(why)
        if why := self.quant_unsupported(quant):
            raise Unavailable(why)
        return self.build_model(cfg, dtype, batch, max_seq, seed=seed, weights=weights, compile_decode=compile_decode,
                                keep_weights=keep_weights, mesh=mesh, quant=quant)

    def build_model(self, cfg, dtype: str, batch: int, max_seq: int, *, seed: int, weights: dict | None,
                    compile_decode: bool, keep_weights: bool, mesh, quant: QuantSpec):
        """load_model's work once its checks have passed; an adapter's own model builder overrides it."""
        module = importlib.import_module(f"infercost.kernels.llama_{self.framework}")
        return module.Runner(cfg, dtype, self.device, batch, max_seq, seed=seed, weights=weights,
                             compile_decode=compile_decode, keep_weights=keep_weights, kv_int8=quant.kv == "int8")

    def collective(self, op: str, per_device: int, dtype: str, devices: int, within_host: bool = False):
        """A collective over `devices` devices as (fn, args, fetch): fn(*args) runs it once on
        host-made inputs (device i holds i + 1 + j / per_device at element j); fetch(out) is the
        result as host float64 [devices, n] (what each device holds). within_host: over this
        host's devices only, in a run over several hosts. Raises Unavailable."""
        raise Unavailable(f"{self.name} has no collective workload")

    def device_count(self) -> int:
        return 1

    def read_bandwidth(self, buffers) -> tuple[float, str] | None:
        """Bytes/s a read sweep reaches over these device buffers (a model's streamed weights),
        and how it was measured; None where no sweep applies (device memory has a catalog figure)."""
        return None


# What load_model returns (kernels/llama_torch.Runner, kernels/llama_jax.Runner):
#   prefill_step(tokens, last_only=True) -> step; decode_step(tokens, pos) -> step
#       (step() runs once and returns the logits as a device array)
#   params          every device array the model holds (sync(params) waits for the build)
#   launch, prefill_launch   how decode and prefill run (compiled, eager, and why)
#   streamed()      the buffers a decode step reads in full, for a bandwidth sweep
#   weights_numpy() the weights as float64 host arrays (with keep_weights=True), for the reference


def open_backend(name: str, threads: int | None = None, hosts: dict | None = None) -> Backend:
    """Instantiate an adapter; raises Unavailable with the reason when it cannot run here.
    hosts (bench/hosts.py Hosts.as_dict() and the generation): join the other hosts of a
    multi-host run first, through the adapter module's join_hosts, before any device is touched."""
    if name not in REGISTRY:
        raise Unavailable(f"unknown backend {name!r} (valid: {', '.join(NAMES)})")
    module_name, class_name, _ = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # the framework itself is missing
        raise Unavailable(f"{e.name or e} is not installed") from None
    if hosts is not None:
        if not hasattr(module, "join_hosts"):
            raise Unavailable(f"{name} does not run across hosts")
        module.join_hosts(hosts)
    return getattr(module, class_name)(threads=threads)


def probe(name: str) -> dict:
    """Whether a backend can run here, on which device, and which dtypes it lacks."""
    try:
        backend = open_backend(name)
    except Unavailable as e:
        return {"backend": name, "available": False, "device": None, "reason": str(e)}
    from infercost.kernels.dtypes import DTYPES
    return {
        "backend": name, "available": True, "device": backend.device_name(), "reason": None,
        "unsupported": {d: r for d in DTYPES if (r := backend.unsupported(d))},
        "emulated": {d: r for d in DTYPES if (r := backend.emulated(d))},
        "memory_bytes": backend.memory_bytes(),
        "devices": backend.device_count() if backend.kind != "cpu" else 1,  # accelerators a model can span
    }
