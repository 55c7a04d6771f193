"""infercost: what does a token cost on this hardware? Measured, then priced.

From a notebook::

    import infercost
    df = infercost.load_results("results/")                     # one row per case
    costs = infercost.price_results("results/", instance="aws:p5en.48xlarge", pricing="spot")
    figs = infercost.figures("results/", instance="aws:p5en.48xlarge")  # matplotlib figures by name
"""

__version__ = "0.1.0"


def load_results(*paths):
    """Result files (or folders of them) as a tidy pandas DataFrame, one row per case."""
    from infercost.bench.records import load
    return load(*paths)


def _records(paths):
    from infercost.bench.records import read_records, result_files
    return [r for f in result_files(paths) for r in read_records(f)]


def _basis(instance=None, pricing="on-demand", region=None, price_per_hour=None, accelerators=1, prices=()):
    from infercost.bench.cost import Basis
    from infercost.hardware import prices as tables
    if price_per_hour is not None:
        return Basis(price_per_hour, accelerators, f"price_per_hour={price_per_hour:g} (user)")
    row = tables.find(tables.load_all(list(prices)), instance, pricing, region)
    return Basis(row.usd_per_hour, row.accelerator_count, row.label())


def price_results(*paths, instance=None, pricing="on-demand", region=None, price_per_hour=None,
                  accelerators=1, ratio=3.0, prices=()):
    """Cost rows ($/M input, output, blended tokens; $/PFLOP; 95% intervals) as a DataFrame.
    Give a price row (instance="provider:type", pricing, region) or price_per_hour."""
    import pandas as pd

    from infercost.bench.cost import price_records
    basis = _basis(instance, pricing, region, price_per_hour, accelerators, prices)
    return pd.DataFrame(price_records(_records(paths), basis, ratio))


def figures(*paths, instance=None, pricing="on-demand", region=None, price_per_hour=None, accelerators=1,
            ratio=3.0):
    """The report's matplotlib figures by name (cost and frontier need a price)."""
    from infercost.bench import report
    from infercost.bench.cost import price_records
    records = _records(paths)
    rows = []
    if instance or price_per_hour is not None:
        rows = price_records(records, _basis(instance, pricing, region, price_per_hour, accelerators), ratio)
    figs = {"cost": report.fig_costs(rows) if rows else None, "frontier": report.fig_frontier(rows) if rows else None,
            "roofline": report.fig_roofline(records), "matmul": report.fig_matmul_curve(records)}
    return {k: v for k, v in figs.items() if v is not None}
