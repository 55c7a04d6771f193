"""`infercost cost`: price stored results without running them again."""

from __future__ import annotations

from infercost.errors import InputError
from infercost.flags import positive

from .common import add_price_flags, blend_ratio, price_bases, print_costs, read_results

NAME = "cost"
HELP = "re-price stored results without re-running them"


def arguments(p) -> None:
    p.add_argument("results", nargs="+", help="result files or folders")
    add_price_flags(p)
    p.add_argument("--blend", default="3:1", help="input:output token ratio of the blended price (default 3:1)")
    p.add_argument("--max-tpot-ms", type=positive(float), default=None,
                   help="also show the cheapest batch whose time per output token meets this limit")


def run(args) -> int:
    if not price_bases(args):  # a missing or bad price is reported before any file is read
        raise InputError("give a price: --instance provider:instance_type (see `infercost prices`) or --price-per-hour USD")
    ratio = blend_ratio(args.blend)
    records = read_results(args.results)
    print_costs(records, price_bases(args, records), ratio, args.max_tpot_ms / 1e3 if args.max_tpot_ms else None)
    return 0
