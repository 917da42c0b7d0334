"""Saves that cost what changed: the session's log against full rewrites.

Run on its own (``python benchmarks/journal.py [--quick]``) or from
``benchmarks/run.py``. Every figure comes from one run on one directory:

* a save adding one message (~1.5 KB) to sessions of 10, 1,000 and 10,000
  messages: median latency, and bytes written per save (against twice the
  message plus the session's head: its fields but the messages, which a
  commit record holds);
* the whole life of a session of N steps, one message and one save per step,
  with sessionactors and with a writer that rewrites the whole session
  durably on every step (what a store without a log does). With several
  rounds the two take turns and the figures are medians
  (``bench/revisions.py`` runs it so under ``durability="fsync"``, issue 13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio
from bench.harness import fresh_dir, settle, turns

from sessionactors import Message, Session, open_store
from sessionactors._model import converter
from sessionactors._options import Durability

MESSAGE_BYTES = 1500
LOG = "log"  # sessionactors (its log), in the life's runs and its JSON keys ("journal_s")
REWRITE = "rewrite"  # durable full rewrites

MessageFactory = Callable[[int], Message]


def _message(number: int) -> Message:
    body = f"message {number} " + "lorem ipsum dolor sit amet " * (MESSAGE_BYTES // 27)
    return Message(id=f"m{number}", role="user" if number % 2 else "assistant", content=body)


def _rewrite_whole(directory: Path, session: Session, fsync: bool) -> int:
    """One full rewrite of the session: the per-save cost without a log."""
    data = orjson.dumps(converter.unstructure(session))
    temp = directory / "session.json.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / "session.json")
    if fsync:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return len(data)


async def save_latency(root: Path, sizes: list[int], saves: int) -> dict[str, Any]:
    """Median latency and bytes of a save adding one message to sessions of each size."""
    results: dict[str, Any] = {}
    async with open_store(root, durability="fsync") as store:
        for size in sizes:
            session = Session(id=f"latency-{size}", messages=[_message(n) for n in range(size)])
            await store.save_runtime_session(session)
            times = []
            written = []
            for step in range(saves):
                session.messages.append(_message(size + step))
                before = store.statistics().bytes_written
                start = time.perf_counter()
                await store.save_runtime_session(session)
                times.append(time.perf_counter() - start)
                written.append(store.statistics().bytes_written - before)
            head = attrs.evolve(session, messages=[])
            results[str(size)] = {
                "median_ms": statistics.median(times) * 1e3,
                "bytes_per_save": statistics.median(written),
                "message_bytes": len(orjson.dumps(converter.unstructure(session.messages[-1]))),
                # What a commit record holds: every field of the session but its messages.
                "head_bytes": len(orjson.dumps(converter.unstructure(head))),
            }
    return results


async def life_sessionactors(
    root: Path, steps: int, durability: Durability, message: MessageFactory = _message
) -> float:
    """Seconds for a session of ``steps`` steps (one new message, one save each) in a store."""
    async with open_store(root, durability=durability) as store:
        session = Session(id="life")
        start = time.perf_counter()
        for step in range(steps):
            session.messages.append(message(step))
            await store.save_runtime_session(session)
        return time.perf_counter() - start


async def life_rewrites(
    root: Path, steps: int, durability: Durability, message: MessageFactory = _message
) -> tuple[float, int]:
    """Seconds and bytes for the same life, the whole session rewritten durably each step.

    ``root`` is an existing directory, where ``session.json`` is rewritten.
    """
    session = Session(id="life")
    rewritten = 0
    start = time.perf_counter()
    for step in range(steps):
        session.messages.append(message(step))
        rewritten += await trio.to_thread.run_sync(
            _rewrite_whole, root, session, durability == "fsync"
        )
    return time.perf_counter() - start, rewritten


async def session_life(
    root: Path,
    steps: int,
    durability: Durability,
    *,
    rounds: int = 1,
    message: MessageFactory = _message,
) -> dict[str, Any]:
    """The life of a ``steps``-step session: sessionactors' log against full rewrites.

    ``rounds`` runs of each, taking turns (which goes first alternates), each
    in a directory of its own removed after it; the figures are medians.
    """
    seconds: dict[str, list[float]] = {LOG: [], REWRITE: []}
    rewritten = 0
    for round_index in range(rounds):
        for who in turns(round_index, [LOG, REWRITE]):
            directory = fresh_dir(root, f"{who}-{round_index}")
            if who == LOG:
                seconds[who].append(await life_sessionactors(directory, steps, durability, message))
            else:
                elapsed, rewritten = await life_rewrites(directory, steps, durability, message)
                seconds[who].append(elapsed)
            settle(directory)
    log, rewrite = statistics.median(seconds[LOG]), statistics.median(seconds[REWRITE])
    return {
        "steps": steps,
        "durability": durability,
        "rounds": rounds,
        "journal_s": log,
        "rewrite_s": rewrite,
        "journal_runs_s": seconds[LOG],
        "rewrite_runs_s": seconds[REWRITE],
        "rewrite_bytes": rewritten,
        "speedup": rewrite / log,
        "paired_speedups": [r / j for j, r in zip(seconds[LOG], seconds[REWRITE], strict=True)],
    }


async def run_journal_benchmarks(directory: Path, *, quick: bool) -> dict[str, Any]:
    sizes = [10, 100, 1000] if quick else [10, 1000, 10000]
    saves = 5 if quick else 40
    steps = 100 if quick else 2000
    latency = await save_latency(directory / "latency", sizes, saves)
    life = await session_life(directory / "life", steps, "fsync")
    life_flush = await session_life(directory / "life-flush", steps, "flush")
    small, large = latency[str(sizes[0])], latency[str(sizes[-1])]
    return {
        "save_latency": latency,
        "session_life": life,
        "session_life_flush": life_flush,
        "targets": {
            "large_save_vs_small": large["median_ms"] / small["median_ms"],
            "bytes_vs_allowance": max(
                row["bytes_per_save"] / (2 * row["message_bytes"] + row["head_bytes"])
                for row in latency.values()
            ),
            "life_speedup": life["speedup"],
            "life_speedup_flush": life_flush["speedup"],
        },
    }


def print_journal_table(results: dict[str, Any]) -> None:
    print("\nsave adding one message (the session's log, durability=fsync)")
    print(f"  {'messages':>10} {'median ms':>10} {'bytes/save':>11} {'message B':>10}")
    for size, row in results["save_latency"].items():
        print(
            f"  {size:>10} {row['median_ms']:>10.3f} {row['bytes_per_save']:>11.0f} "
            f"{row['message_bytes']:>10}"
        )
    for key, durability in (("session_life", "fsync"), ("session_life_flush", "flush")):
        life = results[key]
        print(
            f"life of a {life['steps']}-step session ({durability}): log "
            f"{life['journal_s']:.2f} s, full rewrites {life['rewrite_s']:.2f} s "
            f"({life['rewrite_bytes'] / 1e6:.0f} MB)"
        )
    targets = results["targets"]
    rows = [
        ("largest save / smallest save", targets["large_save_vs_small"], "<= 3", 3.0, False),
        ("bytes / (2 x message + head)", targets["bytes_vs_allowance"], "<= 1", 1.0, False),
        ("session life speedup (fsync)", targets["life_speedup"], ">= 20", 20.0, True),
        ("session life speedup (flush)", targets["life_speedup_flush"], ">= 20", 20.0, True),
    ]
    for name, value, goal, bound, higher in rows:
        met = value >= bound if higher else value <= bound
        print(f"  {name:<34} {value:>8.2f}  target {goal:<6} {'PASS' if met else 'MISS'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        results = trio.run(lambda: run_journal_benchmarks(Path(directory), quick=args.quick))
    print_journal_table(results)


if __name__ == "__main__":
    main()
