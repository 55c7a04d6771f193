"""`infercost estimate`: a roofline estimate for a model on catalog hardware (not a measurement)."""

from __future__ import annotations

from infercost.errors import InputError
from infercost.flags import positive
from infercost.kernels.dtypes import QuantSpec
from infercost.numbers import flag
from infercost.present import estimate_lines

from .common import console, read_results

NAME = "estimate"
HELP = "roofline estimate for a model on catalog hardware (an estimate, not a measurement)"


def arguments(p) -> None:
    p.add_argument("--model", "-m", required=True, help="model name or config.json")
    p.add_argument("--accelerator", "-a", required=True, help="a catalog name or a device name, e.g. 'TPU v5e', 'NVIDIA H100 80GB HBM3'")
    p.add_argument("--chips", type=positive(int), default=1)
    p.add_argument("--expert-parallel", action="store_true",
                   help="a mixture of experts split by experts over the chips, its batch too (default: tensor parallel)")
    p.add_argument("--batch", type=positive(int), default=1)
    p.add_argument("--context", type=positive(int), default=2048)
    p.add_argument("--prompt", type=positive(int), default=None, help="prompt length for prefill (default: the context)")
    p.add_argument("--dtype", default="bfloat16", help="float32, bfloat16, float16, fp8 or int8: compute, and "
                   "weights and KV cache unless --quant / --kv-cache say otherwise")
    p.add_argument("--quant", choices=("int8", "fp8"), default=None, help="weights stored in int8 or fp8")
    p.add_argument("--kv-cache", choices=("int8", "fp8"), default=None, help="KV cache stored in int8 or fp8")
    p.add_argument("--mfu", type=flag(high=1), default=1.0, help="scale the compute ceiling by a measured MFU (0-1]")
    p.add_argument("--mbu", type=flag(high=1), default=1.0, help="scale the bandwidth ceiling by a measured MBU (0-1]")
    p.add_argument("--price-per-chip-hour", type=positive(float), default=None, help="USD per chip-hour for the floor $/M tokens")
    p.add_argument("--from-results", nargs="+", default=None, metavar="RESULTS",
                   help="scale by the best MFU (prefill) and MBU (decode) measured in these results")


def run(args) -> int:
    from infercost.hardware import catalog
    from infercost.hardware.estimate import best_efficiency, estimate
    from infercost.kernels.models import resolve_config
    try:
        cfg = resolve_config(args.model)
    except ValueError as e:
        raise InputError(str(e)) from None
    acc = catalog.find(args.accelerator)
    if acc is None:
        names = ", ".join(a.name for a in catalog.all_entries())
        raise InputError(f"{args.accelerator!r} is not in the catalog; known: {names}")
    mfu, mbu, basis_note = args.mfu, args.mbu, ""
    if args.from_results:
        measured_mfu, measured_mbu = best_efficiency(read_results(args.from_results))
        if not (measured_mfu or measured_mbu):
            raise InputError("--from-results holds no valid prefill MFU or decode MBU to scale by")
        mfu, mbu = measured_mfu or mfu, measured_mbu or mbu
        basis_note = f" scaled by measured MFU {mfu:.1%} and MBU {mbu:.1%}"
    try:
        e = estimate(cfg, acc, args.chips, args.batch, args.context, args.dtype, args.prompt,
                     mfu, mbu, args.price_per_chip_hour, QuantSpec(args.quant, args.kv_cache), args.expert_parallel)
    except ValueError as err:
        raise InputError(str(err)) from None
    dtypes = args.dtype + (f", weights {args.quant}" if args.quant else "") + (f", KV {args.kv_cache}" if args.kv_cache else "")
    for line in estimate_lines(e, args.model, acc, dtypes, args.price_per_chip_hour, basis_note):
        console.print(line)
    return 0
