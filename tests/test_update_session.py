"""Atomic read-modify-write: ``update_session(session_id, fn)`` (contract part two).

``fn`` changes a copy of the persisted session in place (messages, metadata,
runtime_state); the result is one revision of kind ``"update"``, returned as
``fn`` left it. Checked here: what ``fn`` may not change (each field of the
authoritative group, ``id``, ``created_at``, ``revision``, the lineage) and
what it may not leave (values that are not plain JSON), ``fn`` raising, no
change, transcripts edited by ``fn``, copies never shared with what is kept,
and atomicity: concurrent increments from tasks, stores and processes never
lose one, and updates interleaved with saves are applied in revision order.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py);
the process test on the file store and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import StoreFactory
from shared_children import run_together
from support import NOT_PLAIN_JSON, msg, session_files

import sessionactors
from sessionactors import Message, Revision, Session, SessionNotFoundError, SessionStore

CHILD = Path(__file__).parent / "children" / "update_child.py"


def increment(session: Session) -> None:
    session.metadata["n"] = session.metadata.get("n", 0) + 1


async def state(
    store: SessionStore, disk: Path | None
) -> tuple[Session | None, list[Revision], dict[str, bytes] | None]:
    """What "nothing written" leaves as it was: the session, its history, its files."""
    return await store.load_session("s"), await store.session_history("s"), session_files(disk, "s")


async def seeded(store: SessionStore) -> Session:
    session = Session(
        id="s",
        messages=[msg("a", {"x": [1, 2]}), msg("b", "two"), msg("c", None)],
        metadata={"n": 0},
        runtime_state={"step": "start"},
    )
    await store.save_runtime_session(session)
    await store.set_title("s", "Titled")
    loaded = await store.load_session("s")
    assert loaded is not None and loaded.revision == 2
    return loaded


# --- what an update writes --------------------------------------------------------------------


async def test_increments_are_revisions_of_kind_update(store: SessionStore) -> None:
    before = await seeded(store)
    for n in range(1, 4):
        result = await store.update_session("s", increment)
        assert result.metadata == {"n": n}
        assert result.revision == 2 + n
        loaded = await store.load_session("s")
        assert loaded == result  # the session as fn left it, updated_at and revision included
        assert result.updated_at >= before.updated_at
    kinds = [(r.revision, r.kind) for r in await store.session_history("s")]
    assert kinds == [(5, "update"), (4, "update"), (3, "update"), (2, "title"), (1, "save")]
    # Everything fn did not touch is as it was, the UI's group included.
    assert result.messages == before.messages and result.runtime_state == before.runtime_state
    assert (result.title, result.title_version, result.metadata_version) == ("Titled", 1, 1)
    assert result.created_at == before.created_at
    third = await store.load_session("s", revision=3)
    assert third is not None and (third.revision, third.metadata) == (3, {"n": 1})
    assert third.messages == before.messages and third.title == "Titled"


async def test_messages_appended_edited_and_removed_by_fn_are_persisted_exactly(
    store: SessionStore,
) -> None:
    await seeded(store)
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)

    def edit(session: Session) -> None:
        session.messages[0].content["x"].append(3)  # a nested change of an old message
        del session.messages[1]  # a removal in the middle
        session.messages.append(Message(id="d", role="assistant", content={"k": [None, True]}))
        session.messages.insert(0, Message(id="z", role="system", content="", created_at=when))
        session.messages[-2].extra = {"edited": 1}
        session.runtime_state["step"] = "edited"

    result = await store.update_session("s", edit)
    assert [m.id for m in result.messages] == ["z", "a", "c", "d"]
    assert result.messages[1].content == {"x": [1, 2, 3]}
    assert result.messages[2].extra == {"edited": 1}
    assert await store.load_session("s") == result
    older = await store.load_session("s", revision=2)
    assert older is not None and [m.id for m in older.messages] == ["a", "b", "c"]
    assert older.messages[0].content == {"x": [1, 2]}

    result = await store.update_session("s", lambda session: session.messages.clear())
    assert result.messages == [] and await store.load_session("s") == result
    assert [r.message_count for r in await store.session_history("s", limit=2)] == [0, 4]


# --- what fn may not do -------------------------------------------------------------------------

FORBIDDEN: list[Any] = [
    pytest.param("title", "Other", id="title"),
    pytest.param("title_version", 7, id="title_version"),
    pytest.param("pinned", True, id="pinned"),
    pytest.param("metadata_version", 9, id="metadata_version"),
    pytest.param("id", "t", id="id"),
    pytest.param("created_at", datetime(2020, 1, 1, tzinfo=timezone.utc), id="created_at"),
    pytest.param("revision", 99, id="revision"),
    pytest.param("forked_from", "elsewhere", id="forked_from"),
    pytest.param("forked_from_revision", 1, id="forked_from_revision"),
]


@pytest.mark.parametrize(("field", "value"), FORBIDDEN)
@pytest.mark.parametrize("with_content", [False, True], ids=["alone", "with-content"])
async def test_changing_a_field_fn_does_not_own_is_refused(
    store: SessionStore, disk: Path | None, field: str, value: Any, with_content: bool
) -> None:
    await seeded(store)
    before = await state(store, disk)

    def fn(session: Session) -> None:
        setattr(session, field, value)
        if with_content:
            increment(session)
            session.messages.append(msg("new"))

    with pytest.raises(ValueError):
        await store.update_session("s", fn)
    assert await state(store, disk) == before
    assert (await store.update_session("s", increment)).revision == 3  # the store still serves


class Refused(Exception):
    pass


async def test_fn_raising_propagates_and_writes_nothing(
    store: SessionStore, disk: Path | None
) -> None:
    await seeded(store)
    before = await state(store, disk)

    def fn(session: Session) -> None:
        increment(session)
        session.messages.clear()  # changes made before the raise are dropped with it
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        await store.update_session("s", fn)
    assert await state(store, disk) == before


async def test_no_change_writes_nothing_and_returns_the_session(
    store: SessionStore, disk: Path | None
) -> None:
    persisted = await seeded(store)
    before = await state(store, disk)
    written = store.statistics().snapshots_written

    def same_values(session: Session) -> None:
        session.metadata = {"n": 0}
        session.messages = [Message(m.id, m.role, m.content, m.created_at, m.extra)
                            for m in session.messages]  # fmt: skip
        session.runtime_state["step"] = "start"

    for fn in (lambda session: None, same_values):
        assert await store.update_session("s", fn) == persisted
        assert await state(store, disk) == before
    assert store.statistics().snapshots_written == written


async def test_an_async_fn_is_refused_and_writes_nothing(
    store: SessionStore, disk: Path | None
) -> None:
    await seeded(store)
    before = await state(store, disk)

    async def fn(session: Session) -> None:  # pragma: no cover - never awaited
        increment(session)

    with pytest.raises(TypeError, match="plain function"):
        await store.update_session("s", fn)
    assert await state(store, disk) == before


async def test_changing_only_updated_at_is_no_change(store: SessionStore) -> None:
    """updated_at is the store's: fn setting it alone writes nothing, and returns the session."""
    persisted = await seeded(store)

    def fn(session: Session) -> None:
        session.updated_at = datetime(2001, 1, 1, tzinfo=timezone.utc)

    result = await store.update_session("s", fn)
    assert [r.revision for r in await store.session_history("s")] == [2, 1]
    assert result == persisted  # "as it is": the persisted session, not fn's updated_at


