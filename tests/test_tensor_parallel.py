"""One model over several devices (JAX, tensor parallel): the same logits as the unsharded model
and float64, and exactly the communication the design says. Runs on forced host devices (each
check in its own process: JAX's device count is fixed when it starts)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import hf_checkpoint

SCRIPT = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    import jax, numpy as np
    from jax.sharding import Mesh
    from infercost.kernels import llama, llama_jax, llama_ref
    from infercost.kernels.llama import CONFIGS
    jax.config.update("jax_default_matmul_precision", "highest")
    tp, dp, kv_heads = (int(x) for x in sys.argv[1:4])
    # 8 heads (hd 8) on 2 or 8 KV heads: KV heads split over chips, or fewer than chips (replicated)
    cfg = replace(CONFIGS["tiny"], heads=8, kv_heads=kv_heads, qkv_bias=True)
    w64 = llama.seeded_weights_numpy(cfg, 0)
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 7))
    ref_tokens, ref_logits = llama_ref.greedy(cfg, w64, prompt, 3)
    devices = jax.devices()
    out = {"devices": len(devices)}
    for name, mesh in (("sharded", Mesh(np.array(devices[:tp * dp]).reshape(dp, tp), ("dp", "tp"))), ("unsharded", None)):
        r = llama_jax.Runner(cfg, "float32", devices[0], 2, 10, seed=0, mesh=mesh, multiply_reduce_attention=True)
        logits = [np.asarray(r.prefill_step(prompt, last_only=False)())]
        for i in range(3):  # teacher-forced on the reference's tokens
            logits.append(np.asarray(r.decode_step(ref_tokens[:, i:i + 1], 7 + i)()))
        out[name] = {"error": max(float(np.abs(g - x).max() / np.abs(x).max()) for g, x in zip(logits, ref_logits)),
                     "tokens": [l[:, -1].argmax(-1).tolist() for l in logits[:-1]], "logits": [l.tolist() for l in logits]}
        if mesh is not None:
            out["hlo"] = r._compiled[("decode", 2, 1)].as_text()
            out["wq_shard_rows"] = r.params["layers"][0]["wq"].addressable_shards[0].data.shape[0]
    out["ref_tokens"] = ref_tokens.T.tolist()
    print(json.dumps(out))
""")


