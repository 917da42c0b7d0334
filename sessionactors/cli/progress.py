"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

A pipe or a file gets nothing, so a command's output stays as it is when
captured; the bar is cleared before any line is printed over it.
"""

from __future__ import annotations

import time
from typing import TextIO

from .text import WIDTH

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar labelled ``label`` on a terminal; does nothing elsewhere."""

    def __init__(self, total: int, stream: TextIO, *, minimum: int, label: str = "verify") -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.enabled = total >= minimum and stream.isatty()
        self._drawn = False
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < self.total):
            return
        self._last = now
        counter = f" {done}/{self.total}"
        bar_width = WIDTH - 1 - len(f"{self.label} [] ") - len(counter)
        filled = bar_width * done // max(self.total, 1)
        bar = "#" * filled + "." * (bar_width - filled)
        self.stream.write(f"\r{self.label} [{bar}]{counter}")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
