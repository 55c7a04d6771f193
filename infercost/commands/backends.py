"""`infercost backends`: which backends can run here."""

from __future__ import annotations

from infercost.present import backends_table

from .common import console

NAME = "backends"
HELP = "list the backends and whether each can run here"


def arguments(p) -> None:
    pass


def run(args) -> int:
    from infercost.bench import runner
    from infercost.bench.backend import NAMES
    console.print(backends_table(runner.probe(list(NAMES))))
    return 0
