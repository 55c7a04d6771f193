"""Prefill and decode cases of the Llama-family decoder: checked against float64, then timed.

Case params: model (a name from kernels.llama.CONFIGS or a config.json path), batch, tokens
(the prompt length for prefill, the context length for decode), and optionally weights (a
safetensors file or folder with Hugging Face names; default: seeded random weights).
Framework-free: models are built and swept through the backend contract.
"""

from __future__ import annotations

import json
import time

import numpy as np

from infercost.kernels import decode_f32, llama, llama_ref, models, quant
from infercost.kernels.dtypes import INT8_ACTIVATION_TOLERANCE, ITEMSIZE, NO_QUANT, QuantSpec, model_tolerance

from . import gates
from .layout import Layout
from .measure import Prepared
from .stats import rate_interval

CHECK_FULL_MAX_PARAMS = 300_000_000  # larger models are checked on 2 layers of the real widths
CHECK_LAYERS = 2
CHECK_BATCH, CHECK_PROMPT, CHECK_STEPS = 2, 8, 3

_checks: dict = {}  # per worker: model checks already run


def host_weights(path: str | None, cfg: llama.LlamaConfig) -> dict | None:
    if not path:
        return None
    return models.read_weights(path, cfg)


def model_weights(path: str | None, cfg: llama.LlamaConfig, seed: int, q: QuantSpec = NO_QUANT) -> dict | None:
    """What load_model gets: a checkpoint's weights, or None for seeded ones built on the device;
    quantized, the host's int8/fp8 tensors and scales (made here once, the same for every backend)."""
    if q.weights is None:
        return host_weights(path, cfg)
    if path:
        return quant.quantize(cfg, host_weights(path, cfg), q.weights)
    return quant.quantize_seeded(cfg, seed, q.weights)


def memory_needed(cfg: llama.LlamaConfig, dtype: str, batch: int, tokens: int, max_seq: int,
                  q: QuantSpec = NO_QUANT) -> int:
    """Weights, KV cache, and the largest activations of a step (an estimate for the fit check)."""
    item = ITEMSIZE[dtype]
    acts = batch * tokens * (4 * cfg.hidden + 3 * cfg.intermediate) * item * 2
    scores = batch * cfg.heads * tokens * tokens * 4  # attention that materialises its scores
    logits = batch * cfg.vocab_size * 4 * 2
    return cfg.stored_bytes(dtype, q) + cfg.kv_bytes(batch, max_seq, dtype, q) + acts + scores + logits + (256 << 20)