def run_layout(tp, dp, kv_heads):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tp), str(dp), str(kv_heads)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def collectives(hlo: str, op: str) -> list[int]:
    """Bytes of the result of every `op` in the compiled HLO (f32 shapes)."""
    sizes = []
    for line in hlo.splitlines():
        m = re.search(r"= f32\[([\d,]*)\]\S* " + op + r"\(", line)
        if m:
            dims = [int(d) for d in m.group(1).split(",") if d]
            size = 4
            for d in dims:
                size *= d
            sizes.append(size)
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("tp,dp,kv_heads", [(2, 1, 2), (4, 1, 2), (8, 1, 8), (8, 1, 2), (4, 2, 2)])
def test_sharded_logits_match_the_unsharded_model_and_float64_with_the_designed_communication(tp, dp, kv_heads):
    out = run_layout(tp, dp, kv_heads)
    assert out["devices"] == 8
    sharded, unsharded = out["sharded"], out["unsharded"]
    assert sharded["error"] < 1e-5 and unsharded["error"] < 1e-5  # both against float64
    import numpy as np
    for a, b in zip(sharded["logits"], unsharded["logits"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-5
    assert sharded["tokens"] == unsharded["tokens"] == out["ref_tokens"]  # greedy tokens equal float64's
    assert out["wq_shard_rows"] == 8 * 8 // tp  # each chip holds its heads' rows of W_q
    # Row-parallel o and down: one all-reduce each per layer, of the activations (batch 2 x 1 token
    # x hidden 64 floats = 512 bytes); the vocab-split LM head: one all-gather of the logits
    # (2 x 1 x 512 floats = 4096 bytes); nothing else.
    layers = 2
    assert collectives(out["hlo"], "all-reduce") == [2 * 1 * 64 * 4 // dp] * (2 * layers)
    assert collectives(out["hlo"], "all-gather") == [2 * 1 * 512 * 4 // dp]
    assert "all-to-all(" not in out["hlo"] and "collective-permute(" not in out["hlo"]


# A run splitting cases over devices through the CLI, one process and two local hosts:
# tests/test_multihost.py (test_two_local_hosts_measure_a_split_model_as_one_process_does).


@pytest.mark.slow
def test_a_layout_the_model_cannot_take_is_skipped_with_the_reason(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "jax-cpu", "--model", "tiny",
                           "--mesh", "tp=3,dp=1", "--workload", "decode", "--tokens", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (rec,) = map(json.loads, out.read_text().splitlines())
    assert rec["status"] == "skipped" and "must divide the 4 heads" in rec["reasons"][0]


def test_estimate_with_tensor_parallel_communication_matches_jax_llm_examples_70b_on_v5e_16():
    # jax-ml/jax-llm-examples, llama3 README: Llama-3.1-70B with int8 weights and KV cache, TP16 on a
    # TPU v5e-16, batch 8, context 2048: 159 tokens/s per sequence (stated there as 85% of HBM bandwidth).
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "estimate", "-m", "llama-3.1-70b", "-a", "TPU v5e",
                           "--chips", "16", "--batch", "8", "--context", "2048", "--quant", "int8", "--kv-cache", "int8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "decode step" in l)
    per_user = float(line.split("per chip,")[1].split("tok/s per user")[0])
    assert per_user == pytest.approx(159, rel=0.10)
    comm = next(l for l in proc.stdout.splitlines() if "tensor parallel communication" in l)
    assert "200 GB/s" in comm  # the catalog's ICI figure for v5e, 1600 Gbps


def test_the_communication_term_is_the_bus_volume_over_the_interconnect():
    from infercost.hardware import catalog
    from infercost.hardware.estimate import comm_seconds
    from infercost.kernels.llama import CONFIGS
    cfg, acc = CONFIGS["llama-3.1-8b"], catalog.lookup("NVIDIA H200")
    # 8 chips, batch 4, bf16, by hand: 64 all-reduces (2 a layer) of 4 x 4096 x 2 = 32,768 bytes move
    # 2 x 7/8 of that each, 3,670,016 bytes in all, 8.1556 us at 450 GB/s; the logits' all-gather
    # moves 7/8 x 4 x 128,256 x 4 = 1,795,584 bytes, 3.9902 us. Together 12.1458 us.
    assert comm_seconds(cfg, acc, 8, 4, 4, 2) == pytest.approx(12.1458e-6, rel=1e-4)
    assert comm_seconds(cfg, acc, 1, 4, 4, 2) == 0.0


COLLECTIVE = textwrap.dedent("""
    import json
    from infercost.bench.backend import open_backend
    from infercost.bench.measure import measure_case
    from infercost.bench.timing import Settings
    from infercost.bench.workloads import CollectiveWorkload
    backend = open_backend("jax-cpu", threads=2)
    out = []
    for op, nbytes in (("all-reduce", 1 << 20), ("all-gather", 1 << 20), ("all-to-all", 1 << 20), ("all-reduce", 2)):
        case = {"backend": "jax-cpu", "workload": "collective", "params": {"op": op, "bytes": nbytes, "devices": 4},
                "dtype": "float32", "tf32": False, "threads": 2}
        out.append(measure_case(backend, CollectiveWorkload(case), case, Settings(0.05, 0.1, 5), 0, 2))
    print(json.dumps(out))
""")


def assert_nccl_tests_bandwidths(record: dict, bus_bytes_per_message: dict) -> None:
    """From the record's own raw times, by hand: algorithm bandwidth = the 1 MiB message / the mean
    time a call; bus bandwidth = what each rank moves over a link in a ring per message byte (nccl-tests'
    PERFORMANCE.md): all-reduce 2(n-1)/n (4 devices 1.5, 2 devices 1.0), all-gather and all-to-all (n-1)/n
    (0.75, 0.5): an all-to-all rank keeps 1 of its n chunks and sends the others."""
    times = record["raw_times_s"]
    algbw = 1_048_576 / (sum(times) / len(times)) / 1e9
    m = record["metrics"]
    assert m["message_bytes"] == 1_048_576
    assert m["algbw_gbs"] == pytest.approx(algbw, rel=1e-9)
    assert m["busbw_gbs"] == pytest.approx(algbw * bus_bytes_per_message[record["case"]["params"]["op"]], rel=1e-9)


def test_collectives_are_checked_and_reported_as_nccl_tests_does():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", COLLECTIVE], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reduce_rec, gather_rec, a2a_rec, tiny = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in (reduce_rec, gather_rec, a2a_rec):
        assert r["check"]["passed"] and r["case"]["devices"] == 4
        assert r["status"] == "ok" or r["reasons"][0].startswith(("too noisy", "time does not grow")), r["reasons"]
        m = r["metrics"]
        if r["status"] == "ok":
            assert_nccl_tests_bandwidths(r, {"all-reduce": 1.5, "all-gather": 0.75, "all-to-all": 0.75})
    assert gather_rec["check"]["error"] == a2a_rec["check"]["error"] == 0.0  # a gather and an all-to-all move values exactly
    assert tiny["status"] == "skipped" and "less than one element" in tiny["reasons"][0]


# -- PyTorch: one process per rank (torch.distributed, gloo on this CPU) ----------------------
TORCH_SCRIPT = textwrap.dedent("""
    import json, sys
    from dataclasses import replace
    import numpy as np
    from torch.profiler import ProfilerActivity, profile
    from infercost.bench.backend import open_backend
    from infercost.kernels import llama, llama_ref, quant
    from infercost.kernels.llama import CONFIGS
    tp, kv_heads, batch = (int(x) for x in sys.argv[1:4])
    mode = sys.argv[4] if len(sys.argv) > 4 else None
    backend = open_backend("torch-cpu")
    backend.configure("float32", False)
    cfg = replace(CONFIGS["tiny"], heads=8, kv_heads=kv_heads, qkv_bias=True)
    w64 = llama.seeded_weights_numpy(cfg, 0)
    weights = quant.quantize(cfg, w64, mode) if mode else None
    ref_w = quant.dequantized(weights) if mode else w64
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, 7))
    ref_tokens, ref_logits = llama_ref.greedy(cfg, ref_w, prompt, 3)
    out = {}
    for name, mesh in (("sharded", {"tp": tp, "dp": 1}), ("unsharded", None)):
        r = backend.load_model(cfg, "float32", batch, 10, seed=0, weights=weights, mesh=mesh)
        logits = [backend.fetch(r.prefill_step(prompt, last_only=False)())]
        for i in range(3):  # teacher-forced on the reference's tokens
            step = r.decode_step(ref_tokens[:, i:i + 1], 7 + i)
            if mesh is not None and i == 2:  # what the transport carries in one decode step
                with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
                    logits.append(backend.fetch(step()))
                out["transport"] = [[e.name, e.input_shapes[0]] for e in p.events() if e.name.startswith("gloo:")]
                out["launch"] = r.launch
            else:
                logits.append(backend.fetch(step()))
        out[name] = {"error": max(float(np.abs(g - x).max() / np.abs(x).max()) for g, x in zip(logits, ref_logits)),
                     "tokens": [l[:, -1].argmax(-1).tolist() for l in logits[:-1]], "logits": [l.tolist() for l in logits]}
        if mesh is not None:
            out["wq_rows"] = r.local.model.layers[0]["wqkv"].shape[0]
    out["ref_tokens"] = ref_tokens.T.tolist()
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.parametrize("tp,kv_heads,batch,mode", [(2, 2, 1, None), (4, 2, 2, None), (4, 8, 2, None), (2, 2, 2, "int8")])
def test_torch_ranks_match_the_unsharded_model_and_float64_and_send_only_the_designed_collectives(tp, kv_heads, batch, mode):
    proc = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, str(tp), str(kv_heads), str(batch), *([mode] if mode else [])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import numpy as np
    sharded, unsharded = out["sharded"], out["unsharded"]
    assert sharded["error"] < 1e-5 and unsharded["error"] < 1e-5  # both against float64
    for a, b in zip(sharded["logits"], unsharded["logits"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() / np.abs(b).max() < 1e-5
    assert sharded["tokens"] == unsharded["tokens"] == out["ref_tokens"]
    # Each rank's fused QKV rows: its 8/tp query heads and its KV heads (split when there are at
    # least as many as ranks, else the one its query heads read), head_dim 8.
    local_kv = kv_heads // tp if kv_heads >= tp else 1
    assert out["wq_rows"] == (8 // tp + 2 * local_kv) * 8
    assert f"over {tp} ranks (gloo)" in out["launch"]
    if batch == 1:
        assert "torch.compile" in out["launch"]  # the compiled decode, collectives inside the graph
    # One decode step on the wire: the 72-word command to the other ranks; an all-reduce of the
    # activations (batch x 1 x hidden 64) after o and after down in each of 2 layers; one
    # all-gather of this rank's share of the logits (batch x 1 x 512/tp); nothing else.
    assert out["transport"] == [["gloo:broadcast", [72]]] + [["gloo:all_reduce", [batch, 1, 64]]] * 4 \
        + [["gloo:all_gather", [batch, 1, 512 // tp]]]


TORCH_FAULTS = textwrap.dedent("""
    import json, os, signal, time
    import numpy as np
    from infercost.bench.adapters import torch_dist
    from infercost.bench.backend import open_backend
    from infercost.kernels.llama import CONFIGS
    backend = open_backend("torch-cpu")
    cfg = CONFIGS["tiny"]
    out = {}
    for fault in ("killed", "stopped"):
        r = backend.load_model(cfg, "float32", 2, 10, mesh={"tp": 2, "dp": 1})
        r.prefill_step(np.zeros((2, 4), int))()
        follower = r.group.procs[0]
        os.kill(follower.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        start = time.perf_counter()
        try:
            r.decode_step(np.zeros((2, 1), int), 4)()
            out[fault] = "no error"
        except Exception as e:
            out[fault] = type(e).__name__
        out[fault + "_s"] = time.perf_counter() - start
        out[fault + "_left"] = follower.poll() is None
    again = backend.load_model(cfg, "float32", 2, 10, mesh={"tp": 2, "dp": 1})  # a fresh group
    out["after"] = np.asarray(again.prefill_step(np.zeros((2, 4), int))()).shape
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_a_lost_rank_fails_the_call_not_the_process_and_leaves_no_rank_behind():
    env = {**os.environ, "INFERCOST_RANK_TIMEOUT_S": "5"}
    proc = subprocess.run([sys.executable, "-c", TORCH_FAULTS], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["killed"] != "no error" and out["killed_s"] < 5  # a dead peer is noticed at once
    assert out["stopped"] != "no error" and out["stopped_s"] < 30  # a hung one at the collective timeout
    assert not out["killed_left"] and not out["stopped_left"]  # the group was torn down
    assert out["after"] == [2, 1, 512]  # the last position's logits


@pytest.mark.slow
def test_torch_collectives_are_checked_and_timed_over_ranks():
    # Two ranks: one a core of this host (torch-cpu's device count).
    script = COLLECTIVE.replace('"jax-cpu"', '"torch-cpu"').replace('"devices": 4', '"devices": 2')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reduce_rec, gather_rec, a2a_rec, tiny = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in (reduce_rec, gather_rec, a2a_rec):
        assert r["check"]["passed"], r
        assert r["check"]["error"] == 0.0 or r is reduce_rec
        assert r["case"]["devices"] == 2 and r["case"]["framework"] == "torch"
        if r["status"] == "ok":
            assert_nccl_tests_bandwidths(r, {"all-reduce": 1.0, "all-gather": 0.5, "all-to-all": 0.5})
    assert tiny["status"] == "skipped"


# Every split path runs on weights read from a Hugging Face checkpoint file (the safetensors reader
# hands out numpy.memmap arrays, which once broke torch's ranks): Llama 3 (untied head) and Qwen2
# (q/k/v biases, tied head), float, int8 weights and an int8 KV cache, over 2 and 4 devices.
# tiny checkpoints have 2 KV heads: on 2 devices one a device; on 4, torch ranks 0-1 and 2-3 share
# one. The check's reference attends to the cache gathered from every rank, so a head read from the
# wrong rank or in the wrong order fails it (tried: reversed, 1.57 relative error).
@pytest.mark.slow
@pytest.mark.parametrize("kind, devices, extra", [
    ("qwen2", 2, ["--quant", "int8", "--kv-cache", "int8", "--batch", "1"]),  # torch's ranks compile batch 1
    ("llama3", 4, ["--quant", "int8"]),
    ("qwen2", 4, ["--kv-cache", "int8"]),
])
def test_a_checkpoint_splits_over_devices_in_both_frameworks(tmp_path, kind, devices, extra):
    hf_checkpoint(tmp_path, kind)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "run", "--backend", "jax-cpu,torch-cpu",
                           "--model", str(tmp_path / "config.json"), "--weights", str(tmp_path / "model.safetensors"),
                           "--devices", str(devices), "--workload", "decode", "--batch", "2", "--tokens", "16", *extra,
                           "--min-time", "0.05", "--warmup", "0.05", "--repeats", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    recs = list(map(json.loads, out.read_text().splitlines()))
    assert {r["case"]["backend"] for r in recs} == {"jax-cpu", "torch-cpu"}
    for r in recs:  # (the timing may be flagged noisy on a busy host; the check may not fail)
        assert r["status"] != "error", r["reasons"]
        assert r["check"]["passed"] and r["check"]["greedy_tokens_agree"], r["check"]
        assert r["case"].get("layout") == (f"tp={devices},dp=1" if devices > 1 else None)
        assert r["case"]["weight_dtype"] == ("int8" if "--quant" in extra else "float32")
        assert r["case"]["kv_dtype"] == ("int8" if "--kv-cache" in extra else "float32")
        if extra:  # quality against the unquantized model
            assert r["check"]["quality"]["top1_agreement"] > 0.9


def test_the_llm_suite_on_a_machine_of_several_accelerators_spans_them_all():
    from infercost.bench.plan import plan_cases
    probes = {"torch-cuda": {"available": True, "devices": 8, "unsupported": {}}}
    cases, _ = plan_cases("llm", ["torch-cuda"], probes)
    split = [(c.workload, c.params["model"], c.params["batch"]) for c in cases if c.devices == 8]
    assert ("decode", "llama-3.1-70b", 1) in split and ("decode", "llama-3.1-70b", 64) in split
    assert ("decode", "llama-3.1-8b", 1) in split and ("prefill", "llama-3.1-70b", 1) in split
    dense = [c for c in cases if c.devices == 8 and not c.params["model"].startswith(("qwen3", "gpt-oss"))]
    assert all(c.layout.as_dict() == {"tp": 8, "dp": 1} for c in dense)
    # the mixtures of experts split by experts, a sequence a device at least
    moe = {(c.workload, c.params["model"], c.params["batch"], c.layout.ep) for c in cases if c.devices == 8} - {
        (c.workload, c.params["model"], c.params["batch"], 1) for c in dense}
    assert moe == {(w, m, b, 8) for m in ("qwen3-30b-a3b", "gpt-oss-120b")
                   for w, b in (("prefill", 8), ("decode", 8), ("decode", 64))}
    one_chip = [(c.params.get("model"), c.params.get("batch")) for c in cases if c.devices == 1]
    assert ("llama-3.1-8b", 1) in one_chip  # the same model on one chip, for the scaling
    single, _ = plan_cases("llm", ["torch-cuda"], {"torch-cuda": {"available": True, "devices": 1, "unsupported": {}}})
    assert all(c.devices == 1 for c in single)


def test_a_tensor_no_rule_splits_is_held_whole_by_every_rank():
    # a router, a router bias: replicated (a mixture of experts on a 1-device mesh scatters them whole)
    from infercost.kernels.llama import tp_slices
    from infercost.kernels.models import CONFIGS as ALL
    cfg = ALL["tiny-mla"]
    for name, shape in (("model.layers.1.mlp.gate.weight", (8, 64)), ("model.layers.1.mlp.gate.e_score_correction_bias", (8,))):
        for tp in (1, 2):
            assert all(tp_slices(cfg, name, shape, r, tp) == (slice(None),) * len(shape) for r in range(tp))


def test_estimate_over_more_gpus_than_a_host_holds_runs_its_collectives_at_the_hosts_network():
    # Llama-3.1-70B bf16, batch 8, tp=16 over two 8-GPU H100 hosts: the ring crosses the hosts'
    # network, 50 GB/s a GPU (DGX H100: one 400 Gb/s ConnectX-7 a GPU). By hand: an all-reduce of
    # 8 x 8192 bf16 activations moves 2 x 15/16 x 131072 B = 245,760 B a GPU -> 4.915 us; 2 a layer
    # x 80 layers = 786.4 us; the logits' all-gather 15/16 x 8 x 128256 x 4 B = 3,847,680 B -> 77.0 us.
    proc = subprocess.run([sys.executable, "-m", "infercost.cli", "estimate", "-m", "llama-3.1-70b", "-a",
                           "NVIDIA H100 SXM5 80GB", "--chips", "16", "--batch", "8"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    comm = next(l for l in proc.stdout.splitlines() if "tensor parallel communication" in l)
    assert "0.863 ms" in comm and "50 GB/s a chip across 2 hosts" in comm
    within = subprocess.run([sys.executable, "-m", "infercost.cli", "estimate", "-m", "llama-3.1-70b", "-a",
                             "NVIDIA H100 SXM5 80GB", "--chips", "8", "--batch", "8"],
                            capture_output=True, text=True, timeout=120)
    comm = next(l for l in within.stdout.splitlines() if "tensor parallel communication" in l)
    assert "over 450 GB/s a chip (in" in comm  # one host: NVLink
