"""Facts about the host: CPU model, usable CPUs, library versions, git commit."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path


CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=None)
def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's marketing name, as the kernel reports it (x86 "model name"; Arm kernels give none)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# INFERCOST_CPU_ISA=avx2 makes an AVX-512 host behave as an AVX2-only one (to measure and test the
# paths such hosts take): infercost's own choices see no AVX-512 or AMX flags, and torch (ATen and
# inductor), oneDNN and XLA are capped at AVX2 in the processes that measure.
ISA_CAPS = {
    "avx2": {"drop": ("avx512", "amx", "avx_vnni", "avx_ifma", "avx_ne_convert"),
             "env": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}},
}


def isa_cap() -> str | None:
    cap = os.environ.get("INFERCOST_CPU_ISA") or None
    if cap is not None and cap not in ISA_CAPS:
        from infercost.errors import InputError
        raise InputError(f"INFERCOST_CPU_ISA={cap!r}: valid caps are {', '.join(ISA_CAPS)}")
    return cap


def isa_env(env: dict) -> dict:
    """env with the frameworks' ISA limits for INFERCOST_CPU_ISA added (nothing when it is unset)."""
    cap = isa_cap()
    if cap is None:
        return env
    out = dict(env)
    for key, value in ISA_CAPS[cap]["env"].items():
        out[key] = f"{out.get(key, '')} {value}".strip() if key == "XLA_FLAGS" else value
    # inductor's cache is not keyed by the ATen capability: kernels compiled uncapped came back
    # under the cap and gave wrong logits (the float64 check caught it). A cache of the cap's own.
    import getpass
    import tempfile
    base = out.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    out["TORCHINDUCTOR_CACHE_DIR"] = f"{base}-isa-{cap}"
    return out


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU's feature flags as /proc/cpuinfo lists them (x86 "flags", Arm "Features"), less those
    INFERCOST_CPU_ISA takes away. Empty where the file is not there."""
    flags: set = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:
        pass
    cap = isa_cap()
    if cap is not None:
        flags = {f for f in flags if not f.startswith(ISA_CAPS[cap]["drop"])}
    return frozenset(flags)


# Native arithmetic for each 16-bit dtype, by CPU flag (x86, then Arm): without one of these, torch
# and XLA convert to float32 and back around every operation, or fall back to reference loops
# (torch's bfloat16 matmul on an AVX2-only EPYC ran 120x slower than its float32).
NATIVE = {"bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
          "float16": ("avx512_fp16", "amx_fp16", "fphp")}


def dtype_emulated(dtype: str) -> str | None:
    """Why this CPU has no native arithmetic for the dtype (it is emulated), or None."""
    if dtype not in NATIVE:
        return None
    flags = cpu_flags()
    if not flags or any(f in flags for f in NATIVE[dtype]):
        return None  # a CPU whose flags cannot be read is not second-guessed
    cap = f", INFERCOST_CPU_ISA={isa_cap()}" if isa_cap() else ""
    return (f"no native {dtype} arithmetic on this CPU (none of {', '.join(NATIVE[dtype])} in its flags{cap}): "
            f"the frameworks emulate it through float32")


def isa_summary() -> str:
    """The flags that decide infercost's CPU paths, for records and benchmark headers."""
    flags = cpu_flags()
    keys = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
            "avx512_fp16", "amx_int8", "asimd", "sve", "bf16", "i8mm")
    have = [k for k in keys if k in flags]
    cap = f" (capped by INFERCOST_CPU_ISA={isa_cap()})" if isa_cap() else ""
    return (" ".join(have) or "none of " + " ".join(keys[:4])) + cap


def available_cpus() -> int:
    """CPUs this process may run on (affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def memory_available() -> int | None:
    """Bytes of host memory available to a new allocation (MemAvailable), when known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit of the infercost checkout, when it runs from one; on a fleet instance (a copy of
    the checkout's files, no .git) the commit the plan was made from, which its task passes on."""
    here = Path(__file__).resolve().parent
    fallback = os.environ.get("INFERCOST_GIT_COMMIT") or None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    if out.returncode != 0:
        return fallback
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def host_facts() -> dict:
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus_available": available_cpus(),
        "cpus_total": os.cpu_count(),
        "python": sys.version.split()[0],
    }
