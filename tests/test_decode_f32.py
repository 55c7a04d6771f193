"""The float32 decode step kernel (kernels/decode_f32_cpu.h) in torch-cpu and jax-cpu: every form
this CPU runs, and each framework's own compiled step beside it, against the float64 reference;
which models take it, and what the record says when a run does not."""

from dataclasses import replace

import numpy as np
import pytest

from infercost.bench.backend import open_backend
from infercost.kernels import decode_f32, decode_f32_jax_cpu, decode_f32_torch_cpu, llama, llama_jax, llama_ref, quant
from infercost.kernels.dtypes import QuantSpec
from infercost.kernels.llama import CONFIGS, LLAMA3_SCALING
from infercost.kernels.models import CONFIGS as ALL_CONFIGS
from test_llama import run_greedy

pytestmark = pytest.mark.skipif(decode_f32_torch_cpu.build_failure() is not None
                                or decode_f32_jax_cpu.build_failure() is not None,
                                reason=f"{decode_f32_torch_cpu.build_failure()}; {decode_f32_jax_cpu.build_failure()}")

# GQA, qkv bias, tied head and Llama 3 rope scaling; and widths no vector divides (40 = 32 + 8,
# head size 10), so every dot product's tail is summed too.
SHAPES = {
    "tiny-gqa-bias": replace(CONFIGS["tiny"], qkv_bias=True, tie_embeddings=True,
                             rope_scaling={**LLAMA3_SCALING, "factor": 8.0, "original_max_position_embeddings": 16}),
    "odd-widths": replace(CONFIGS["tiny"], vocab_size=97, hidden=40, heads=4, kv_heads=1, intermediate=72),
}


@pytest.fixture(scope="module", params=["torch-cpu", "jax-cpu"])
def backend(request):
    b = open_backend(request.param, threads=2)
    b.configure("float32", False)
    return b


@pytest.fixture(scope="module")
def cpu():
    b = open_backend("torch-cpu", threads=2)
    b.configure("float32", False)
    return b


COMPILED = {"torch-cpu": "torch.compile(inductor", "jax-cpu": "jit; "}  # each framework's own step
RUNS_AS = {"torch-cpu": "C++/OpenMP", "jax-cpu": "C++ on its own threads, via XLA's FFI"}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("form", decode_f32.runnable_forms() + ["compiled"])
def test_every_form_decodes_the_float64_references_tokens(backend, monkeypatch, shape, form):
    cfg = SHAPES[shape]
    if form == "compiled":
        monkeypatch.setenv("INFERCOST_F32_DECODE", "compiled")
    else:
        monkeypatch.setenv("INFERCOST_F32_FORM", form)
    w64 = llama.seeded_weights_numpy(cfg, seed=3)
    prompt = np.random.default_rng(5).integers(0, cfg.vocab_size, (1, 7))
    tokens, logits, launch = run_greedy(backend, cfg, w64, prompt, steps=6)  # later steps read the cache it wrote
    if form == "compiled":
        assert launch.startswith(COMPILED[backend.name]) and "not taken: INFERCOST_F32_DECODE=compiled" in launch
        assert "float32 decode step" not in launch
    else:
        assert f"infercost's float32 decode step ({RUNS_AS[backend.name]}), {form} (chosen by INFERCOST_F32_FORM" in launch
    ref_tokens, ref_logits = llama_ref.greedy(cfg, w64, prompt, 6)
    np.testing.assert_array_equal(tokens, ref_tokens)
    for got, ref in zip(logits, ref_logits):
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("form", decode_f32.runnable_forms())
def test_int8_weights_with_float32_activations_decode_the_float64_references_tokens(backend, monkeypatch, shape, form):
    # INFERCOST_INT8_DOT="float32 activations": each row converted in the loop and scaled after its sum.
    cfg = SHAPES[shape]
    monkeypatch.setenv("INFERCOST_F32_FORM", form)
    monkeypatch.setenv("INFERCOST_INT8_DOT", "float32 activations")
    qw = quant.quantize_seeded(cfg, 3, "int8")
    prompt = np.random.default_rng(6).integers(0, cfg.vocab_size, (1, 7))
    tokens, logits, launch = run_greedy(backend, cfg, qw, prompt, steps=6, quant=QuantSpec("int8"))
    assert f"float32 decode step ({RUNS_AS[backend.name]}), {form}" in launch
    assert launch.endswith("; int8 weights, converted in its loops, float32 activations (chosen by INFERCOST_INT8_DOT)")
    ref_tokens, ref_logits = llama_ref.greedy(cfg, quant.dequantized(qw), prompt, 6)
    np.testing.assert_array_equal(tokens, ref_tokens)
    for got, ref in zip(logits, ref_logits):
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


