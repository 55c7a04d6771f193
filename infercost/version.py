"""The version of infercost (one place; the package and every record read it here)."""

__version__ = "0.1.0"
