"""Every append of one hold of a session's lock shares one fdatasync (file store, "fsync").

Queued ``update_session`` calls are a revision each, yet cost one fsync
together; each caller is answered only after it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
from conftest import Gate

from sessionactors import Session, open_store


def increment(session: Session) -> None:
    session.runtime_state["n"] = session.runtime_state.get("n", 0) + 1


async def test_queued_updates_are_a_revision_each_and_share_one_fsync(
    root: Path, gates: Callable[[str], Gate]
) -> None:
    async with open_store(root, durability="fsync") as store:
        await store.save_runtime_session(Session(id="s"))
        await store.update_session("s", increment)  # the log's generation exists
        gate = gates("s")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.update_session, "s", increment)  # held in its thread
            await gate.wait_entered()
            for _ in range(20):
                nursery.start_soon(store.update_session, "s", increment)
            await trio.sleep(0.2)  # all twenty queued behind the held batch
            before = store.statistics().fsyncs
            gate.open()
        # The held batch (one update) and the batch of the twenty: two fsyncs.
        assert store.statistics().fsyncs - before == 2
        session = await store.load_session("s")
        assert session is not None and session.runtime_state == {"n": 22}
        history = await store.session_history("s", limit=21)
        assert [r.kind for r in history] == ["update"] * 21
        assert [r.revision for r in history] == list(range(23, 2, -1))
