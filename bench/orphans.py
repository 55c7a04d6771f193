"""Child processes that cannot outlive their parent (a worker, a tensor-parallel rank)."""

from __future__ import annotations


def die_with_parent() -> None:
    """Ask Linux to kill this process if its parent dies (kill -9), so no orphan keeps a core busy."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
