"""The Llama-family decoder: identical weights everywhere, logits against float64 and against
Hugging Face transformers, analytic FLOPs and bytes against the frameworks' own counters."""

import json
import subprocess
import sys
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import hf_checkpoint
from infercost.bench.backend import open_backend
from infercost.bench.llm import TransformerWorkload, check_model, generate, host_weights
from infercost.bench.measure import measure_case
from infercost.bench.sweep import read_sweep
from infercost.bench.adapters.torch_backend import host_views
from infercost.bench.timing import Settings
from infercost.kernels import llama, llama_jax, llama_ref, llama_torch, llama_torch_cpu, models
from infercost.kernels.llama import CONFIGS, LLAMA3_SCALING
from infercost.kernels.dtypes import NO_QUANT

# GQA (4 heads on 2 KV heads), qkv bias, tied head and Llama 3 rope scaling all exercised.
CFG = replace(CONFIGS["tiny"], qkv_bias=True, tie_embeddings=True,
              rope_scaling={**LLAMA3_SCALING, "factor": 8.0, "original_max_position_embeddings": 16})
BACKENDS = ["torch-cpu", "jax-cpu"]
FAST = Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=5)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    b = open_backend(request.param, threads=2)
    b.configure("float32", False)
    return b


def test_named_configs_have_the_published_parameter_counts():
    # Parameter counts as the model cards state them (billions), an independent check of the shapes.
    published = {"llama-3.2-1b": 1.24, "llama-3.2-3b": 3.21, "llama-3.1-8b": 8.03,
                 "llama-3.1-70b": 70.6, "mistral-7b": 7.25, "qwen2.5-7b": 7.61}
    for name, billions in published.items():
        assert CONFIGS[name].n_params() / 1e9 == pytest.approx(billions, rel=0.01), name


def test_seeded_weights_are_bit_identical_in_numpy_torch_and_jax():
    ref = llama.seeded_weights_numpy(CFG, seed=5)
    t = llama_torch.seeded_weights(CFG, 5, torch.float32, "cpu")
    j = llama_jax.seeded_weights(CFG, 5, jnp.float32, jax.devices("cpu")[0])
    for name, w in ref.items():
        np.testing.assert_array_equal(t[name].double().numpy(), w, err_msg=name)
        np.testing.assert_array_equal(np.asarray(j[name], np.float64), w, err_msg=name)
    norm = ref["model.layers.0.input_layernorm.weight"]
    assert norm.std() > 0.01 and abs(norm.mean() - 1) < 0.05  # norms are random, not all ones
    assert llama.seeded_weights_numpy(CFG, seed=6)["model.norm.weight"].tolist() != ref["model.norm.weight"].tolist()


def run_llm_case(backend, case, settings, seed, cpus_available):
    return measure_case(backend, TransformerWorkload(case), case, settings, seed, cpus_available)


