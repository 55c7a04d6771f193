"""Quantized weights: made once on the host, the same numbers in torch and JAX, checked against
float64 with the same dequantized weights, bytes counted as stored, quality reported."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from infercost.bench.backend import open_backend
from infercost.bench.llm import TransformerWorkload
from infercost.bench.measure import measure_case
from infercost.bench.timing import Settings
from infercost.kernels import int8_gemv_torch_cpu, llama, llama_ref, models, quant
from infercost.kernels.llama import CONFIGS
from infercost.kernels.dtypes import QuantSpec
from test_llama import run_greedy  # the same greedy loop, quantized

CFG = replace(CONFIGS["tiny"], qkv_bias=True, tie_embeddings=True)
FAST = Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=5)


def test_int8_is_symmetric_per_output_channel():
    w = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    w[2] *= 100  # a row of large values gets its own scale
    q = quant.quantize_matrix(w, "int8")
    assert q.values.dtype == np.int8 and np.abs(q.values).max(axis=1).tolist() == [127] * 6
    assert q.scale == pytest.approx(np.abs(w).max(axis=1) / 127)
    # Rounding to the nearest step: no element is off by more than half a step of its row.
    assert (np.abs(q.dequantized() - w) <= q.scale[:, None] / 2 * (1 + 1e-6)).all()


def test_fp8_keeps_three_mantissa_bits():
    w = np.random.default_rng(1).uniform(0.5, 1.0, (4, 64)).astype(np.float32)  # normal e4m3 range once scaled
    q = quant.quantize_matrix(w, "fp8")
    assert str(q.values.dtype) == "float8_e4m3fn"
    assert (np.abs(q.dequantized() - w) <= 2**-4 * np.abs(w) * (1 + 1e-6)).all()  # half of e4m3's 2^-3 spacing


def test_seeded_quantized_weights_are_the_quantized_seeded_weights():
    a = quant.quantize_seeded(CFG, 3, "int8")
    b = quant.quantize(CFG, llama.seeded_weights_numpy(CFG, 3), "int8")
    assert sorted(a) == sorted(b) and "lm_head.weight" in a  # the tied head gets its own int8 copy
    for name in a:
        if isinstance(a[name], quant.QWeight):
            np.testing.assert_array_equal(a[name].values, b[name].values)
            np.testing.assert_array_equal(a[name].scale, b[name].scale)
        else:
            np.testing.assert_array_equal(a[name], b[name])


def run_quantized(name, weights, prompt, steps):
    backend = open_backend(name, threads=2)
    backend.configure("float32", False)
    return run_greedy(backend, CFG, weights, prompt, steps, quant=QuantSpec("int8"))


# batch 1: infercost's step kernel in both, its decode steps' activations quantized to int8 (so the
# reference's are too); 2, 5: torch-cpu's batched int8 product, JAX's one product a row (the prefill
# of 7 tokens a row takes the einsum), float32 activations.
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_int8_logits_match_float64_with_the_same_dequantized_weights_in_torch_and_jax(batch):
    qw = quant.quantize_seeded(CFG, 0, "int8")
    prompt = np.random.default_rng(2).integers(0, CFG.vocab_size, (batch, 7))
    ref_tokens, ref_logits = llama_ref.greedy(CFG, quant.dequantized(qw), prompt, 4, act_int8=batch == 1)
    results = {}
    for name in ("torch-cpu", "jax-cpu"):
        tokens, logits, launch = run_quantized(name, qw, prompt, 4)
        np.testing.assert_array_equal(tokens, ref_tokens)
        for got, ref in zip(logits, ref_logits):
            assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5, name
        results[name] = logits
        if batch == 1:
            assert "float32 decode step" in launch and "; int8 weights by int8 activations" in launch
    for a, b in zip(results["torch-cpu"], results["jax-cpu"]):
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-5  # torch and JAX agree


def runnable_forms() -> list[str]:
    from infercost.hardware.host import cpu_flags
    return [n for n, (_, needs) in int8_gemv_torch_cpu.FORMS.items() if all(f in cpu_flags() for f in needs)]


@pytest.mark.skipif(not int8_gemv_torch_cpu.available(), reason=str(int8_gemv_torch_cpu.why_not()))
@pytest.mark.parametrize("form", list(int8_gemv_torch_cpu.FORMS))
@pytest.mark.parametrize("out_features, k", [(37, 75), (5, 16), (130, 2048), (9, 232)])
def test_every_form_of_the_cpu_int8_gemv_matches_float64_for_any_width(form, out_features, k):
    # Widths off its 32-wide steps (a tail), under one step, a row the size of a down projection, and
    # one that takes the 64-wide loop, the 32-wide one and the tail. Each form this CPU runs (an
    # AVX-512 host runs the AVX2 form too).
    import torch
    if form not in runnable_forms():
        pytest.skip(f"this CPU does not run the {form} form")
    rng = np.random.default_rng(k)
    q = quant.quantize_matrix(rng.standard_normal((out_features, k)).astype(np.float32), "int8")
    x = rng.standard_normal((1, 1, 2 * k)).astype(np.float32)[..., ::2]  # a strided view, as a slice gives
    best = int8_gemv_torch_cpu.form()
    try:
        assert int8_gemv_torch_cpu.use(form) and int8_gemv_torch_cpu.form() == form
        y = int8_gemv_torch_cpu.int8_gemv(torch.from_numpy(x), torch.from_numpy(q.values), torch.from_numpy(q.scale)).numpy()
    finally:
        int8_gemv_torch_cpu.use(best)
    ref = x.astype(np.float64) @ q.dequantized().T
    assert y.shape == (1, 1, out_features)
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-6


@pytest.mark.skipif(not int8_gemv_torch_cpu.available(), reason=str(int8_gemv_torch_cpu.why_not()))
@pytest.mark.parametrize("form", list(int8_gemv_torch_cpu.FORMS))
@pytest.mark.parametrize("rows, k", [(2, 75), (3, 2048), (4, 16), (5, 232), (9, 96)])
def test_the_batched_int8_product_matches_float64_in_every_form(form, rows, k):
    # Blocks of 4 rows and the rest (5 = 4 + 1, 9 = 4 + 4 + 1), widths with and without a tail.
    import torch
    if form not in runnable_forms():
        pytest.skip(f"this CPU does not run the {form} form")
    rng = np.random.default_rng(rows * k)
    q = quant.quantize_matrix(rng.standard_normal((37, k)).astype(np.float32), "int8")
    x = rng.standard_normal((rows, 1, 2 * k)).astype(np.float32)[..., ::2]  # strided, as decode's slices are
    best = int8_gemv_torch_cpu.form()
    try:
        assert int8_gemv_torch_cpu.use(form)
        y = int8_gemv_torch_cpu.int8_gemm(torch.from_numpy(x), torch.from_numpy(q.values), torch.from_numpy(q.scale)).numpy()
    finally:
        int8_gemv_torch_cpu.use(best)
    ref = x.astype(np.float64) @ q.dequantized().T
    assert y.shape == (rows, 1, 37)
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-6


@pytest.mark.parametrize("rows", [1, 3, 33, 70])
def test_int8_linear_takes_the_kernel_for_few_rows_and_dequantized_blocks_for_many(monkeypatch, rows):
    # Blocks of 3 rows of W (a 7-row matrix: 3 + 3 + 1) through the dequantizing path, so its joins are tested.
    import torch

    from infercost.kernels import llama_torch_cpu
    from infercost.kernels.llama_torch import QLinear
    monkeypatch.setattr(llama_torch_cpu, "DEQUANT_BLOCK_BYTES", 3 * 4 * 40)
    rng = np.random.default_rng(rows)
    q = quant.quantize_matrix(rng.standard_normal((7, 40)).astype(np.float32), "int8")
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    used = []
    for name in ("int8_gemv", "int8_gemm"):
        real = getattr(int8_gemv_torch_cpu, name)
        monkeypatch.setattr(int8_gemv_torch_cpu, name, lambda *a, real=real, name=name: used.append(name) or real(*a))
    y = llama_torch_cpu.int8_linear(torch.from_numpy(x), QLinear(torch.from_numpy(q.values), torch.from_numpy(q.scale)),
                                    torch.from_numpy(bias)).numpy()
    ref = x.astype(np.float64) @ q.dequantized().T + bias
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-6
    if int8_gemv_torch_cpu.available():
        assert used == ([] if rows > llama_torch_cpu.INT8_KERNEL_MAX_ROWS else ["int8_gemv" if rows == 1 else "int8_gemm"])


def test_the_int8_form_follows_the_cpu_flags_in_the_stated_order(monkeypatch):
    # The order: AVX2 with FMA (measured faster in a whole step, even where AVX-512 runs), then
    # AVX-512, then none (inductor's loop), decided from the flags alone.
    from infercost.kernels import int8_gemv_torch_cpu as k
    for flags, want in (({"avx2", "fma", "avx512f", "avx512bw"}, "AVX2+FMA"), ({"avx512f", "avx512bw"}, "AVX-512"),
                        ({"avx2", "fma", "avx512f"}, "AVX2+FMA"), ({"avx2"}, None), ({"avx512f"}, None), (set(), None)):
        monkeypatch.setattr(k, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert k.best_form() == want, flags


@pytest.mark.slow
@pytest.mark.skipif(not int8_gemv_torch_cpu.available(), reason=str(int8_gemv_torch_cpu.why_not()))
def test_an_avx2_only_host_runs_the_avx2_form_and_records_it(tmp_path):
    # INFERCOST_CPU_ISA=avx2 takes the AVX-512 flags away (and caps torch, oneDNN and XLA): the run
    # is an AVX2-only host's, and its record says which form ran and which flags decided.
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu", "--model", "tiny",
                           "--workload", "decode", "--batch", "1", "--tokens", "16", "--quant", "int8", "--min-time",
                           "0.05", "--warmup", "0.05", "--repeats", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "INFERCOST_CPU_ISA": "avx2"})
    assert proc.returncode == 0, proc.stderr
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["check"]["passed"], rec["check"]
    assert ("infercost's float32 decode step (C++/OpenMP), AVX2+FMA (chosen by the CPU flags; this CPU runs AVX2+FMA, "
            "plain C++); int8 weights") in rec["case"]["launch"]
    assert rec["provenance"]["versions"]["cpu_flags"].startswith("avx2 fma (capped")


def test_without_the_cpu_int8_kernel_the_compiled_step_keeps_inductors_loop_and_says_why(monkeypatch):
    # A host with no compiler or no AVX-512: the same numbers, the reason in the launch label.
    from infercost.kernels import llama_torch_cpu
    monkeypatch.setenv("INFERCOST_F32_DECODE", "compiled")  # inductor's step, where the int8 GEMV op runs
    monkeypatch.setattr(llama_torch_cpu.int8_gemv_torch_cpu, "why_not", lambda: "no C++ compiler (test)")
    qw = quant.quantize_seeded(CFG, 0, "int8")
    prompt = np.random.default_rng(3).integers(0, CFG.vocab_size, (1, 5))
    tokens, logits, launch = run_quantized("torch-cpu", qw, prompt, 3)
    assert "inductor's loop (no C++ compiler (test))" in launch and "infercost's GEMV" not in launch
    ref_tokens, ref_logits = llama_ref.greedy(CFG, quant.dequantized(qw), prompt, 3)
    np.testing.assert_array_equal(tokens, ref_tokens)
    for got, ref in zip(logits, ref_logits):
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


def decode_case(backend, q="int8", batch=1):
    return {"backend": backend, "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny", "batch": batch, "tokens": 16, "quant": q}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch-cpu", "jax-cpu"])
def test_a_quantized_case_records_its_dtypes_rule_quality_and_stored_bytes(name):
    case = decode_case(name)
    r = measure_case(open_backend(name, threads=2), TransformerWorkload(case), case, FAST, 0, 2)
    assert r["check"]["passed"] and r["check"]["greedy_tokens_agree"]
    c, m = r["case"], r["metrics"]
    assert c["weight_dtype"] == "int8" and c["kv_dtype"] == "float32" and "LM head" in c["quant_rule"]
    assert 0 < m["quant_top1_agreement"] <= 1 and m["quant_mean_kl"] >= 0
    # tiny, untied, int8: 106,496 weight bytes + 1,536 float32 scales + 5 norms of 64 float32 = 113,920;
    # a decode step at context 16 also reads one embedding row (256), the cache over 17 positions
    # (8,704), writes one position (512) and returns 512 float32 logits (2,048): 125,440 bytes.
    assert m["bytes"] == 125_440
    assert m["weight_bytes"] == 113_920 + 512 * 64 * 4  # and the float embedding table, stored
    from infercost.hardware import catalog
    from infercost.hardware.estimate import estimate
    from infercost.kernels.llama import CONFIGS
    est = estimate(CONFIGS["tiny"], catalog.find("NVIDIA H100 SXM5 80GB"), 1, 1, 18, "float32", quant=QuantSpec("int8"))
    assert est["decode_bytes"] == 125_440  # the estimator counts the same bytes (its context holds the written position)


def test_fp8_is_skipped_with_the_reason_on_a_device_without_it():
    case = decode_case("torch-cpu", q="fp8")
    r = measure_case(open_backend("torch-cpu", threads=2), TransformerWorkload(case), case, FAST, 0, 2)
    assert r["status"] == "skipped" and "no native fp8" in r["reasons"][0]


def test_a_quantization_an_adapter_does_not_declare_is_refused_by_its_capabilities(monkeypatch):
    from infercost.bench import backend as backends
    from infercost.bench.backend import Capabilities, Unavailable
    cpu = open_backend("torch-cpu", threads=2)
    assert cpu.quant_unsupported(QuantSpec("int8")) is None and cpu.quant_unsupported(QuantSpec(kv="int8")) is None
    module, cls, _ = backends.REGISTRY["torch-cpu"]
    monkeypatch.setitem(backends.REGISTRY, "torch-cpu", (module, cls, Capabilities("cpu", collective="gloo", quant=())))
    with pytest.raises(Unavailable, match="torch-cpu runs no int8 weights"):
        cpu.load_model(CFG, "float32", 1, 8, quant=QuantSpec("int8"))
    case = decode_case("torch-cpu")  # and a case says so as its skip reason
    r = measure_case(cpu, TransformerWorkload(case), case, FAST, 0, 2)
    assert r["status"] == "skipped" and r["reasons"] == ["torch-cpu runs no int8 weights (it runs none)"]


def test_a_quant_spec_refuses_formats_it_does_not_know_and_round_trips_through_case_params():
    with pytest.raises(ValueError, match="int4"):
        QuantSpec("int4")
    with pytest.raises(ValueError, match="KV cache format 'float8'"):
        QuantSpec(kv="float8")
    q = QuantSpec("int8", "int8")
    assert q.params() == {"quant": "int8", "kv_cache": "int8"} and QuantSpec.of(q.params()) == q
    assert q and not QuantSpec()
    assert (q.weight_dtype("bfloat16"), QuantSpec().kv_dtype("bfloat16")) == ("int8", "bfloat16")
    from infercost.bench.plan import plan_cases
    from infercost.errors import InputError
    probes = {"torch-cpu": {"available": True, "unsupported": {}}}
    with pytest.raises(InputError, match="KV cache can be stored as int8, not fp8"):
        plan_cases("quick", ["torch-cpu"], probes, models=["tiny"], quant=QuantSpec(kv="fp8"))
    cases, _ = plan_cases("quick", ["torch-cpu"], probes, models=["tiny"], workloads=["decode"], quant=q)
    assert cases and all(c.quant == q for c in cases)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "infercost.cli", *args], capture_output=True, text=True, timeout=300)


def test_quant_on_matmul_alone_is_a_one_line_error(tmp_path):
    proc = cli("run", "--backend", "torch-cpu", "--shape", "64x64x64", "--quant", "int8", "--out", str(tmp_path / "r.jsonl"))
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "--quant applies to transformer cases" in err[0]
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.slow
def test_a_quantized_run_keeps_quantized_and_float_cases_apart(tmp_path):
    out = tmp_path / "r.jsonl"
    for extra in ([], ["--quant", "int8"]):
        proc = cli("run", "--backend", "jax-cpu", "--model", "tiny", "--workload", "decode", "--tokens", "16",
                   "--min-time", "0.05", "--warmup", "0.05", "--repeats", "3", "--out", str(out), "--resume", *extra)
        assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["case"]["weight_dtype"] for r in records] == ["float32", "int8"]  # two cases, not one resumed
    assert records[1]["metrics"]["bytes"] < records[0]["metrics"]["bytes"]


def test_estimate_with_quant_matches_scaling_book_int8_llama3_70b():
    # jax-ml/scaling-book, applied inference: LLaMA-3-70B with int8 weights and KV cache, batch 32,
    # 8k context, on 8 TPU v5e chips: about 17 ms per decode step, 235 tokens/s per chip.
    proc = cli("estimate", "-m", "llama-3.1-70b", "-a", "TPU v5e", "--chips", "8", "--batch", "32",
               "--context", "8192", "--quant", "int8", "--kv-cache", "int8")
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "decode step" in l)
    step_ms = float(line.split("decode step")[1].split("ms")[0])
    per_chip = float(line.split("output tok/s,")[1].split("per chip")[0])
    assert step_ms == pytest.approx(17, rel=0.10) and per_chip == pytest.approx(235, rel=0.10)
    assert "ESTIMATE" in proc.stdout and "weights int8, KV int8" in proc.stdout


@pytest.mark.parametrize("batch", [1, 2])  # torch-cpu batch 1: the compiled step, its attention by infercost's kernels
@pytest.mark.parametrize("backend_name", ["torch-cpu", "jax-cpu"])
def test_an_int8_kv_cache_holds_int8_and_matches_float64_with_its_own_rounding(backend_name, batch):
    from infercost.bench.backend import open_backend
    from infercost.kernels import llama, llama_ref
    from infercost.kernels.llama import CONFIGS
    backend = open_backend(backend_name)
    backend.configure("float32", False)
    cfg = CONFIGS["tiny"]
    w64 = llama.seeded_weights_numpy(cfg, 0)
    prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, (batch, 6))
    runner = backend.load_model(cfg, "float32", batch, 12, seed=0, quant=QuantSpec(kv="int8"))
    if backend_name == "torch-cpu" and batch == 1 and int8_gemv_torch_cpu.available():
        assert "int8 KV cache attention by infercost's kernels" in runner.launch
    # The reference rounds its own float64 keys and values (no device values given to it).
    ref_tokens, ref_logits = llama_ref.greedy(cfg, w64, prompt, 3, kv_int8=True)
    got = [backend.fetch(runner.prefill_step(prompt, last_only=False)())]
    for i in range(3):
        got.append(backend.fetch(runner.decode_step(ref_tokens[:, i:i + 1], 6 + i)()))
    error = max(np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got, ref_logits))
    assert error < 1e-5
    exact = llama_ref.greedy(cfg, w64, prompt, 3)[1]  # an exact cache gives other decode logits
    assert max(np.abs(g - r).max() / np.abs(r).max() for g, r in zip(got[1:], exact[1:])) > 10 * error
    # What the cache holds: whole multiples of a per-position scale, at most 127 of them.
    for k, _ in runner.kv_numpy():
        written = k[:, :, :9]
        scale = np.abs(written).max(-1, keepdims=True) / 127
        steps = written / scale
        assert np.allclose(steps, np.rint(steps), atol=1e-3) and np.abs(steps).max() <= 127.001


@pytest.mark.slow
def test_an_int8_kv_cache_is_a_run_flag_recorded_with_its_bytes(tmp_path):
    import json
    import subprocess
    import sys

    def run(out, *extra):
        proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu", "--model", "tiny",
                               "--workload", "decode", "--batch", "2", "--tokens", "32", "--min-time", "0.05",
                               "--warmup", "0.05", "--repeats", "3", "--out", str(out), *extra],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        (rec,) = map(json.loads, out.read_text().splitlines())
        return rec
    q, f = run(tmp_path / "q.jsonl", "--kv-cache", "int8"), run(tmp_path / "f.jsonl")
    assert q["check"]["passed"] and q["case"]["kv_dtype"] == "int8" and q["case"]["weight_dtype"] == "float32"
    assert "kv-int8" in q["case"]["shape"] and q["check"]["quality"]["top1_agreement"] >= 0.9
    assert f["case"]["kv_dtype"] == "float32"
    # By hand, tiny (2 layers, 2 KV heads of 16) at batch 2, reading 33 positions and writing a 34th:
    # keys and values in float32 are 2 x 2 x 2 x 34 x 2 x 16 x 4 = 34,816 bytes; in int8 with a
    # 4-byte scale a head and position, 2 x 2 x 2 x 34 x 2 x (16 + 4) = 10,880 bytes: 23,936 fewer a
    # step (the written position is int8 too).
    assert f["metrics"]["bytes"] - q["metrics"]["bytes"] == 23936
    # and `infercost estimate` counts a decode step's bytes as the measurement does (its context
    # holds the position written: 34 here), for either cache
    from infercost.hardware import catalog
    from infercost.hardware.estimate import estimate
    from infercost.kernels.llama import CONFIGS
    h100 = catalog.find("NVIDIA H100 SXM5 80GB")
    for rec, kv in ((f, None), (q, "int8")):
        assert estimate(CONFIGS["tiny"], h100, 1, 2, 34, "float32", quant=QuantSpec(kv=kv))["decode_bytes"] == rec["metrics"]["bytes"]


def test_the_read_sweep_reads_int8_weights_at_memory_speed():
    # The CPU ceiling is a sweep over the model's own buffers. ATen's sum over int8 ran at ~1 GB/s
    # (an int64 accumulation loop, not a read of memory), so every int8 decode case had its MBU
    # withheld as if the host were busy. The same bytes, int8 and float32, well past the L3 cache:
    # the int8 sweep must stay within a generous factor of the float one (it was 60-200x slower).
    import torch

    from infercost.bench.sweep import read_sweep
    from infercost.bench.adapters.torch_backend import host_views

    n = 96 << 20
    as_int8 = torch.full((n,), 3, dtype=torch.int8)
    as_float = torch.full((n // 4,), 1.0)
    as_bf16 = torch.full((n // 2,), 1.0, dtype=torch.bfloat16)
    floats = read_sweep(host_views([as_float]), 2, seconds=0.1)
    assert read_sweep(host_views([as_int8]), 2, seconds=0.1) > 0.25 * floats
    assert read_sweep(host_views([as_bf16]), 2, seconds=0.1) > 0.25 * floats  # no float arithmetic numpy lacks


def test_bytes_are_counted_from_the_tensors_read_on_a_model_with_biases(tmp_path):
    # A Qwen2-shaped model small enough to count by hand: vocabulary 10, hidden 4, one layer, 2 heads
    # of 2, one KV head, MLP 6, q/k/v biases, tied head. Parameters: embedding 40, norms 3 x 4,
    # q 16, k 8, v 8, their biases 4 + 2 + 2, o 16, gate/up/down 24 each: 180.
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": 6, "tie_word_embeddings": True}))
    cfg = models.from_hf_config(tmp_path / "config.json")
    # float32: 180 x 4 = 720 bytes stored; a step reads all of them (the tied table as the head).
    assert cfg.stored_bytes("float32") == 720 and cfg.streamed_weight_bytes("float32") == 720
    # int8: q, k, v, o, gate, up, down and the head (its own copy) as one byte a value, 160 bytes,
    # with a float32 scale a row (4 + 2 + 2 + 4 + 6 + 6 + 4 + 10 = 38 rows, 152 bytes); the float
    # embedding (160), norms (48) and biases (32) stay: 552 stored, 392 read by a step.
    assert cfg.stored_bytes("float32", QuantSpec("int8")) == 552 and cfg.streamed_weight_bytes("float32", QuantSpec("int8")) == 392

    def step_bytes(extra):
        case = {"backend": "torch-cpu", "workload": "decode", "dtype": "float32", "tf32": False, "threads": 1,
                "params": {"model": str(tmp_path / "config.json"), "batch": 1, "tokens": 6, **extra}}
        return TransformerWorkload(case).work()[1]
    # A decode step at context 6 (a static cache of 7): weights, one embedding row (16), the cache
    # read over 7 positions and written at one (8 positions x keys and values x one head: 2 float32
    # of 4 bytes each, 128; int8 with a float32 scale, 2 x 8 x (2 + 4) = 96), 10 float32 logits (40).
    assert step_bytes({}) == 720 + 16 + 128 + 40
    assert step_bytes({"quant": "int8", "kv_cache": "int8"}) == 392 + 16 + 96 + 40
    assert step_bytes({"kv_cache": "int8"}) == 720 + 16 + 96 + 40


@pytest.mark.skipif(not int8_gemv_torch_cpu.available(), reason=str(int8_gemv_torch_cpu.why_not()))
@pytest.mark.parametrize("b, h, g, s, d", [(1, 4, 3, 37, 64), (2, 2, 5, 9, 12), (1, 1, 1, 130, 16)])
def test_int8_kv_attention_kernels_match_float64(b, h, g, s, d):
    # Groups of query rows off the kernels' 4-row blocks (3, 5), head sizes with and without an 8-wide
    # tail (64, 12, 16), positions off every step.
    import torch
    rng = np.random.default_rng(b * 100 + s)
    q = rng.standard_normal((b, h, g, d)).astype(np.float32)
    k, v = (rng.integers(-127, 128, (b, h, s, d)).astype(np.int8) for _ in range(2))
    ks = rng.random((b, h, s)).astype(np.float32)
    p = rng.random((b, h, g, s)).astype(np.float32)
    scores = int8_gemv_torch_cpu.int8_attn_scores(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(ks)).numpy()
    ref = np.einsum("bhgd,bhsd->bhgs", q.astype(np.float64), k.astype(np.float64)) * ks[:, :, None, :]
    assert scores.shape == (b, h, g, s) and np.abs(scores - ref).max() / np.abs(ref).max() < 1e-6
    out = int8_gemv_torch_cpu.int8_attn_values(torch.from_numpy(p), torch.from_numpy(v)).numpy()
    ref = np.einsum("bhgs,bhsd->bhgd", p.astype(np.float64), v.astype(np.float64))
    assert out.shape == (b, h, g, d) and np.abs(out - ref).max() / np.abs(ref).max() < 1e-6
