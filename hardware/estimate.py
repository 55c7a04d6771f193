"""Roofline estimates for hardware you do not have: always labelled as estimates.

Decode step >= max((weight bytes + batch x KV bytes) / (chips x bandwidth), FLOPs / (chips x peak))
Prefill     >= max(FLOPs / (chips x peak), bytes / (chips x bandwidth))
(jax-ml/scaling-book, inference chapter). Weights and KV cache are stored in `dtype` unless
`quant` (--quant, --kv-cache) says otherwise; the compute ceiling is the
peak of `dtype` (int8 and fp8 use the catalog's int8/fp8 peaks). Optional efficiencies
(measured MFU/MBU from runs on hardware you did measure) scale the ceilings down.
"""

from __future__ import annotations

from infercost.hardware.catalog import Accelerator
from infercost.kernels.dtypes import NO_QUANT, QuantSpec
from infercost.kernels.dtypes import STORED_ITEMSIZE as ITEMSIZE
from infercost.kernels.llama import LlamaConfig

TP_COMM = ("tensor parallel over chips: comm_s = layers*2 all-reduces of tokens*hidden activations "
           "(2(n-1)/n x bytes / interconnect each) + one all-gather of the logits ((n-1)/n x bytes / interconnect); ")
FORMULA = ("decode_s = max((weights read + batch*context*kv_per_position) / (chips*bandwidth*mbu), "
           "flops / (chips*peak*mfu)) + comm_s; prefill_s = max(flops / (chips*peak*mfu), bytes / (chips*bandwidth*mbu)) "
           "+ comm_s; " + TP_COMM + "weights read = every weight but the embedding table, as stored (quantized with a "
           "scale a row), kv_per_position with a float32 scale a head when quantized")


HOSTS_FORMULA = ("; chips beyond one host (chips_a_host in the catalog): the collectives' ring crosses the hosts' "
                 "network, so they run at min(interconnect, scale_out) a chip, the slowest link of the ring")