def put(where: str, value: Any) -> Callable[[Session], None]:
    """A change of fn leaving ``value`` at ``where`` (in place: no validator of Message runs)."""
    return lambda session: getattr(session, where).__setitem__("bad", value)


BAD_CHANGES: list[Any] = [
    *[pytest.param(put("runtime_state", p.values[0]), id=f"state-{p.id}") for p in NOT_PLAIN_JSON],
    pytest.param(put("metadata", {1, 2}), id="metadata-set"),
    pytest.param(put("metadata", (1, 2)), id="metadata-tuple"),
    pytest.param(lambda s: s.messages[0].content["x"].append({1}), id="old-content-nested-set"),
    pytest.param(lambda s: s.messages[2].extra.update(t=(1,)), id="old-extra-tuple"),
    pytest.param(lambda s: s.messages.append(msg("m", {"b": b"x"})), id="new-content-bytes"),
    pytest.param(lambda s: s.messages.append({"id": "m", "role": "user"}), id="message-a-dict"),
    pytest.param(lambda s: setattr(s, "runtime_state", [1]), id="runtime_state-a-list"),
    pytest.param(lambda s: setattr(s, "messages", (msg("a"),)), id="messages-a-tuple"),
]


@pytest.mark.parametrize("change", BAD_CHANGES)
async def test_a_value_that_is_not_plain_json_is_refused(
    store: SessionStore, disk: Path | None, change: Callable[[Session], None]
) -> None:
    await seeded(store)
    before = await state(store, disk)

    def fn(session: Session) -> None:
        increment(session)
        change(session)

    with pytest.raises((TypeError, ValueError)):
        await store.update_session("s", fn)
    assert await state(store, disk) == before


async def test_an_unknown_session_is_not_found_and_fn_never_runs(
    store: SessionStore, disk: Path | None
) -> None:
    calls: list[Session] = []
    with pytest.raises(SessionNotFoundError):
        await store.update_session("s", calls.append)
    assert calls == [] and await store.load_session("s") is None
    assert session_files(disk, "s") is None
    with pytest.raises(TypeError):
        await store.update_session("s", "not callable")  # type: ignore[arg-type]


# --- copies, never what the store keeps ---------------------------------------------------------


