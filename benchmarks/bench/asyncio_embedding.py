"""Issue 16: the store from asyncio (``sessionactors.aio``) and the Agents SDK's Session on it.

Run on its own from ``benchmarks/`` (``python -m bench.asyncio_embedding
[--quick] [--out FILE]``) or from ``run.py``. Every figure comes from one run,
the designs taking turns round after round (their order rotated), with
``durability="fsync"`` on one directory:

* save latency: a session of 20 messages saved after each new message (one
  message per save), from trio (``sessionactors.open_store``) and from
  asyncio (``sessionactors.aio.open_store``) with trio as the loop's guest
  and in a thread of its own. Target: aio <= 1.3x trio; the overhead per call
  is the difference of the medians, in microseconds.
* Agents SDK sessions: 32 conversations at once, each turn reading its last
  20 items and adding 2, for 50 turns; ``AgentsSession`` (both modes) against
  the SDK's ``SQLiteSession`` on one database file (its defaults: WAL, the
  sqlite3 module's ``synchronous=FULL``). Target: >= 3x its turns per second.
  Beside them, the floor of any session on the aio store: the same turns
  making two store calls that find nothing (``load_session`` of an id never
  saved: a crossing, the actor, a worker thread, the lock's probe), with no
  byte of a session read or written.
* the floor of the save's overhead: one asyncio round trip to a worker
  thread and back (``run_in_executor`` of a no-op), as the aio store's
  crossing to its trio thread and back must make at least.

``--quick`` runs a tiny version in a few seconds; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import attrs
import trio
from agents.memory import SQLiteSession

import sessionactors
from sessionactors import Message, Session, aio
from sessionactors.agents import AgentsSession

from .harness import fresh_dir, median, nothing, settle, turns

TRIO = "trio"
GUEST = "aio-guest"
THREAD = "aio-thread"
SQLITE = "sqlite-session"
FLOOR = "floor"  # two store calls a turn that find nothing (thread mode)
ROUND_TRIP = "thread-round-trip"  # asyncio to a worker thread and back, doing nothing
SAVE_DESIGNS = (TRIO, GUEST, THREAD, ROUND_TRIP)
AGENTS_DESIGNS = (SQLITE, GUEST, THREAD, FLOOR)
SAVE_TARGET = 1.3  # aio latency / trio latency, at most
AGENTS_TARGET = 3.0  # AgentsSession turns per second / SQLiteSession's, at least


@attrs.frozen(kw_only=True)
class Size:
    """How many rounds, saves, conversations and turns a run makes."""

    save_rounds: int
    saves: int
    session_messages: int
    agents_rounds: int
    conversations: int
    agents_turns: int
    read_last: int


FULL = Size(
    save_rounds=7,
    saves=200,
    session_messages=20,
    agents_rounds=3,
    conversations=32,
    agents_turns=50,
    read_last=20,
)
QUICK = Size(
    save_rounds=1,
    saves=5,
    session_messages=3,
    agents_rounds=1,
    conversations=3,
    agents_turns=3,
    read_last=20,
)


def _message(number: int) -> Message:
    return Message(id=f"m{number}", role="user", content=f"message {number} " + "lorem " * 40)


# --- save latency -------------------------------------------------------------------------


async def _timed_saves(store: Any, size: Size) -> list[float]:
    """Seconds per save: one new message, then a durable save (the store is trio's or aio's)."""
    session = Session(id="s", messages=[_message(n) for n in range(size.session_messages)])
    await store.save_runtime_session(session)
    samples = []
    for step in range(size.saves):
        session.messages.append(_message(size.session_messages + step))
        started = time.perf_counter()
        await store.save_runtime_session(session)
        samples.append(time.perf_counter() - started)
    return samples


async def _timed_round_trips(size: Size) -> list[float]:
    loop = asyncio.get_running_loop()
    samples = []
    for _ in range(size.saves):
        started = time.perf_counter()
        await loop.run_in_executor(None, nothing)
        samples.append(time.perf_counter() - started)
    return samples


def _save_latency(design: str, root: Path, size: Size) -> list[float]:
    if design == ROUND_TRIP:
        return asyncio.run(_timed_round_trips(size))
    if design == TRIO:

        async def in_trio() -> list[float]:
            async with sessionactors.open_store(root, durability="fsync") as store:
                return await _timed_saves(store, size)

        return trio.run(in_trio)

    async def in_asyncio() -> list[float]:
        mode: aio.Mode = "guest" if design == GUEST else "thread"
        async with aio.open_store(root, durability="fsync", mode=mode) as store:
            return await _timed_saves(store, size)

    return asyncio.run(in_asyncio())


def measure_save_latency(base: Path, size: Size) -> dict[str, Any]:
    """Median seconds per one-message durable save, per design, and the aio/trio ratios."""
    samples: dict[str, list[float]] = {design: [] for design in SAVE_DESIGNS}
    for round_index in range(size.save_rounds):
        for design in turns(round_index, list(SAVE_DESIGNS)):
            root = fresh_dir(base, f"save-{design}")
            samples[design].extend(_save_latency(design, root, size))
            settle(root)
    medians = {design: median(values) for design, values in samples.items()}
    return {
        "description": f"a {size.session_messages}-message session, one new message per save, "
        f"{size.saves} saves x {size.save_rounds} rounds, fsync",
        "median_s": medians,
        "ratio_vs_trio": {design: medians[design] / medians[TRIO] for design in (GUEST, THREAD)},
        "overhead_us": {
            design: (medians[design] - medians[TRIO]) * 1e6 for design in (GUEST, THREAD)
        },
        "round_trip_us": medians[ROUND_TRIP] * 1e6,
    }


# --- Agents SDK sessions ------------------------------------------------------------------


def _turn_items(conversation: int, turn: int) -> list[Any]:
    """What one turn adds: the user's input and the assistant's reply, as a run gives them."""
    return [
        {"role": "user", "content": f"conversation {conversation}, turn {turn}: " + "ask " * 40},
        {
            "id": f"msg_{conversation}_{turn}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "answer " * 80, "annotations": []}],
        },
    ]


async def _conversations(sessions: list[Any], size: Size) -> float:
    """Seconds for every conversation's turns, all conversations at once."""

    async def converse(number: int, session: Any) -> None:
        for turn in range(size.agents_turns):
            await session.get_items(size.read_last)
            await session.add_items(_turn_items(number, turn))

    started = time.perf_counter()
    await asyncio.gather(*(converse(number, s) for number, s in enumerate(sessions)))
    return time.perf_counter() - started


