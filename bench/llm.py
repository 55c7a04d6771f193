"""Prefill and decode cases of the Llama-family decoder: checked against float64, then timed.

Case params: model (a name from kernels.llama.CONFIGS or a config.json path), batch, tokens
(the prompt length for prefill, the context length for decode), and optionally weights (a
safetensors file or folder with Hugging Face names; default: seeded random weights).
"""

from __future__ import annotations

import importlib
import time

import numpy as np

from infercost.hardware import catalog
from infercost.kernels import llama, llama_ref
from infercost.kernels.dtypes import ITEMSIZE, model_tolerance

from . import gates
from .worker import timed

CHECK_FULL_MAX_PARAMS = 300_000_000  # larger models are checked on 2 layers of the real widths
CHECK_LAYERS = 2
CHECK_BATCH, CHECK_PROMPT, CHECK_STEPS = 2, 8, 3

_cache: dict = {}  # per worker: model checks already passed, and the CPU read bandwidth


def runner_class(framework: str):
    return importlib.import_module(f"infercost.kernels.llama_{framework}").Runner


def host_weights(path: str | None, cfg: llama.LlamaConfig) -> dict | None:
    if not path:
        return None
    tensors = llama.read_safetensors(path)
    llama.check_weights(cfg, tensors)
    return {name: tensors[name] for name in cfg.param_shapes()}


def memory_needed(cfg: llama.LlamaConfig, dtype: str, batch: int, tokens: int, max_seq: int) -> int:
    """Weights, KV cache, and the largest activations of a step (an estimate for the fit check)."""
    item = ITEMSIZE[dtype]
    acts = batch * tokens * (4 * cfg.hidden + 3 * cfg.intermediate) * item * 2
    scores = batch * cfg.heads * tokens * tokens * 4  # attention that materialises its scores
    logits = batch * cfg.vocab_size * 4 * 2
    return cfg.weight_bytes(dtype) + cfg.kv_bytes(batch, max_seq, dtype) + acts + scores + logits + (256 << 20)


def check_model(backend, cfg, dtype: str, tf32: bool, seed: int, weights_path: str | None,
                batch: int = CHECK_BATCH) -> dict:
    """Prefill and teacher-forced decode steps against the float64 reference on the same weights.

    Large models are checked on their first layers at full width: every matmul shape of the
    real model, at a cost the host can afford in float64. `batch` 1 checks the batch-1 code
    path (compiled differently on CPUs), any other the batched one.
    """
    ccfg = cfg if cfg.n_params() <= CHECK_FULL_MAX_PARAMS else llama.truncated(cfg, CHECK_LAYERS)
    weights = host_weights(weights_path, ccfg)
    runner = runner_class(backend.framework)(ccfg, dtype, backend.device, batch,
                                             CHECK_PROMPT + CHECK_STEPS, seed=seed, weights=weights,
                                             keep_weights=True)
    prompt = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, CHECK_PROMPT))
    w64 = runner.weights_numpy()
    ref_tokens, ref_logits = llama_ref.greedy(ccfg, w64, prompt, CHECK_STEPS)
    got = [backend.fetch(runner.prefill_step(prompt, last_only=False)())]
    for i in range(CHECK_STEPS):  # feed the reference's tokens, so both see the same sequence
        got.append(backend.fetch(runner.decode_step(ref_tokens[:, i:i + 1], CHECK_PROMPT + i)()))
    finite = all(np.isfinite(g).all() for g in got)
    error = max(float(np.abs(g - r).max()) / float(np.abs(r).max()) for g, r in zip(got, ref_logits)) if finite else float("inf")
    device_tokens = np.stack([g[:, -1].argmax(-1) for g in got[:-1]], axis=1)
    tolerance = model_tolerance(dtype, tf32)
    return {
        "error": error, "tolerance": tolerance, "finite": finite,
        "passed": bool(finite and error <= tolerance),
        "greedy_tokens_agree": bool(np.array_equal(device_tokens, ref_tokens)),
        "checked": f"{ccfg.layers} of {cfg.layers} layers, batch {batch}, prefill {CHECK_PROMPT} + {CHECK_STEPS} decode steps",
        "launch": runner.launch,
    }


