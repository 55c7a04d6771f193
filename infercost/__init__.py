"""infercost: what does a token cost on this hardware? Measured, then priced.

From a notebook::

    import infercost
    df = infercost.load_results("results/")                     # one row per case
    costs = infercost.price_results("results/", instance="aws:p5en.48xlarge", pricing="spot")
    figs = infercost.figures("results/", instance="aws:p5en.48xlarge")  # matplotlib figures by name

Prices are built exactly as the CLI builds them (hardware.cost.price_bases): a price per hour
of CPU-only results covers the whole machine, as `infercost cost --price-per-hour` does.
"""

from infercost.version import __version__  # noqa: F401  (infercost.__version__)


def load_results(*paths):
    """Result files (or folders of them) as a tidy pandas DataFrame, one row per case."""
    from infercost.bench.reading import load
    return load(*paths)


def _records(paths, keep=None, then=None):
    import warnings

    from infercost.bench.reading import read_paths
    return read_paths(paths, lambda text: warnings.warn(text, stacklevel=3), keep, then)


# What pricing reads of a record.
PRICED_FIELDS = ("schema", "key", "case", "status", "valid", "reasons", "metrics")


def _bases(records, instance, pricing, region, price_per_hour, accelerators, prices, cpu=None):
    from infercost.hardware.cost import cpu_only, price_bases
    instances = [instance] if isinstance(instance, str) else list(instance or [])
    return price_bases(instances=instances, pricing=pricing, region=region, prices=list(prices),
                       price_per_hour=price_per_hour, accelerators=accelerators,
                       cpu=cpu_only(records) if cpu is None else cpu)


def price_results(*paths, instance=None, pricing="on-demand", region=None, price_per_hour=None,
                  accelerators=None, ratio=3.0, prices=()):
    """Cost rows ($/M input, output, blended tokens; $/PFLOP; 95% intervals) as a DataFrame.
    Give a price row (instance="provider:type" or a list of one accelerator and one CPU
    instance, pricing, region) or price_per_hour (with accelerators: how many it covers)."""
    from functools import partial

    import pandas as pd

    from infercost.hardware.cost import price_piece, price_pieces
    # A bare price_per_hour covers a CPU machine when every record is a CPU run, else one
    # accelerator: both readings go to the readers, which price each piece of the folder where
    # they read it, and the records decide which reading stands (hardware.cost.price_pieces).
    on_accelerators = _bases(None, instance, pricing, region, price_per_hour, accelerators, prices, cpu=False)
    if not on_accelerators:
        raise ValueError("give a price: instance='provider:type' or price_per_hour=USD")
    on_cpu = _bases(None, instance, pricing, region, price_per_hour, accelerators, prices, cpu=True) \
        if price_per_hour is not None and accelerators is None else on_accelerators
    pieces = _records(paths, PRICED_FIELDS, partial(price_piece, cpu_bases=on_cpu, accelerator_bases=on_accelerators))
    return pd.DataFrame(price_pieces(pieces, ratio))


def figures(*paths, instance=None, pricing="on-demand", region=None, price_per_hour=None, accelerators=None,
            ratio=3.0, prices=()):
    """The report's matplotlib figures by name (cost and frontier need a price)."""
    from infercost.hardware.cost import price_records
    from infercost.report import figures as report
    records = _records(paths)
    bases = _bases(records, instance, pricing, region, price_per_hour, accelerators, prices)
    rows = [row for b in bases for row in price_records(records, b, ratio)]
    figs = {"cost": report.fig_costs(rows) if rows else None, "frontier": report.fig_frontier(rows) if rows else None,
            "roofline": report.fig_roofline(records), "matmul": report.fig_matmul_curve(records)}
    return {k: v for k, v in figs.items() if v is not None}
