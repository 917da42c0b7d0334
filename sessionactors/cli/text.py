"""Text that fits: escaped, measured and shortened to a terminal's width, in columns.

Every table and shortened text of the command line is drawn with these; a
title or a message cannot drive the terminal (control characters are escaped)
nor overflow it.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

__all__ = [
    "WIDTH",
    "Column",
    "clean",
    "cut",
    "display_width",
    "header",
    "json_bytes",
    "number",
    "plural",
    "print_json",
    "row",
    "utc",
]

#: Every table and shortened text fits a terminal this wide.
WIDTH = 80


def clean(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, so it cannot drive the terminal."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or (keep_newlines and char == "\n"):
            out.append(char)
        elif char == "\t":
            out.append("    ")
        else:
            out.append(repr(char)[1:-1])  # \x1b, \u200b, ...
    return "".join(out)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """How many columns ``text`` takes on a terminal."""
    return sum(_char_width(char) for char in text)


def cut(text: str, width: int) -> str:
    """``text`` shortened to ``width`` columns, an ellipsis marking the cut."""
    text = clean(text)
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        wide = _char_width(char)
        if used + wide > width - 1:
            break
        out.append(char)
        used += wide
    return "".join(out) + "…"


def _cell(text: str, width: int, *, right: bool = False) -> str:
    text = cut(text, width)
    pad = " " * (width - display_width(text))
    return pad + text if right else text + pad


Column = tuple[str, int, bool]  # header, width, right-aligned


def row(values: Sequence[str], columns: Sequence[Column]) -> str:
    """One line of a table: each value cut or padded to its column."""
    cells = zip(values, columns, strict=True)
    return " ".join(_cell(text, width, right=right) for text, (_, width, right) in cells).rstrip()


def header(columns: Sequence[Column]) -> str:
    """A table's first line: its columns' names."""
    return row([name for name, _, _ in columns], columns)


def number(value: int, width: int) -> str:
    """``value`` in full if it fits ``width`` columns, else abbreviated (12.3M)."""
    text = str(value)
    if len(text) <= width:
        return text
    for suffix, scale in (("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12), ("P", 10**15)):
        text = f"{value / scale:.1f}{suffix}"
        if len(text) <= width:
            return text
    return f"{value:.1e}"


def utc(moment: datetime, *, short: bool = False) -> str:
    """``moment`` in UTC to the second, or in its own offset when UTC cannot hold it.

    ``datetime.min`` at +05:00 (or ``datetime.max`` at -05:00) is a valid
    value the library stores, but its UTC time falls outside the years 1 to
    9999: it is printed as given, its offset after it, instead of failing.
    With ``short`` such a moment is its date and offset only (a table's column).
    """
    try:
        return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "seconds")
    except OverflowError:
        if short:
            offset = moment.isoformat()[len(moment.replace(tzinfo=None).isoformat()) :]
            return f"{moment.date().isoformat()} {offset}"
        return moment.isoformat(" ", "seconds")


def json_bytes(value: Any, *, indent: bool = True) -> bytes:
    """``value`` as JSON, indented by two unless ``indent`` is false."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    sys.stdout.write(json_bytes(value).decode() + "\n")


def plural(count: int, word: str) -> str:
    """``count`` and ``word``, with an s unless there is one: "1 session", "2 sessions"."""
    return f"{count} {word}{'' if count == 1 else 's'}"