def run_greedy(backend, cfg, weights, prompt, steps, quant=NO_QUANT):
    runner = backend.load_model(cfg, "float32", prompt.shape[0], prompt.shape[1] + steps, weights=weights, quant=quant)
    logits = [backend.fetch(runner.prefill_step(prompt, last_only=False)())]
    tokens = [logits[0][:, -1].argmax(-1)]
    for i in range(steps - 1):
        logits.append(backend.fetch(runner.decode_step(tokens[-1][:, None], prompt.shape[1] + i)()))
        tokens.append(logits[-1][:, -1].argmax(-1))
    return np.stack(tokens, axis=1), logits, runner.launch


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_prefill_and_decode_match_the_float64_reference(backend, batch):
    # Batch 1 runs torch-cpu's float32 step kernel (tests/test_decode_f32.py runs inductor's step
    # too), batch 2 its oneDNN path.
    w64 = llama.seeded_weights_numpy(CFG, seed=0)
    prompt = np.random.default_rng(1).integers(0, CFG.vocab_size, (batch, 9))
    tokens, logits, launch = run_greedy(backend, CFG, w64, prompt, steps=5)
    if backend.name == "torch-cpu" and batch == 1:
        assert "float32 decode step" in launch  # the kernel ran; a fallback would say "eager"
    ref_tokens, ref_logits = llama_ref.greedy(CFG, w64, prompt, 5)
    np.testing.assert_array_equal(tokens, ref_tokens)
    for got, ref in zip(logits, ref_logits):
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])  # batch 1: the CPU step kernel on a real checkpoint's weights
@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_logits_and_greedy_tokens_match_hugging_face(tmp_path, backend, kind, batch):
    model = hf_checkpoint(tmp_path, kind)
    cfg = models.from_hf_config(tmp_path / "config.json")
    assert cfg.qkv_bias == (kind == "qwen2") and cfg.tie_embeddings == (kind == "qwen2")
    prompt = np.random.default_rng(2).integers(0, 300, (batch, 12))
    with torch.no_grad():
        hf_logits = model(torch.as_tensor(prompt)).logits.double().numpy()
        hf_tokens = model.generate(torch.as_tensor(prompt), max_new_tokens=6, min_new_tokens=6,
                                   do_sample=False)[:, 12:].numpy()
    weights = host_weights(str(tmp_path / "model.safetensors"), cfg)
    tokens, logits, _ = run_greedy(backend, cfg, weights, prompt, steps=6)
    assert np.abs(logits[0] - hf_logits).max() / np.abs(hf_logits).max() < 1e-5
    np.testing.assert_array_equal(tokens, hf_tokens)


