"""The contract (docs/reference.md), once for each backend (the file store and PostgreSQL).

Tests taking ``store`` run on both (see conftest.py). Where a test also checks
the file store's files, it takes ``disk`` (``None`` on PostgreSQL, whose API
checks alongside stand for those); ``@file_only`` tests and those opening a
store on ``root`` themselves are about the file store's directory only.
"""

from __future__ import annotations

import json
import math
import os
import types
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from conftest import StoreFactory, file_only

import sessionactors
from sessionactors import (
    InvalidSessionIdError,
    Message,
    Session,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
    StoreStatistics,
    open_store,
)

IST = timezone(timedelta(hours=5, minutes=30))
NST = timezone(timedelta(hours=-3, minutes=-30))

# Every kind of JSON value, at the edges orjson and JSON allow.
JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.0,
    1.5,
    -0.1,
    1e300,
    5e-324,
    "",
    "plain text",
    'unicode \u2603 \U0001f600 and escapes \u0000 \n \t " \\ \u2028',
    [],
    {},
    [1, "two", None, [3.5, {"k": []}], False],
    {"nested": {"deep": [True, {"x": None}]}, "": "empty key", "n\u00e9": 1},
]


def msg(message_id: str, content: Any = None, **kwargs: Any) -> Message:
    return Message(id=message_id, role="user", content=content, **kwargs)


def rich_session(session_id: str = "rich") -> Session:
    messages = [
        msg(f"m{i}", value, created_at=datetime(2024, 1, 1, 12, 0, i, tzinfo=IST))
        for i, value in enumerate(JSON_VALUES)
    ]
    messages.append(
        Message(
            id="with-extra",
            role="assistant",
            content={"text": "hi", "tokens": [1, 2, 3]},
            created_at=None,
            extra={"model": "m-1", "scores": [0.5, -2.25], "flags": {"a": True, "b": None}},
        )
    )
    return Session(
        id=session_id,
        title="A title",
        created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=NST),
        messages=messages,
        metadata={"model": "m-1", "values": JSON_VALUES, "nested": {"a": [{"b": {}}]}},
        runtime_state={"step": 7, "cursor": None, "stack": [[1], [2, [3]]], "ok": True},
    )


def files_under(path: Path | None) -> list[str]:
    """Every file and directory below ``path``, relative, sorted; none on PostgreSQL."""
    if path is None or not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def disk_state(disk: Path | None, session_id: str) -> dict[str, tuple[int, int, bytes]] | None:
    """Inode, mtime and bytes of every file of a session directory; ``None`` on PostgreSQL."""
    if disk is None:
        return None
    directory = disk / session_id
    state = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            st = path.stat()
            state[str(path.relative_to(directory))] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return state


def disk_bytes(disk: Path | None, session_id: str) -> dict[str, bytes] | None:
    """The bytes of every file of a session directory; ``None`` on PostgreSQL."""
    state = disk_state(disk, session_id)
    if state is None:
        return None
    return {name: data for name, (_, _, data) in state.items()}


def log_path(root: Path, session_id: str) -> Path:
    return root / session_id / "token-usage.jsonl"


def log_bytes(disk: Path | None, session_id: str) -> bytes | None:
    """The token-usage log's bytes; ``None`` on PostgreSQL."""
    return None if disk is None else log_path(disk, session_id).read_bytes()


