"""Case planning: named suites and the run's flags -> the list of cases to measure.

Each suite lists cases for CPUs and for accelerators (GPU, TPU).

Square matmul sweeps draw the achieved-TFLOP/s curve from small (launch- and cache-bound) to
large (compute-bound); the LLM matmul shapes are the GEMMs of a Llama-3.1-8B layer (hidden
4096, MLP 14336) at decode and prefill batch sizes. Transformer cases measure prefill (time
to first token) and decode (time per output token) of real model shapes.
"""

from __future__ import annotations

from pathlib import Path

from infercost.errors import InputError
from infercost.kernels.dtypes import DTYPES, KV_MODES, NO_QUANT, QuantSpec

from .backend import NAMES, capabilities, device_kind
from .case import Case
from .layout import Layout

WORKLOADS = ("matmul", "prefill", "decode", "collective")


def matmul(sizes, dtype):
    return [{"workload": "matmul", "params": {"m": s, "n": s, "k": s}, "dtype": dtype} for s in sizes]


def collectives(sizes, dtype="float32"):
    """All-reduce, all-gather and all-to-all over every device, message sizes from 4 KiB up."""
    return [{"workload": "collective", "params": {"op": op, "bytes": size}, "dtype": dtype}
            for op in ("all-reduce", "all-gather", "all-to-all") for size in sizes]


def llm_gemms(batches, dtype):
    return [{"workload": "matmul", "params": {"m": b, "n": n, "k": k}, "dtype": dtype}
            for b in batches for (n, k) in ((14336, 4096), (4096, 14336))]


def prefill(model, dtype, shapes):
    return [{"workload": "prefill", "params": {"model": model, "batch": b, "tokens": t}, "dtype": dtype}
            for b, t in shapes]


def decode(model, dtype, batches, context):
    return [{"workload": "decode", "params": {"model": model, "batch": b, "tokens": context}, "dtype": dtype}
            for b in batches]


CPU_LLM = (prefill("small-125m", "float32", [(1, 128)]) + decode("small-125m", "float32", (1, 4), 128)
           + decode("small-moe", "float32", (1,), 128))  # a mixture of experts: 100M of its 364M parameters a token
ACC_LLM = prefill("llama-3.2-1b", "bfloat16", [(1, 512)]) + decode("llama-3.2-1b", "bfloat16", (1, 16), 512)

REAL_MODELS = []
for _model in ("llama-3.2-1b", "llama-3.2-3b", "mistral-7b", "qwen2.5-7b", "llama-3.1-70b"):
    REAL_MODELS += prefill(_model, "bfloat16", [(1, 2048)]) + decode(_model, "bfloat16", (1, 32), 2048)
LLM_SUITE_ACC = (prefill("llama-3.1-8b", "bfloat16", [(1, 2048), (8, 2048)])
                 + decode("llama-3.1-8b", "bfloat16", (1, 8, 32, 64, 128, 256), 2048) + REAL_MODELS)
LLM_SUITE_CPU = (prefill("small-125m", "float32", [(1, 128), (4, 128)])
                 + decode("small-125m", "float32", (1, 4, 16), 128)
                 + prefill("small-moe", "float32", [(1, 128)]) + decode("small-moe", "float32", (1, 4), 128)
                 + prefill("llama-3.2-1b", "float32", [(1, 128)]) + decode("llama-3.2-1b", "float32", (1,), 128))

MATMUL_CPU = matmul((128, 256, 512, 1024, 2048, 4096), "float32") + matmul((128, 256, 512, 1024), "bfloat16") \
    + matmul((128, 256, 512), "float16") + llm_gemms((1, 16, 128), "float32")
SQUARES_ACC = (256, 512, 1024, 2048, 4096, 8192, 16384)
MATMUL_ACC = matmul(SQUARES_ACC, "bfloat16") + matmul(SQUARES_ACC, "float16") + matmul(SQUARES_ACC[:-1], "float32") \
    + llm_gemms((1, 16, 128, 1024, 4096), "bfloat16")