INT8_X_DOTS = [d for d in decode_f32.runnable(decode_f32.INT8_DOTS) if d != "float32 activations"]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dot", INT8_X_DOTS)
def test_int8_activations_decode_the_float64_q8_references_tokens_in_every_form(backend, monkeypatch, shape, dot):
    # The default for int8 weights: decode steps quantize each matrix's input as llama.cpp's Q8_0 does
    # and sum in int32. Held against a float64 reference that rounds the decode steps' inputs the
    # same way (q8_round_trip), and, looser, against the one that does not (what quantizing costs).
    cfg = SHAPES[shape]
    monkeypatch.setenv("INFERCOST_INT8_DOT", dot)
    qw = quant.quantize_seeded(cfg, 3, "int8")
    prompt = np.random.default_rng(6).integers(0, cfg.vocab_size, (1, 7))
    tokens, logits, launch = run_greedy(backend, cfg, qw, prompt, steps=6, quant=QuantSpec("int8"))
    assert launch.endswith(f"; int8 weights by int8 activations (quantized as llama.cpp's Q8_0: blocks of 32, "
                           f"a scale each), {dot} dot products (chosen by INFERCOST_INT8_DOT)")
    ref_tokens, ref_logits = llama_ref.greedy(cfg, quant.dequantized(qw), prompt, 6, act_int8=True)
    _, exact_logits = llama_ref.greedy(cfg, quant.dequantized(qw), prompt, 6)
    np.testing.assert_array_equal(tokens, ref_tokens)
    for got, ref, exact in zip(logits, ref_logits, exact_logits):
        scale = np.abs(ref).max()
        # 1e-4: float32 and float64 can round a value near a half to different int8s (seen: 2.5e-7)
        assert np.abs(got - ref).max() / scale < 1e-4
        assert np.abs(got - exact).max() / scale < 2e-2  # seen: 2.5e-3 to 4.4e-3 of the largest logit


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dot", decode_f32.runnable(decode_f32.INT8_DOTS))
def test_a_nan_or_infinity_in_the_activations_comes_out_as_non_finite_logits(cpu, dot, bad):
    # Quantizing must not turn a NaN into a finite int8 value: the run's check would then pass a
    # broken model. The first norm's weight carries it into the QKV product's input.
    import torch

    from infercost.kernels import llama_torch
    cfg = CONFIGS["tiny"]
    model = llama_torch.Runner(cfg, "float32", "cpu", 1, 8, weights=quant.quantize_seeded(cfg, 0, "int8")).model
    model.layers[0]["ln1"][5] = bad
    logits = decode_f32_torch_cpu.step(model, int8_dot=dot)(torch.tensor([[1]]), torch.tensor([0])).numpy()
    assert not np.isfinite(logits).any()


def test_the_best_int8_dot_is_the_default(cpu, monkeypatch):
    monkeypatch.delenv("INFERCOST_INT8_DOT", raising=False)
    runner = cpu.load_model(CONFIGS["tiny"], "float32", 1, 12, weights=quant.quantize_seeded(CONFIGS["tiny"], 0, "int8"),
                            quant=QuantSpec("int8"))
    assert f"{INT8_X_DOTS[0]} dot products (chosen by the CPU flags)" in runner.launch


@pytest.mark.parametrize("name, value, said", [("INFERCOST_F32_FORM", "AVX-1024", "is not one of the forms"),
                                               ("INFERCOST_INT8_DOT", "AMX", "is not one this CPU runs"),
                                               ("INFERCOST_F32_DECODE", "inductr", "is neither 'kernel' nor 'compiled'")])
