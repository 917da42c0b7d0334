"""The demo: a runtime, a UI and a usage logger writing one store at once."""

from __future__ import annotations

import os
import random

import trio

from ._model import Message, Session
from ._store import SessionStore, open_store

__all__ = ["run_demo"]


async def _runtime(store: SessionStore, session_id: str, steps: int, started: trio.Event) -> None:
    """An agent loop: a step adds two messages, then saves the whole snapshot."""
    session = Session(id=session_id)
    for step in range(steps):
        session.messages.append(Message(id=f"u{step}", role="user", content=f"step {step}"))
        session.messages.append(
            Message(id=f"a{step}", role="assistant", content={"text": f"done {step}"})
        )
        session.runtime_state["step"] = step
        await store.save_runtime_session(session)
        started.set()
        await trio.sleep(random.uniform(0, 0.002))


async def _ui(store: SessionStore, session_id: str, renames: int, started: trio.Event) -> None:
    """A UI that renames and pins while the runtime keeps saving stale copies."""
    await started.wait()
    for number in range(1, renames + 1):
        await store.set_title(session_id, f"{session_id} rename {number}")
        await trio.sleep(random.uniform(0, 0.004))
    await store.set_pinned(session_id, True)


async def _usage(store: SessionStore, session_id: str, calls: int, started: trio.Event) -> None:
    """A logger appending one token-usage record per model call."""
    await started.wait()
    for call in range(calls):
        record = {"model": "demo-model", "input_tokens": 100 + call, "output_tokens": 20}
        await store.append_token_usage_record(session_id, record)


async def run_demo(root: str | os.PathLike[str], *, sessions: int = 3) -> None:
    """Simulate ``sessions`` agent sessions against ``root`` and print what was kept."""
    async with open_store(root) as store:
        async with trio.open_nursery() as nursery:
            for number in range(sessions):
                session_id = f"demo-{number}"
                started = trio.Event()  # the session exists once its first save returns
                nursery.start_soon(_runtime, store, session_id, 40, started)
                nursery.start_soon(_ui, store, session_id, 5, started)
                nursery.start_soon(_usage, store, session_id, 60, started)
        for summary in await store.list_sessions():
            usage = await store.read_token_usage(summary.id)
            tokens = sum(record["input_tokens"] + record["output_tokens"] for record in usage)
            print(
                f"{summary.id}: title {summary.title!r} (title_version "
                f"{summary.title_version}), pinned={summary.pinned}, "
                f"{summary.message_count} messages, {len(usage)} usage records, "
                f"{tokens} tokens"
            )
        stats = store.statistics()
        print(
            f"{stats.saves_requested} saves -> {stats.snapshots_written} snapshot writes; "
            f"{stats.appends_requested} appends -> {stats.append_batches} log writes"
        )