COLLECTIVE_CPU = collectives([4 << 10 << 2 * i for i in range(7)])    # 4 KiB to 16 MiB
COLLECTIVE_ACC = collectives([4 << 10 << 2 * i for i in range(10)])   # 4 KiB to 1 GiB

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
    # Collectives over every device of the machine (jax-cpu: as many as --devices forces).
    "collectives": {"cpu": COLLECTIVE_CPU, "accelerator": COLLECTIVE_ACC},
    # For a cloud instance: everything.
    "full": {"cpu": MATMUL_CPU + LLM_SUITE_CPU, "accelerator": MATMUL_ACC + LLM_SUITE_ACC},
}


def on_all_chips(devices: int) -> list[dict]:
    """The `llm` suite's scaling cases on a machine with several accelerators: Llama-3.1-70B over
    all of them at batch 1 and a large batch, and Llama-3.1-8B over all of them beside its one-chip
    cases, each tensor parallel; and two mixtures of experts split by experts over all of them (each
    device takes a share of the sequences, so the smallest batch is one a device). Where the model
    does not fit or the device count does not divide its experts, the case is recorded as skipped."""
    dense = (prefill("llama-3.1-70b", "bfloat16", [(1, 2048)]) + decode("llama-3.1-70b", "bfloat16", (1, 64), 2048)
             + decode("llama-3.1-8b", "bfloat16", (1, 64), 2048))
    moe = []
    for model in ("qwen3-30b-a3b", "gpt-oss-120b"):
        moe += prefill(model, "bfloat16", [(devices, 2048)]) + decode(model, "bfloat16", (devices, 64), 2048)
    return ([{**c, "params": {**c["params"], "mesh": {"tp": devices, "dp": 1}}} for c in dense]
            + [{**c, "params": {**c["params"], "mesh": {"tp": 1, "dp": 1, "ep": devices}}} for c in moe])


def suite_cases(suite: str, backend: str, devices: int = 1) -> list[dict]:
    kind = "cpu" if device_kind(backend) == "cpu" else "accelerator"
    extra = on_all_chips(devices) if suite in ("llm", "full") and kind == "accelerator" and devices > 1 else []
    return SUITES[suite][kind] + extra


MAX_CPU_DEVICES = 64  # devices a CPU backend may be split into (each a forced JAX device or a torch rank)


def choose_backends(requested: list[str], probes_fn) -> tuple[list[str], dict]:
    """The backends to run (those requested, or every available one) and every backend's probe."""
    for name in requested:
        if name not in NAMES:
            raise InputError(f"unknown backend {name!r}; valid backends: {', '.join(NAMES)}")
    probes = probes_fn(list(NAMES))
    available = [n for n in (requested or NAMES) if probes[n]["available"]]
    for name in requested:
        if not probes[name]["available"]:
            others = ", ".join(n for n in NAMES if probes[n]["available"]) or "none"
            raise InputError(f"backend {name} is not available here: {probes[name]['reason']} (available: {others})")
    if not available:
        raise InputError("no backend is available: install torch or jax (see README)")
    return available, probes


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3:
        raise InputError(f"shape {text!r} must be MxNxK, e.g. 1024x1024x1024")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"shape {text!r} must be three whole numbers MxNxK") from None
    if any(d <= 0 for d in dims):
        raise InputError(f"shape {text!r}: every dimension must be positive")
    return dims


def positive_ints(values: list[str], flag: str, default: list[int]) -> list[int]:
    out = []
    for text in values:
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{flag} {text!r} is not a whole number") from None
        if value <= 0:
            raise InputError(f"{flag} {text!r}: must be positive")
        out.append(value)
    return out or default


