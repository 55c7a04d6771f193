"""The command line's parser and flag types (each command declares its own flags: infercost/commands/)."""

from __future__ import annotations

import argparse

from infercost.errors import InputError
from infercost.numbers import flag


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # No abbreviations: a mistyped flag (`--token SECRET`) must not silently become another
        # (`--tokenizer`), and is refused naming it.
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):  # argparse's own errors, made one line like ours
        raise InputError(message)


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive(kind):
    """A finite number above zero (a whole number for int)."""
    return flag(integer=kind is int)


def join_negative_values(argv: list[str]) -> list[str]:
    """`--shape -4x4x4` would read as an unknown option; keep it as --shape's value so the
    error can say what is wrong with it."""
    out = []
    for token in argv:
        if token.startswith("--") and token.endswith("=--"):  # argparse would drop the "--" and use the default
            raise InputError(f"argument {token[:-3]}: '--' is not a value")
        if out and out[-1] == "--shape" and token.startswith("-") and token[1:2].isdigit():
            out[-1] = f"--shape={token}"
        else:
            out.append(token)
    return out
