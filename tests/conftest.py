import os
import sys
from pathlib import Path

# `python -m pytest` puts the checkout's root on sys.path, where our kernels/ folder would stand in
# for PyPI's `kernels` (which transformers imports); ours is installed as infercost.kernels.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]

# Tests see the CPU only, and never contact anything but loopback.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# In-process CLI calls raise a bug's exception instead of its one-line summary.
os.environ.setdefault("INFERCOST_DEBUG", "1")


def loopback_server(handler):
    """An HTTP server for `handler` on 127.0.0.1 (a free port), serving from a thread until the
    generator resumes: `yield from loopback_server(H)` in a fixture gives (server, url)."""
    import http.server
    import threading
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