def weight_read_sweep(arrays, threads: int | None = None, seconds: float = 0.3) -> float | None:
    """Bytes/s of ATen's sum over these very buffers (JAX arrays viewed through DLPack, no
    copy), or None when one cannot be viewed (oneDNN-packed, or not in host memory).

    Why the model's own buffers: on a shared or virtualised host, separately allocated buffers
    of one process read at different speeds (27 to 55 GB/s seen side by side here), so a sweep
    of some other buffer measures where that buffer landed, not the ceiling of these weights.
    ATen's sum for every backend: one read kernel, so torch and JAX share one definition.
    """
    import torch
    views = []
    for a in arrays:
        t = a if isinstance(a, torch.Tensor) else torch.from_dlpack(a)
        if t.is_mkldnn or t.device.type != "cpu":
            return None
        views.append(t)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for _ in range(2):
            for t in views:
                t.sum()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 5:
            t0 = time.perf_counter()
            for t in views:
                t.sum()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return sum(t.numel() * t.element_size() for t in views) / float(np.median(times))


def cpu_read_bandwidth(threads: int | None) -> float:
    """Bytes/s of the same sweep over a 512 MiB buffer of its own: the ceiling where the
    weights cannot be swept (oneDNN-packed). Cached per worker."""
    if "bandwidth" not in _cache:
        import torch
        _cache["bandwidth"] = weight_read_sweep([torch.ones(128 << 20)], threads, seconds=0.5)
    return _cache["bandwidth"]


