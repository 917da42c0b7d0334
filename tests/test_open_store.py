"""Opening a store, its statistics, the runtime port and the errors (docs/reference.md:
"Opening a store", "`SessionStore`", "`StoreStatistics`", "Errors").

Tests taking ``store`` run on every backend (files, memory, PostgreSQL; see
conftest.py); those taking ``root`` are about the file store's directory. Options,
closing and draining are in test_lifecycle.py; errors under faults in test_faults.py.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from support import (
    msg,
)

import sessionactors
from sessionactors import (
    Session,
    SessionStore,
    SessionStoreError,
    StoreStatistics,
    open_store,
)

# --- opening ------------------------------------------------------------------------------


def put_foreign_files(root: Path) -> None:
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "empty-dir").mkdir()


async def test_open_store_creates_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "c"
    async with open_store(root, durability="flush") as store:
        assert root.is_dir()
        await store.save_runtime_session(Session(id="s"))
    async with open_store(str(root), durability="flush") as store:  # a str root works too
        assert await store.load_session("s") is not None


async def test_open_store_leaves_other_files_in_root_alone(root: Path) -> None:
    put_foreign_files(root)
    async with open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        assert [s.id for s in await store.list_sessions()] == ["s"]
        assert await store.delete_session("s") is True
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "empty-dir").is_dir()
    assert sorted(os.listdir(root)) == ["empty-dir", "notes.txt"]


# --- statistics, the port, the errors -----------------------------------------------------


async def test_statistics_is_a_frozen_attrs_object_with_live_actors(store: SessionStore) -> None:
    stats = store.statistics()
    assert isinstance(stats, StoreStatistics)
    assert attrs.has(type(stats))
    assert stats.live_actors == 0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.live_actors = 5  # type: ignore[misc]

    await store.save_runtime_session(Session(id="a"))
    await store.save_runtime_session(Session(id="b"))
    await store.load_session("c")
    now = store.statistics()
    assert isinstance(now.live_actors, int)
    assert now.live_actors == 3  # the default idle_timeout (30 s) has not passed
    assert stats.live_actors == 0  # a snapshot, not a live view


async def test_store_satisfies_the_runtime_port(store: SessionStore) -> None:
    assert isinstance(store, sessionactors.RuntimeSessionPersistence)

    async def runtime_step(port: sessionactors.RuntimeSessionPersistence) -> None:
        await port.save_runtime_session(Session(id="r", messages=[msg("a")]))
        await port.append_token_usage_record("r", {"tokens": 3})

    await runtime_step(store)
    assert await store.read_token_usage("r") == [{"tokens": 3}]


async def test_every_method_is_a_checkpoint(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.save_runtime_session(Session(id="s")),
        lambda: store.checkpoint_runtime_session(Session(id="s")),
        lambda: store.append_token_usage_record("s", {"a": 1}),
        lambda: store.read_token_usage("s"),
        lambda: store.load_session("s"),
        lambda: store.load_session("unknown"),
        lambda: store.list_sessions(),
        lambda: store.set_title("s", "t"),
        lambda: store.set_title("s", "t"),  # unchanged: still a checkpoint
        lambda: store.set_pinned("s", False),
        lambda: store.delete_session("unknown"),
        lambda: store.delete_session("s"),
    ]
    for call in calls:
        with trio.testing.assert_checkpoints():
            await call()


def test_error_hierarchy() -> None:
    errors = [
        sessionactors.SessionNotFoundError,
        sessionactors.InvalidSessionIdError,
        sessionactors.CorruptSessionError,
        sessionactors.StoreClosedError,
    ]
    for error in errors:
        assert issubclass(error, SessionStoreError)
    assert issubclass(sessionactors.SessionNotFoundError, KeyError)
    assert issubclass(sessionactors.InvalidSessionIdError, ValueError)