def parse_bytes(text: str) -> int:
    """A collective's message size: bytes, or with K, M or G (KiB, MiB, GiB)."""
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    digits = t[:-1] if scale > 1 else t
    if not digits.isdigit() or int(digits) * scale <= 0 or int(digits) * scale > 1 << 36:
        raise InputError(f"--collective-bytes {text!r}: a size from 1 byte to 64G, e.g. 4096, 64K or 16M")
    return int(digits) * scale


def explicit_cases(shapes: list[str], models: list[str], workloads: list[str], dtypes: list[str],
                   batches: list[str], tokens: list[str], weights: str | None,
                   collective_bytes: list[str] = ()) -> list[dict] | None:
    """Cases from --shape, --model and --collective-bytes, or None to take the suite's."""
    from infercost.kernels.models import read_weights, resolve_config

    if weights and not models:  # else the suite's seeded models would run and the file be ignored
        raise InputError(f"--weights {weights}: give --model too (a model name, or the checkpoint's config.json)")
    dims = [parse_shape(s) for s in shapes]
    if not dims and not models and not collective_bytes:
        return None
    cases = [{"workload": "matmul", "params": {"m": m, "n": n, "k": k}, "dtype": d}
             for (m, n, k) in dims for d in (dtypes or ["float32"])]
    cases += [c for d in (dtypes or ["float32"]) for c in collectives([parse_bytes(b) for b in collective_bytes], d)]
    batch_sizes = positive_ints(batches, "--batch", [1])
    lengths = positive_ints(tokens, "--tokens", [128])
    if weights and not Path(weights).exists():
        raise InputError(f"--weights {weights}: no such file or folder")
    for model in models:
        try:
            cfg = resolve_config(model)
        except ValueError as e:
            raise InputError(str(e)) from None
        if weights:
            try:
                read_weights(weights, cfg)
            except ValueError as e:
                raise InputError(f"--weights {weights}: {e}") from None
        for phase in [w for w in (workloads or ["prefill", "decode"]) if w in ("prefill", "decode")]:
            for b in batch_sizes:
                for t in lengths:
                    params = {"model": model, "batch": b, "tokens": t}
                    if weights:
                        params["weights"] = str(Path(weights).resolve())
                    cases += [{"workload": phase, "params": params, "dtype": d} for d in (dtypes or ["float32"])]
    return cases


