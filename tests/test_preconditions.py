"""UI edits with a precondition: ``set_title``/``set_pinned`` with ``if_metadata_version``.

The contract's "UI edits with a precondition" (part two): a UI's If-Match.
When ``if_metadata_version`` is given and differs from the persisted
``metadata_version``, ``VersionConflictError(expected, current)`` is raised
and nothing is written (no revision, no byte): the check comes before
anything else (an unchanged title or flag still conflicts), under the
session's serialization (edits queued in one batch, or made from two stores,
see each other). Also the runtime's auto-title recipe losing to a human's
rename, bad ``if_metadata_version`` values and unknown sessions.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Gate, StoreFactory
from support import files_under, msg, session_files

from sessionactors import (
    Revision,
    Session,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
    VersionConflictError,
)

EDITS: list[Any] = [
    pytest.param(lambda store, v: store.set_title("s", "New", if_metadata_version=v), id="title"),
    pytest.param(lambda store, v: store.set_pinned("s", True, if_metadata_version=v), id="pinned"),
]

Edit = Callable[[SessionStore, Any], Any]


async def state(
    store: SessionStore, disk: Path | None
) -> tuple[Session | None, list[Revision], dict[str, bytes] | None]:
    """Everything a conflict must leave as it was: the session, its history, its files."""
    return await store.load_session("s"), await store.session_history("s"), session_files(disk, "s")


async def at_version_two(store: SessionStore) -> Session:
    """Session "s" with a transcript, titled and pinned: metadata_version 2, revision 3."""
    await store.save_runtime_session(Session(id="s", messages=[msg("a")], metadata={"k": 1}))
    await store.set_title("s", "Old")
    session = await store.set_pinned("s", False)  # unchanged: no write
    session = await store.set_pinned("s", True)
    assert (session.metadata_version, session.revision) == (2, 3)
    return session


# --- If-Match: success and conflict ---------------------------------------------------------


async def test_set_title_with_the_persisted_version_renames(store: SessionStore) -> None:
    current = await at_version_two(store)
    result = await store.set_title("s", "  New ", if_metadata_version=current.metadata_version)
    assert (result.title, result.title_version, result.metadata_version) == ("New", 2, 3)
    assert result.revision == 4
    assert await store.load_session("s") == result
    # The version a call returned is the next call's If-Match.
    again = await store.set_title("s", "Newer", if_metadata_version=result.metadata_version)
    assert (again.title, again.metadata_version, again.revision) == ("Newer", 4, 5)
    assert (await store.session_history("s"))[0].kind == "title"


async def test_set_pinned_with_the_persisted_version_pins(store: SessionStore) -> None:
    current = await at_version_two(store)
    result = await store.set_pinned("s", False, if_metadata_version=current.metadata_version)
    assert (result.pinned, result.title_version, result.metadata_version) == (False, 1, 3)
    assert await store.load_session("s") == result
    assert [(r.revision, r.kind) for r in await store.session_history("s", limit=1)] == [
        (4, "pinned")
    ]


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("stale", [0, 1, 3, 10**9])
async def test_a_conflict_raises_and_writes_nothing(
    store: SessionStore, disk: Path | None, edit: Edit, stale: int
) -> None:
    await at_version_two(store)
    before = await state(store, disk)
    written = store.statistics().snapshots_written
    with pytest.raises(VersionConflictError) as info:
        await edit(store, stale)
    assert isinstance(info.value, SessionStoreError)
    assert (info.value.expected, info.value.current) == (stale, 2)
    assert await state(store, disk) == before  # updated_at, revision, history, bytes
    assert store.statistics().snapshots_written == written


async def test_an_unchanged_title_with_a_wrong_version_still_conflicts(
    store: SessionStore, disk: Path | None
) -> None:
    """The precondition is checked before the title is compared with the persisted one."""
    await at_version_two(store)
    before = await state(store, disk)
    with pytest.raises(VersionConflictError) as info:
        await store.set_title("s", " Old ", if_metadata_version=1)
    assert (info.value.expected, info.value.current) == (1, 2)
    with pytest.raises(VersionConflictError):
        await store.set_pinned("s", True, if_metadata_version=0)
    assert await state(store, disk) == before
    # With the right version the unchanged edits write nothing and return the session.
    assert await store.set_title("s", "Old", if_metadata_version=2) == before[0]
    assert await store.set_pinned("s", True, if_metadata_version=2) == before[0]
    assert await state(store, disk) == before


async def test_the_check_sees_a_save_queued_in_the_same_batch(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    """A save whose group wins (a greater metadata_version) moves the version an edit checks."""
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        ahead = Session(id="s", title="From elsewhere", title_version=3, metadata_version=5)
        failures: list[BaseException] = []

        async def guarded_rename() -> None:
            try:
                await store.set_title("s", "UI", if_metadata_version=0)
            except VersionConflictError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")  # the batch the gate holds
            await gate.wait_entered()
            nursery.start_soon(store.save_runtime_session, ahead)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(guarded_rename)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        (failure,) = failures
        assert isinstance(failure, VersionConflictError)
        assert (failure.expected, failure.current) == (0, 5)
        loaded = await store.load_session("s")
        assert loaded is not None
        assert (loaded.title, loaded.metadata_version, loaded.revision) == ("From elsewhere", 5, 2)


@pytest.mark.parametrize("edit", EDITS)
async def test_of_many_edits_with_one_if_match_exactly_one_wins(
    make_store: StoreFactory, edit: Edit
) -> None:
    """Ten tasks on each of two stores, all naming version 0: one edit, nineteen conflicts."""
    async with make_store() as first, make_store() as second:
        await first.save_runtime_session(Session(id="s"))
        won: list[Session] = []
        lost: list[VersionConflictError] = []

        async def attempt(store: SessionStore) -> None:
            try:
                won.append(await edit(store, 0))
            except VersionConflictError as exc:
                lost.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(attempt, first)
                nursery.start_soon(attempt, second)
        assert len(won) == 1 and len(lost) == 19
        assert all((exc.expected, exc.current) == (0, 1) for exc in lost)
        assert won[0].metadata_version == 1
        assert [r.revision for r in await first.session_history("s")] == [2, 1]
        assert await second.load_session("s") == won[0]


# --- the runtime's auto-title recipe ----------------------------------------------------------


async def auto_title(store: SessionStore, session: Session, title: str) -> Session | None:
    """The recipe of the contract: name the session unless someone named it since it was read."""
    if session.title_version != 0:
        return None
    try:
        return await store.set_title(
            session.id, title, if_metadata_version=session.metadata_version
        )
    except VersionConflictError:
        return None


async def test_the_auto_title_names_an_untouched_session(store: SessionStore) -> None:
    runtime_copy = Session(id="s", messages=[msg("hello")])
    await store.save_runtime_session(runtime_copy)
    read = await store.load_session("s")
    assert read is not None
    named = await auto_title(store, read, "Greeting")
    assert named is not None and (named.title, named.title_version) == ("Greeting", 1)


async def test_the_auto_title_loses_to_a_human_rename_in_between(
    make_store: StoreFactory,
) -> None:
    """Runtime and UI in two stores: the human's rename made after the runtime read wins."""
    async with make_store() as runtime, make_store() as ui:
        runtime_copy = Session(id="s", messages=[msg("hello")])
        await runtime.save_runtime_session(runtime_copy)
        read = await runtime.load_session("s")
        assert read is not None and read.title_version == 0

        human = await ui.set_title("s", "My name")
        with pytest.raises(VersionConflictError) as info:
            await runtime.set_title("s", "Greeting", if_metadata_version=read.metadata_version)
        assert (info.value.expected, info.value.current) == (0, 1)
        assert await auto_title(runtime, read, "Greeting") is None
        assert await runtime.load_session("s") == human

        # The runtime's next stale save keeps the human's name too (the merge rule).
        runtime_copy.messages.append(msg("more"))
        await runtime.save_runtime_session(runtime_copy)
        loaded = await ui.load_session("s")
        assert loaded is not None
        assert (loaded.title, loaded.title_version, loaded.metadata_version) == ("My name", 1, 1)
        assert [r.kind for r in await ui.session_history("s")] == ["save", "title", "save"]


# --- bad arguments, unknown sessions ----------------------------------------------------------


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        pytest.param("1", TypeError, id="str"),
        pytest.param(True, TypeError, id="true"),
        pytest.param(False, TypeError, id="false"),
        pytest.param(1.0, TypeError, id="float"),
        pytest.param([1], TypeError, id="list"),
        pytest.param(-1, ValueError, id="negative"),
    ],
)
async def test_a_bad_if_metadata_version_is_refused(
    store: SessionStore, disk: Path | None, edit: Edit, bad: Any, error: type[Exception]
) -> None:
    await store.save_runtime_session(Session(id="s"))
    before = await state(store, disk)
    with pytest.raises(error):
        await edit(store, bad)
    assert await state(store, disk) == before


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("version", [None, 0, 3])
async def test_an_unknown_session_is_not_found_whatever_the_version(
    store: SessionStore, disk: Path | None, edit: Edit, version: int | None
) -> None:
    with pytest.raises(SessionNotFoundError):
        await edit(store, version)
    assert await store.load_session("s") is None
    assert await store.list_sessions() == []
    assert [name for name in files_under(disk) if not name.startswith(".sessionactors")] == []