def read_log_with_stdlib(path: Path) -> list[dict[str, Any]]:
    """The log read the plain way: one json.loads per line, each an object."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            assert line.endswith("\n")
            value = json.loads(line)
            assert isinstance(value, dict)
            records.append(value)
    return records


def put_foreign_files(root: Path) -> None:
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "empty-dir").mkdir()


# --- opening, round trip, persistence ---------------------------------------------------


async def test_open_store_creates_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "c"
    async with open_store(root, durability="flush") as store:
        assert root.is_dir()
        await store.save_runtime_session(Session(id="s"))
    async with open_store(str(root), durability="flush") as store:  # a str root works too
        assert await store.load_session("s") is not None


async def test_round_trip_save_load_equality(store: SessionStore) -> None:
    session = rich_session()
    await store.save_runtime_session(session)
    loaded = await store.load_session(session.id)
    assert loaded == session
    assert loaded is not session
    assert [m.content for m in loaded.messages[: len(JSON_VALUES)]] == JSON_VALUES
    # Types are kept too: no int becomes a float, no bool an int.
    for value, message in zip(JSON_VALUES, loaded.messages, strict=False):
        assert type(message.content) is type(value)


async def test_round_trip_keeps_utc_offsets(store: SessionStore) -> None:
    session = rich_session()
    await store.save_runtime_session(session)
    loaded = await store.load_session(session.id)
    assert loaded is not None
    assert loaded.created_at == session.created_at
    assert loaded.created_at.utcoffset() == timedelta(hours=-3, minutes=-30)
    assert loaded.messages[0].created_at is not None
    assert loaded.messages[0].created_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert loaded.messages[-1].created_at is None
    assert loaded.updated_at.utcoffset() is not None


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 3, 31, 1, 59, 59, 999999, tzinfo=timezone(timedelta(hours=14))),
        datetime(1970, 1, 1, tzinfo=timezone(timedelta(hours=-12))),
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=-1, seconds=-30))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(1, 1, 1, tzinfo=timezone.utc),
    ],
    ids=["+14:00", "-12:00", "seconds-offset", "max", "min"],
)
async def test_aware_datetimes_round_trip_exactly(store: SessionStore, moment: datetime) -> None:
    session = Session(id="t", created_at=moment, messages=[msg("a", created_at=moment)])
    await store.save_runtime_session(session)
    loaded = await store.load_session("t")
    assert loaded == session
    assert loaded is not None
    for value in (loaded.created_at, loaded.messages[0].created_at):
        assert value is not None
        assert value == moment
        assert value.utcoffset() == moment.utcoffset()
        assert value.replace(tzinfo=None) == moment.replace(tzinfo=None)  # same wall time
    summary = (await store.list_sessions())[0]
    assert summary.created_at == moment
    assert summary.created_at.utcoffset() == moment.utcoffset()


async def test_load_equals_the_callers_object_as_it_stood_after_save(store: SessionStore) -> None:
    stale = datetime(2001, 1, 1, tzinfo=timezone.utc)
    session = Session(id="eq", messages=[msg("a", "x")], updated_at=stale)
    before = datetime.now(timezone.utc)
    await store.save_runtime_session(session)
    # The store set updated_at, on the caller's object too.
    assert session.updated_at != stale
    assert session.updated_at >= before - timedelta(seconds=1)
    assert await store.load_session("eq") == session

    session.messages.append(msg("b", "y"))
    session.updated_at = stale
    await store.checkpoint_runtime_session(session)
    assert session.updated_at != stale
    assert await store.load_session("eq") == session


async def test_persistence_across_two_stores_one_after_the_other(
    make_store: StoreFactory,
) -> None:
    session = rich_session("kept")
    async with make_store() as first:
        await first.save_runtime_session(session)
        await first.append_token_usage_record("kept", {"tokens": 12})
        await first.set_title("kept", "Renamed")
        await first.set_pinned("kept", True)
    async with make_store() as second:
        loaded = await second.load_session("kept")
        assert loaded is not None
        assert loaded.title == "Renamed"
        assert loaded.pinned is True
        assert (loaded.title_version, loaded.metadata_version) == (1, 2)
        assert loaded.messages == session.messages
        assert loaded.metadata == session.metadata
        assert loaded.runtime_state == session.runtime_state
        assert loaded.created_at == session.created_at
        assert await second.read_token_usage("kept") == [{"tokens": 12}]
        assert [s.id for s in await second.list_sessions()] == ["kept"]


async def test_load_of_an_unknown_id_returns_none(store: SessionStore, disk: Path | None) -> None:
    assert await store.load_session("never-saved") is None
    # A read creates nothing.
    assert await store.list_sessions() == []
    assert files_under(disk) == []
    await store.save_runtime_session(Session(id="other"))
    assert await store.load_session("never-saved") is None


# --- the merge rule -----------------------------------------------------------------------


async def test_disk_group_wins_on_equal_metadata_version_and_corrects_the_caller(
    store: SessionStore,
) -> None:
    await store.save_runtime_session(Session(id="s", title="first"))
    edited = await store.set_title("s", "From the UI")
    assert (edited.title_version, edited.metadata_version) == (1, 1)

    # A runtime copy that claims the same metadata_version but carries
    # other values: only UI edits move metadata_version, so disk wins.
    runtime = Session(
        id="s", title="runtime title", title_version=1, pinned=True, metadata_version=1
    )
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "From the UI",
        1,
        False,
        1,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime


async def test_disk_group_wins_when_its_versions_are_higher(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "one")
    await store.set_title("s", "two")
    await store.set_pinned("s", True)
    # The runtime's copy has as many title edits but a lower metadata_version.
    # (A title_version above its metadata_version is refused: tests/test_values.py.)
    runtime = Session(id="s", title="stale", title_version=2, pinned=False, metadata_version=2)
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "two",
        2,
        True,
        3,
    )
    assert await store.load_session("s") == runtime


async def test_caller_group_wins_when_its_metadata_version_is_higher(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "ui one")
    await store.set_title("s", "ui two")  # disk: title_version 2, metadata_version 2
    # The caller carries an edit of its own: a higher metadata_version wins as a
    # whole group, even with a lower title_version.
    runtime = Session(id="s", title="carried", title_version=1, pinned=True, metadata_version=3)
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "carried",
        1,
        True,
        3,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime


async def test_first_save_writes_the_callers_group(store: SessionStore) -> None:
    session = Session(id="new", title="given", title_version=4, pinned=True, metadata_version=9)
    await store.save_runtime_session(session)
    loaded = await store.load_session("new")
    assert loaded is not None
    assert (loaded.title, loaded.title_version, loaded.pinned, loaded.metadata_version) == (
        "given",
        4,
        True,
        9,
    )


@pytest.mark.parametrize("caller_metadata_version", [0, 1, 5])
async def test_non_authoritative_fields_always_come_from_the_caller(
    store: SessionStore, caller_metadata_version: int
) -> None:
    await store.save_runtime_session(
        Session(
            id="s",
            messages=[msg("old1"), msg("old2")],
            metadata={"old": True},
            runtime_state={"step": 1},
            created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
        )
    )
    await store.set_title("s", "ui")  # disk metadata_version 1
    created = datetime(2021, 6, 1, 8, 0, tzinfo=IST)
    runtime = Session(
        id="s",
        metadata_version=caller_metadata_version,
        messages=[msg("new")],
        metadata={"new": [1, 2]},
        runtime_state={"step": 2},
        created_at=created,
    )
    await store.save_runtime_session(runtime)
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == [msg("new")]
    assert loaded.metadata == {"new": [1, 2]}
    assert loaded.runtime_state == {"step": 2}
    assert loaded.created_at == created
    assert loaded.created_at.utcoffset() == timedelta(hours=5, minutes=30)
    expected_title = "ui" if caller_metadata_version <= 1 else ""
    assert loaded.title == expected_title
    assert loaded == runtime


async def test_ui_rename_and_pin_survive_a_stale_runtime_save(store: SessionStore) -> None:
    runtime = Session(id="s", messages=[msg("u0", "hello")])
    await store.save_runtime_session(runtime)
    stale = attrs.evolve(runtime, messages=list(runtime.messages))  # the runtime's old copy

    await store.set_title("s", "Named by the user")
    await store.set_pinned("s", True)

    stale.messages.append(msg("a0", {"text": "hi"}))
    stale.messages.append(msg("u1", "more"))
    stale.runtime_state = {"step": 1}
    await store.save_runtime_session(stale)

    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.title == "Named by the user"
    assert loaded.pinned is True
    assert (loaded.title_version, loaded.metadata_version) == (1, 2)
    assert [m.id for m in loaded.messages] == ["u0", "a0", "u1"]
    assert loaded.runtime_state == {"step": 1}
    # The runtime's object now carries the UI's values, so its next save keeps them too.
    assert loaded == stale
    stale.messages.append(msg("a1"))
    await store.save_runtime_session(stale)
    again = await store.load_session("s")
    assert again is not None
    assert (again.title, again.pinned, again.metadata_version) == ("Named by the user", True, 2)


async def test_ui_edits_through_another_store_survive_a_stale_runtime_save(
    make_store: StoreFactory,
) -> None:
    async with make_store() as runtime_store, make_store() as ui_store:
        runtime = Session(id="shared", messages=[msg("u0")])
        await runtime_store.save_runtime_session(runtime)
        await ui_store.set_title("shared", "From the other store")
        await ui_store.set_pinned("shared", True)
        runtime.messages.append(msg("a0"))
        await runtime_store.save_runtime_session(runtime)
        assert (runtime.title, runtime.pinned, runtime.metadata_version) == (
            "From the other store",
            True,
            2,
        )
        for s in (runtime_store, ui_store):
            loaded = await s.load_session("shared")
            assert loaded == runtime


# --- UI edits -----------------------------------------------------------------------------


async def test_set_title_strips_bumps_and_returns_the_session(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")], metadata={"k": 1}))
    result = await store.set_title("s", "  New name \n")
    assert isinstance(result, Session)
    assert result.title == "New name"
    assert (result.title_version, result.metadata_version, result.pinned) == (1, 1, False)
    assert result.messages == [msg("a")]
    assert result.metadata == {"k": 1}
    assert await store.load_session("s") == result

    result = await store.set_title("s", "Other")
    assert (result.title, result.title_version, result.metadata_version) == ("Other", 2, 2)


@pytest.mark.parametrize("title", ["", " ", "\n\t ", "\u3000"])
async def test_set_title_refuses_an_empty_title(
    store: SessionStore, disk: Path | None, title: str
) -> None:
    await store.save_runtime_session(Session(id="s", title="kept"))
    persisted = await store.load_session("s")
    before = disk_bytes(disk, "s")
    with pytest.raises(ValueError):
        await store.set_title("s", title)
    assert disk_bytes(disk, "s") == before
    loaded = await store.load_session("s")
    assert loaded == persisted  # updated_at included: nothing was written
    assert loaded is not None
    assert (loaded.title, loaded.title_version, loaded.metadata_version) == ("kept", 0, 0)


async def test_set_title_of_an_unknown_session(store: SessionStore, disk: Path | None) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        await store.set_title("nobody", "title")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, SessionStoreError)
    assert await store.load_session("nobody") is None
    assert await store.list_sessions() == []
    assert files_under(disk) == []


async def test_set_title_unchanged_writes_nothing(store: SessionStore, disk: Path | None) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "Same")
    written = store.statistics().snapshots_written
    before = disk_state(disk, "s")
    persisted = await store.load_session("s")

    result = await store.set_title("s", "  Same  ")

    assert result == persisted
    assert (result.title_version, result.metadata_version) == (1, 1)
    assert store.statistics().snapshots_written == written
    assert disk_state(disk, "s") == before
    assert await store.load_session("s") == persisted


async def test_set_pinned_bumps_metadata_version_only(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", title="t", messages=[msg("a")]))
    result = await store.set_pinned("s", True)
    assert isinstance(result, Session)
    assert (result.pinned, result.title, result.title_version, result.metadata_version) == (
        True,
        "t",
        0,
        1,
    )
    assert await store.load_session("s") == result
    result = await store.set_pinned("s", False)
    assert (result.pinned, result.title_version, result.metadata_version) == (False, 0, 2)
    assert await store.load_session("s") == result


async def test_set_pinned_of_an_unknown_session(store: SessionStore, disk: Path | None) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        await store.set_pinned("nobody", True)
    assert isinstance(info.value, KeyError)
    assert await store.load_session("nobody") is None
    assert await store.list_sessions() == []
    assert files_under(disk) == []


@pytest.mark.parametrize("pinned", [False, True])
async def test_set_pinned_unchanged_writes_nothing(
    store: SessionStore, disk: Path | None, pinned: bool
) -> None:
    await store.save_runtime_session(Session(id="s"))
    if pinned:
        await store.set_pinned("s", True)
    written = store.statistics().snapshots_written
    before = disk_state(disk, "s")
    persisted = await store.load_session("s")

    result = await store.set_pinned("s", pinned)

    assert result == persisted
    assert store.statistics().snapshots_written == written
    assert disk_state(disk, "s") == before
    loaded = await store.load_session("s")
    assert loaded == persisted
    assert loaded is not None
    assert loaded.metadata_version == (1 if pinned else 0)


async def test_twenty_concurrent_renames_each_count(
    store: SessionStore, make_store: StoreFactory
) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    titles = [f"title {i}" for i in range(20)]

    async with make_store() as other, trio.open_nursery() as nursery:
        for i, title in enumerate(titles):  # half through this store, half through another
            nursery.start_soon((store if i % 2 else other).set_title, "s", title)

    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.title_version == 20
    assert loaded.metadata_version == 20
    assert loaded.title in titles
    assert loaded.messages == [msg("a")]


async def test_concurrent_renames_and_stale_runtime_saves(
    store: SessionStore, make_store: StoreFactory
) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    titles = [f"title {i}" for i in range(20)]

    async def runtime(target: SessionStore, i: int) -> None:
        # A stale copy: metadata_version 0, a title of its own, new messages.
        stale = Session(id="s", title=f"runtime {i}", messages=[msg("a"), msg(f"r{i}")])
        if i % 2:
            await target.save_runtime_session(stale)
        else:
            await target.checkpoint_runtime_session(stale)

    async with make_store() as other, trio.open_nursery() as nursery:
        for i, title in enumerate(titles):
            # The UI and the runtime in the same store, or in two.
            ui = store if i % 3 else other
            nursery.start_soon(ui.set_title, "s", title)
            nursery.start_soon(runtime, store if i % 2 else other, i)
            nursery.start_soon(ui.set_pinned, "s", i % 2 == 0)

    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.title in titles
    assert loaded.title_version == 20
    pins = loaded.metadata_version - 20  # every pin change counted, none lost
    assert 1 <= pins <= 20


# --- transcripts: checkpoint vs save ------------------------------------------------------


async def test_checkpoint_never_shrinks_the_transcript(store: SessionStore) -> None:
    await store.save_runtime_session(
        Session(id="s", messages=[msg("a", 1), msg("b", 2), msg("c", 3)])
    )
    runtime = Session(
        id="s",
        messages=[msg("c", "edited"), msg("d", 4), msg("a", "edited"), msg("e", 5)],
        runtime_state={"step": 9},
    )
    their_list = runtime.messages
    await store.checkpoint_runtime_session(runtime)

    expected = [msg("a", 1), msg("b", 2), msg("c", 3), msg("d", 4), msg("e", 5)]
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == expected
    assert loaded.runtime_state == {"step": 9}
    # Updated in place: the same list object, now holding the merged transcript.
    assert runtime.messages is their_list
    assert their_list == expected
    assert loaded == runtime

    # A checkpoint of a shorter (or empty) transcript removes nothing.
    await store.checkpoint_runtime_session(Session(id="s", messages=[msg("f", 6)]))
    await store.checkpoint_runtime_session(Session(id="s", messages=[]))
    loaded = await store.load_session("s")
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["a", "b", "c", "d", "e", "f"]


async def test_checkpoint_of_a_new_session_writes_its_transcript(store: SessionStore) -> None:
    session = Session(id="fresh", messages=[msg("x"), msg("y")])
    await store.checkpoint_runtime_session(session)
    loaded = await store.load_session("fresh")
    assert loaded == session
    assert [m.id for m in session.messages] == ["x", "y"]


async def test_checkpoint_follows_the_merge_rule(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    await store.set_title("s", "ui")
    await store.set_pinned("s", True)
    runtime = Session(id="s", title="stale", messages=[msg("b")])
    await store.checkpoint_runtime_session(runtime)
    assert (runtime.title, runtime.pinned, runtime.title_version, runtime.metadata_version) == (
        "ui",
        True,
        1,
        2,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime
    assert [m.id for m in runtime.messages] == ["a", "b"]


async def test_save_may_replace_and_shrink_the_transcript(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a"), msg("b"), msg("c")]))
    replacement = Session(id="s", messages=[msg("z", "only")])
    await store.save_runtime_session(replacement)
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == [msg("z", "only")]
    assert replacement.messages == [msg("z", "only")]
    await store.save_runtime_session(Session(id="s"))
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == []


# --- token usage ----------------------------------------------------------------------------


async def test_token_usage_str_and_mapping_records(store: SessionStore, disk: Path | None) -> None:
    await store.save_runtime_session(Session(id="s"))
    first = {"input": 10, "output": 2, "model": "m-\u00e9", "cost": 0.25, "cached": None}
    second = {"nested": {"a": [1, 2, {"b": True}]}, "empty": {}, "list": []}
    third = {"big": 2**64 - 1, "neg": -(2**63), "huge": 1e300, "unicode": "\U0001f600"}
    await store.append_token_usage_record("s", json.dumps(first))
    await store.append_token_usage_record("s", json.dumps(second) + "\n")  # trailing newline
    await store.append_token_usage_record("s", types.MappingProxyType(third))  # any Mapping
    await store.append_token_usage_record("s", {"n": 4})

    expected = [first, second, third, {"n": 4}]
    records = await store.read_token_usage("s")
    assert records == expected
    assert type(records[2]["huge"]) is float  # not turned into an integer
    if disk is not None:
        lines = log_path(disk, "s").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == expected


async def test_token_usage_pretty_printed_record_is_one_compact_line(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))
    record = {"model": "m", "usage": {"input": 1, "output": 2}, "tags": ["a", "b"], "x": "a b"}
    pretty = json.dumps(record, indent=4) + "\n"
    assert pretty.count("\n") > 3
    await store.append_token_usage_record("s", pretty)
    await store.append_token_usage_record("s", {"after": 1})

    assert await store.read_token_usage("s") == [record, {"after": 1}]
    if disk is not None:
        lines = log_path(disk, "s").read_bytes().split(b"\n")
        assert lines[-1] == b""  # every line ends with a newline
        assert lines[:-1] == [
            json.dumps(record, separators=(",", ":")).encode(),
            b'{"after":1}',
        ]


async def test_token_usage_of_an_unknown_session(store: SessionStore, disk: Path | None) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        await store.append_token_usage_record("nobody", {"tokens": 1})
    assert isinstance(info.value, KeyError)
    assert await store.load_session("nobody") is None
    assert await store.read_token_usage("nobody") == []
    assert await store.list_sessions() == []
    assert files_under(disk) == []

    # Deleted sessions are unknown too.
    await store.save_runtime_session(Session(id="gone"))
    await store.append_token_usage_record("gone", {"tokens": 1})
    assert await store.delete_session("gone") is True
    with pytest.raises(SessionNotFoundError):
        await store.append_token_usage_record("gone", {"tokens": 2})
    assert await store.load_session("gone") is None
    assert await store.read_token_usage("gone") == []
    assert await store.list_sessions() == []
    assert files_under(disk) == []


class Opaque:
    pass


BAD_RECORDS: list[Any] = [
    pytest.param('[{"a": 1}]', id="json-array"),
    pytest.param("[]", id="empty-array"),
    pytest.param("42", id="number"),
    pytest.param('"a string"', id="json-string"),
    pytest.param("null", id="null"),
    pytest.param("true", id="bool"),
    pytest.param('{"a": 1}{"b": 2}', id="two-objects"),
    pytest.param('{"a": 1}\n{"b": 2}\n', id="two-lines"),
    pytest.param('{"a": 1', id="invalid-json"),
    pytest.param("{'a': 1}", id="python-repr"),
    pytest.param('{"a": NaN}', id="nan-literal"),
    pytest.param("", id="empty-str"),
    pytest.param(" \n", id="blank-str"),
    pytest.param({"a": {1, 2}}, id="mapping-set"),
    pytest.param({"a": b"bytes"}, id="mapping-bytes"),
    pytest.param({"a": (1, 2)}, id="mapping-tuple"),
    pytest.param({"a": math.nan}, id="mapping-nan"),
    pytest.param({"a": math.inf}, id="mapping-inf"),
    pytest.param({"a": Opaque()}, id="mapping-object"),
    pytest.param({"a": datetime(2024, 1, 1, tzinfo=timezone.utc)}, id="mapping-datetime"),
    pytest.param({1: "int key"}, id="mapping-int-key"),
    pytest.param({"a": 2**64}, id="mapping-int-too-big"),
    pytest.param(["not", "a", "mapping"], id="list"),
    pytest.param(42, id="int"),
]


@pytest.mark.parametrize("record", BAD_RECORDS)
async def test_token_usage_bad_record_is_refused_and_nothing_written(
    store: SessionStore, disk: Path | None, record: Any
) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.append_token_usage_record("s", {"good": 1})
    before = log_bytes(disk, "s")
    with pytest.raises(ValueError):
        await store.append_token_usage_record("s", record)
    assert log_bytes(disk, "s") == before
    assert await store.read_token_usage("s") == [{"good": 1}]
    # The actor keeps serving.
    await store.append_token_usage_record("s", {"good": 2})
    assert await store.read_token_usage("s") == [{"good": 1}, {"good": 2}]


async def test_token_usage_bad_first_record_creates_no_log(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))
    for record in ("[1]", "null", {"a": {1}}):
        with pytest.raises(ValueError):
            await store.append_token_usage_record("s", record)
    if disk is not None:
        assert not log_path(disk, "s").exists() or log_path(disk, "s").read_bytes() == b""
    assert await store.read_token_usage("s") == []
    await store.append_token_usage_record("s", {"first": 1})
    assert await store.read_token_usage("s") == [{"first": 1}]


async def test_token_usage_str_record_with_a_huge_integer_is_not_altered(
    store: SessionStore,
) -> None:
    # The object read back equals the object given: a JSON integer wider than
    # 64 bits must be refused (as Mappings holding one are), not turned into a float.
    await store.save_runtime_session(Session(id="s"))
    text = '{"tokens": 18446744073709551617}'
    try:
        await store.append_token_usage_record("s", text)
    except ValueError:
        assert await store.read_token_usage("s") == []
    else:
        assert await store.read_token_usage("s") == [json.loads(text)]


async def test_token_usage_forty_tasks_of_twenty_five_appends(
    store: SessionStore, make_store: StoreFactory, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))

    async def writer(target: SessionStore, task: int) -> None:
        for seq in range(25):
            record = {"task": task, "seq": seq, "pad": "x" * (task % 7)}
            if seq % 2:
                await target.append_token_usage_record("s", json.dumps(record))
            else:
                await target.append_token_usage_record("s", record)

    async with make_store() as other, trio.open_nursery() as nursery:
        for task in range(40):  # half through this store, half through another
            nursery.start_soon(writer, store if task % 2 else other, task)

    records = await store.read_token_usage("s")
    assert len(records) == 1000
    assert len({(r["task"], r["seq"]) for r in records}) == 1000
    for task in range(40):
        assert [r["seq"] for r in records if r["task"] == task] == list(range(25))
    if disk is not None:  # the file agrees, line for line
        lines = log_path(disk, "s").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == records


@file_only
async def test_token_usage_log_is_one_json_object_per_line_for_the_stdlib(
    store: SessionStore, root: Path
) -> None:
    await store.save_runtime_session(Session(id="s"))
    records: list[dict[str, Any]] = [
        {"i": i, "text": "line\nbreak \u2028 sep", "v": [i, None, True, 1.5]} for i in range(30)
    ]
    for record in records:
        await store.append_token_usage_record("s", record)
    assert read_log_with_stdlib(log_path(root, "s")) == records


# --- listing and deleting -------------------------------------------------------------------


async def test_list_sessions_newest_first_with_message_count(store: SessionStore) -> None:
    assert await store.list_sessions() == []
    await store.save_runtime_session(Session(id="a", messages=[msg("1")]))
    await store.save_runtime_session(Session(id="b"))
    await store.save_runtime_session(Session(id="c", messages=[msg("1"), msg("2"), msg("3")]))
    await store.checkpoint_runtime_session(Session(id="b", messages=[msg("x"), msg("y")]))
    await store.set_title("a", "Touched last")

    summaries = await store.list_sessions()
    assert [s.id for s in summaries] == ["a", "b", "c"]
    assert [s.message_count for s in summaries] == [1, 2, 3]
    assert all(isinstance(s, sessionactors.SessionSummary) for s in summaries)
    times = [s.updated_at for s in summaries]
    assert times == sorted(times, reverse=True)
    for summary in summaries:
        loaded = await store.load_session(summary.id)
        assert loaded is not None
        assert summary == sessionactors.SessionSummary(
            id=loaded.id,
            title=loaded.title,
            pinned=loaded.pinned,
            title_version=loaded.title_version,
            metadata_version=loaded.metadata_version,
            created_at=loaded.created_at,
            updated_at=loaded.updated_at,
            message_count=len(loaded.messages),
        )
    assert summaries[0].title == "Touched last"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        summaries[0].title = "x"  # type: ignore[misc]

    await store.delete_session("b")
    assert [s.id for s in await store.list_sessions()] == ["a", "c"]


@pytest.mark.parametrize("through", ["same-store", "other-store"])
async def test_delete_session(
    store: SessionStore, make_store: StoreFactory, disk: Path | None, through: str
) -> None:
    await store.save_runtime_session(Session(id="doomed", messages=[msg("a")]))
    await store.append_token_usage_record("doomed", {"tokens": 1})
    await store.save_runtime_session(Session(id="kept"))
    if disk is not None:
        assert log_path(disk, "doomed").exists()

    if through == "same-store":
        assert await store.delete_session("doomed") is True
    else:  # this store, which wrote the session, must see the other's delete
        async with make_store() as other:
            assert await other.delete_session("doomed") is True
    if disk is not None:
        assert not log_path(disk, "doomed").exists()
        assert not (disk / "doomed").exists()
    assert await store.load_session("doomed") is None
    assert await store.read_token_usage("doomed") == []
    assert await store.delete_session("doomed") is False
    assert await store.delete_session("never-existed") is False
    if disk is not None:
        assert not (disk / "doomed").exists()
        assert not (disk / "never-existed").exists()
    assert await store.load_session("never-existed") is None
    assert [s.id for s in await store.list_sessions()] == ["kept"]

    # The id can be used again, from scratch.
    again = Session(id="doomed", messages=[msg("b")])
    await store.save_runtime_session(again)
    assert await store.read_token_usage("doomed") == []
    loaded = await store.load_session("doomed")
    assert loaded == again
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["b"]


# --- bad input ----------------------------------------------------------------------------------

BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("/abs", id="leading-slash"),
    pytest.param("../escape", id="dotdot-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("..\\escape", id="dotdot-backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("\x01", id="ctrl-01"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("tab\there", id="tab"),
    pytest.param("cr\r", id="cr"),
    pytest.param("del\x7f", id="del"),
    pytest.param("nel\x85", id="c1-nel"),
    pytest.param("x" * 201, id="201-chars"),
    pytest.param("\u00e9" * 201, id="201-non-ascii-chars"),
]

IdCall = Callable[[SessionStore, str], Awaitable[object]]

ID_METHODS: list[Any] = [
    pytest.param(lambda s, i: s.save_runtime_session(Session(id=i)), id="save"),
    pytest.param(lambda s, i: s.checkpoint_runtime_session(Session(id=i)), id="checkpoint"),
    pytest.param(lambda s, i: s.append_token_usage_record(i, {"a": 1}), id="append"),
    pytest.param(lambda s, i: s.append_token_usage_record(i, '{"a": 1}'), id="append-str"),
    pytest.param(lambda s, i: s.read_token_usage(i), id="read_token_usage"),
    pytest.param(lambda s, i: s.load_session(i), id="load"),
    pytest.param(lambda s, i: s.delete_session(i), id="delete"),
    pytest.param(lambda s, i: s.set_title(i, "title"), id="set_title"),
    pytest.param(lambda s, i: s.set_pinned(i, True), id="set_pinned"),
]


@pytest.mark.parametrize("call", ID_METHODS)
@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_bad_session_id_is_refused_and_nothing_touched(
    store: SessionStore, disk: Path | None, tmp_path: Path, bad_id: str, call: IdCall
) -> None:
    before = files_under(tmp_path)
    with pytest.raises(InvalidSessionIdError) as info:
        await call(store, bad_id)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SessionStoreError)
    assert files_under(tmp_path) == before == ([] if disk is None else ["store"])
    assert await store.list_sessions() == []
    # The store keeps serving.
    await store.save_runtime_session(Session(id="fine"))
    assert await store.load_session("fine") is not None


@pytest.mark.parametrize(
    "good_id",
    [".a", "...", "a.", " ", "a b", "-rf", "~", "\u540d\u524d", "x" * 200, "a:b", "CON", "é" * 100],
)
async def test_unusual_but_valid_ids_work(
    store: SessionStore, disk: Path | None, good_id: str
) -> None:
    session = Session(id=good_id, messages=[msg("a")])
    await store.save_runtime_session(session)
    await store.append_token_usage_record(good_id, {"t": 1})
    await store.set_title(good_id, "named")
    loaded = await store.load_session(good_id)
    assert loaded is not None
    assert loaded.id == good_id
    assert loaded.title == "named"
    assert await store.read_token_usage(good_id) == [{"t": 1}]
    assert [s.id for s in await store.list_sessions()] == [good_id]
    assert await store.delete_session(good_id) is True
    assert await store.load_session(good_id) is None
    assert await store.list_sessions() == []
    assert files_under(disk) == []


NOT_PLAIN_JSON: list[Any] = [
    pytest.param({1, 2}, id="set"),
    pytest.param(frozenset({1}), id="frozenset"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(bytearray(b"x"), id="bytearray"),
    pytest.param((1, 2), id="tuple"),
    pytest.param(Opaque(), id="object"),
    pytest.param(datetime(2024, 1, 1), id="naive-datetime"),
    pytest.param(datetime(2024, 1, 1, tzinfo=timezone.utc), id="aware-datetime"),
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param({1: "int key"}, id="int-key"),
    pytest.param({("a",): 1}, id="tuple-key"),
    pytest.param(2**64, id="int-beyond-64-bits"),
    pytest.param(-(2**63) - 1, id="int-below-64-bits"),
    pytest.param([1, {"deep": {2, 3}}], id="set-nested-in-list"),
    pytest.param("\ud800", id="lone-surrogate"),
]

PLACES: list[Any] = [
    pytest.param(lambda s, v: s.metadata.__setitem__("bad", v), id="metadata"),
    pytest.param(lambda s, v: s.runtime_state.__setitem__("bad", v), id="runtime_state"),
    pytest.param(lambda s, v: s.messages.append(msg("bad", v)), id="content"),
    pytest.param(lambda s, v: s.messages.append(msg("bad", extra={"k": v})), id="extra"),
]


@pytest.mark.parametrize("checkpoint", [False, True], ids=["save", "checkpoint"])
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", NOT_PLAIN_JSON)
async def test_value_that_is_not_plain_json_is_refused(
    store: SessionStore,
    disk: Path | None,
    value: Any,
    place: Callable[[Session, Any], None],
    checkpoint: bool,
) -> None:
    call = store.checkpoint_runtime_session if checkpoint else store.save_runtime_session
    good = Session(id="s", messages=[msg("a", {"ok": [1]})], metadata={"m": 1})
    await store.save_runtime_session(good)
    persisted = await store.load_session("s")
    before = disk_bytes(disk, "s")

    bad = Session(id="s", messages=[msg("a", {"ok": [1]}), msg("b")], metadata={"m": 2})
    place(bad, value)
    with pytest.raises((TypeError, ValueError)):
        await call(bad)
    assert await store.load_session("s") == persisted
    assert disk_bytes(disk, "s") == before

    # A session never saved stays unsaved.
    fresh = Session(id="fresh")
    place(fresh, value)
    with pytest.raises((TypeError, ValueError)):
        await call(fresh)
    assert await store.load_session("fresh") is None
    assert [s.id for s in await store.list_sessions()] == ["s"]
    if disk is not None:
        assert not (disk / "fresh").exists()

    # The actor keeps serving.
    good.metadata["m"] = 3
    await store.save_runtime_session(good)
    assert await store.load_session("s") == good


async def test_a_non_message_in_messages_is_refused(store: SessionStore) -> None:
    session = Session(id="s")
    session.messages.append({"id": "m", "role": "user", "content": "x"})  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        await store.save_runtime_session(session)
    assert await store.load_session("s") is None


async def test_naive_datetimes_are_refused(store: SessionStore) -> None:
    naive = datetime(2024, 1, 1, 12, 0)
    with pytest.raises((TypeError, ValueError)):
        Message(id="m", role="user", created_at=naive)
    with pytest.raises((TypeError, ValueError)):
        Session(id="s", created_at=naive)

    # Slipped past the model's validators, they are still refused by save.
    await store.save_runtime_session(Session(id="s", messages=[msg("ok")]))
    persisted = await store.load_session("s")
    message = msg("m")
    object.__setattr__(message, "created_at", naive)
    with pytest.raises((TypeError, ValueError)):
        await store.save_runtime_session(Session(id="s", messages=[message]))
    session = Session(id="s")
    object.__setattr__(session, "created_at", naive)
    with pytest.raises((TypeError, ValueError)):
        await store.checkpoint_runtime_session(session)
    assert await store.load_session("s") == persisted


# --- statistics, the port, the errors --------------------------------------------------------


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


async def test_open_store_leaves_other_files_in_root_alone(root: Path) -> None:
    put_foreign_files(root)
    async with open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        assert [s.id for s in await store.list_sessions()] == ["s"]
        assert await store.delete_session("s") is True
    assert (root / "notes.txt").read_text() == "mine"
    assert (root / "empty-dir").is_dir()
    assert sorted(os.listdir(root)) == ["empty-dir", "notes.txt"]


async def test_a_save_writes_the_transcript_as_it_stood_at_the_call(
    store: SessionStore,
) -> None:
    """A runtime's other tasks may go on appending while a save is in flight."""
    session = Session(id="s", messages=[Message(id=f"m{i}", role="user") for i in range(50)])
    await store.save_runtime_session(session)
    for round_ in range(20):
        at_call = len(session.messages) + 1
        session.messages.append(Message(id=f"r{round_}", role="user", content="x" * 1000))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.save_runtime_session, session)
            await trio.testing.wait_all_tasks_blocked()  # the save is in the actor's hands
            for extra in range(30):  # appended while the worker thread writes
                session.messages.append(Message(id=f"x{round_}-{extra}", role="user"))
        loaded = await store.load_session("s")
        assert loaded is not None  # whole: never a count that disagrees with the journal
        assert loaded.messages == session.messages[:at_call]
        del session.messages[at_call:]
