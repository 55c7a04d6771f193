"""The one validation layer for numbers a user or a file gives: finite, of the right type, in range.

Every check names where the number came from (a flag, or file:line:field), so the error is one
line a user can act on. `nan`, `inf`, negatives and zeros are refused wherever they mean nothing.
"""

from __future__ import annotations

import math

from infercost.errors import InputError


def number(value, where: str, *, integer: bool = False, low: float | None = 0, low_open: bool = True,
           high: float | None = None, high_open: bool = False):
    """`value` (a number or its text) as a finite int or float within [low, high] (open ends as asked).

    Defaults: a positive number. Raises InputError("<where>: ...") otherwise.
    """
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, bool):
        raise InputError(f"{where}: {value!r} is not a number")
    try:
        if integer:
            if isinstance(text, float) and not text.is_integer():
                raise ValueError
            out = int(text)
        else:
            out = float(text)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: {value!r} is not {'a whole number' if integer else 'a number'}") from None
    if not math.isfinite(out):
        raise InputError(f"{where}: {value!r} is not a finite number")
    if low is not None and (out < low or (low_open and out == low)):
        if low == 0:
            raise InputError(f"{where}: {value!r} must be {'positive' if low_open else 'zero or more'}")
        raise InputError(f"{where}: {value!r} must be {'above' if low_open else 'at least'} {low:g}")
    if high is not None and (out > high or (high_open and out == high)):
        raise InputError(f"{where}: {value!r} must be {'below' if high_open else 'at most'} {high:g}")
    return out


def flag(integer: bool = False, **limits):
    """An argparse type for a flag's number: the flag name is added by argparse's message."""
    import argparse

    def convert(text: str):
        try:
            return number(text, "value", integer=integer, **limits)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None
    return convert


def is_figure(value) -> bool:
    """A figure a record may report and a price may use: a finite, non-negative number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
