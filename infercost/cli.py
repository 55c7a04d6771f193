"""The `infercost` command: build the parser from the command modules (infercost/commands/), dispatch,
and turn every error into one line and an exit status. Commands hold their own flags and work."""

from __future__ import annotations

import sys

from infercost.commands import COMMANDS
from infercost.commands.common import errors
from infercost.errors import InputError, RunError
from infercost.flags import Parser, join_negative_values
from infercost.version import __version__

UsageError = InputError  # the name the CLI's callers know


def build_parser() -> Parser:
    parser = Parser(prog="infercost", description="What does a token cost on this hardware?")
    parser.add_argument("--version", action="version", version=f"infercost {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.NAME, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command, with everything it prints passed through the redaction layer."""
    from infercost.redact import redacted_output
    with redacted_output():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from infercost.redact import clip, control_escaped
    try:
        argv = sys.argv[1:] if argv is None else argv
        for i, a in enumerate(argv):  # no path or name holds one (a shell cannot pass it; the API can)
            if "\x00" in a:
                flag = a.split("=", 1)[0] if a.startswith("--") else argv[i - 1] if i and argv[i - 1].startswith("--") else ""
                raise InputError(f"{control_escaped(flag) + ': its value' if flag else 'an argument'} holds a NUL character")
        args = build_parser().parse_args(join_negative_values(argv))
        return next(c for c in COMMANDS if c.NAME == args.command).run(args)
    except InputError as e:
        sys.stderr.write(f"infercost: error: {control_escaped(e)}\n")  # one line, never wrapped
        return 2
    except RunError as e:
        sys.stderr.write(f"infercost: error: {control_escaped(e)}\n")
        return 1
    except KeyboardInterrupt:
        errors.print("infercost: interrupted", markup=False)
        return 130
    except Exception as e:  # a bug: still one line for the user; INFERCOST_DEBUG=1 shows the traceback
        import os
        if os.environ.get("INFERCOST_DEBUG"):
            raise
        sys.stderr.write(f"infercost: error: unexpected {type(e).__name__}: {control_escaped(clip(str(e).splitlines()[0] if str(e) else '', 200))}"
                         " (a bug: please report it with INFERCOST_DEBUG=1's traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