def test_a_setting_it_does_not_know_keeps_inductor_and_says_why(cpu, monkeypatch, name, value, said):
    monkeypatch.setenv(name, value)
    runner = cpu.load_model(CONFIGS["tiny"], "float32", 1, 12, seed=0)
    assert runner.launch.startswith("torch.compile(inductor") and f"{name}={value!r} {said}" in runner.launch


def test_models_the_kernel_does_not_run_say_why(cpu):
    from infercost.kernels import llama_torch
    shared = replace(ALL_CONFIGS["tiny-moe"], shared_intermediate=32)
    moe = llama_torch.Runner(shared, "float32", "cpu", 1, 8).model
    mla = llama_torch.Runner(ALL_CONFIGS["tiny-mla"], "float32", "cpu", 1, 8).model
    int8_kv = llama_torch.Runner(CONFIGS["tiny"], "float32", "cpu", 1, 8, kv_int8=True).model
    two_rows = llama_torch.Runner(CONFIGS["tiny"], "float32", "cpu", 2, 8).model
    bf16 = llama_torch.Runner(CONFIGS["tiny"], "bfloat16", "cpu", 1, 8).model
    plain = llama_torch.Runner(CONFIGS["tiny"], "float32", "cpu", 1, 8).model
    assert decode_f32_torch_cpu.unsuited(moe) == ("a mixture of experts with a shared expert: the kernel routes "
                                                  "Mixtral-style experts only")
    assert "dense Llama-family layers and Mixtral-style experts" in decode_f32_torch_cpu.unsuited(mla)
    assert decode_f32_torch_cpu.unsuited(llama_torch.Runner(ALL_CONFIGS["tiny-moe"], "float32", "cpu", 1, 8).model) is None
    assert decode_f32_torch_cpu.unsuited(int8_kv) == "an int8 KV cache"
    assert decode_f32_torch_cpu.unsuited(two_rows) == "a batch above 1"
    assert decode_f32_torch_cpu.unsuited(bf16) == "weights other than contiguous float32 (or int8)"
    assert decode_f32_torch_cpu.unsuited(plain) is None
    # jax-cpu decides from the same facts before its model is made
    assert decode_f32_jax_cpu.unsuited(CONFIGS["tiny"], 1, "float32", None, False, True) is None
    assert decode_f32_jax_cpu.unsuited(ALL_CONFIGS["tiny-moe"], 1, "float32", None, False, True) is None
    for cfg, why in ((replace(ALL_CONFIGS["tiny-moe"], scoring="sigmoid"), "a router other than softmax"),
                     (replace(ALL_CONFIGS["tiny-moe"], qk_norm=True), "query and key norms"),
                     (replace(ALL_CONFIGS["tiny-moe"], dense_layers=(0,)), "dense layers among the routed ones"),
                     (ALL_CONFIGS["tiny-gptoss"], "a gptoss model")):
        assert why in decode_f32_jax_cpu.unsuited(cfg, 1, "float32", None, False, True)
    assert decode_f32_jax_cpu.unsuited(CONFIGS["tiny"], 1, "bfloat16", None, False, True) == "weights other than float32"
    assert decode_f32_jax_cpu.unsuited(CONFIGS["tiny"], 1, "float32", None, True, True) == "an int8 KV cache"
    int8 = llama_jax.prepare(CONFIGS["tiny"], {k: {"q": (v * 1000).astype(np.int8), "s": v[:, 0].astype(np.float32)}
                                               if v.ndim == 2 else v for k, v in
                                               llama.seeded_weights_numpy(CONFIGS["tiny"], 0).items()})
    assert decode_f32_jax_cpu.unsuited(CONFIGS["tiny"], 1, "float32", None, False, True, int8) is None
    fp8ish = {**int8, "head": {"q": int8["head"]["q"].astype(np.float32), "s": int8["head"]["s"]}}
    assert decode_f32_jax_cpu.unsuited(CONFIGS["tiny"], 1, "float32", None, False, True, fp8ish) == (
        "quantized weights other than int8 with float32 scales")


