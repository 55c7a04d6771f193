"""The framework adapters: each one module that imports its framework (the name says which) and
implements bench/backend.py's contract; bench/backend.py's REGISTRY names them. Nothing outside
this folder and the per-framework model files in kernels/ imports torch or jax."""
