"""What every measurement shares: turns, medians, fresh directories, counters, RSS, the floor."""

from __future__ import annotations

import gc
import itertools
import math
import os
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from .designs import Counters

KB = 1000
MB = 1000 * 1000
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Counters that say "how much at most", not "how many": a run's value, not a difference.
_GAUGES = ("live_actors", "max_mailbox_depth", "locks")

Progress = Callable[[str], None]


def nothing() -> None:
    """What a timed bare thread round trip runs."""


def turns(round_index: int, items: Sequence[str]) -> list[str]:
    """The order the designs run in this round: rotated every round."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def orders(round_index: int, items: Sequence[str]) -> list[str]:
    """The order the runs go in this round: every permutation in turn.

    Over ``len(items)!`` rounds each item goes first as often as any other,
    and each of two items goes before the other as often as after it (which
    rotating alone does not give for three items or more). For two items it
    is :func:`turns`.
    """
    every = list(itertools.permutations(items))
    return list(every[round_index % len(every)])


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank ``percent``-th percentile (99: the value 99% of samples are at or under)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def fresh_dir(base: Path, name: str) -> Path:
    """An empty directory ``base / name``, whatever was there before."""
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def settle(path: Path | None = None) -> None:
    """Between two timed runs: remove ``path``, collect garbage, commit the filesystem.

    ``os.sync`` makes the kernel write back (and, on a ``discard`` mount, trim)
    what the previous run left behind now, rather than during the next run.
    """
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    gc.collect()
    os.sync()


def counter_delta(before: Counters, after: Counters) -> Counters:
    """What a run added to each counter (a gauge keeps its value at the end)."""
    return {
        key: value if key in _GAUGES else value - before.get(key, 0) for key, value in after.items()
    }


def add_counters(total: Counters, delta: Counters) -> None:
    """Add one run's ``delta`` to ``total`` (a gauge keeps its largest value)."""
    for key, value in delta.items():
        if key in _GAUGES:
            total[key] = max(total.get(key, 0), value)
        else:
            total[key] = total.get(key, 0) + value


def rss_bytes() -> int:
    """The process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def floor_write(directory: Path, data: bytes) -> None:
    """The physical floor: the raw cost of a durable replace of ``session.json``.

    Temp file write, fsync, rename, directory fsync: what any design must pay
    to replace a file durably, with nothing else around it.
    """
    temp = directory / ".floor.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / "session.json")
    fsync_path(directory)


def write_all(fd: int, data: bytes) -> None:
    """``data`` written to ``fd`` (one ``write`` for a regular file)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_path(path: str | Path) -> None:
    """fsync of the file or directory at ``path``."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
