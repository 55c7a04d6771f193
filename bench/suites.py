"""Named suites of cases. Each lists shapes for CPUs and for accelerators (GPU, TPU).

Square sweeps draw the achieved-TFLOP/s curve from small (launch- and cache-bound) to large
(compute-bound); the LLM shapes are the GEMMs of a Llama-3.1-8B layer at decode and prefill
batch sizes (hidden 4096, MLP 14336).
"""

from __future__ import annotations

SQUARES_CPU = (256, 512, 1024, 2048)
SQUARES_ACC = (256, 512, 1024, 2048, 4096, 8192, 16384)


def squares(sizes, dtype):
    return [((s, s, s), dtype) for s in sizes]


def llm_shapes(batches, dtype):
    return [((b, n, k), dtype) for b in batches for (n, k) in ((14336, 4096), (4096, 14336))]


SUITES = {
    # A first look: about two minutes on a 2-core CPU for torch-cpu and jax-cpu together.
    "quick": {
        "cpu": squares(SQUARES_CPU, "float32") + squares((256, 512), "bfloat16"),
        "accelerator": squares((1024, 4096), "float32") + squares((1024, 2048, 4096, 8192), "bfloat16")
        + squares((4096,), "float16"),
    },
    # For a cloud instance: the whole curve in every dtype, plus LLM layer shapes.
    "full": {
        "cpu": squares((128, *SQUARES_CPU, 4096), "float32") + squares((128, 256, 512, 1024), "bfloat16")
        + squares((128, 256, 512), "float16") + llm_shapes((1, 16, 128), "float32"),
        "accelerator": squares(SQUARES_ACC, "bfloat16") + squares(SQUARES_ACC, "float16")
        + squares(SQUARES_ACC[:-1], "float32") + llm_shapes((1, 16, 128, 1024, 4096), "bfloat16"),
    },
}


def device_class(backend: str) -> str:
    return "cpu" if backend.endswith("-cpu") else "accelerator"


def suite_cases(suite: str, backend: str) -> list[tuple[tuple[int, int, int], str]]:
    return SUITES[suite][device_class(backend)]