def check_model(backend, cfg, dtype: str, tf32: bool, seed: int, weights_path: str | None,
                batch: int = CHECK_BATCH, q: QuantSpec = NO_QUANT, mesh: dict | None = None,
                max_seq: int = CHECK_PROMPT + CHECK_STEPS) -> dict:
    """Prefill and teacher-forced decode steps against the float64 reference on the same weights
    (quantized ones as the model computes with them, dequantized).

    Large models are checked on their first layers at full width: every matmul shape of the
    real model, at a cost the host can afford in float64. `batch` 1 checks the batch-1 code
    path (compiled differently on CPUs), any other the batched one. A quantized model also
    reports what quantizing cost: top-1 agreement and KL against the unquantized model.
    """
    full = cfg.n_params() <= CHECK_FULL_MAX_PARAMS
    ccfg = cfg if full else llama.truncated(cfg, CHECK_LAYERS)
    # A full model is checked with the timed case's cache length: its compiled decode then has the
    # timed step's shapes, and the case reuses the compile (cold, it takes 15-35 s on a 2-core CPU).
    runner = backend.load_model(ccfg, dtype, batch, max(max_seq, CHECK_PROMPT + CHECK_STEPS) if full else
                                CHECK_PROMPT + CHECK_STEPS, seed=seed,
                                weights=model_weights(weights_path, ccfg, seed, q), keep_weights=True,
                                quant=q, mesh=mesh)
    prompt = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, CHECK_PROMPT))
    w64 = runner.weights_numpy()
    ref_tokens, ref_logits = llama_ref.greedy(ccfg, w64, prompt, CHECK_STEPS, kv_int8=q.kv == "int8")
    moe = ccfg.experts_model
    got = [backend.fetch(runner.prefill_step(prompt, last_only=False)())]
    routes = [runner.routes().reshape(-1, batch, CHECK_PROMPT, ccfg.top_k)] if moe else []
    for i in range(CHECK_STEPS):  # feed the reference's tokens, so both see the same sequence
        got.append(backend.fetch(runner.decode_step(ref_tokens[:, i:i + 1], CHECK_PROMPT + i)()))
        routes += [runner.routes().reshape(-1, batch, 1, ccfg.top_k)] if moe else []
    kv_given = runner.kv_numpy() if q.kv == "int8" else None
    # int8 weights in the CPU step kernel: its decode steps quantize their activations to int8 too, as
    # its launch says (jax-cpu's says so once a step has run)
    act_int8 = decode_f32.quantizes_activations(runner.launch)
    sequence = np.concatenate([prompt, ref_tokens], axis=1)
    tolerance = model_tolerance(dtype, tf32)
    routing = follow = None
    if moe:
        routing, follow = compare_routes(ccfg, w64, sequence, np.concatenate(routes, axis=2), tolerance,
                                         CHECK_PROMPT if act_int8 else None)
    if act_int8:  # a Q8 rounding boundary can fall either way (dtypes.INT8_ACTIVATION_TOLERANCE)
        tolerance = max(tolerance, INT8_ACTIVATION_TOLERANCE)
    # The reference again on the same tokens where the device's arithmetic is one it takes as given:
    # the int8 cache the device wrote (as its weights), near-tie routes it decided the other way,
    # its quantized activations.
    if kv_given is not None or follow is not None or act_int8:
        logits = llama_ref.forward(ccfg, w64, sequence, CHECK_PROMPT if kv_given is not None else None, kv_given,
                                   follow=follow, act_int8_from=CHECK_PROMPT if act_int8 else None)
        ref_logits = [logits[:, :CHECK_PROMPT]] + [logits[:, CHECK_PROMPT + i:CHECK_PROMPT + i + 1]
                                                   for i in range(CHECK_STEPS)]
    finite = all(np.isfinite(g).all() for g in got)
    error = max(float(np.abs(g - r).max()) / float(np.abs(r).max()) for g, r in zip(got, ref_logits)) if finite else float("inf")
    device_tokens = np.stack([g[:, -1].argmax(-1) for g in got[:-1]], axis=1)
    out = {
        "error": error, "tolerance": tolerance, "finite": finite,
        "passed": bool(finite and error <= tolerance and (routing is None or routing["passed"])),
        "greedy_tokens_agree": bool(np.array_equal(device_tokens, ref_tokens)),
        "checked": f"{ccfg.layers} of {cfg.layers} layers, batch {batch}, prefill {CHECK_PROMPT} + {CHECK_STEPS} decode steps",
        "launch": runner.launch,
    }
    if routing:
        out["routing"] = routing
    if q and finite:
        float_weights = host_weights(weights_path, ccfg) or llama.seeded_weights_numpy(ccfg, seed)
        out["quality"] = quant.quality(got, llama_ref.forward(ccfg, float_weights, sequence))
    return out


def experts_touched(routes: np.ndarray) -> float:
    """Experts a MoE layer read in a step, from its router's choices [layers, tokens, k]: the
    distinct experts of each layer, averaged over layers."""
    return float(np.mean([len(np.unique(layer)) for layer in routes]))


def compare_routes(cfg, w64: dict, sequence: np.ndarray, device: np.ndarray, near_tie: float,
                   act_int8_from: int | None = None) -> tuple[dict, list | None]:
    """The device's routing [moe layers, batch, positions, k] against the float64 reference's on
    the same sequence. A choice the reference made by a probability gap under `near_tie` (the
    check's own tolerance) is one the device's rounding may flip: where the device chose
    otherwise there, the reference is rerun following the device (the list returned), and the
    record says how many such choices there were. Any other difference fails the check.
    act_int8_from: the reference's matrices take int8 activations from there on, as the device's
    decode steps did (their rounding reaches the next layers' routers)."""
    routes = []
    llama_ref.forward(cfg, w64, sequence, routes=routes, act_int8_from=act_int8_from)
    ref = np.stack([r.experts for r in routes])                       # [layers, B * T, k]
    margin = np.stack([r.margin for r in routes])                     # [layers, B * T]
    got = device.reshape(ref.shape)
    same = (np.sort(got, -1) == np.sort(ref, -1)).all(-1)
    near = margin < near_tie
    out = {"choices": int(same.size), "agree": int(same.sum()), "near_ties_followed": int((~same & near).sum()),
           "near_tie_gap": near_tie, "smallest_gap": float(margin.min()),
           "passed": bool((same | near).all())}
    if same.all():
        return out, None
    return out, [np.where((~same & near)[i][:, None], got[i], ref[i]) for i in range(len(ref))]


