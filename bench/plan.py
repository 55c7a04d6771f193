"""Named suites of cases. Each lists cases for CPUs and for accelerators (GPU, TPU).

Square matmul sweeps draw the achieved-TFLOP/s curve from small (launch- and cache-bound) to
large (compute-bound); the LLM matmul shapes are the GEMMs of a Llama-3.1-8B layer (hidden
4096, MLP 14336) at decode and prefill batch sizes. Transformer cases measure prefill (time
to first token) and decode (time per output token) of real model shapes.
"""

from __future__ import annotations


def matmul(sizes, dtype):
    return [{"workload": "matmul", "params": {"m": s, "n": s, "k": s}, "dtype": dtype} for s in sizes]


def llm_gemms(batches, dtype):
    return [{"workload": "matmul", "params": {"m": b, "n": n, "k": k}, "dtype": dtype}
            for b in batches for (n, k) in ((14336, 4096), (4096, 14336))]


def prefill(model, dtype, shapes):
    return [{"workload": "prefill", "params": {"model": model, "batch": b, "tokens": t}, "dtype": dtype}
            for b, t in shapes]


def decode(model, dtype, batches, context):
    return [{"workload": "decode", "params": {"model": model, "batch": b, "tokens": context}, "dtype": dtype}
            for b in batches]


CPU_LLM = prefill("small-125m", "float32", [(1, 128)]) + decode("small-125m", "float32", (1, 4), 128)
ACC_LLM = prefill("llama-3.2-1b", "bfloat16", [(1, 512)]) + decode("llama-3.2-1b", "bfloat16", (1, 16), 512)

REAL_MODELS = []
for _model in ("llama-3.2-1b", "llama-3.2-3b", "mistral-7b", "qwen2.5-7b", "llama-3.1-70b"):
    REAL_MODELS += prefill(_model, "bfloat16", [(1, 2048)]) + decode(_model, "bfloat16", (1, 32), 2048)
LLM_SUITE_ACC = (prefill("llama-3.1-8b", "bfloat16", [(1, 2048), (8, 2048)])
                 + decode("llama-3.1-8b", "bfloat16", (1, 8, 32, 64, 128, 256), 2048) + REAL_MODELS)
LLM_SUITE_CPU = (prefill("small-125m", "float32", [(1, 128), (4, 128)])
                 + decode("small-125m", "float32", (1, 4, 16), 128)
                 + prefill("llama-3.2-1b", "float32", [(1, 128)]) + decode("llama-3.2-1b", "float32", (1,), 128))

MATMUL_CPU = matmul((128, 256, 512, 1024, 2048, 4096), "float32") + matmul((128, 256, 512, 1024), "bfloat16") \
    + matmul((128, 256, 512), "float16") + llm_gemms((1, 16, 128), "float32")
SQUARES_ACC = (256, 512, 1024, 2048, 4096, 8192, 16384)
MATMUL_ACC = matmul(SQUARES_ACC, "bfloat16") + matmul(SQUARES_ACC, "float16") + matmul(SQUARES_ACC[:-1], "float32") \
    + llm_gemms((1, 16, 128, 1024, 4096), "bfloat16")

SUITES = {
    # A first look: about two minutes on a 2-core CPU for torch-cpu and jax-cpu together.
    "quick": {
        "cpu": matmul((256, 512, 1024, 2048), "float32") + matmul((256, 512), "bfloat16") + CPU_LLM,
        "accelerator": matmul((1024, 4096), "float32") + matmul((1024, 2048, 4096, 8192), "bfloat16")
        + matmul((4096,), "float16") + ACC_LLM,
    },
    "matmul": {"cpu": MATMUL_CPU, "accelerator": MATMUL_ACC},
    # Real model shapes: the throughput-versus-interactivity sweep of Llama-3.1-8B, and the
    # other public models at batch 1 and 32 (a 70B model is recorded as skipped where it cannot fit).
    "llm": {"cpu": LLM_SUITE_CPU, "accelerator": LLM_SUITE_ACC},
    # For a cloud instance: everything.
    "full": {"cpu": MATMUL_CPU + LLM_SUITE_CPU, "accelerator": MATMUL_ACC + LLM_SUITE_ACC},
}


def device_class(backend: str) -> str:
    return "cpu" if backend.endswith("-cpu") else "accelerator"


def suite_cases(suite: str, backend: str) -> list[dict]:
    return SUITES[suite][device_class(backend)]
