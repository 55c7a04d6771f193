"""How fast this host reads the very buffers a model streams: the read ceiling of CPU decode.

Framework-free, so torch-cpu and jax-cpu share one definition without either loading the other:
each adapter hands over zero-copy numpy views of its buffers (CPU memory only), and `threads`
threads read them, each its own slice of every buffer, as a multithreaded GEMV splits its rows.
The reader is read_sweep.c (built once a host with the C compiler; ctypes releases the GIL): every
byte loaded once in the widest vectors the CPU has. Where no C compiler is found, numpy's max
(SIMD code; bfloat16, float16 and fp8 read as integers of their width) reads instead, and the
basis says so: it read 4-46% slower than the C loop side by side on the 2-core EPYC VM
(2026-12-07), a ceiling set too low.

Why the model's own buffers: on a shared or virtualised host, separately allocated buffers of
one process read at different speeds (27 to 55 GB/s seen side by side on the 2-core EPYC VM), so
a sweep of some other buffer measures where that buffer landed, not the ceiling of these weights.

On that host, over small-125m's own weight buffers between timed blocks of its compiled decode
step, alternating with ATen's sum (the sweep both frameworks used before) in 16 rounds: this
sweep / ATen's 0.958 to 1.112, median 0.999 (both 24-38 GB/s as the VM's memory speed moved).
"""

from __future__ import annotations

import ctypes
import functools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .native import build_library

NATIVE = (np.dtype(np.float32), np.dtype(np.float64))  # read as they are; other floats as integers
INTEGER_OF_WIDTH = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def readable(a: np.ndarray) -> np.ndarray:
    """A 1-D view of the buffer in a dtype numpy reduces at memory speed (no copy)."""
    if not a.flags.c_contiguous:
        raise ValueError("a read sweep reads contiguous buffers only")
    flat = a.reshape(-1)
    return flat if flat.dtype in NATIVE else flat.view(INTEGER_OF_WIDTH[flat.dtype.itemsize])


@functools.cache
def native_reader():
    """read_sweep.c's infercost_read(pointer, bytes), or None where it cannot be built (and why)."""
    try:
        lib = ctypes.CDLL(str(build_library(Path(__file__).with_name("read_sweep.c"), ["-O3", "-shared", "-fPIC"])))
    except (RuntimeError, OSError) as e:
        return None, str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    lib.infercost_read.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.infercost_read.restype = ctypes.c_uint64
    return lib.infercost_read, None


def reader_name() -> str:
    return "C reader" if native_reader()[0] is not None else f"numpy's max ({native_reader()[1]})"


def read_sweep(arrays: list[np.ndarray], threads: int | None = None, seconds: float = 0.3) -> float:
    """Bytes/s of reading every array once, the median over repeated reads for `seconds`."""
    threads = max(1, threads or 1)
    views = [readable(a) for a in arrays]
    native = native_reader()[0]
    parts = [[] for _ in range(threads)]
    for v in views:
        step = -(-v.size // threads)
        for i in range(threads):
            if v[i * step:(i + 1) * step].size:
                parts[i].append(v[i * step:(i + 1) * step])

    def read(part):
        for v in part:
            if native is not None:
                native(v.ctypes.data, v.nbytes)
            else:
                np.maximum.reduce(v)

    with ThreadPoolExecutor(threads) as pool:
        def once():
            list(pool.map(read, parts))

        for _ in range(2):
            once()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 5:
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    return sum(v.nbytes for v in views) / statistics.median(times)


_own_buffer: dict = {}


def own_buffer_sweep(threads: int | None) -> float:
    """A sweep of a 512 MiB buffer of its own (once a process), where the model's buffers cannot be
    read by another kernel (oneDNN-packed weights)."""
    if threads not in _own_buffer:
        _own_buffer[threads] = read_sweep([np.ones(128 << 20, np.float32)], threads, seconds=0.5)
    return _own_buffer[threads]


def host_read_bandwidth(views: list[np.ndarray] | None, threads: int | None) -> tuple[float, str]:
    """The ceiling and how it was measured: over the model's own buffers (`views`), or, where the
    adapter could give none, over a buffer of its own."""
    if views is not None and all(v.flags.c_contiguous for v in views):
        return read_sweep(views, threads), f"measured ({reader_name()}: this model's weights, before and after timing)"
    return own_buffer_sweep(threads), f"measured ({reader_name()}: 512 MiB)"
