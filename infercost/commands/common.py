"""What several commands share: the consoles, warnings once per command, reading results, the
price flags and turning them into price bases, and the cost tables."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from infercost.errors import InputError
from infercost.flags import positive
from infercost.numbers import flag
from infercost.present import cost_table

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

WARNED: set = set()


def warn(text: str) -> None:
    if text not in WARNED:  # once per command, however often a price is rebuilt
        WARNED.add(text)
        errors.print(f"[yellow]warning:[/] {escape(text)}", markup=True, highlight=False)


def flat(groups) -> list[str]:
    return [v for g in groups for v in g]


def read_results(paths: list[str], then=None) -> list:
    """Records of result files or folders; then: each piece's then(records) instead (reading.py)."""
    from infercost.bench.reading import read_paths
    return read_paths(paths, warn, then=then)


def blend_ratio(text: str) -> float:
    from infercost.numbers import number
    parts = text.split(":")
    if len(parts) != 2:
        raise InputError(f"--blend {text!r} must be input:output, e.g. 3:1")
    return number(parts[0], f"--blend {text!r} input part") / number(parts[1], f"--blend {text!r} output part")


# -- prices -------------------------------------------------------------------------------
PRICE_FLAGS = {k: "--" + k.replace("_", "-") for k in ("price_per_hour", "accelerators", "owned", "years",
                                                      "power_w", "kwh_price", "pue", "instance")}


def add_price_flags(p) -> None:
    p.add_argument("--instance", action="append", default=None,
                   help="price row provider:instance_type, e.g. gcp:tpu-v6e-8 (see `infercost prices`); repeat to give "
                        "a GPU/TPU instance for accelerator results and a CPU instance for CPU results")
    p.add_argument("--pricing", default="on-demand", help="on-demand, spot, 1-year, 3-year or owned (default on-demand)")
    p.add_argument("--region", help="region of the price row (default: the first listed)")
    p.add_argument("--prices", action="append", default=[], help="your own price table(s), same format as hardware/prices.csv")
    p.add_argument("--any-device", action="store_true",
                   help="price results from a device other than the --instance row's accelerator (the output says so)")
    p.add_argument("--price-per-hour", type=positive(float), default=None, help="USD per hour of the machine, instead of a price row")
    p.add_argument("--accelerators", type=flag(integer=True, low=0, low_open=False), default=None,
                   help="accelerators the --price-per-hour or --owned price covers (default 1; 0 for a CPU machine)")
    p.add_argument("--owned", type=positive(float), default=None, metavar="USD",
                   help="owned hardware: its purchase price (with --years, --power-w and --kwh-price)")
    p.add_argument("--years", type=positive(float), default=4.0, help="amortisation years for --owned (default 4)")
    p.add_argument("--power-w", type=positive(float), default=None, help="power draw in watts for --owned")
    p.add_argument("--kwh-price", type=positive(float), default=None, help="electricity USD per kWh for --owned")
    p.add_argument("--pue", type=positive(float), default=1.0,
                   help="the facility's power usage effectiveness for --owned (default 1.0: the machine's draw alone)")


def price_bases(args, records: list[dict] = (), instances: list[str] | None = None, cpu: bool | None = None) -> list:
    """The price bases the price flags give for these records (none yet: the flags are checked
    before anything is read or measured); `instances` in place of --instance (a detected one);
    `cpu` where the device kind is declared rather than read from records (a serving run)."""
    from infercost.hardware.cost import cpu_only
    from infercost.hardware.cost import price_bases as build
    cpu = cpu_only(list(records)) if cpu is None else cpu
    return build(instances=args.instance if instances is None else instances, pricing=args.pricing, region=args.region,
                 prices=args.prices, price_per_hour=args.price_per_hour, accelerators=args.accelerators,
                 owned=args.owned, years=args.years, power_w=args.power_w, kwh_price=args.kwh_price, pue=args.pue, cpu=cpu,
                 warn=warn, names=PRICE_FLAGS, any_device=args.any_device)


def print_costs(records: list[dict], bases: list, ratio: float = 3.0, max_tpot_s: float | None = None) -> None:
    from infercost.hardware.cost import cheapest_within, over_the_instance, price_records, refused_devices
    from infercost.present import usd
    rows = []
    for basis in bases:
        for device in refused_devices(records, basis):
            console.print("[yellow]not priced:[/] " + escape(f"results from {device!r} with {basis.label}, whose "
                          f"accelerator is {basis.accelerator} (add --any-device to price them with it anyway)"))
        for case in over_the_instance(records, basis):
            console.print("[yellow]not priced:[/] " + escape(f"{case}: more accelerators than {basis.label} covers "
                                                             f"({basis.accelerators_in_price})"))
        priced = price_records(records, basis, ratio)
        if priced:
            console.print(cost_table(priced, f"cost (measured throughput at {basis.label})"))
            console.print(f"[dim]price split: {escape(basis.assumption())}; blended = {ratio:g} input : 1 output[/]")
        rows += priced
    if not rows:
        console.print(escape(f"cost at {'; '.join(b.label for b in bases)}: no valid measurement that these prices "
                             "apply to (an accelerator instance prices GPU/TPU results, a CPU instance CPU results)"))
        return
    if max_tpot_s is not None:
        best = cheapest_within(rows, max_tpot_s)
        if not best:
            console.print(f"no decode point meets TPOT <= {max_tpot_s * 1e3:g} ms")
        for r in best:
            console.print(f"cheapest within TPOT <= {max_tpot_s * 1e3:g} ms: {r['backend']} {escape(str(r['model']))} batch {r['batch']} "
                          f"(TPOT {r['tpot_s'] * 1e3:.3g} ms) at {usd(r['usd_per_m_output'])}/M output tokens")
