"""Mixture-of-experts models: shapes against the model cards, the float64 reference against Hugging
Face's own implementations, the work model by hand, and bad configs refused in one line."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from infercost.kernels import llama_ref, models
from infercost.kernels.dtypes import QuantSpec
from infercost.kernels.moe import CONFIGS, MoEConfig, canonical_name


@pytest.mark.parametrize("name,total,active", [
    # the model cards: Mixtral "46.7B total parameters but only uses 12.9B parameters per token";
    # Qwen3-30B-A3B "30.5B in total and 3.3B activated"; Qwen3-235B-A22B "235B in total and 22B activated"
    # DeepSeek-V3 "671B total parameters with 37B activated for each token"
    # gpt-oss-120b "117B parameters with 5.1B active parameters per token" (its card counts no embedding table)
    ("mixtral-8x7b", 46.7, 12.9), ("qwen3-30b-a3b", 30.5, 3.3), ("qwen3-235b-a22b", 235, 22), ("deepseek-v3", 671, 37),
    ("gpt-oss-120b", 117, 5.1)])
def test_the_built_in_shapes_have_the_published_total_and_active_parameters(name, total, active):
    cfg = models.CONFIGS[name]
    if name == "gpt-oss-120b":  # ours counts the table whole, as the other cards do
        active += cfg.vocab_size * cfg.hidden / 1e9
    unit = 0.1 if total < 100 else 1  # the card's last digit (rounded or cut: 3.353B is "3.3B" on its card)
    assert cfg.n_params() / 1e9 == pytest.approx(total, abs=unit) and cfg.active_params() / 1e9 == pytest.approx(active, abs=unit)
    assert cfg.active_params() < cfg.n_params() / 3


def test_the_work_model_counts_the_experts_a_step_touches():
    cfg = CONFIGS["tiny-moe"]  # 8 experts, top 2, hidden 64, expert MLP 32, 2 layers, both MoE
    assert cfg.experts_touched(1) == 2 and cfg.experts_touched(2) == pytest.approx(8 * (1 - 0.75**2))  # 3.5
    expert = 3 * 64 * 32 * 4  # one expert's float32 bytes: 24,576
    everything = cfg.streamed_weight_bytes("float32")
    assert everything - cfg.streamed_weight_bytes("float32", tokens=1) == 2 * 6 * expert  # 6 experts unread a layer
    assert everything - cfg.streamed_weight_bytes("float32", tokens=2) == round(2 * 4.5 * expert)
    # a decode step at batch 1 moves what the dense count moves, less the unread experts
    dense_like = super(MoEConfig, cfg).bytes(1, 1, 16, "float32")
    assert cfg.bytes(1, 1, 16, "float32") == dense_like - 2 * 6 * expert
    # int8 experts: one byte a weight and a float32 scale a row; the router stays in float32
    q = QuantSpec("int8")
    sizes = cfg.tensor_bytes("float32", q)
    assert sizes["model.layers.0.mlp.experts.3.up_proj.weight"] == 32 * 64 + 32 * 4
    assert sizes["model.layers.0.mlp.gate.weight"] == 8 * 64 * 4
    # FLOPs: 2 a weight a token over the active parameters (attention, router, 2 experts, head)
    attention = 64 * 16 * (2 * 4 + 2 * 2)
    per_layer = attention + 8 * 64 + 2 * 3 * 64 * 32
    assert cfg.matmul_params() == 2 * per_layer + 512 * 64


def hf_model(kind: str, seed: int = 0):
    """A small random model of one family, every parameter randomised (norms around one)."""
    from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM, GptOssConfig, GptOssForCausalLM, MixtralConfig,
                              MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)
    common = dict(vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  num_experts_per_tok=2, rms_norm_eps=1e-6, tie_word_embeddings=False)
    if kind == "deepseek_v3":  # MLA with a low-rank query, YaRN, sigmoid routing in groups, a shared expert, layer 0 dense
        yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
                "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
        model = DeepseekV3ForCausalLM(DeepseekV3Config(
            **{**common, "num_key_value_heads": 4}, n_routed_experts=8, n_group=4, topk_group=2, moe_intermediate_size=16,
            intermediate_size=40, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=12,
            qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, routed_scaling_factor=2.5, rope_parameters=yarn,
            max_position_embeddings=64))
    elif kind == "gpt_oss":  # sinks, a 4-position window on layers 0 and 2, biases, clamped SwiGLU, fused experts
        model = GptOssForCausalLM(GptOssConfig(
            **common, head_dim=8, num_local_experts=6, intermediate_size=16, sliding_window=4, swiglu_limit=0.5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"]))
    elif kind == "mixtral":
        model = MixtralForCausalLM(MixtralConfig(**common, num_local_experts=6, intermediate_size=24))
    elif kind == "qwen3_moe":  # layer 1 dense (mlp_only_layers), renormalised top-k, q/k norms
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**common, num_experts=6, moe_intermediate_size=16,
                                                   intermediate_size=40, norm_topk_prob=True, mlp_only_layers=[1]))
    else:  # qwen2_moe: a shared expert with its gate, q/k/v biases, top-k not renormalised
        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(**common, num_experts=6, moe_intermediate_size=16,
                                                   intermediate_size=40, shared_expert_intermediate_size=24,
                                                   norm_topk_prob=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # DeepSeek's router bias is a buffer, randomised too
        for name, p in [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if "correction" in n)]:
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.25 * noise)
    model.set_experts_implementation("eager")  # HF's plain loop over the routed experts (grouped_mm has no float64)
    model.set_attn_implementation("eager")
    return model.double().eval()


FAMILIES = ["mixtral", "qwen3_moe", "qwen2_moe", "deepseek_v3", "gpt_oss"]


@pytest.mark.parametrize("kind", FAMILIES)
def test_the_reference_matches_hugging_face_logits_routing_and_greedy_tokens(kind, tmp_path):
    hf = hf_model(kind)
    hf.save_pretrained(tmp_path)  # as the Hub stores it: experts one tensor each
    cfg = models.from_hf_config(tmp_path / "config.json")
    assert isinstance(cfg, MoEConfig) and cfg.experts == (8 if kind == "deepseek_v3" else 6) and cfg.top_k == 2
    w = {k: np.asarray(v, np.float64) for k, v in models.read_weights(tmp_path, cfg).items()}
    prompt = np.random.default_rng(1).integers(0, 96, (2, 7))
    chosen = []  # DeepSeek's router returns no logits: its choice is taken from the gate's output
    if kind == "deepseek_v3":
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.register_forward_hook(lambda m, i, o: chosen.append(o[2].numpy()))
    with torch.no_grad():
        out = hf(torch.as_tensor(prompt), output_router_logits=kind != "deepseek_v3")
    routes = []
    ours = llama_ref.forward(cfg, w, prompt, routes=routes)
    theirs = out.logits.numpy()
    # HF's float64 model still normalises and routes in float32 (its RMSNorm and router cast), so
    # the two agree to float32's precision, not float64's (a wrong routing or weight errs by ~1e-1)
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 2e-6
    # the same experts for every token of every MoE layer
    moe_layers = [i for i in range(cfg.layers) if cfg.moe_layer(i)]
    if kind != "deepseek_v3":
        chosen = [torch.topk(logits, 2, dim=-1).indices.numpy() for logits in out.router_logits]
    assert len(routes) == len(chosen) == len(moe_layers) == (2 if kind in ("qwen3_moe", "deepseek_v3") else 3)
    for r, hf_top in zip(routes, chosen):
        assert (np.sort(r.experts, -1) == np.sort(hf_top, -1)).all()
        assert (r.margin > 1e-6).all()  # no near-tie decided a choice here
    # greedy decode with HF's cache against the reference recomputing the whole sequence
    with torch.no_grad():
        gen = hf.generate(torch.as_tensor(prompt), max_new_tokens=4, do_sample=False, min_new_tokens=4,
                          output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    ref_tokens, ref_logits = llama_ref.greedy(cfg, w, prompt, 4)
    assert (gen.sequences[:, 7:].numpy() == ref_tokens).all()
    for step, logits in enumerate(gen.logits[1:], start=1):
        assert np.abs(logits.numpy() - ref_logits[step][:, -1]).max() < 2e-6 * np.abs(ref_logits[step]).max()


def test_a_moe_config_whose_layers_are_all_dense_counts_as_a_dense_model(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "decoder_sparse_step": 3}))  # no layer index i with (i + 1) % 3 == 0
    cfg = models.from_hf_config(path)
    assert cfg.moe_layers == 0 and cfg.active_params() == cfg.n_params()
    assert cfg.bytes(1, 1, 8, "float32") == super(MoEConfig, cfg).bytes(1, 1, 8, "float32")


def test_mixtral_checkpoint_names_map_to_the_experts_they_are():
    assert canonical_name("model.layers.3.block_sparse_moe.experts.7.w1.weight") == "model.layers.3.mlp.experts.7.gate_proj.weight"
    assert canonical_name("model.layers.3.block_sparse_moe.experts.7.w2.weight") == "model.layers.3.mlp.experts.7.down_proj.weight"
    assert canonical_name("model.layers.3.block_sparse_moe.experts.7.w3.weight") == "model.layers.3.mlp.experts.7.up_proj.weight"
    assert canonical_name("model.layers.0.block_sparse_moe.gate.weight") == "model.layers.0.mlp.gate.weight"
    assert canonical_name("model.layers.0.mlp.gate_proj.weight") == "model.layers.0.mlp.gate_proj.weight"


BASE = {"model_type": "qwen3_moe", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 4,
        "num_experts_per_tok": 2}


@pytest.mark.parametrize("change,message", [
    ({"num_experts_per_tok": 5}, "top_k 5 is more than the 4 experts"),
    ({"num_experts": 0}, "experts must be a positive whole number"),
    ({"decoder_sparse_step": 0}, "decoder_sparse_step must be a positive whole number"),
    ({"mlp_only_layers": [7]}, "dense layer 7 is not a layer of the 2"),
    ({"mlp_only_layers": [[1]]}, "mlp_only_layers must be a list of layer numbers"),
    ({"moe_intermediate_size": None}, "expert_intermediate must be a positive whole number"),
    ({"num_experts": None}, "lacks the field 'num_local_experts'"),
    ({"model_type": "llama4_text", "num_local_experts": 4}, "'llama4_text' is a mixture of experts that infercost does not build"),
])
def test_an_inconsistent_moe_config_is_one_line_naming_the_field(tmp_path, change, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, **change}))
    with pytest.raises(ValueError, match=message):
        models.from_hf_config(path)
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "estimate", "--model", str(path), "--accelerator",
                           "NVIDIA H100 SXM5 80GB"], capture_output=True, text=True, timeout=120)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr


def test_a_checkpoint_missing_one_expert_is_refused_before_anything_runs(tmp_path):
    from safetensors.numpy import save_file
    cfg = CONFIGS["tiny-moe"]
    from infercost.kernels.llama import seeded_weights_numpy
    w = {k: v.astype(np.float32) for k, v in seeded_weights_numpy(cfg, 0).items()}
    del w["model.layers.1.mlp.experts.5.down_proj.weight"]
    save_file(w, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="weights lack model.layers.1.mlp.experts.5.down_proj.weight"):
        models.read_weights(tmp_path, cfg)


def test_estimate_prices_a_moe_by_the_experts_a_batch_reads(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "estimate", "--model", "qwen3-30b-a3b", "--accelerator",
                           "NVIDIA H100 SXM5 80GB", "--batch", "1", "--context", "2048", "--dtype", "bfloat16"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "30.53B parameters, 3.353B active; 8 of 128 experts a token, a decode step reads 8 a layer" in proc.stdout
    from infercost.hardware import catalog
    from infercost.hardware.estimate import estimate
    h100 = catalog.find("NVIDIA H100 SXM5 80GB")
    cfg = CONFIGS["qwen3-30b-a3b"]
    one, many = (estimate(cfg, h100, 1, b, 2048, "bfloat16") for b in (1, 64))
    # at batch 1 the step reads the non-expert weights (less the embedding) and 8 experts a layer
    kv = 2048 * 48 * 2 * 4 * 128 * 2  # the whole cache, read and the new position written, in bfloat16
    head_and_rest = cfg.n_params() - 48 * 128 * cfg.expert_params() - cfg.vocab_size * cfg.hidden
    embedding_row, logits = 2048 * 2, 151936 * 4
    assert one["decode_bytes"] == 2 * (head_and_rest + 48 * 8 * cfg.expert_params()) + embedding_row + kv + logits
    # at batch 64 nearly every expert (126.0 of 128 a layer) is read
    assert many["experts_read_per_layer"] == pytest.approx(128 * (1 - (1 - 8 / 128) ** 64))
    assert many["decode_bytes"] < 2 * cfg.n_params() + 64 * (kv + logits + embedding_row)


def test_estimate_of_deepseek_v3_on_eight_h200_in_fp8_states_memory_bytes_and_price(tmp_path):
    args = [sys.executable, "-m", "infercost.cli", "estimate", "--model", "deepseek-v3", "--accelerator", "NVIDIA H200",
            "--chips", "8", "--quant", "fp8", "--context", "2048", "--price-per-chip-hour", "3.5"]
    out = {b: subprocess.run([*args, "--batch", str(b)], capture_output=True, text=True, timeout=120) for b in (1, 64)}
    assert all(p.returncode == 0 for p in out.values()), out[1].stderr
    said = out[64].stdout
    assert "671B parameters, 37.55B active; 8 of 256 experts a token" in said and "multi-head latent: 70.27 kB" in said
    assert "memory" in said and "floor cost" in said and "kv_per_position = layers x (kv_lora_rank" in " ".join(said.split())
    from infercost.hardware import catalog
    from infercost.hardware.estimate import estimate
    h200, cfg = catalog.find("NVIDIA H200"), models.CONFIGS["deepseek-v3"]
    one, many = (estimate(cfg, h200, 8, b, 2048, "bfloat16", quant=QuantSpec("fp8"), usd_per_chip_hour=3.5) for b in (1, 64))
    # an fp8 expert by hand: gate and up 2048 x 7168, down 7168 x 2048, a byte a weight, a bfloat16 scale a row
    expert = 3 * 2048 * 7168 + (2048 + 2048 + 7168) * 2
    touched = 256 * (1 - (1 - 8 / 256) ** 64)  # experts 64 tokens read a layer, expected (~222)
    position = 61 * (512 + 64) * 2             # the latent cache of a position in bfloat16
    per_sequence = 2048 * position + 7168 * 2 + 129280 * 4  # its cache (read and written), embedding row, logits
    # from batch 1 to 64: 58 MoE layers read ~214 more experts each, and 63 more sequences
    assert many["decode_bytes"] - one["decode_bytes"] == pytest.approx(58 * (touched - 8) * expert + 63 * per_sequence, abs=1)
    # every expert resident on the 8 chips: 671B weights in fp8 need more than 671 GB
    assert 671 < one["memory_needed_gb"] < 700 and one["fits"]
    # batching 64 sequences reads ~28x the experts but makes 64x the tokens: each costs less
    assert many["usd_per_m_output_floor"] < one["usd_per_m_output_floor"] / 3
    # Split by experts instead (attention data parallel): each of the 8 chips holds and reads the
    # non-expert weights, and each MoE layer's dispatch and combine move 64/8 tokens x 8 experts x
    # 7168 bfloat16 activations a chip, 7/8 of them to other chips, over 450 GB/s.
    ep = estimate(cfg, h200, 8, 64, 2048, "bfloat16", quant=QuantSpec("fp8"), usd_per_chip_hour=3.5, expert_parallel=True)
    not_experts = (cfg.stored_bytes("bfloat16", QuantSpec("fp8")) - 58 * 256 * expert) / 1e9
    assert 10 < not_experts < 25  # attention, first dense layers, shared experts, routers, embeddings
    assert ep["memory_needed_gb"] - many["memory_needed_gb"] == pytest.approx(7 * not_experts)
    assert ep["decode_comm_s"] == pytest.approx(58 * 2 * 7 / 8 * (64 / 8 * 8 * 7168 * 2) / 450e9)
    assert ep["layout"] == "ep=8" and "2 all-to-alls" in ep["formula"] and "all-reduces" not in ep["formula"]
    with pytest.raises(ValueError, match="divisible by 8"):
        estimate(cfg, h200, 8, 4, 2048, "bfloat16", expert_parallel=True)


@pytest.mark.parametrize("model", ["tiny-gptoss"])  # (its experts' biases and clamp too)
def test_the_gpu_plan_compiles_a_few_tokens_experts_by_index_and_matches_float64(model):
    # torch-cuda's plan over the model code it shares with torch-cpu, run here on a CPU (inductor
    # without CUDA graphs): the base ops' compiled experts form, on the reference's logits and routes.
    from infercost.kernels import llama_torch
    from infercost.kernels.llama import seeded_weights_numpy
    assert "experts by index" in llama_torch.cuda_plan(4, True, True)["launch"]
    assert llama_torch.cuda_plan(16, True, True) == {}  # above COMPILED_MOE_BATCH: the eager grouped loop
    assert llama_torch.cuda_plan(16, True, False)["compile"] is llama_torch.cuda_graphs
    cfg = models.CONFIGS[model]
    w = seeded_weights_numpy(cfg, 3)
    compile_cpu = lambda forward, _: torch.compile(forward, fullgraph=True, dynamic=False)
    runner = llama_torch.Runner(cfg, "float32", "cpu", 4, 16, weights=w, compile=compile_cpu, launch="compiled")
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (4, 6))
    runner.prefill_step(prompt)()
    step = np.random.default_rng(2).integers(0, cfg.vocab_size, (4, 1))
    got = runner.decode_step(step, 6)().float().numpy()
    assert runner.launch == "compiled"  # no fall-back to eager
    routes = []
    want = llama_ref.forward(cfg, w, np.concatenate([prompt, step], axis=1), routes=routes)[:, -1]
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-5 * np.abs(want).max())
    for device, ref in zip(runner.routes(), routes):
        np.testing.assert_array_equal(device, ref.experts.reshape(4, 7, -1)[:, -1])


def cpu_backend(name: str = "torch-cpu"):
    from infercost.bench.backend import open_backend
    return open_backend(name, threads=2)


@pytest.mark.parametrize("model", ["tiny-moe", "tiny-mla", "tiny-gptoss"])
# torch-cpu at batch 1 (the compiled one-token path) and 2 (the batched one); jax-cpu's batched
# path runs on every family's checkpoint below
@pytest.mark.parametrize("backend, batch", [("torch-cpu", 1), ("torch-cpu", 2), ("jax-cpu", 1)])
def test_each_cpu_backend_runs_a_moe_as_the_float64_reference_does(model, backend, batch):
    from infercost.bench.llm import CHECK_PROMPT, CHECK_STEPS, check_model
    r = check_model(cpu_backend(backend), models.CONFIGS[model], "float32", False, 0, None, batch=batch)
    assert r["passed"] and r["greedy_tokens_agree"] and r["error"] < 1e-5, r
    kernel = batch == 1 and model == "tiny-moe"  # Mixtral-style experts: infercost's step kernel at batch 1
    assert ("infercost's float32 decode step" in r["launch"]) == kernel, r["launch"]
    if backend == "torch-cpu" and not kernel:  # a mixture of experts' decode is compiled at small batches too
        assert "torch.compile" in r["launch"] and ("by index for each token" in r["launch"]) == (batch > 1)
    # every token's choice in each of the 2 MoE layers, over the prompt and the decode steps, is the reference's
    choices = 2 * batch * (CHECK_PROMPT + CHECK_STEPS)
    assert r["routing"] == {**r["routing"], "choices": choices, "agree": choices, "near_ties_followed": 0, "passed": True}


@pytest.mark.slow
@pytest.mark.parametrize("kind", FAMILIES)
def test_each_cpu_backend_runs_each_family_from_its_hugging_face_checkpoint(kind, tmp_path):
    from infercost.bench.llm import check_model
    hf_model(kind).float().save_pretrained(tmp_path)
    cfg = models.from_hf_config(tmp_path / "config.json")
    # one batch a framework (both batches of both run on the built-in tiny shapes above)
    for backend, batch in (("torch-cpu", 1), ("jax-cpu", 2)):
        r = check_model(cpu_backend(backend), cfg, "float32", False, 0, str(tmp_path), batch=batch)
        assert r["passed"] and r["greedy_tokens_agree"] and r["routing"]["passed"], (backend, r)


def test_a_step_reads_no_expert_that_no_token_routed_to(tmp_path):
    # 64 experts, 2 a token: the check's 2 x 8 prompt tokens and 3 decode steps route to a few of
    # them; every other expert's weights are NaN. A kernel that read (or multiplied and masked) an
    # unrouted expert would put NaN in the logits and fail the check.
    from safetensors.numpy import save_file

    from infercost.bench.llm import CHECK_PROMPT, CHECK_STEPS, check_model
    from infercost.kernels.llama import seeded_weights_numpy
    cfg = MoEConfig(vocab_size=256, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, experts=64, top_k=2,
                    expert_intermediate=32, source="test: many experts")
    w = seeded_weights_numpy(cfg, 0)
    used = [set() for _ in range(cfg.layers)]
    for batch in (1, 2):
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, CHECK_PROMPT))
        tokens, _ = llama_ref.greedy(cfg, w, prompt, CHECK_STEPS)
        routes = []
        llama_ref.forward(cfg, w, np.concatenate([prompt, tokens], axis=1), routes=routes)
        for layer, r in zip(used, routes):
            layer.update(r.experts.ravel().tolist())
    assert all(len(u) < 40 for u in used)  # most experts stay unrouted
    for i, u in enumerate(used):
        for e in set(range(64)) - u:
            for n in ("gate", "up", "down"):
                w[f"model.layers.{i}.mlp.experts.{e}.{n}_proj.weight"] = np.full_like(
                    w[f"model.layers.{i}.mlp.experts.{e}.{n}_proj.weight"], np.nan)
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(tmp_path / "model.safetensors"))
    # torch-cpu's compiled one-token path and batched path, and jax-cpu's grouped tiles at batch 2
    for backend, batch in (("torch-cpu", 1), ("torch-cpu", 2), ("jax-cpu", 2)):
        r = check_model(cpu_backend(backend), cfg, "float32", False, 0, str(tmp_path), batch=batch)
        assert r["finite"] and r["passed"] and r["greedy_tokens_agree"], (backend, r)


@pytest.mark.parametrize("backend", ["torch-cpu", "jax-cpu"])
def test_a_moe_decode_case_counts_the_bytes_of_its_routed_experts(backend):
    from infercost.bench.llm import TransformerWorkload
    from infercost.bench.measure import measure_case
    from infercost.bench.timing import Settings
    case = {"backend": backend, "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny-moe", "batch": 1, "tokens": 16}}
    r = measure_case(cpu_backend(backend), TransformerWorkload(case), case, Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=3), 0, 2)
    # the bytes are the work's, whatever the timing gates made of a busy host's timings
    assert r["status"] in ("ok", "invalid") and r["check"]["passed"], r["reasons"]
    # tiny-moe by hand, float32: attention 64 x 16 x (2 x 4 + 2 x 2) x 4 = 49,152 a layer; the router
    # 8 x 64 x 4 = 2,048; two experts of 3 x 64 x 32 x 4 = 24,576 each; norms 2 x 64 x 4 = 512 a
    # layer; the head 512 x 64 x 4 = 131,072 and its norm 256; an embedding row 256; the cache read
    # over 17 positions, 2 x 2 x 2 x 16 x 4 x 17 = 8,704, and one written, 512; 512 float32 logits 2,048.
    layer = 49_152 + 2_048 + 2 * 24_576 + 512
    assert r["metrics"]["bytes"] == 2 * layer + 131_072 + 256 + 256 + 8_704 + 512 + 2_048
    moe = r["case"]["moe"]
    assert (moe["experts"], moe["top_k"], moe["experts_expected_per_layer"]) == (8, 2, 2)
    # one token, two distinct experts a layer, as its router chose them
    assert (r["metrics"]["experts_read_per_layer"], r["metrics"]["experts_read_basis"]) == (2, "counted from the timed step's router")
    assert moe["params_active"] == moe["params_total"] - 2 * 6 * 3 * 64 * 32
    # tables and reports name it with both counts: 189,760 parameters, 116,032 of them a token's
    from infercost.hardware.cost import model_label
    assert model_label(r["case"]) == "tiny-moe (MoE 0.19M, 0.116M active)"


def test_a_device_choice_at_a_near_tie_is_followed_and_any_other_fails_the_check():
    from infercost.bench.llm import compare_routes
    from infercost.kernels.llama import seeded_weights_numpy
    cfg = CONFIGS["tiny-moe"]
    w = seeded_weights_numpy(cfg, 0)
    sequence = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 12))
    routes = []
    logits = llama_ref.forward(cfg, w, sequence, routes=routes)
    ref = np.stack([r.experts for r in routes])
    margin = np.stack([r.margin for r in routes])
    # the device picks another expert for the token of layer 1 whose choice was the closest, as a
    # flip of rounding would; whether that is a near-tie is set by the gap the check is given
    layer, token = 1, int(np.argmin(margin[1]))
    flipped = ref.copy()
    flipped[layer, token, -1] = min(set(range(cfg.experts)) - set(ref[layer, token].tolist()))
    device = flipped.reshape(2, 1, 12, cfg.top_k)
    gap = margin[layer, token]
    near, follow = compare_routes(cfg, w, sequence, device, near_tie=gap * 1.01)
    assert near == {**near, "choices": 24, "agree": 23, "near_ties_followed": 1, "passed": True}
    assert (follow[0] == ref[0]).all() and (follow[1] == flipped[1]).all()
    followed = llama_ref.forward(cfg, w, sequence, follow=follow)
    assert np.abs(followed[0, :token] - logits[0, :token]).max() == 0  # earlier tokens are untouched
    assert np.abs(followed[0, token] - logits[0, token]).max() > 0     # the followed choice changed its logits
    clear, _ = compare_routes(cfg, w, sequence, device, near_tie=gap * 0.99)
    assert clear["near_ties_followed"] == 0 and not clear["passed"]


def test_mla_caches_one_latent_and_one_rotary_key_a_position_and_counts_its_weights_by_hand():
    cfg = models.CONFIGS["tiny-mla"]  # hidden 64, 4 heads, q rank 32, latent 32, nope 16, rope 8, v 16, 3 layers
    assert cfg.kv_position_bytes("float32") == 3 * (32 + 8) * 4  # against 2 x 4 heads x 24 wide in plain attention
    q = 32 * 64 + 4 * (16 + 8) * 32          # q_a_proj, q_b_proj
    latent = (32 + 8) * 64 + 4 * (16 + 16) * 32  # kv_a_proj_with_mqa, kv_b_proj
    assert cfg.attention_params() == q + latent + 64 * 4 * 16
    # absorbed decode, per token and attended position: each head's scores over latent + rotary key, its latent sum
    assert cfg.attention_flops() == 3 * 4 * 2 * (32 + 8 + 32)
    # DeepSeek-V3 in bfloat16: 61 layers x (512 + 64) x 2 bytes = 70,272 a position
    assert models.CONFIGS["deepseek-v3"].kv_position_bytes("bfloat16") == 70_272


DEEPSEEK = {"model_type": "deepseek_v3", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64, "moe_intermediate_size": 16,
            "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "q_lora_rank": 16,
            "kv_lora_rank": 12, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6}


@pytest.mark.parametrize("change,message", [
    ({"n_group": 3}, "n_group 3 does not divide the 8 experts"),
    ({"topk_group": 5}, "topk_group 5 is more than the 4 groups"),
    ({"num_experts_per_tok": 5}, "top_k 5 is more than the experts of 2 groups"),
    ({"kv_lora_rank": None}, "kv_lora_rank must be a positive whole number"),
    ({"kv_lora_rank": 64}, "compresses nothing"),
    ({"topk_method": "greedy"}, "topk_method 'greedy' is not built"),
    ({"routed_scaling_factor": "x"}, "routed_scaling_factor must be a positive number, not 'x'"),
    ({"qk_rope_head_dim": 3}, "head_dim must be a positive even number"),
])
def test_an_inconsistent_deepseek_config_is_one_line_naming_the_field(tmp_path, change, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**DEEPSEEK, **change}))
    with pytest.raises(ValueError, match=message):
        models.from_hf_config(path)


def test_a_gpt_oss_sliding_layer_holds_only_its_window_in_the_work_model():
    cfg = models.CONFIGS["tiny-gptoss"]  # 2 layers, layer 0 slides over 4 positions; 2 KV heads of 16
    position = 2 * 2 * 16 * 4             # keys and values of one position in one layer, float32
    assert cfg.kv_bytes(1, 3, "float32") == 2 * 3 * position           # shorter than the window: all of it
    assert cfg.kv_bytes(2, 100, "float32") == 2 * (4 + 100) * position  # the sliding layer its last 4 only
    # an expert: gate/up 32 x 64 x 2 and down 64 x 32 weights, biases 64 + 64
    assert cfg.expert_params() == 3 * 64 * 32 + 64 + 64


def test_a_gpt_oss_checkpoint_in_mxfp4_is_refused_before_anything_runs(tmp_path):
    from safetensors.numpy import save_file

    from infercost.kernels.llama import seeded_weights_numpy
    cfg = models.CONFIGS["tiny-gptoss"]
    w = {k: v.astype(np.float32) for k, v in seeded_weights_numpy(cfg, 0).items()}
    fused = w.pop("model.layers.1.mlp.experts.gate_up_proj")  # as the Hub's MXFP4 file holds it: blocks and scales
    w["model.layers.1.mlp.experts.gate_up_proj_blocks"] = np.zeros(fused.shape[:2] + (2, 16), np.uint8)
    save_file(w, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="gate_up_proj"):
        models.read_weights(tmp_path, cfg)


EP_SCRIPT = """
import json, sys
import jax, numpy as np
from jax.sharding import Mesh
from infercost.kernels import llama, llama_jax, llama_ref, models
jax.config.update("jax_default_matmul_precision", "highest")
cfg = models.CONFIGS["tiny-moe"]
ep, tp = int(sys.argv[1]), int(sys.argv[2])
w64 = llama.seeded_weights_numpy(cfg, 0)
prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (4, 7))
ref_tokens, ref_logits = llama_ref.greedy(cfg, w64, prompt, 3)
devices = jax.devices()
out = {"devices": len(devices)}
for name, mesh in (("sharded", Mesh(np.array(devices[:ep * tp]).reshape(1, ep, tp), ("dp", "ep", "tp"))), ("unsharded", None)):
    r = llama_jax.Runner(cfg, "float32", devices[0], 4, 10, seed=0, mesh=mesh, multiply_reduce_attention=True)
    logits = [np.asarray(r.prefill_step(prompt, last_only=False)())]
    for i in range(3):
        logits.append(np.asarray(r.decode_step(ref_tokens[:, i:i + 1], 7 + i)()))
    out[name] = {"error": max(float(np.abs(g - x).max() / np.abs(x).max()) for g, x in zip(logits, ref_logits)),
                 "logits": [l.tolist() for l in logits], "routes": r.routes().tolist()}
    if mesh is not None:
        out["hlo"] = r._compiled[("decode", 4, 1)].as_text()
        out["expert_rows"] = r.params["layers"][0]["we13"].addressable_shards[0].data.shape[0]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("ep,tp", [(4, 1), (2, 2)])
