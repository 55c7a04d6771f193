"""Reports from result files: figures (figures.py) and their Markdown/HTML rendering (render.py)."""

from .render import write_report

__all__ = ["write_report"]
