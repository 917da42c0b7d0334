"""Workload 3: many new sessions of mixed sizes, one task each, all at once."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from sessionactors import Session

from .config import Config
from .data import EPOCH, make_message
from .designs import Backend
from .results import ThroughputResult
from .throughput import Job, compare, measure_rates


async def measure_many_sessions(config: Config, base: Path) -> ThroughputResult:
    """Each task creates its session with its first save, then saves after each new message."""
    # Mixed sizes: session i starts with 1 + i % max_messages messages and is new
    # (its first save creates it); each later save follows a turn: one new message.
    sizes = [1 + index % config.many_max_messages for index in range(config.many_sessions)]
    messages = [
        make_message(index) for index in range(config.many_max_messages + config.many_saves)
    ]

    def setup() -> tuple[Job, list[Job]]:
        def job(index: int, size: int) -> Job:
            own = [attrs.evolve(message) for message in messages[: size + config.many_saves - 1]]
            session = Session(
                id=f"many-{index:05d}",
                created_at=EPOCH,
                messages=own[:size],
                metadata={"model": "model-large"},
            )
            turns = own[size:]

            async def run(store: Backend) -> None:
                await store.save_runtime_session(session)
                for message in turns:
                    session.messages.append(message)
                    await store.save_runtime_session(session)

            return run

        async def prepare(store: Backend) -> None:
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
    rates = await measure_rates("many", config.many_rounds, operations, base, setup, verify)
    average = sum(sizes) / len(sizes)
    return compare(
        operations,
        rates,
        f"{config.many_sessions} new sessions ({min(sizes)}-{max(sizes)} messages, "
        f"{average:.0f} on average), one task each saving it {config.many_saves} times "
        "(a new message before each save after the first), all tasks at once",
    )