def test_experts_split_over_devices_give_the_unsharded_logits_with_three_all_to_alls_a_layer(ep, tp):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", EP_SCRIPT, str(ep), str(tp)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    sharded, unsharded = out["sharded"], out["unsharded"]
    assert sharded["error"] < 1e-5 and unsharded["error"] < 1e-5  # both against float64
    for a, b in zip(sharded["logits"], unsharded["logits"]):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max() < 1e-5
    assert sharded["routes"] == unsharded["routes"]  # the same experts for every token
    assert out["expert_rows"] == 8 // (ep * tp)      # each device holds its share of the 8 experts
    # Decode at batch 4: each ep group routes its 4 / ep tokens, 2 experts each, and each of a tp
    # group's devices sends 1 / tp of those pairs: an [ep x tp, pairs] block of expert numbers and
    # an [ep x tp, pairs, 64] block of float32 rows, and gets the results back in one more: three
    # all-to-alls a MoE layer (2 layers). With tp=2 each layer adds the attention's all-reduce of
    # [4 / ep, 1, 64] and the experts' shares' one of [4 / ep, 64]; the head's vocabulary split
    # over tp is gathered once.
    collectives = re.findall(r"= \((.*?)\) (all-to-all)\(", out["hlo"])
    pairs = 2 * 4 // ep // tp
    pieces = lambda kind, dims: ", ".join([f"{kind}[1,{dims}]" + ("{2,1,0}" if kind == "f32" else "{1,0}")] * (ep * tp))
    assert [(p, op) for p, op in collectives] == 2 * [(pieces("s32", pairs), "all-to-all"),
                                                     (pieces("f32", f"{pairs},64"), "all-to-all"),
                                                     (pieces("f32", f"{pairs},64"), "all-to-all")]
    others = re.findall(r"= (\S+) (all-reduce|all-gather|collective-permute|reduce-scatter)\(", out["hlo"])
    rows = 4 // ep
    assert [(shape.split("{")[0], op) for shape, op in others] == ([] if tp == 1 else 2 * [
        (f"f32[{rows},1,64]", "all-reduce"), (f"f32[{rows},64]", "all-reduce")] + [(f"f32[{rows},1,512]", "all-gather")])


