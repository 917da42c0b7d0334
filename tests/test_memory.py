"""The in-memory backend's own promises: which stores share a space, and what it holds.

Everything else of the contract runs on it through the conformance fixtures
(conftest.py's ``backend``).
"""

from __future__ import annotations

import uuid

import pytest
import trio

import sessionactors
from sessionactors import Message, Session
from sessionactors.storage.memory import MemorySpace


async def test_a_bare_memory_root_is_private_to_its_store() -> None:
    async with sessionactors.open_store("memory://") as one:
        await one.save_runtime_session(Session(id="s"))
        async with sessionactors.open_store("memory://") as two:
            assert await two.load_session("s") is None
        assert await one.load_session("s") is not None


async def test_a_named_memory_root_is_shared_and_outlives_its_stores() -> None:
    root = f"memory://shared-{uuid.uuid4().hex}"
    session = Session(id="s", messages=[Message(id="m1", role="user", content={"a": [1]})])
    async with sessionactors.open_store(root) as one:
        await one.save_runtime_session(session)
    async with sessionactors.open_store(root) as two:
        loaded = await two.load_session("s")
    assert loaded == session
    assert loaded is not None and loaded.messages[0] is not session.messages[0]
    assert loaded.messages[0].content is not session.messages[0].content


async def test_a_loaded_session_is_a_copy_the_caller_may_change() -> None:
    async with sessionactors.open_store("memory://") as store:
        await store.save_runtime_session(Session(id="s", metadata={"k": [1]}))
        loaded = await store.load_session("s")
        assert loaded is not None
        loaded.metadata["k"].append(2)
        again = await store.load_session("s")
    assert again is not None and again.metadata == {"k": [1]}


async def test_session_locks_are_dropped_once_nobody_holds_them() -> None:
    """Nothing per session grows with the sessions ever written."""
    space = MemorySpace()
    waiters = 0

    def hold(session_id: str) -> None:
        nonlocal waiters
        with space.locked(session_id, wait=True):
            waiters += 1

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(trio.to_thread.run_sync, hold, f"s{i % 7}")
    assert waiters == 200
    assert space._locks == {}


def test_a_store_cannot_be_built_by_hand() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        sessionactors.SessionStore()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("durability", "sometimes"),
        ("idle_timeout", 0),
        ("idle_timeout", True),
        ("mailbox_size", 0),
        ("mailbox_size", 1.5),
        ("max_threads", 0),
        ("drain_timeout", -1),
    ],
)
async def test_bad_options_are_refused_before_anything_is_opened(
    option: str, value: object
) -> None:
    with pytest.raises(ValueError, match=option):
        async with sessionactors.open_store("memory://", **{option: value}):  # type: ignore[arg-type]
            pass  # pragma: no cover
