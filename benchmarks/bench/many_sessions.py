"""Workload 3: many new sessions of mixed sizes, one task each, all at once.

The floor takes its turn in the same rounds (``floor_store.FloorStore``): the
same sessions' bytes, encoded with orjson before the timing, written by the
same number of tasks with only the durable work of a store keeping one
directory and one log file per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from sessionactors import Message, Session

from .config import Config
from .data import EPOCH, commit_line, make_message, message_line, whole_session_bytes
from .designs import Backend
from .floor_store import FloorStore
from .results import ThroughputResult
from .throughput import FloorJob, Job, compare, measure_rates


async def measure_many_sessions(config: Config, base: Path) -> ThroughputResult:
    """Each task creates its session with its first save, then saves after each new message."""
    # Mixed sizes: session i starts with 1 + i % max_messages messages and is new
    # (its first save creates it); each later save follows a turn: one new message.
    sizes = [1 + index % config.many_max_messages for index in range(config.many_sessions)]
    messages = [
        make_message(index) for index in range(config.many_max_messages + config.many_saves)
    ]

    def new_session(index: int, size: int) -> tuple[Session, list[Message]]:
        """Session ``index`` as its first save has it, and the messages of its later saves."""
        own = [attrs.evolve(message) for message in messages[: size + config.many_saves - 1]]
        session = Session(
            id=f"many-{index:05d}",
            created_at=EPOCH,
            messages=own[:size],
            metadata={"model": "model-large"},
        )
        return session, own[size:]

    def setup() -> tuple[Job, list[Job]]:
        def job(index: int, size: int) -> Job:
            session, turns = new_session(index, size)

            async def run(store: Backend) -> None:
                await store.save_runtime_session(session)
                for message in turns:
                    session.messages.append(message)
                    await store.save_runtime_session(session)

            return run

        async def prepare(store: Backend) -> None:
            pass

        return prepare, [job(index, size) for index, size in enumerate(sizes)]

    def floor_setup() -> tuple[FloorJob, list[FloorJob]]:
        def job(index: int, size: int) -> FloorJob:
            # The bytes, encoded here (untimed): the whole session and a commit
            # line first, then each new message and a commit line.
            session, turns = new_session(index, size)
            first = whole_session_bytes(session) + b"\n" + commit_line(session.id, 1, size)
            later = [
                message_line(message) + commit_line(session.id, revision, size + revision - 1)
                for revision, message in enumerate(turns, start=2)
            ]

            async def run(floor: FloorStore) -> None:
                fd = await floor.create(session.id, first)
                try:
                    for data in later:
                        await floor.append(fd, data)
                finally:
                    os.close(fd)

            return run

        async def prepare(floor: FloorStore) -> None:
            pass

        return prepare, [job(index, size) for index, size in enumerate(sizes)]

    def verify(root: Path) -> None:
        # Not the store's own ``.sessionactors`` (its listing index).
        found = sum(
            1 for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
        )
        if found != config.many_sessions:
            raise AssertionError(f"{root}: {found} sessions, not {config.many_sessions}")

    operations = config.many_sessions * config.many_saves
    rates = await measure_rates(
        "many", config.many_rounds, operations, base, setup, verify, floor=floor_setup
    )
    average = sum(sizes) / len(sizes)
    return compare(
        operations,
        rates,
        f"{config.many_sessions} new sessions ({min(sizes)}-{max(sizes)} messages, "
        f"{average:.0f} on average), one task each saving it {config.many_saves} times "
        "(a new message before each save after the first), all tasks at once; floor, in "
        "the same rounds: the same tasks and bytes (encoded before the timing) with only "
        "mkdir, root fsync, log created, fdatasync, directory fsync for the first save and "
        "one append and fdatasync for each later one, each save in one thread hop "
        "(trio's default limiter, 40 threads, as classic's)",
    )