async def _with_sqlite(root: Path, size: Size) -> float:
    database = root / "conversations.db"
    sessions = [SQLiteSession(f"c{n}", database) for n in range(size.conversations)]
    try:
        return await _conversations(sessions, size)
    finally:
        for session in sessions:
            session.close()


class _CallsFindingNothing:
    """A conversation's turn as two aio store calls for an id never saved: the floor."""

    def __init__(self, store: aio.SessionStore, session_id: str) -> None:
        self._store = store
        self._session_id = session_id

    async def get_items(self, limit: int) -> list[Any]:
        await self._store.load_session(self._session_id)
        return []

    async def add_items(self, items: list[Any]) -> None:
        await self._store.load_session(self._session_id)


async def _with_floor(root: Path, size: Size) -> float:
    async with aio.open_store(root, durability="fsync", mode="thread") as store:
        calls = [_CallsFindingNothing(store, f"c{n}") for n in range(size.conversations)]
        return await _conversations(calls, size)


async def _with_agents_session(root: Path, size: Size, mode: aio.Mode) -> float:
    async with aio.open_store(root, durability="fsync", mode=mode) as store:
        sessions = [AgentsSession(store, f"c{n}") for n in range(size.conversations)]
        return await _conversations(sessions, size)


def measure_agents_sessions(base: Path, size: Size) -> dict[str, Any]:
    """Turns per second of each design, and AgentsSession's ratio to SQLiteSession."""
    runs: dict[str, Callable[[Path], Coroutine[Any, Any, float]]] = {
        SQLITE: lambda root: _with_sqlite(root, size),
        GUEST: lambda root: _with_agents_session(root, size, "guest"),
        THREAD: lambda root: _with_agents_session(root, size, "thread"),
        FLOOR: lambda root: _with_floor(root, size),
    }
    turns_done = size.conversations * size.agents_turns
    rates: dict[str, list[float]] = {design: [] for design in AGENTS_DESIGNS}
    for round_index in range(size.agents_rounds):
        for design in turns(round_index, list(AGENTS_DESIGNS)):
            root = fresh_dir(base, f"agents-{design}")
            rates[design].append(turns_done / asyncio.run(runs[design](root)))
            settle(root)
    medians = {design: median(values) for design, values in rates.items()}
    return {
        "description": f"{size.conversations} conversations at once, {size.agents_turns} turns "
        f"each: read the last {size.read_last} items, add 2; fsync (SQLite: WAL, FULL)",
        "turns_per_s": medians,
        "ratio_vs_sqlite": {
            design: medians[design] / medians[SQLITE] for design in (GUEST, THREAD, FLOOR)
        },
    }


# --- the run ------------------------------------------------------------------------------


def run_asyncio_benchmarks(directory: Path, *, quick: bool) -> dict[str, Any]:
    """Both measurements in ``directory``, and the targets checked against them."""
    size = QUICK if quick else FULL
    save = measure_save_latency(directory, size)
    agents = measure_agents_sessions(directory, size)
    return {
        "quick": quick,
        "save_latency": save,
        "agents_sessions": agents,
        "targets": {
            f"aio save <= {SAVE_TARGET}x trio ({design})": save["ratio_vs_trio"][design]
            <= SAVE_TARGET
            for design in (GUEST, THREAD)
        }
        | {
            f"AgentsSession >= {AGENTS_TARGET}x SQLiteSession ({design})": agents[
                "ratio_vs_sqlite"
            ][design]
            >= AGENTS_TARGET
            for design in (GUEST, THREAD)
        },
    }


def print_asyncio_table(results: dict[str, Any]) -> None:
    """The figures and targets, as the other tables of the suite print them."""
    save, agents = results["save_latency"], results["agents_sessions"]
    print(f"\nFrom asyncio: one-message durable save ({save['description']})")
    for design in SAVE_DESIGNS:
        line = f"  {design:<17} {save['median_s'][design] * 1000:8.3f} ms"
        if design in (GUEST, THREAD):
            line += (
                f"  {save['ratio_vs_trio'][design]:.2f}x trio,"
                f" {save['overhead_us'][design]:+.0f} us per call"
            )
        print(line)
    print(f"\nAgents SDK sessions ({agents['description']})")
    for design in AGENTS_DESIGNS:
        line = f"  {design:<17} {agents['turns_per_s'][design]:8.0f} turns/s"
        if design != SQLITE:
            line += f"  {agents['ratio_vs_sqlite'][design]:.2f}x SQLiteSession"
        print(line)
    print("\nTargets (issue 16)")
    for name, passed in results["targets"].items():
        print(f"  {'PASS' if passed else 'MISS'}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny workloads (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the scratch dir")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sessionactors-aio-bench-", dir=args.dir))
    try:
        results = run_asyncio_benchmarks(base, quick=args.quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print_asyncio_table(results)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
