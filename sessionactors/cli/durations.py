"""Durations as a person types them: ``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or ``1d12h``."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

from .text import cut

__all__ = ["duration"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"([0-9]+)([smhdw])")
_WHOLE = re.compile(r"(?:[0-9]+[smhdw])+")


def duration(text: str) -> timedelta:
    """``text`` as a duration: whole numbers each followed by a unit (s, m, h, d, w), summed.

    An argparse type: a bad one is a usage error (exit 2) naming what is expected.
    """
    shown = repr(cut(text, 40))  # a mistyped argument, not a page of it
    if not (text.isascii() and _WHOLE.fullmatch(text)):
        raise argparse.ArgumentTypeError(
            f"{shown} is not a duration: expected a whole number and a unit, "
            "s, m, h, d or w (such as 30d, 12h, 90m, 45s, 2w or 1d12h)"
        )
    try:
        total = sum(
            (timedelta(**{_UNITS[unit]: int(count)}) for count, unit in _PART.findall(text)),
            timedelta(),
        )
    except (OverflowError, ValueError):  # past timedelta's range, or digits past int()'s limit
        raise argparse.ArgumentTypeError(f"{shown} is too long a duration") from None
    if total <= timedelta():
        raise argparse.ArgumentTypeError(f"{shown} is no time at all: give more than 0")
    return total
