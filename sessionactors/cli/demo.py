"""``sessionactors demo``: a runtime, a UI and a usage logger writing one store at once."""

from __future__ import annotations

import argparse
import os
import random

import trio

from .. import Message, Session, SessionStore, open_store
from .common import EXIT_OK

__all__ = ["run", "run_demo"]

STEPS = 40  # runtime steps per session, two messages and one save each
RENAMES = 5  # UI renames per session, then one pin
CALLS = 60  # usage records per session


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
                nursery.start_soon(_runtime, store, session_id, STEPS, started)
                nursery.start_soon(_ui, store, session_id, RENAMES, started)
                nursery.start_soon(_usage, store, session_id, CALLS, started)
        for summary in await store.list_sessions():
            usage = await store.read_token_usage(summary.id)
            tokens = sum(record["input_tokens"] + record["output_tokens"] for record in usage)
            pinned = "pinned" if summary.pinned else "unpinned"
            print(
                f"{summary.id}: {summary.title!r} v{summary.title_version}, {pinned}, "
                f"{summary.message_count} msgs, {len(usage)} usage records, {tokens} tokens"
            )
        stats = store.statistics()
        print(
            f"{stats.saves_requested} saves and {sessions * (RENAMES + 1)} UI edits: "
            f"{stats.snapshots_written} revisions written, {stats.journal_appends} log "
            f"appends,\n{stats.journal_rewrites} generations made; "
            f"{stats.appends_requested} usage records: {stats.append_batches} log writes"
        )


def run(args: argparse.Namespace) -> int:
    """Run the demo against ``args.root`` (created if missing)."""
    trio.run(run_demo, args.root)
    return EXIT_OK
