"""Builds a C++ file of torch ops with torch's own extension builder (a C++ compiler and ninja),
into torch's extension cache, once a host; the ops register themselves under torch.ops.infercost."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# No -m flags: each kernel form carries its own target, so a library loads on any x86-64.
# -fopenmp: the kernels split their rows across threads with OpenMP (the libgomp torch has loaded).
FLAGS = ["-O3", "-fopenmp"]


def _ninja_dir() -> str:
    try:
        import ninja
        return ninja.BIN_DIR
    except ImportError:
        return os.path.dirname(sys.executable)


def build(name: str, source: Path, headers: tuple[Path, ...] = ()) -> str | None:
    """None once `source` is built and loaded, else why it was not (one line). torch rebuilds when
    the source or the flags change; the headers it includes are hashed into a flag for that."""
    path = os.environ.get("PATH", "")
    digest = hashlib.sha256(b"".join(h.read_bytes() for h in headers)).hexdigest()[:16]
    try:
        from torch.utils import cpp_extension
        # torch looks for ninja on PATH; a virtual environment run without activating it
        # (`.venv/bin/infercost run`) has the ninja package's binary off PATH.
        os.environ["PATH"] = os.pathsep.join([_ninja_dir(), path])
        cpp_extension.load(name=name, sources=[str(source)], extra_cflags=[*FLAGS, f"-DINFERCOST_HEADERS={digest}"], extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=False)
    except Exception as e:  # no compiler, no ninja: the caller keeps inductor's forms
        first = str(e).splitlines()[0][:160] if str(e) else ""
        return f"{type(e).__name__}: {first}"
    finally:
        os.environ["PATH"] = path
    return None
