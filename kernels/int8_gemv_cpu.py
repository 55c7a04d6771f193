"""torch.ops.infercost.int8_gemv: the one-row int8 product of int8_gemv_cpu.cpp, built on first use.

It is built with torch's own extension builder (a C++ compiler and ninja) into torch's extension
cache, once a host. Where it cannot be built or the CPU lacks AVX-512, `available()` is False
and `why_not()` says why; the caller keeps inductor's multiply-reduce form.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("int8_gemv_cpu.cpp")
# -fopenmp: at::parallel_for splits the rows across threads only when built with OpenMP (the
# library it links is the libgomp torch has already loaded).
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mfma", "-fopenmp"]


def _ninja_dir() -> str:
    try:
        import ninja
        return ninja.BIN_DIR
    except ImportError:
        return os.path.dirname(sys.executable)


@functools.cache
def _load() -> str | None:
    """None once the op is registered, else why it is not."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX512", "AMX"):
        return f"this CPU has no AVX-512 (torch reports {capability})"
    path = os.environ.get("PATH", "")
    try:
        from torch.utils import cpp_extension
        # torch looks for ninja on PATH; a virtual environment run without activating it
        # (`.venv/bin/infercost run`) has the ninja package's binary off PATH.
        os.environ["PATH"] = os.pathsep.join([_ninja_dir(), path])
        cpp_extension.load(name="infercost_int8_gemv", sources=[str(SOURCE)], extra_cflags=FLAGS,
                           extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    except Exception as e:  # no compiler, no ninja: the inductor form still runs
        first = str(e).splitlines()[0][:160] if str(e) else ""
        return f"the int8 kernel did not build: {type(e).__name__}: {first}"
    finally:
        os.environ["PATH"] = path

    @torch.library.register_fake("infercost::int8_gemv")
    def _(x, w, scale):
        return x.new_empty((*x.shape[:-1], w.shape[0]))
    return None


def available() -> bool:
    return _load() is None


def why_not() -> str | None:
    return _load()


def int8_gemv(x32: torch.Tensor, values: torch.Tensor, scale32: torch.Tensor) -> torch.Tensor:
    """x32 [..., K] (one row, float32) @ (values [O, K] int8 * scale32 [O]).T"""
    return torch.ops.infercost.int8_gemv(x32, values, scale32)
