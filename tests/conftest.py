import os

# Tests see the CPU only, and never contact anything but loopback.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# In-process CLI calls raise a bug's exception instead of its one-line summary.
os.environ.setdefault("INFERCOST_DEBUG", "1")