async def test_objects_fn_or_the_caller_hold_never_change_what_is_kept(
    store: SessionStore,
) -> None:
    await seeded(store)
    held: list[Session] = []

    def keep(session: Session) -> None:
        held.append(session)
        increment(session)

    result = await store.update_session("s", keep)
    persisted = await store.load_session("s")
    assert persisted == result
    # fn's own object and the returned one, changed afterwards, and an fn that raises.
    for victim in (held[0], result):
        victim.metadata["n"] = 999
        victim.runtime_state["junk"] = True
        victim.messages.append(msg("junk"))
        victim.messages[0].content["x"].append("junk")

    def spoil(session: Session) -> None:
        session.metadata.clear()
        session.messages[0].content["x"].clear()
        raise Refused()

    with pytest.raises(Refused):
        await store.update_session("s", spoil)
    again = await store.update_session("s", increment)
    assert again.metadata == {"n": 2}
    assert again.runtime_state == {"step": "start"}
    assert [m.id for m in again.messages] == ["a", "b", "c"]
    assert again.messages[0].content == {"x": [1, 2]}
    assert await store.load_session("s") == again


# --- atomicity -------------------------------------------------------------------------------


async def test_fifty_concurrent_increments_make_fifty_revisions(make_store: StoreFactory) -> None:
    async with make_store(history=200) as one, make_store(history=200) as two:
        await one.save_runtime_session(Session(id="s", metadata={"n": 0}))
        results: list[Session] = []

        async def add(store: SessionStore) -> None:
            results.append(await store.update_session("s", increment))

        async with trio.open_nursery() as nursery:
            for task in range(50):
                nursery.start_soon(add, one if task % 5 else two)
        assert sorted(r.metadata["n"] for r in results) == list(range(1, 51))
        assert all(r.revision == r.metadata["n"] + 1 for r in results)
        history = await one.session_history("s")
        assert [(r.revision, r.kind) for r in history[:-1]] == [
            (revision, "update") for revision in range(51, 1, -1)
        ]
        for result in results[::7]:
            assert await two.load_session("s", revision=result.revision) == result


@pytest.mark.parametrize("same_store", [True, False], ids=["one-store", "two-stores"])
async def test_updates_between_saves_apply_in_revision_order(
    make_store: StoreFactory, same_store: bool
) -> None:
    """A saver (whole snapshots) and two updaters: replaying every call in revision order
    gives what each call returned, so no save's fields and no increment are ever lost."""
    async with make_store(history=500) as saving, make_store(history=500) as other:
        updating = saving if same_store else other
        await saving.save_runtime_session(Session(id="s"))
        events: list[tuple[int, str, Session]] = []

        async def saver() -> None:
            for k in range(40):
                snapshot = Session(
                    id="s",
                    messages=[msg(f"k{k}")],
                    metadata={"saved": k},
                    runtime_state={"saver": k},
                )
                await saving.save_runtime_session(snapshot)
                events.append((snapshot.revision, "save", snapshot))

        async def updater(name: str) -> None:
            for step in range(30):

                def fn(session: Session, step: int = step) -> None:
                    increment(session)
                    session.messages.append(msg(f"{name}{step}"))

                result = await updating.update_session("s", fn)
                events.append((result.revision, "update", result))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(saver)
            nursery.start_soon(updater, "u")
            nursery.start_soon(updater, "v")

        events.sort(key=lambda event: event[0])
        assert [revision for revision, _, _ in events] == list(range(2, 2 + 40 + 60))
        replay = Session(id="s")
        for revision, kind, returned in events:
            if kind == "save":
                replay.messages = list(returned.messages)
                replay.metadata = dict(returned.metadata)
                replay.runtime_state = dict(returned.runtime_state)
            else:
                replay.metadata["n"] = replay.metadata.get("n", 0) + 1
                replay.messages = [*replay.messages, returned.messages[-1]]
            fields = (returned.messages, returned.metadata, returned.runtime_state)
            assert fields == (replay.messages, replay.metadata, replay.runtime_state), revision
            assert await other.load_session("s", revision=revision) == returned
        assert await other.load_session("s") == events[-1][2]


@pytest.mark.parametrize("backend", ["file", "postgres"])
async def test_two_processes_of_fifty_concurrent_increments_reach_one_hundred(
    location: str | Path, tmp_path: Path
) -> None:
    async with sessionactors.open_store(location, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", metadata={"n": 0}))
    names = ["p0", "p1"]
    commands = {name: [str(CHILD), name, str(location), "s", "50"] for name in names}
    outputs = await run_together(commands, tmp_path)

    got = [pair for name in names for pair in json.loads(outputs[name])]
    assert sorted(n for _, n in got) == list(range(1, 101))  # each increment saw the one before
    assert all(revision == n + 1 for revision, n in got)
    async with sessionactors.open_store(location, durability="flush", history=1000) as store:
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.metadata == {"n": 100}
        assert sorted(m.id for m in loaded.messages) == sorted(
            f"{name}-{task}" for name in names for task in range(50)
        )
        history = await store.session_history("s")
        assert [(r.revision, r.kind) for r in history[:-1]] == [
            (revision, "update") for revision in range(101, 1, -1)
        ]