@pytest.mark.slow
def test_a_run_splits_a_moe_by_experts_and_refuses_layouts_it_cannot_split(tmp_path):
    out = tmp_path / "r.jsonl"
    args = [sys.executable, "-m", "infercost.cli", "run", "--workload", "decode", "--tokens", "16",
            "--min-time", "0.05", "--warmup", "0.05", "--repeats", "3"]
    # a checkpoint file as the Hub stores it: Qwen2-MoE's 6 experts (3 a device) with their shared expert
    hf_model("qwen2_moe").float().save_pretrained(tmp_path / "ck")
    proc = subprocess.run([*args, "--batch", "2", "--backend", "jax-cpu,torch-cpu", "--model", str(tmp_path / "ck" / "config.json"),
                           "--weights", str(tmp_path / "ck"), "--mesh", "ep=2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    by_backend = {r["case"]["backend"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(by_backend) == {"jax-cpu", "torch-cpu"}
    for rec in by_backend.values():  # jax-cpu over 2 forced devices, torch-cpu over 2 gloo ranks
        assert rec["status"] in ("ok", "invalid") and rec["check"]["passed"], rec.get("reasons")
        assert rec["case"]["layout"] == "tp=1,dp=1,ep=2" and rec["case"]["devices"] == 2
        assert "all-to-all" in rec["case"]["launch"] and rec["check"]["routing"]["passed"]
    from infercost.bench.llm import TransformerWorkload
    for backend, model, tp, ep, batch, reason in (
            ("jax-cpu", "tiny-moe", 1, 3, 6, "ep=3 does not divide the 8 experts"),
            ("jax-cpu", "tiny-moe", 3, 2, 2, "ep x tp = 6 devices do not divide the 8 experts"),
            ("jax-cpu", "tiny-moe", 1, 2, 3, "ep=2 must divide the batch 3 (each device takes its share of the sequences)"),
            ("jax-cpu", "tiny", 1, 2, 2, "ep=2 splits a mixture of experts' experts; tiny is a dense model"),
            ("jax-cpu", "tiny-moe", 2, 1, 2, "a mixture of experts runs on one device or split by experts (--mesh ep=N, "
             "or tp=T,ep=N to split its attention heads too); tensor or data parallelism alone is not built for it"),
            ("torch-cpu", "tiny-moe", 2, 2, 2, "torch-cpu splits a model by tensor or by expert parallelism, not both yet; "
             "the JAX backends take tp=T,ep=N")):
        case = {"backend": backend, "workload": "decode", "dtype": "float32",
                "params": {"model": model, "batch": batch, "tokens": 16, "mesh": {"tp": tp, "dp": 1, "ep": ep}}}
        assert TransformerWorkload(case).fit(cpu_backend(backend)) == reason
    proc = subprocess.run([*args, "--model", "tiny-moe", "--mesh", "ep=2,dp=2", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "ep with dp is not built" in err[0]
    proc = subprocess.run([*args, "--model", "tiny-moe", "--mesh", "ep=2,ep=4", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1 and "ep is given twice" in err[0]


@pytest.mark.parametrize("backend", ["torch-cpu", "jax-cpu"])
def test_int8_experts_are_checked_and_counted_as_stored(backend):
    from infercost.bench.llm import TransformerWorkload
    from infercost.bench.measure import measure_case
    from infercost.bench.timing import Settings
    case = {"backend": backend, "workload": "decode", "dtype": "float32", "tf32": False, "threads": 2,
            "params": {"model": "tiny-moe", "batch": 1, "tokens": 16, "quant": "int8"}}
    r = measure_case(cpu_backend(backend), TransformerWorkload(case), case, Settings(warmup_s=0.05, min_time_s=0.1, min_blocks=3), 0, 2)
    assert r["status"] in ("ok", "invalid") and r["check"]["passed"], r["reasons"]
    assert r["check"]["quality"]["top1_agreement"] == 1.0
    # tiny-moe with int8 matrices, by hand: a byte a weight and a float32 scale a row. Attention
    # q 64 x 64 (4,096 + 256), k and v 32 x 64 (2,048 + 128 each), o 64 x 64 (4,096 + 256): 13,056;
    # the router stays float32, 8 x 64 x 4 = 2,048; two experts, gate and up 32 x 64 (2,048 + 128
    # each) and down 64 x 32 (2,048 + 256): 6,656 each; norms 512. The head 512 x 64 (32,768 +
    # 2,048), its norm 256, an embedding row 256, the cache 8,704 read and 512 written, logits 2,048.
    layer = 13_056 + 2_048 + 2 * 6_656 + 512
    assert r["metrics"]["bytes"] == 2 * layer + 34_816 + 256 + 256 + 8_704 + 512 + 2_048


@pytest.mark.slow
def test_int8_weights_on_a_checkpoint_with_a_shared_expert_in_both_frameworks(tmp_path):
    from infercost.bench.llm import check_model
    hf_model("qwen2_moe").float().save_pretrained(tmp_path)
    cfg = models.from_hf_config(tmp_path / "config.json")
    for backend in ("torch-cpu", "jax-cpu"):
        for batch in (1, 2):
            r = check_model(cpu_backend(backend), cfg, "float32", False, 0, str(tmp_path), batch=batch, q=QuantSpec("int8"))
            assert r["passed"] and r["routing"]["passed"] and r["quality"]["top1_agreement"] >= 0.9, (backend, r)


def test_quantized_weights_of_the_families_not_built_for_them_are_refused_with_the_reason():
    from infercost.bench.llm import TransformerWorkload
    case = {"backend": "torch-cpu", "workload": "decode", "dtype": "float32",
            "params": {"model": "tiny-mla", "batch": 1, "tokens": 16, "quant": "int8"}}
    why = TransformerWorkload(case).fit(cpu_backend())
    assert why.startswith("quantized weights are built for the Mixtral and Qwen families; mla models")


@pytest.mark.slow
@pytest.mark.parametrize("model,quant", [("tiny-moe", None), ("tiny-moe", "int8"), ("tiny-mla", None), ("tiny-gptoss", None)])
def test_torch_ranks_split_by_experts_decode_as_the_float64_reference(model, quant):
    # 2 gloo ranks, each with half of every layer's experts and one of the 2 sequences; the check
    # compares the gathered logits and every token's experts with float64's
    from infercost.bench.llm import check_model
    r = check_model(cpu_backend(), models.CONFIGS[model], "float32", False, 0, None, batch=2,
                    q=QuantSpec(quant), mesh={"tp": 1, "dp": 1, "ep": 2})
    assert r["passed"] and r["greedy_tokens_agree"] and r["routing"]["agree"] == r["routing"]["choices"], r
    assert "experts and sequences split over 2 ranks" in r["launch"]
