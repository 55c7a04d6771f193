"""A C or C++ source built into a shared library once a host, for the code that needs native code
(the read sweep's reader, read_sweep.c; jax-cpu's float32 step): with the host's compiler."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infercost"


def build_library(source: Path, flags: list[str], headers: tuple[Path, ...] = ()) -> Path:
    """The shared library of a C (or, for a .cc file, C++) `source`, built once a host and version of
    the source, the headers it includes and the flags into cache_dir() (to a temporary name, then put
    in place whole, so processes building at once never load half a file). Raises RuntimeError with
    the compiler's first line where it cannot be built."""
    if source.suffix == ".cc":
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    else:
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError(f"no {'C++' if source.suffix == '.cc' else 'C'} compiler on PATH")
    text = b"".join(f.read_bytes() for f in (source, *headers))
    tag = hashlib.sha256(f"{flags}".encode() + text).hexdigest()[:12]
    out = cache_dir() / f"{source.stem}-{tag}.so"  # a changed source or flags: a library of its own
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so", delete=False) as tmp:
        pass
    try:
        try:
            done = subprocess.run([compiler, *flags, str(source), "-o", tmp.name], capture_output=True, text=True,
                                  timeout=300)
        except OSError as e:
            raise RuntimeError(f"{compiler} did not run: {e.strerror}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{compiler} took over 300 s") from None
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["(no message)"])[0][:160]
            raise RuntimeError(f"{Path(compiler).name} failed: {first}")
        os.replace(tmp.name, out)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    return out
