"""infercost's native CPU code, framework-free: the forms of its products (torch's extension,
gemv_torch_cpu), which the CPU runs and in which order, and how a plain C library (the read sweep's
reader, bench/read_sweep.c) is built once a host."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from infercost.hardware.host import cpu_flags

# name -> (the number the kernels' select function takes, the CPU flags it needs), best first: the
# default is the first the CPU runs. AVX2+FMA comes first on AVX-512 hosts too: in a whole int8
# decode step on the 2-core AVX-512 EPYC host it reached 87-89% of the read ceiling against 82-85%
# for the AVX-512 form (alternating in one process; bench/perf/quant_decode.py prints both every
# round on any host). INFERCOST_INT8_FORM picks another.
FORMS = {"AVX2+FMA": (1, ("avx2", "fma")), "AVX-512": (2, ("avx512f", "avx512bw"))}


# For benchmarks: INFERCOST_CPU_GEMV=framework keeps inductor's own loop for float32 rows, so both
# can be timed side by side (bench/perf/vs_llama_cpp.py --framework-loops).
F32_SWITCH = "INFERCOST_CPU_GEMV"


def f32_wanted() -> bool:
    return os.environ.get(F32_SWITCH, "") != "framework"


def runnable_forms() -> list[str]:
    """The forms this CPU's flags allow, best first (INFERCOST_CPU_ISA can take flags away)."""
    flags = cpu_flags()
    return [name for name, (_, needs) in FORMS.items() if all(f in flags for f in needs)]


def sources_tag(source: Path, extra: str = "") -> str:
    """A short hash of the source and the build's flags: a changed source gets a library of its own
    instead of a stale cached one."""
    return hashlib.sha256(extra.encode() + source.read_bytes()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infercost"


def build_library(source: Path, flags: list[str]) -> Path:
    """The shared library of a C `source`, built once a host and source version into cache_dir() (to a
    temporary name, then put in place whole, so processes building at once never load half a file).
    Raises RuntimeError with the compiler's first line where it cannot be built."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler (cc or gcc) on PATH")
    out = cache_dir() / f"{source.stem}-{sources_tag(source, extra=str(flags))}.so"
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
