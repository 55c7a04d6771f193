"""infercost: what does a token cost on this hardware? Measured, then priced."""

__version__ = "0.1.0"


def load_results(*paths):
    """Result files (or folders of them) as a tidy pandas DataFrame, one row per case."""
    from infercost.bench.records import load
    return load(*paths)