def run_llm_case(backend, case: dict, settings, seed: int, cpus_available: int) -> dict:
    p = case["params"]
    cfg = llama.resolve_config(p["model"])
    dtype, tf32 = case["dtype"], bool(case.get("tf32"))
    batch, tokens = p["batch"], p["tokens"]
    prefill = case["workload"] == "prefill"
    max_seq = tokens if prefill else tokens + 1  # decode writes position `tokens`
    device = backend.device_name()
    out = {"case": {**case, "framework": backend.framework, "device": device,
                    "shape": f"{p['model']} b{batch} {'prompt' if prefill else 'ctx'}{tokens}",
                    "cache_policy": backend.cache_policy, "model_config": cfg.as_dict()}}

    reason = backend.unsupported(dtype, tf32)
    free = backend.memory_bytes()
    need = memory_needed(cfg, dtype, batch, tokens, max_seq)
    if reason is None and free is not None and need > 0.9 * free:
        reason = f"does not fit: needs ~{need / 1e9:.1f} GB (weights {cfg.weight_bytes(dtype) / 1e9:.1f} GB), device has {free / 1e9:.1f} GB free"
    if reason:
        return {**out, "status": "skipped", "valid": False, "reasons": [reason], "warnings": []}
    out["case"]["precision_flags"] = backend.configure(dtype, tf32)

    # One check per model and code path (batch 1 or batched); it does not depend on length.
    check_batch = 1 if batch == 1 else CHECK_BATCH
    check_key = ("check", p["model"], dtype, tf32, seed, p.get("weights"), check_batch)
    if check_key not in _cache:
        _cache[check_key] = check_model(backend, cfg, dtype, tf32, seed, p.get("weights"), check_batch)
    check = out["check"] = _cache[check_key]
    if not check["passed"]:
        why = "NaN or Inf in the logits" if not check["finite"] else (
            f"wrong logits: relative error {check['error']:.2e} > tolerance {check['tolerance']:.0e}")
        return {**out, "status": "invalid", "valid": False, "reasons": [why], "warnings": []}

    start = time.perf_counter()
    runner = runner_class(backend.framework)(cfg, dtype, backend.device, batch, max_seq, seed=seed,
                                             weights=host_weights(p.get("weights"), cfg),
                                             compile_decode=not prefill)
    backend.sync(runner.params)
    build_s = time.perf_counter() - start

    rng = np.random.default_rng(seed + 1)
    start = time.perf_counter()
    if prefill:
        step = runner.prefill_step(rng.integers(0, cfg.vocab_size, (batch, tokens)), last_only=True)
    else:
        runner.prefill_step(rng.integers(0, cfg.vocab_size, (batch, tokens)))()  # fill the cache
        step = runner.decode_step(rng.integers(0, cfg.vocab_size, (batch, 1)), tokens)
    backend.sync(step())
    backend.sync(step())  # a second call: CUDA graphs are recorded on the call after warm-up
    compile_s = time.perf_counter() - start
    out["case"]["launch"] = runner.prefill_launch if prefill else runner.launch

    # CPUs: the weights' read speed moves with the host's load, so sweep just before and after.
    cpu = backend.name.endswith("-cpu")
    threads = getattr(backend, "threads", None)
    sweep_before = weight_read_sweep(runner.streamed(), threads) if cpu else None
    m, stats, findings = timed(backend, step, [], settings, seed, case, cpus_available)
    times = np.asarray(m["times"])
    steady = float(times.mean())
    if prefill:
        flops = cfg.flops(batch, tokens, attended=tokens, logit_tokens=1)
        nbytes = cfg.bytes(batch, tokens, cache_len=0, dtype=dtype, logit_tokens=1)
    else:
        flops = cfg.flops(batch, 1, attended=max_seq)
        nbytes = cfg.bytes(batch, 1, cache_len=max_seq, dtype=dtype)

    acc = catalog.lookup(device)
    peak = acc.peak(dtype, tf32) if acc else None
    bandwidth, basis = (acc.bandwidth, "catalog") if acc and acc.bandwidth else (None, None)
    if bandwidth is None and cpu:
        if sweep_before:
            bandwidth = (sweep_before + weight_read_sweep(runner.streamed(), threads)) / 2
            basis = "measured (sum over this model's weights, before and after timing)"
        else:  # oneDNN-packed weights cannot be read by another kernel
            bandwidth, basis = cpu_read_bandwidth(threads), "measured (sum of 512 MiB)"
    # The roofline needs both ceilings; with one unknown (a CPU has no catalog peak) it is not given.
    roofline_s = max(flops / peak, nbytes / bandwidth) if peak and bandwidth else None
    metrics = {
        "flops": flops, "bytes": nbytes, "weight_bytes": cfg.weight_bytes(dtype),
        "tflops": flops / steady / 1e12, "gbps": nbytes / steady / 1e9,
        "spread": stats["iqr"] / stats["median"],
        "catalog_device": acc.name if acc else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "bandwidth_gbs": bandwidth / 1e9 if bandwidth else None, "bandwidth_basis": basis,
        "roofline_s": roofline_s,
        "roofline_fraction": roofline_s / steady if roofline_s else None,
        "power_w": m.get("power_w"),  # NVML board power while timed (NVIDIA only)
    }
    if prefill:
        metrics.update({
            "ttft_s": stats["median"],
            "input_tokens_per_s": batch * tokens / steady,
            "input_tokens_per_s_ci95_low": batch * tokens / stats["mean_ci95_high"],
            "input_tokens_per_s_ci95_high": batch * tokens / stats["mean_ci95_low"],
            "mfu": flops / steady / peak if peak else None,
            "tokens_per_joule": batch * tokens / steady / m["power_w"] if m.get("power_w") else None,
        })
    else:
        metrics.update({
            "tpot_s": stats["median"],
            "output_tokens_per_s": batch / steady,
            "output_tokens_per_s_ci95_low": batch / stats["mean_ci95_high"],
            "output_tokens_per_s_ci95_high": batch / stats["mean_ci95_low"],
            "per_user_tokens_per_s": float(np.median(1.0 / times)),  # 1/TPOT per step, then the median
            "mbu": nbytes / steady / bandwidth if bandwidth else None,
            "tokens_per_joule": batch / steady / m["power_w"] if m.get("power_w") else None,
        })
    findings += gates.peak_gate(flops / stats["min"], peak, nbytes / stats["min"],
                                bandwidth if basis == "catalog" else None)
    verdict = gates.verdict(findings)
    if not verdict["valid"]:
        for k in list(metrics):
            if k.startswith(("tflops", "gbps", "input_tokens", "output_tokens", "per_user", "mfu", "mbu", "ttft", "tpot")):
                metrics[k] = None
    timing = {"build_s": build_s, "compile_s": compile_s, **{k: v for k, v in m.items() if k != "times"}}
    return {**out, "timing": timing, "stats": stats, "metrics": metrics, "raw_times_s": m["times"],
            "status": "ok" if verdict["valid"] else "invalid", **verdict}


def generate(backend, runner, prompt: np.ndarray, new_tokens: int) -> dict:
    """Greedy generation as a request sees it: TTFT (prefill and first token), then each
    decode step; TPOT = (end-to-end - TTFT) / (new_tokens - 1), per request."""
    batch, length = prompt.shape
    start = time.perf_counter()
    logits = backend.fetch(runner.prefill_step(prompt, last_only=True)())
    tokens = [logits[:, -1].argmax(-1)]
    ttft = time.perf_counter() - start
    for i in range(new_tokens - 1):
        logits = backend.fetch(runner.decode_step(tokens[-1][:, None], length + i)())
        tokens.append(logits[:, -1].argmax(-1))
    total = time.perf_counter() - start
    tpot = (total - ttft) / max(new_tokens - 1, 1)
    return {"tokens": np.stack(tokens, axis=1), "ttft_s": ttft, "total_s": total, "tpot_s": tpot,
            "tokens_per_s": batch * new_tokens / total, "per_user_tokens_per_s": 1.0 / tpot}
