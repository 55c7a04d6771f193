"""One module a subcommand (as asv's commands/): its NAME, its HELP line, `arguments(parser)` that
declares its flags, and `run(args) -> int`. infercost/cli.py only builds the parser from these and
dispatches. Adding a command is one module here and one entry in COMMANDS."""

from __future__ import annotations

from . import backends, compare, cost, estimate, fleet, history, ingest, prices, report, run, serve

COMMANDS = (backends, run, cost, estimate, report, compare, serve, ingest, fleet, prices, history)