def test_a_wrong_model_fails_its_check(monkeypatch):
    backend = open_backend("torch-cpu")
    good = check_model(backend, CONFIGS["tiny"], "float32", False, 0, None)
    assert good["passed"] and good["greedy_tokens_agree"]
    # A plausible bug: rotary embedding with the halves swapped the wrong way round.
    monkeypatch.setattr(llama_torch, "rotate_half", lambda x: torch.cat([x[..., x.shape[-1] // 2:],
                                                                         -x[..., :x.shape[-1] // 2]], -1))
    bad = check_model(backend, CONFIGS["tiny"], "float32", False, 0, None)
    assert not bad["passed"] and bad["error"] > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [True, False])
def test_analytic_flops_match_torch_flop_counter(monkeypatch, prefill):
    from torch.utils.flop_counter import FlopCounterMode
    cfg, batch, tokens = CONFIGS["small-125m"], 2, 32
    runner = llama_torch.Runner(cfg, "float32", "cpu", batch, tokens + 1)
    ids = np.ones((batch, tokens), int)
    step = runner.prefill_step(ids, last_only=True) if prefill else runner.decode_step(ids[:, :1], tokens)
    with FlopCounterMode(display=False) as counter:
        step()
    expected = cfg.flops(batch, tokens, tokens, logit_tokens=1) if prefill else cfg.flops(batch, 1, tokens + 1)
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [True, False])
def test_analytic_flops_and_bytes_match_xla_cost_analysis(prefill):
    cfg, batch, tokens = CONFIGS["small-125m"], 1, 64
    runner = llama_jax.Runner(cfg, "float32", jax.devices("cpu")[0], batch, tokens + 1)
    ids = np.ones((batch, tokens), int)
    runner.prefill_step(ids, last_only=True) if prefill else runner.decode_step(ids[:, :1], tokens)
    (compiled,) = runner._compiled.values()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if prefill:
        flops = cfg.flops(batch, tokens, tokens, logit_tokens=1)
        nbytes = cfg.bytes(batch, tokens, 0, "float32", logit_tokens=1)
    else:
        flops = cfg.flops(batch, 1, tokens + 1)
        nbytes = cfg.bytes(batch, 1, tokens + 1, "float32")
    # XLA also counts elementwise work (norms, rotary, softmax) and the traffic of every
    # intermediate; the analytic bytes are the minimum (weights once). At decode the weights
    # dominate and the two agree; at prefill the analytic figure must be a lower bound.
    assert cost["flops"] == pytest.approx(flops, rel=0.05)
    if prefill:
        assert nbytes <= cost["bytes accessed"] < 2 * nbytes
    else:
        assert cost["bytes accessed"] == pytest.approx(nbytes, rel=0.25)


def test_a_model_that_cannot_fit_is_skipped_with_the_reason(backend):
    case = {"backend": backend.name, "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "llama-3.1-70b", "batch": 1, "tokens": 128}}
    record = run_llm_case(backend, case, FAST, 0, 2)
    assert record["status"] == "skipped" and "does not fit" in record["reasons"][0]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_a_decode_case_reports_serving_metrics(backend, batch):
    case = {"backend": backend.name, "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny", "batch": batch, "tokens": 24}}
    r = run_llm_case(backend, case, FAST, 0, 2)
    assert r["check"]["passed"] and r["check"]["greedy_tokens_agree"]
    assert f"batch {1 if batch == 1 else 2}," in r["check"]["checked"]  # the timed code path was checked
    if backend.name == "torch-cpu":
        assert ("float32 decode step" in r["case"]["launch"]) == (batch == 1)
    # A 0.1 ms step may be too noisy to count; then it reports no rate, and nothing else may go wrong.
    assert r["status"] == "ok" or all(x.startswith(("too noisy", "time does not grow")) for x in r["reasons"])
    m = r["metrics"]
    assert (m["output_tokens_per_s"] is None) == (r["status"] != "ok")
    if m["bandwidth_basis"] is None:  # the sweeps read slower than the step streamed: MBU withheld, and the record says why
        assert m["mbu"] is None and any("MBU withheld" in w for w in r["warnings"])
    else:
        assert m["bandwidth_basis"].startswith("measured") and m["bandwidth_gbs"] > 1
    assert r["timing"]["compile_s"] > 0 and r["timing"]["build_s"] > 0


def test_decode_figures_from_known_step_times():
    # Steps of 1, 2 and 4 ms at batch 3: 3 tokens per step over a mean of 7/3 ms is 1285.714 tok/s;
    # one user sees 1000, 500 and 250 tokens/s, median 500.
    case = {"backend": "torch-cpu", "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny", "batch": 3, "tokens": 24}}
    w = TransformerWorkload(case)
    stats = {"median": 2e-3, "min": 1e-3, "mean_ci95_low": 1.5e-3, "mean_ci95_high": 3e-3}
    m, findings = w.metrics(None, None, stats, {"times": [1e-3, 2e-3, 4e-3]})
    assert m["output_tokens_per_s"] == pytest.approx(1285.714, rel=1e-6)
    assert m["per_user_tokens_per_s"] == pytest.approx(500.0)
    assert m["tpot_s"] == 2e-3 and m["output_tokens_per_s_ci95_low"] == pytest.approx(1000.0)
    assert m["output_tokens_per_s_ci95_high"] == pytest.approx(2000.0)
    assert m["mbu"] is None and m["roofline_s"] is None and findings == []  # no ceiling known without a sweep


def test_the_cpu_ceiling_reads_the_models_own_weight_buffers(backend):
    cfg = CONFIGS["tiny"]
    runner = backend.load_model(cfg, "float32", 1, 16)
    arrays = runner.streamed()
    # Every matrix a decode step multiplies by, and every norm: no more, no less.
    assert sum(a.nbytes for a in arrays) == cfg.matmul_params() * 4 + (2 * cfg.layers + 1) * cfg.hidden * 4
    views = [np.asarray(a) for a in arrays] if backend.name == "jax-cpu" else host_views(arrays)
    pointers = [a.unsafe_buffer_pointer() for a in arrays] if backend.name == "jax-cpu" else [a.data_ptr() for a in arrays]
    assert [v.ctypes.data for v in views] == pointers  # read in place, not copied
    assert read_sweep(views, 2, seconds=0.05) > 1e8
    bw, basis = backend.read_bandwidth(arrays)
    assert bw > 1e8 and "this model's weights" in basis
    if backend.name == "torch-cpu" and llama_torch_cpu.ONEDNN:  # packed weights: no other kernel can read them
        batched = backend.load_model(cfg, "float32", 2, 16)
        assert host_views(batched.streamed()) is None
        assert "512 MiB" in backend.read_bandwidth(batched.streamed())[1]


def test_generate_is_greedy_and_times_each_request(backend):
    w64 = llama.seeded_weights_numpy(CFG, seed=0)
    prompt = np.random.default_rng(3).integers(0, CFG.vocab_size, (2, 6))
    runner = backend.load_model(CFG, "float32", 2, 6 + 5, weights=w64)
    out = generate(backend, runner, prompt, 5)
    ref_tokens, _ = llama_ref.greedy(CFG, w64, prompt, 5)
    np.testing.assert_array_equal(out["tokens"], ref_tokens)
    assert 0 < out["ttft_s"] < out["total_s"] and out["tpot_s"] > 0
    assert len(out["step_s"]) == 4 and min(out["step_s"]) > 0  # one a decode step
    assert out["ttft_s"] + sum(out["step_s"]) == pytest.approx(out["total_s"])


def test_safetensors_reader_handles_bf16_and_rejects_bad_input(tmp_path):
    from safetensors.torch import save_file
    t = torch.randn(5, 7).to(torch.bfloat16)
    save_file({"a": t, "b": torch.arange(6, dtype=torch.float32)}, tmp_path / "w.safetensors")
    got = llama.read_safetensors(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(np.asarray(got["a"], np.float32), t.float().numpy())
    assert got["b"].tolist() == list(range(6))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        llama.read_safetensors(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="lack"):
        llama.check_weights(CONFIGS["tiny"], got)


@pytest.mark.slow
def test_run_a_hugging_face_checkpoint_end_to_end_through_the_cli(tmp_path):
    import subprocess
    import sys

    import infercost
    hf_checkpoint(tmp_path, "llama3")
    out = tmp_path / "run.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "torch-cpu,jax-cpu",
                           "--model", str(tmp_path / "config.json"), "--weights", str(tmp_path / "model.safetensors"),
                           "--batch", "2", "--tokens", "12", "--min-time", "0.1", "--warmup", "0.05", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    df = infercost.load_results(out)
    assert len(df) == 4 and set(df["workload"]) == {"prefill", "decode"}
    assert df["check_passed"].all() and df["check_greedy_tokens_agree"].all()
    assert df["check_error"].max() < 1e-4
    bad = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--model", "llama-3.1-8b",
                          "--weights", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "x.jsonl")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "has shape" in bad.stderr and "Traceback" not in bad.stderr


def test_cpu_decode_falls_back_to_eager_and_says_why_when_inductor_cannot_compile(monkeypatch):
    import torch._inductor.config as inductor_config
    monkeypatch.setenv("INFERCOST_F32_DECODE", "compiled")  # the compiled step, not the step kernel
    w64 = llama.seeded_weights_numpy(CONFIGS["tiny"], seed=0)
    cpu = open_backend("torch-cpu")
    # A host without a C++ compiler. inductor's own patch (not monkeypatch: setting its config
    # module's attributes back by hand left later compiles with options failing).
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}):
        runner = cpu.load_model(CONFIGS["tiny"], "float32", 1, 17, weights=w64)
        eager = cpu.load_model(CONFIGS["tiny"], "float32", 1, 17, weights=w64, compile_decode=False)
        for r in (runner, eager):
            r.prefill_step([[1, 2, 3]])()
        got, want = runner.decode_step([[4]], 3)(), eager.decode_step([[4]], 3)()
    assert runner.launch.startswith("eager (torch.compile failed") and "compiler" in runner.launch
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("multiply_reduce", [True, False])  # CPUs, and the batched dots GPUs/TPUs use
def test_jax_decode_attention_matches_float64_masked_grouped_attention(multiply_reduce):
    rng = np.random.default_rng(4)
    b, t, nh, nkv, hd, s, length = 2, 1, 6, 2, 8, 10, 7
    q, k, v = (rng.standard_normal(shape) for shape in ((b, t, nh, hd), (b, nkv, s, hd), (b, nkv, s, hd)))
    held_k = k.transpose(0, 1, 3, 2) if multiply_reduce else k  # the CPU form holds keys [b, kv, hd, s]
    got = llama_jax.decode_attention(*(jnp.asarray(a, jnp.float32) for a in (q, held_k, v)), length, multiply_reduce)
    kv_head = np.arange(nh) // (nh // nkv)  # query head h reads KV head h // group
    scores = np.einsum("bthd,bhsd->bhts", q, k[:, kv_head]) / np.sqrt(hd)
    scores[..., length:] = -np.inf  # positions not written yet
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("bhts,bhsd->bthd", probs / probs.sum(-1, keepdims=True), v[:, kv_head])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_a_disturbed_bandwidth_sweep_withholds_mbu_instead_of_reporting_an_impossible_one():
    case = {"backend": "jax-cpu", "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny", "batch": 1, "tokens": 16}}
    w = TransformerWorkload(case)
    flops, nbytes = w.work()

    class Slow:  # a read sweep that saw 1 GB/s while the step itself streamed far more
        def read_bandwidth(self, buffers):
            return 1e9, "measured (sum over this model's weights, before and after timing)"

    class Runner:
        def streamed(self):
            return []
    w.runner = Runner()
    w.before_timing(Slow())
    step = nbytes / 10e9  # 10 GB/s
    stats = {"median": step, "min": step, "mean_ci95_low": step, "mean_ci95_high": step}
    m, findings = w.metrics(Slow(), None, stats, {"times": [step] * 5})
    assert m["mbu"] is None and m["bandwidth_gbs"] is None
    assert findings and findings[0][0] == "warn" and "MBU withheld" in findings[0][1]


