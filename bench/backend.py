"""The backend contract, and the registry of adapters by name.

An adapter hides one framework on one kind of device. Everything above it (timing,
checks, records) only calls these methods, and never imports torch or jax itself.
"""

from __future__ import annotations

import importlib
import time

import numpy as np

# name -> (module, class); modules are imported only when a backend is opened, so a
# machine without JAX can still run torch, and the other way round.
REGISTRY = {
    "torch-cpu": ("infercost.bench.torch_backend", "TorchCPU"),
    "torch-cuda": ("infercost.bench.torch_backend", "TorchCUDA"),
    "jax-cpu": ("infercost.bench.jax_backend", "JaxCPU"),
    "jax-gpu": ("infercost.bench.jax_backend", "JaxGPU"),
    "jax-tpu": ("infercost.bench.jax_backend", "JaxTPU"),
}
NAMES = tuple(REGISTRY)


class Unavailable(Exception):
    """The backend cannot run here; the message says why (no framework, no device)."""


class Backend:
    name: str = ""
    framework: str = ""
    cache_policy: str = "hot"  # inputs stay in cache between calls unless flush() does work
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
        for _ in range(number):
            out = fn(*args)
        self.sync(out)
        return time.perf_counter() - start


def open_backend(name: str, threads: int | None = None) -> Backend:
    """Instantiate an adapter; raises Unavailable with the reason when it cannot run here."""
    if name not in REGISTRY:
        raise Unavailable(f"unknown backend {name!r} (valid: {', '.join(NAMES)})")
    module_name, class_name = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # the framework itself is missing
        raise Unavailable(f"{e.name or e} is not installed") from None
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
        "memory_bytes": backend.memory_bytes(),
    }