def hosts_spanned(acc: Accelerator, chips: int) -> int:
    """Hosts `chips` of this accelerator fill (1 where one host holds them, or the catalog does not
    say: a TPU slice's ICI spans its hosts)."""
    return -(-chips // acc.chips_a_host) if acc.chips_a_host else 1


def link(acc: Accelerator, chips: int) -> float | None:
    """Bytes/s a chip's collectives run at: the interconnect within a host; across hosts the slower
    of it and the scale-out network. None where the catalog lacks the figure."""
    if hosts_spanned(acc, chips) <= 1:
        return acc.interconnect
    if not acc.interconnect or not acc.scale_out_gbs:
        return None
    return min(acc.interconnect, acc.scale_out_gbs * 1e9)


def comm_seconds(cfg: LlamaConfig, acc: Accelerator, chips: int, tokens: int, logit_rows: int, act_item: int) -> float | None:
    """Tensor-parallel communication of one forward pass: after each row-parallel product (o and
    down) an all-reduce of the activations, and one all-gather of the vocabulary-split logits, at
    nccl-tests' bus-bandwidth volumes over the catalog's interconnect (across hosts, its network).
    None without a figure."""
    if chips <= 1:
        return 0.0
    bw = link(acc, chips)
    if not bw:
        return None
    n = chips
    all_reduce = 2 * (n - 1) / n * tokens * cfg.hidden * act_item / bw
    all_gather = (n - 1) / n * logit_rows * cfg.vocab_size * 4 / bw
    return 2 * cfg.layers * all_reduce + all_gather


EP_FORMULA = ("; expert parallel over chips (attention data parallel: each chip holds every weight but the "
              "experts and batch/chips sequences, and 1/chips of the experts): weights read += (chips-1) x the "
              "non-expert weights, memory += the same; comm_s = moe_layers x 2 all-to-alls (dispatch and combine) "
              "of batch/chips x top_k x hidden activations a chip, (n-1)/n x bytes / interconnect each "
              "(nccl-tests' all-to-all bus bandwidth)")


def all_to_all_seconds(cfg, acc: Accelerator, chips: int, tokens: int, act_item: int) -> float | None:
    """Expert-parallel communication of one forward pass: each MoE layer sends every (token,
    expert) pair's activations to the chip holding the expert and gets the result back."""
    if chips <= 1:
        return 0.0
    bw = link(acc, chips)
    if not bw:
        return None
    per_chip = tokens / chips * cfg.top_k * cfg.hidden * act_item
    return cfg.moe_layers * 2 * (chips - 1) / chips * per_chip / bw


def estimate(cfg: LlamaConfig, acc: Accelerator, chips: int, batch: int, context: int, dtype: str,
             prompt: int | None = None, mfu: float = 1.0, mbu: float = 1.0,
             usd_per_chip_hour: float | None = None, quant: QuantSpec = NO_QUANT,
             expert_parallel: bool = False) -> dict:
    """expert_parallel: a mixture of experts split by experts over the chips, its batch too
    (EP_FORMULA); otherwise tensor parallel (FORMULA)."""
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(ITEMSIZE)}")
    if expert_parallel and not cfg.experts_model:
        raise ValueError("expert parallelism splits a mixture of experts' experts; this is a dense model")
    if expert_parallel and (cfg.experts % chips or batch % chips):
        raise ValueError(f"expert parallelism over {chips} chips needs the experts ({cfg.experts}) and the batch "
                         f"({batch}) divisible by {chips}")
    peak = acc.peak(dtype)
    if not peak:
        raise ValueError(f"the catalog has no {dtype} peak for {acc.name}")
    prompt = prompt or context
    flops_ceiling = chips * peak * mfu
    bw = chips * acc.bandwidth * mbu
    # Bytes as the measurement counts them (kernels/llama.py): quantized weights with their scales,
    # a quantized KV cache with its scales; memory holds every weight and the whole cache.
    memory = cfg.stored_bytes(dtype, quant) + cfg.kv_bytes(batch, context, dtype, quant)
    decode_bytes = cfg.bytes(batch, 1, context - 1, dtype, quant=quant)
    decode_flops = cfg.flops(batch, 1, context)
    act_item = ITEMSIZE[dtype] if dtype in ("float32", "bfloat16", "float16") else 2
    if expert_parallel:  # every chip holds and reads the non-expert weights; the experts are split
        replicated = cfg.stored_bytes(dtype, quant) - cfg.all_experts_bytes(dtype, quant)
        memory += (chips - 1) * replicated
        reread = (chips - 1) * cfg.streamed_weight_bytes(dtype, quant, tokens=1, touched=0)
        decode_bytes += reread
        decode_comm = all_to_all_seconds(cfg, acc, chips, batch, act_item)
        prefill_comm = all_to_all_seconds(cfg, acc, chips, batch * (prompt or context), act_item)
    else:
        decode_comm = comm_seconds(cfg, acc, chips, batch, batch, act_item)
        prefill_comm = comm_seconds(cfg, acc, chips, batch * (prompt or context), batch, act_item)
    decode_s = max(decode_bytes / bw, decode_flops / flops_ceiling) + (decode_comm or 0.0)
    prefill_flops = cfg.flops(batch, prompt, prompt, logit_tokens=1)
    prefill_bytes = cfg.bytes(batch, prompt, 0, dtype, logit_tokens=1, quant=quant) + (reread if expert_parallel else 0)
    prefill_s = max(prefill_flops / flops_ceiling, prefill_bytes / bw) + (prefill_comm or 0.0)
    out = {
        "estimate": True, "formula": FORMULA.replace(TP_COMM, "") if expert_parallel else FORMULA, "accelerator": acc.name, "chips": chips, "batch": batch,
        "context": context, "prompt": prompt, "dtype": dtype, "weight_dtype": quant.weight_dtype(dtype),
        "kv_dtype": quant.kv_dtype(dtype), "mfu": mfu, "mbu": mbu,
        "memory_needed_gb": memory / 1e9, "memory_available_gb": chips * acc.memory_gb,
        "fits": memory <= chips * acc.memory_gb * 1e9, "decode_bytes": decode_bytes,
        "decode_step_s": decode_s, "decode_bound": "memory" if decode_bytes / bw >= decode_flops / flops_ceiling else "compute",
        "decode_comm_s": decode_comm, "prefill_comm_s": prefill_comm,
        "interconnect_gbs": acc.interconnect_gbs, "hosts": hosts_spanned(acc, chips),
        "link_gbs": (link(acc, chips) or 0) / 1e9 or None,
        "output_tokens_per_s": batch / decode_s, "output_tokens_per_s_per_chip": batch / decode_s / chips,
        "prefill_s": prefill_s, "input_tokens_per_s": batch * prompt / prefill_s,
        "catalog_source": acc.source, "catalog_as_of": acc.as_of,
    }
    if out["hosts"] > 1:
        out["formula"] += HOSTS_FORMULA
    if cfg.experts_model:  # decode reads the experts a batch touches; prefill multiplies by the active ones
        out.update(total_params=cfg.n_params(), active_params=cfg.active_params(), experts=cfg.experts,
                   top_k=cfg.top_k, experts_read_per_layer=cfg.experts_touched(batch))
        out["formula"] += ("; mixture of experts: weights read = every weight but the experts' and the embedding "
                           "+ moe_layers x E*(1-(1-k/E)^batch) experts (expected under uniform routing), "
                           "flops from the active parameters (k experts a token)")
        out["formula"] += EP_FORMULA if expert_parallel else (
            "; the experts are split over the chips under tensor-parallel attention, so the MLP's all-reduce "
            "combines them (no all-to-all)")
        out["layout"] = f"ep={chips}" if expert_parallel else f"tp={chips}"
    if cfg.family == "mla":
        out["kv_bytes_per_position"] = cfg.kv_position_bytes(dtype, quant)
        out["formula"] += ("; multi-head latent attention: kv_per_position = layers x (kv_lora_rank + qk_rope_head_dim) "
                           "values (one latent and one rotary key, read once for every head in the absorbed decode)")
    if usd_per_chip_hour is not None:
        hourly = usd_per_chip_hour * chips
        out["usd_per_m_output_floor"] = hourly / (out["output_tokens_per_s"] * 3600) * 1e6
        out["usd_per_m_input_floor"] = hourly / (out["input_tokens_per_s"] * 3600) * 1e6
    return out


def best_efficiency(records: list[dict]) -> tuple[float | None, float | None]:
    """The best MFU measured in valid prefill records and the best MBU in valid decode records."""
    ok = [r for r in records if r.get("status") == "ok"]
    mfus = [r["metrics"]["mfu"] for r in ok if r["case"]["workload"] == "prefill" and r["metrics"].get("mfu")]
    mbus = [r["metrics"]["mbu"] for r in ok if r["case"]["workload"] == "decode" and r["metrics"].get("mbu")]
    return (max(mfus) if mfus else None), (max(mbus) if mbus else None)