def plan_cases(suite: str, backends: list[str], probes: dict, *, workloads=(), dtypes=(), shapes=(),
               models=(), batches=(), tokens=(), weights=None, tf32=False, threads=None,
               quant: QuantSpec = NO_QUANT, mesh=None, collective_bytes=()) -> tuple[list[Case], list[str]]:
    """Every case of the run, one per backend, and notices of what was left out and why.
    quant stores every transformer case's weights and/or KV cache quantized."""
    if quant.kv is not None and quant.kv not in KV_MODES:
        raise InputError(f"a measured KV cache can be stored as {', '.join(KV_MODES)}, not {quant.kv}")
    if suite not in SUITES:
        raise InputError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    for w in workloads:
        if w not in WORKLOADS:
            raise InputError(f"unknown workload {w!r}; valid workloads: {', '.join(WORKLOADS)}")
    for d in dtypes:
        if d not in DTYPES:
            raise InputError(f"unknown dtype {d!r}; valid dtypes: {', '.join(DTYPES)}")
    explicit = explicit_cases(list(shapes), list(models), list(workloads), list(dtypes), list(batches),
                              list(tokens), weights, list(collective_bytes))
    if tf32 and not any(capabilities(b) and capabilities(b).tf32 for b in backends):
        raise InputError(f"--tf32 applies to CUDA GPUs only; none of {', '.join(backends)} is one")

    if mesh is not None and Layout.of(mesh).devices > MAX_CPU_DEVICES and any(device_kind(b) == "cpu" for b in backends):
        # Checked before any worker starts: JAX would make every forced host device (~90 KB each and
        # its threads) before the case could say it does not fit.
        raise InputError(f"--devices/--mesh asks for {Layout.of(mesh).devices} devices; a CPU stands in for at most "
                         f"{MAX_CPU_DEVICES} (JAX's forced host devices, torch's rank processes)")
    cases, notices = [], []
    for backend in backends:
        lacks = probes[backend].get("unsupported", {})
        for d in dtypes:
            if d in lacks:
                valid = [x for x in DTYPES if x not in lacks]
                raise InputError(f"dtype {d} is not supported on {backend}: {lacks[d]} (valid: {', '.join(valid)})")
        if explicit is not None:
            wanted = explicit
        else:
            chips = probes[backend].get("devices", 1) if mesh is None else 1
            wanted = [c for c in suite_cases(suite, backend, chips)
                      if (not dtypes or c["dtype"] in dtypes) and (not workloads or c["workload"] in workloads)]
        kind = device_kind(backend)
        emulated = probes[backend].get("emulated", {})
        for spec in wanted:
            dtype = spec["dtype"]
            if dtype in lacks:
                notices.append(f"{backend}: skipping {dtype} ({lacks[dtype]})")
                continue
            if dtype in emulated and explicit is None and dtype not in dtypes:
                # A suite measures what the host does natively; an emulated dtype is measured (and
                # labelled so) only when asked for by name.
                notices.append(f"{backend}: {dtype} left out of the suite ({emulated[dtype]}); "
                               f"--dtype {dtype} measures it anyway, labelled emulated")
                continue
            if spec["workload"] == "collective" and mesh is not None:
                spec = {**spec, "params": {**spec["params"], "devices": Layout.of(mesh).devices}}
            elif quant or mesh is not None:
                if spec["workload"] in ("matmul", "collective"):
                    continue
                extra = {**quant.params(), **({"mesh": mesh} if mesh is not None else {})}
                spec = {**spec, "params": {**spec["params"], **extra}}
            layout = spec["params"].get("mesh") or mesh
            cases.append(Case(
                backend, spec["workload"], spec["params"], dtype,
                tf32=bool(tf32 and dtype == "float32" and capabilities(backend) and capabilities(backend).tf32),
                threads=threads if kind == "cpu" else None,
                device_kind=kind,
                devices=Layout.of(layout).devices,
            ))
    if (quant or mesh is not None) and not cases:
        flag = "--quant" if quant.weights else "--kv-cache" if quant.kv else "--devices/--mesh"
        raise InputError(f"{flag} applies to transformer cases (prefill, decode), and none were asked for "
                         "(give --model, or a suite with transformer cases)")
    return cases, sorted(set(notices))


def parse_mesh(devices: int | None, mesh: str | None) -> dict | None:
    """--devices N (tensor parallel over N) or --mesh tp=4,dp=2 -> {"tp": 4, "dp": 2} (ep=N: a
    mixture of experts' experts and batch split over N devices -> {"tp": 1, "dp": 1, "ep": N};
    tp=T,ep=N: its attention heads split over T too, its experts over all T x N)."""
    from infercost.numbers import number
    if devices is not None and mesh is not None:
        raise InputError("give --devices or --mesh, not both")
    if devices is not None:
        return None if devices == 1 else {"tp": devices, "dp": 1}
    if mesh is None:
        return None
    out, seen = {"tp": 1, "dp": 1, "ep": 1}, set()
    for part in mesh.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in out:
            raise InputError(f"--mesh {mesh!r}: {key.strip()!r} is not tp, dp or ep (e.g. tp=4,dp=2 or ep=4)")
        if key.strip() in seen:
            raise InputError(f"--mesh {mesh!r}: {key.strip()} is given twice")
        seen.add(key.strip())
        out[key.strip()] = number(value, f"--mesh {key.strip()}", integer=True)
    if out["ep"] > 1 and out["dp"] > 1:
        raise InputError(f"--mesh {mesh!r}: ep with dp is not built (ep=N splits the batch already; tp=T,ep=N "
                         "splits attention heads too)")
    return Layout.of(out).as_dict()