MOE = replace(ALL_CONFIGS["tiny-moe"], vocab_size=97, hidden=40, heads=4, kv_heads=1, experts=6, top_k=3,
              expert_intermediate=40, norm_topk=False)  # widths no vector divides; weights not renormalised


@pytest.mark.parametrize("cfg", [MOE, ALL_CONFIGS["tiny-moe"]], ids=["odd-widths-moe", "tiny-moe"])
@pytest.mark.parametrize("mode", [f"float32 {f}" for f in decode_f32.runnable_forms()] +
                         [f"int8 {d}" for d in decode_f32.runnable(decode_f32.INT8_DOTS)])
def test_the_kernel_routes_a_mixture_of_experts_as_the_float64_reference_does(backend, monkeypatch, cfg, mode):
    """Mixtral-style experts in the step kernel: the router's choice (every layer's k experts, best
    first) is the reference's, and the logits follow it (int8: against the reference with Q8 inputs)."""
    from infercost.bench.llm import check_model
    weights, setting = mode.split(" ", 1)
    monkeypatch.setenv("INFERCOST_F32_FORM" if weights == "float32" else "INFERCOST_INT8_DOT", setting)
    q = QuantSpec("int8") if weights == "int8" else QuantSpec()
    r = check_model(backend, cfg, "float32", False, 0, None, batch=1, q=q)
    assert f"infercost's float32 decode step ({RUNS_AS[backend.name]})" in r["launch"] and setting in r["launch"]
    assert r["passed"] and r["routing"]["passed"] and r["routing"]["agree"] == r["routing"]["choices"], r
    assert r["error"] < (1e-5 if weights == "float32" or setting == "float32 activations" else 1e-4), r


def test_a_q8_rounding_boundary_does_not_fail_a_mixture_of_experts_check(cpu):
    """small-moe's checked layers (seed 0) hold an activation on a Q8 rounding boundary, which the
    float32 step and the float64 reference round apart: the check allows for that, no more."""
    from infercost.bench.llm import check_model
    from infercost.kernels.dtypes import INT8_ACTIVATION_TOLERANCE
    r = check_model(cpu, ALL_CONFIGS["small-moe"], "float32", False, 0, None, batch=1, q=QuantSpec("int8"))
    assert decode_f32.INT8_ACTIVATIONS in r["launch"] and r["tolerance"] == INT8_ACTIVATION_TOLERANCE
    assert r["passed"] and r["routing"]["passed"] and r["quality"]["top1_agreement"] >= 0.9, r


def test_jax_cpus_kernel_keeps_the_cache_stacked_and_gives_it_back_per_layer(monkeypatch):
    # Its cache is two buffers (every layer's keys, every layer's values): XLA's prefill writes it,
    # the kernel's steps add their positions, and kv_numpy reads it per layer as XLA's own step has it.
    cfg = SHAPES["odd-widths"]
    w64 = llama.seeded_weights_numpy(cfg, seed=3)
    prompt = np.random.default_rng(5).integers(0, cfg.vocab_size, (1, 7))
    ref_tokens, _ = llama_ref.greedy(cfg, w64, prompt, 4)
    b = open_backend("jax-cpu", threads=2)
    b.configure("float32", False)
    caches = {}
    for way in ("kernel", "compiled"):
        if way == "compiled":
            monkeypatch.setenv("INFERCOST_F32_DECODE", "compiled")
        runner = b.load_model(cfg, "float32", 1, 7 + 4, weights=w64)
        runner.prefill_step(prompt)()
        for i in range(3):
            b.sync(runner.decode_step(ref_tokens[:, i:i + 1], 7 + i)())
        caches[way] = runner.kv_numpy()
        if way == "kernel":
            assert "float32 decode step" in runner.launch
            assert [a.shape[0] for a in runner.cache] == [cfg.layers, cfg.layers]
    assert len(caches["kernel"]) == len(caches["compiled"]) == cfg.layers
    for got, want in zip(caches["kernel"], caches["compiled"]):
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape == (1, cfg.kv_heads, 7 + 4, cfg.hd)
            assert np.abs(w[:, :, :10]).max(axis=(0, 1, 3)).min() > 0  # positions 0-9 all written
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max())
            assert not g[:, :, 10:].any()  # the position no step reached