@pytest.mark.slow
def test_jax_cpu_batch1_decode_takes_its_xla_options_and_says_so_or_falls_back():
    # The adapter compiles batch-1 decode with XLA options of its own (no YNN fusions); an XLA that
    # does not know an option must still run the step, with the same logits, and `launch` says which.
    cfg, dev = CONFIGS["tiny"], jax.devices("cpu")[0]
    prompt = np.random.default_rng(5).integers(0, cfg.vocab_size, (1, 16))
    logits, launches = [], []
    for options in (None, open_backend("jax-cpu").one_row_decode_options, {"xla_cpu_no_such_option": ""}):
        r = llama_jax.Runner(cfg, "float32", dev, 1, 17, multiply_reduce_attention=True, one_row_options=options)
        r.prefill_step(prompt)()
        logits.append(np.asarray(r.decode_step([[3]], 16)()))
        launches.append(r.launch)
    assert launches[0] == "jit"
    assert launches[1] == "jit; XLA options xla_cpu_experimental_ynn_fusion_type=''" or launches[1].startswith(
        "jit; XLA's defaults (xla_cpu_experimental_ynn_fusion_type not taken")  # a jaxlib from before YNN
    assert launches[2].startswith("jit; XLA's defaults (xla_cpu_no_such_option not taken")
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits[2], logits[0])


SECOND_DEVICE = """
import json, jax
import numpy as np
from infercost.kernels import llama_jax
from infercost.kernels.llama import CONFIGS
cfg = CONFIGS["tiny"]
prompt = np.arange(8)[None] % cfg.vocab_size
out = {}
for index in (0, 1):
    r = llama_jax.Runner(cfg, "float32", jax.devices()[index], 1, 16)
    first = r.prefill_step(prompt)()
    with jax.transfer_guard("disallow"):  # as a timed block runs it: the token alone comes from the host
        step = r.decode_step(np.array([[3]]), 8)()
    out[index] = {"devices": sorted({d.id for a in (first, step, *r.cache[0]) for d in a.devices()}),
                  "logits": np.asarray(step).ravel()[:64].tolist()}
print(json.dumps(out))
"""


def test_a_jax_model_on_a_second_device_runs_there_with_its_token_from_the_host():
    """A decode step takes its token and position as host arrays (no device_put to wait on);
    the compiled step still runs where the model lives, not on JAX's default device."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", SECOND_DEVICE], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["0"]["devices"] == [0] and out["1"]["devices"] == [1]
    assert out["0"]["logits"] == out["1"]["logits"]  # same seed, same program, another device