class TransformerWorkload:
    """A prefill (time to first token) or decode (time per output token) step of a model."""

    def __init__(self, case: dict):
        p = self.p = case["params"]
        self.case = case
        self.cfg = models.resolve_config(p["model"])
        self.dtype, self.tf32 = case["dtype"], bool(case.get("tf32"))
        self.batch, self.tokens = p["batch"], p["tokens"]
        self.prefill = case["workload"] == "prefill"
        self.max_seq = self.tokens if self.prefill else self.tokens + 1  # decode writes position `tokens`
        self.quant = QuantSpec.of(p)  # weights and KV cache as stored
        self.mesh = p.get("mesh")    # None, or {"tp": n, "dp": m}: split over n x m devices
        self.devices = Layout.of(self.mesh).devices
        self.runner = self.checked = None
        self.sweep_before = None
        self.touched = None  # MoE: experts a layer the timed step's router chose (counted in prepare)

    def describe(self) -> dict:
        what = "prompt" if self.prefill else "ctx"
        q = self.quant
        out = {"shape": f"{self.p['model']} b{self.batch} {what}{self.tokens}" + (f" {q.weights}" if q.weights else "")
               + (f" kv-{q.kv}" if q.kv else ""),
               "model_config": self.cfg.as_dict(), "weight_dtype": q.weight_dtype(self.dtype), "kv_dtype": q.kv_dtype(self.dtype)}
        if q.weights:
            out["quant_rule"] = quant.RULE
        out["devices"] = self.devices
        if self.mesh:
            out["layout"] = str(Layout.of(self.mesh))
        if self.cfg.experts_model:  # the experts a step of this batch is expected to read (metrics: counted)
            c, routed = self.cfg, self.batch * (self.tokens if self.prefill else 1)
            out["moe"] = {"experts": c.experts, "top_k": c.top_k, "params_total": c.n_params(),
                          "params_active": c.active_params(), "experts_expected_per_layer": c.experts_touched(routed),
                          "experts_expected_basis": "uniform routing: E * (1 - (1 - k/E)^tokens)"}
        return out

    def fit(self, backend) -> str | None:
        layout = Layout.of(self.mesh)
        if self.cfg.experts_model and layout.ep == 1 and (layout.tp > 1 or layout.dp > 1):  # what is built so far
            return ("a mixture of experts runs on one device or split by experts (--mesh ep=N, or tp=T,ep=N to "
                    "split its attention heads too); tensor or data parallelism alone is not built for it")
        if self.cfg.experts_model and self.quant.weights and self.cfg.family != "moe":
            return (f"quantized weights are built for the Mixtral and Qwen families; {self.cfg.family} models "
                    "(MLA's latent projections, gpt-oss's fused experts) run with float weights for now")
        if layout.ep > 1:
            if not self.cfg.experts_model:
                return f"ep={layout.ep} splits a mixture of experts' experts; {self.p['model']} is a dense model"
            if self.cfg.experts % (layout.ep * layout.tp):
                return (f"ep={layout.ep} does not divide the {self.cfg.experts} experts" if layout.tp == 1 else
                        f"ep x tp = {layout.ep * layout.tp} devices do not divide the {self.cfg.experts} experts")
            if self.batch % layout.ep:
                return f"ep={layout.ep} must divide the batch {self.batch} (each device takes its share of the sequences)"
        if why := backend.quant_unsupported(self.quant):
            return why
        if self.mesh:
            if why := backend.mesh_unsupported(self.mesh):
                return why
            layout = Layout.of(self.mesh)
            if why := llama.tp_unsupported(self.cfg, layout.tp):
                return why
            if self.batch % layout.dp:
                return f"dp={layout.dp} must divide the batch {self.batch}"
        free = backend.memory_bytes()  # per device; a split model needs about 1/devices of it on each
        need = memory_needed(self.cfg, self.dtype, self.batch, self.tokens, self.max_seq, self.quant) / self.devices
        if free is not None and need > 0.9 * free:
            return (f"does not fit: needs ~{need / 1e9:.1f} GB (weights "
                    f"{self.cfg.stored_bytes(self.dtype, self.quant) / 1e9:.1f} GB), device has {free / 1e9:.1f} GB free")
        return None

    def check(self, backend, seed: int) -> tuple[dict, dict]:
        # One check per model and code path (batch 1 or batched); it does not depend on length.
        check_batch = 1 if self.batch == 1 else CHECK_BATCH
        layout = json.dumps(self.mesh, sort_keys=True)
        key = (backend.name, self.p["model"], self.dtype, self.tf32, seed, self.p.get("weights"), check_batch, self.quant,
               layout)
        if key not in _checks:
            _checks[key] = check_model(backend, self.cfg, self.dtype, self.tf32, seed, self.p.get("weights"),
                                       check_batch if not self.mesh else max(check_batch, Layout.of(self.mesh).dp, Layout.of(self.mesh).ep),
                                       self.quant, self.mesh, max_seq=self.tokens + 1)
        self.checked = _checks[key]
        return self.checked, {}

    def prepare(self, backend, seed: int) -> Prepared:
        start = time.perf_counter()
        self.runner = backend.load_model(self.cfg, self.dtype, self.batch, self.max_seq, seed=seed,
                                         weights=model_weights(self.p.get("weights"), self.cfg, seed, self.quant),
                                         compile_decode=not self.prefill, quant=self.quant, mesh=self.mesh)
        backend.sync(self.runner.params)
        build_s = time.perf_counter() - start
        rng = np.random.default_rng(seed + 1)
        start = time.perf_counter()
        prompt = rng.integers(0, self.cfg.vocab_size, (self.batch, self.tokens))
        if self.prefill:
            step = self.runner.prefill_step(prompt, last_only=True)
        else:
            self.runner.prefill_step(prompt)()  # fill the cache
            step = self.runner.decode_step(rng.integers(0, self.cfg.vocab_size, (self.batch, 1)), self.tokens)
        backend.sync(step())
        backend.sync(step())  # a second call: CUDA graphs are recorded on the call after warm-up
        compile_s = time.perf_counter() - start
        if self.cfg.experts_model:  # every timed call repeats this step: the same tokens route the same way
            self.touched = experts_touched(self.runner.routes())
        launch = self.runner.prefill_launch if self.prefill else self.runner.launch
        return Prepared(step, [], {"build_s": build_s, "compile_s": compile_s}, {"launch": launch})

    def work(self) -> tuple[int, int]:
        """FLOPs and minimum bytes, the weights and KV cache counted as stored (kernels/llama.py)."""
        cfg, b, t = self.cfg, self.batch, self.tokens
        moe = {"touched": self.touched} if self.touched is not None else {}  # the experts the router chose
        if self.prefill:
            return (cfg.flops(b, t, attended=t, logit_tokens=1),
                    cfg.bytes(b, t, cache_len=0, dtype=self.dtype, logit_tokens=1, quant=self.quant, **moe))
        return (cfg.flops(b, 1, attended=self.max_seq),
                cfg.bytes(b, 1, cache_len=self.max_seq, dtype=self.dtype, quant=self.quant, **moe))

    def before_timing(self, backend) -> None:
        # The weights' read speed moves with a host's load, so sweep just before and after timing.
        # Not for a model split over a CPU's cores: every part streams at once, and a sweep of one
        # part is not the ceiling of all of them together.
        if self.devices > 1 and backend.kind == "cpu":
            return
        self.sweep_before = backend.read_bandwidth(self.runner.streamed())

    def ceiling(self, backend, acc) -> tuple[float | None, str | None]:
        """Bytes/s the step could stream at most: the catalog's, or a sweep measured around timing."""
        if acc and acc.bandwidth:
            return acc.bandwidth, "catalog"
        if self.sweep_before is None:
            return None, None
        after = backend.read_bandwidth(self.runner.streamed())
        return (self.sweep_before[0] + after[0]) / 2, self.sweep_before[1]

    def metrics(self, backend, acc, stats: dict, m: dict) -> tuple[dict, list]:
        flops, nbytes = self.work()
        times = np.asarray(m["times"])
        steady = float(times.mean())
        peak = acc.peak(self.dtype, self.tf32) if acc else None
        bandwidth, basis = self.ceiling(backend, acc)
        findings = []
        if bandwidth and basis != "catalog" and nbytes / stats["min"] > gates.PEAK_MARGIN * bandwidth:
            # Faster than the read sweeps around it: a sweep was disturbed (a busy host), or the
            # host's memory changed speed between them (a shared VM's does, within seconds, and a
            # step that streams at the sweep's rate then passes it). No utilisation is reported
            # against them rather than an impossible one.
            findings.append((gates.WARN, f"the read sweeps around timing ({bandwidth / 1e9:.1f} GB/s) are below what "
                                         f"this step streamed ({nbytes / stats['min'] / 1e9:.1f} GB/s): a disturbed sweep "
                                         f"or memory that changed speed; MBU withheld"))
            bandwidth, basis = None, None
        # The roofline needs both ceilings; with one unknown (a CPU has no catalog peak) it is not given.
        roofline_s = max(flops / peak, nbytes / bandwidth) if peak and bandwidth else None
        power = m.get("power_w")
        quality = (self.checked or {}).get("quality") or {}
        out = {
            "weight_bytes": self.cfg.stored_bytes(self.dtype, self.quant),
            **({"experts_read_per_layer": self.touched, "experts_read_basis": "counted from the timed step's router"}
               if self.touched is not None else {}),
            **({"quant_top1_agreement": quality.get("top1_agreement"), "quant_mean_kl": quality.get("mean_kl")}
               if self.quant.weights else {}),
            "bandwidth_gbs": bandwidth / 1e9 if bandwidth else None, "bandwidth_basis": basis,
            "roofline_s": roofline_s,
            "roofline_fraction": roofline_s / steady if roofline_s else None,
        }
        tokens = self.batch * self.tokens if self.prefill else self.batch
        if self.prefill:
            out.update({
                "ttft_s": stats["median"],
                "input_tokens_per_s": tokens / steady,
                **dict(zip(("input_tokens_per_s_ci95_low", "input_tokens_per_s_ci95_high"), rate_interval(tokens, stats))),
                "mfu": flops / steady / peak if peak else None,
            })
        else:
            out.update({
                "tpot_s": stats["median"],
                "output_tokens_per_s": tokens / steady,
                **dict(zip(("output_tokens_per_s_ci95_low", "output_tokens_per_s_ci95_high"), rate_interval(tokens, stats))),
                "per_user_tokens_per_s": float(np.median(1.0 / times)),  # 1/TPOT per step, then the median
                "mbu": nbytes / steady / bandwidth if bandwidth else None,
            })
        joules = m.get("energy_j_per_call") or (power * steady if power else None)
        out["tokens_per_joule"] = tokens / joules if joules else None
        out["joules_per_token"] = joules / tokens if joules else None
        out["energy_source"] = m.get("energy_source")
        if joules:  # what the figure covers: the board alone (no host, network or cooling)
            out["energy_boundary"] = "board"
            out["tokens_per_mwh"] = tokens / joules * 3.6e9
        rate = "input_tokens_per_s" if self.prefill else "output_tokens_per_s"
        # per physical chip, as measure.py counted them (catalog.chip_fields), else per device
        out[rate + "_per_chip"] = out[rate] / (self.case.get("chips") or self.devices)
        findings += gates.peak_gate(flops / stats["min"], peak, nbytes / stats["min"],
                                    bandwidth if basis == "catalog" else None)
        return out, findings


def generate(backend, runner, prompt: np.ndarray, new_tokens: int) -> dict:
    """Greedy generation as a request sees it: TTFT (prefill and first token), then each
    decode step; TPOT = (end-to-end - TTFT) / (new_tokens - 1), per request. step_s: each decode
    step's seconds (the step, its logits fetched, the next token chosen)."""
    batch, length = prompt.shape
    start = time.perf_counter()
    logits = backend.fetch(runner.prefill_step(prompt, last_only=True)())
    tokens = [logits[:, -1].argmax(-1)]
    stamps = [time.perf_counter()]
    for i in range(new_tokens - 1):
        logits = backend.fetch(runner.decode_step(tokens[-1][:, None], length + i)())
        tokens.append(logits[:, -1].argmax(-1))
        stamps.append(time.perf_counter())
    ttft, total = stamps[0] - start, stamps[-1] - start
    tpot = (total - ttft) / max(new_tokens - 1, 1)
    return {"tokens": np.stack(tokens, axis=1), "ttft_s": ttft, "total_s": total, "tpot_s": tpot,
            "step_s": np.diff(stamps).tolist(), "tokens_per_s": batch * new_tokens / total,
            "per_user_tokens_per_s": 1.0 / tpot}
