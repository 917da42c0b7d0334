"""The contract of API.md through the public API, once for each backend.

Every test takes ``make_store`` (see conftest.py), parametrized over the file
store and PostgreSQL, so both backends are held to the same text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio
from conftest import StoreFactory

from sessionactors import (
    InvalidSessionIdError,
    Message,
    Session,
    SessionNotFoundError,
)

IST = timezone(timedelta(hours=5, minutes=30))
NST = timezone(timedelta(hours=-3, minutes=-30))

# JSON values at the edges: JSONB would turn 1e300 into an integer and refuse \u0000.
JSON_VALUES: list[Any] = [
    None,
    True,
    0,
    -(2**63),
    2**64 - 1,
    1.0,
    -0.1,
    1e300,
    5e-324,
    "",
    'unicode \u2603 \U0001f600 escapes \u0000 \n " \\ \u2028',
    [],
    {},
    [1, "two", None, [3.5, {"k": []}]],
    {"nested": {"deep": [True, {"x": None}]}, "": "empty key"},
]


def msg(message_id: str, content: Any = None, **kwargs: Any) -> Message:
    return Message(id=message_id, role="user", content=content, **kwargs)


def rich_session(session_id: str = "rich") -> Session:
    messages = [
        msg(f"m{i}", value, created_at=datetime(2024, 1, 1, 12, 0, i, tzinfo=IST))
        for i, value in enumerate(JSON_VALUES)
    ]
    messages.append(Message(id="x", role="assistant", content="hi", extra={"model": "m-1"}))
    return Session(
        id=session_id,
        title="A title",
        created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=NST),
        messages=messages,
        metadata={"values": JSON_VALUES},
        runtime_state={"step": 7, "stack": [[1], [2, [3]]]},
    )


# --- round trip ----------------------------------------------------------------------


async def test_round_trip_is_equal_with_types_and_offsets_kept(make_store: StoreFactory) -> None:
    session = rich_session()
    async with make_store() as store:
        await store.save_runtime_session(session)
        loaded = await store.load_session(session.id)
    assert loaded == session
    assert loaded is not None and loaded is not session
    for value, message in zip(JSON_VALUES, loaded.messages, strict=False):
        assert message.content == value
        assert type(message.content) is type(value)
    assert loaded.created_at.utcoffset() == timedelta(hours=-3, minutes=-30)
    assert loaded.messages[0].created_at is not None
    assert loaded.messages[0].created_at.utcoffset() == timedelta(hours=5, minutes=30)


async def test_a_later_store_reads_what_an_earlier_one_wrote(make_store: StoreFactory) -> None:
    session = rich_session()
    async with make_store() as store:
        await store.save_runtime_session(session)
        await store.append_token_usage_record(session.id, {"n": 1})
    async with make_store() as store:
        assert await store.load_session(session.id) == session
        assert await store.read_token_usage(session.id) == [{"n": 1}]
        assert await store.load_session("nobody") is None


async def test_saves_growing_and_editing_a_transcript_read_back_exactly(
    make_store: StoreFactory,
) -> None:
    """Appending saves, an edit by assignment, a removal and a replacement."""
    session = Session(id="grow")
    async with make_store() as store:
        for i in range(5):
            session.messages.append(msg(f"m{i}", i))
            await store.save_runtime_session(session)
            assert await store.load_session("grow") == session
        session.messages[2].content = "edited"  # assignment: noticed
        await store.save_runtime_session(session)
        assert await store.load_session("grow") == session
        del session.messages[0]
        session.messages[1] = msg("new", "replaced")
        await store.save_runtime_session(session)
        session.messages.append(msg("m9", 9))
        await store.save_runtime_session(session)
        loaded = await store.load_session("grow")
    assert loaded == session
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["m1", "new", "m3", "m4", "m9"]


async def test_two_stores_saving_in_turn_each_see_the_others_messages(
    make_store: StoreFactory,
) -> None:
    """What one store remembers of a transcript is checked against the other's writes."""
    async with make_store() as one, make_store() as two:
        a = Session(id="s", messages=[msg("a")])
        await one.save_runtime_session(a)
        b = await two.load_session("s")
        assert b is not None
        b.messages.append(msg("b"))
        await two.save_runtime_session(b)
        a.messages.append(msg("c"))
        await one.checkpoint_runtime_session(a)
        assert [m.id for m in a.messages] == ["a", "b", "c"]
        a.messages.append(msg("d"))
        await one.save_runtime_session(a)
        loaded = await two.load_session("s")
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["a", "b", "c", "d"]


# --- merge rule ----------------------------------------------------------------------


async def test_merge_rule_cases(make_store: StoreFactory) -> None:
    async with make_store() as store:
        # No session yet: the caller's group is written.
        first = Session(id="s", title="mine", title_version=3, pinned=True, metadata_version=5)
        await store.save_runtime_session(first)
        loaded = await store.load_session("s")
        assert loaded is not None
        assert (loaded.title, loaded.title_version, loaded.pinned, loaded.metadata_version) == (
            "mine",
            3,
            True,
            5,
        )
        # Tie: the persisted group wins and the caller's object is corrected.
        tie = Session(id="s", title="other", title_version=9, pinned=False, metadata_version=5)
        tie.metadata = {"runtime": "wins"}
        await store.save_runtime_session(tie)
        assert (tie.title, tie.title_version, tie.pinned, tie.metadata_version) == (
            "mine",
            3,
            True,
            5,
        )
        loaded = await store.load_session("s")
        assert loaded is not None
        assert loaded.title == "mine" and loaded.metadata == {"runtime": "wins"}
        # Persisted newer: it wins.
        older = Session(id="s", title="old", metadata_version=1, runtime_state={"k": 1})
        await store.save_runtime_session(older)
        assert older.title == "mine" and older.metadata_version == 5
        # Caller strictly newer: its group wins, as one group.
        newer = Session(id="s", title="new", title_version=4, pinned=False, metadata_version=6)
        await store.save_runtime_session(newer)
        loaded = await store.load_session("s")
    assert loaded is not None
    assert (loaded.title, loaded.title_version, loaded.pinned, loaded.metadata_version) == (
        "new",
        4,
        False,
        6,
    )
    assert loaded.runtime_state == {}  # every other field from the last caller


async def test_checkpoint_follows_the_merge_rule(make_store: StoreFactory) -> None:
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        await store.set_title("s", "UI")
        stale = Session(id="s", title="runtime", messages=[msg("a")])
        await store.checkpoint_runtime_session(stale)
        assert stale.title == "UI" and stale.metadata_version == 1


# --- UI edits ------------------------------------------------------------------------


async def test_ui_edits_bump_versions_and_survive_stale_saves(make_store: StoreFactory) -> None:
    async with make_store() as store, make_store() as ui:
        runtime = Session(id="s", messages=[msg("a")])
        await store.save_runtime_session(runtime)
        edited = await ui.set_title("s", "  Renamed  ")
        assert (edited.title, edited.title_version, edited.metadata_version) == ("Renamed", 1, 1)
        assert edited.messages == runtime.messages
        pinned = await ui.set_pinned("s", True)
        assert (pinned.pinned, pinned.title_version, pinned.metadata_version) == (True, 1, 2)
        runtime.messages.append(msg("b"))
        await store.save_runtime_session(runtime)  # a stale copy: version 0
        assert (runtime.title, runtime.pinned, runtime.metadata_version) == ("Renamed", True, 2)
        loaded = await ui.load_session("s")
        assert loaded == runtime
        # Unchanged edits write nothing and move no version.
        before = await store.load_session("s")
        assert await ui.set_title("s", "Renamed ") == before
        assert await ui.set_pinned("s", True) == before
        assert await store.load_session("s") == before
        assert [s.updated_at for s in await store.list_sessions()] == [before.updated_at]


async def test_ui_edit_errors(make_store: StoreFactory) -> None:
    async with make_store() as store:
        with pytest.raises(SessionNotFoundError):
            await store.set_title("ghost", "t")
        with pytest.raises(SessionNotFoundError):
            await store.set_pinned("ghost", True)
        await store.save_runtime_session(Session(id="s", title="kept"))
        for empty in ("", "   ", "\n\t"):
            with pytest.raises(ValueError):
                await store.set_title("s", empty)
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.title == "kept" and loaded.metadata_version == 0
        assert await store.load_session("ghost") is None
        assert [s.id for s in await store.list_sessions()] == ["s"]


async def test_twenty_concurrent_renames_each_count(make_store: StoreFactory) -> None:
    async with make_store() as store, make_store() as other:
        await store.save_runtime_session(Session(id="s"))
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon((store if i % 2 else other).set_title, "s", f"title {i}")
        loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.title_version == 20 and loaded.metadata_version == 20


async def test_concurrent_renames_and_stale_saves_never_clobber(make_store: StoreFactory) -> None:
    async with make_store() as runtime_store, make_store() as ui_store:
        await runtime_store.save_runtime_session(Session(id="s"))

        async def runtime(name: str) -> None:
            stale = Session(id="s", title=name)
            for i in range(15):
                stale.metadata_version = 0  # always a stale copy
                stale.messages.append(msg(f"{name}-{i}"))
                await runtime_store.save_runtime_session(stale)

        async def ui() -> None:
            for i in range(1, 16):
                await ui_store.set_title("s", f"t{i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime, "r1")
            nursery.start_soon(runtime, "r2")
            nursery.start_soon(ui)
        loaded = await ui_store.load_session("s")
    assert loaded is not None
    assert (loaded.title, loaded.title_version, loaded.metadata_version) == ("t15", 15, 15)


# --- checkpoint ----------------------------------------------------------------------


async def test_checkpoint_never_shrinks_the_transcript(make_store: StoreFactory) -> None:
    async with make_store() as store, make_store() as other:
        await store.save_runtime_session(Session(id="s", messages=[msg("a"), msg("b")]))
        shorter = Session(id="s", messages=[msg("b", "changed"), msg("c")])
        await other.checkpoint_runtime_session(shorter)
        assert [(m.id, m.content) for m in shorter.messages] == [
            ("a", None),
            ("b", None),
            ("c", None),
        ]
        assert await store.load_session("s") == shorter
        empty = Session(id="s")
        await store.checkpoint_runtime_session(empty)
        assert [m.id for m in empty.messages] == ["a", "b", "c"]
        # A checkpoint of a new session writes its transcript; a save may shrink.
        fresh = Session(id="new", messages=[msg("x")])
        await store.checkpoint_runtime_session(fresh)
        assert await other.load_session("new") == fresh
        await other.save_runtime_session(Session(id="s", messages=[msg("z")]))
        loaded = await store.load_session("s")
    assert loaded is not None and [m.id for m in loaded.messages] == ["z"]


# --- token usage ---------------------------------------------------------------------


async def test_token_usage_str_and_mapping_records(make_store: StoreFactory) -> None:
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        await store.append_token_usage_record("s", {"model": "m", "in": 12, "cost": 1e300})
        await store.append_token_usage_record(
            "s", '{\n  "model": "m",\n  "big": 18446744073709551615\n}\n'
        )
        records = await store.read_token_usage("s")
    assert records == [
        {"model": "m", "in": 12, "cost": 1e300},
        {"model": "m", "big": 2**64 - 1},
    ]
    assert type(records[0]["cost"]) is float


@pytest.mark.parametrize(
    "record",
    ["", "not json", "[1, 2]", '"text"', "1", '{"a": 1}\n{"b": 2}', {"a": {1, 2}}, {"b": b"x"}, 7],
)
async def test_bad_token_usage_records_are_refused(make_store: StoreFactory, record: Any) -> None:
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        await store.append_token_usage_record("s", {"ok": 1})
        with pytest.raises(ValueError):
            await store.append_token_usage_record("s", record)
        assert await store.read_token_usage("s") == [{"ok": 1}]


async def test_token_usage_of_an_unknown_or_deleted_session(make_store: StoreFactory) -> None:
    async with make_store() as store:
        with pytest.raises(SessionNotFoundError):
            await store.append_token_usage_record("ghost", {"n": 1})
        assert await store.load_session("ghost") is None
        assert await store.read_token_usage("ghost") == []
        assert await store.list_sessions() == []
        await store.save_runtime_session(Session(id="s"))
        await store.delete_session("s")
        with pytest.raises(SessionNotFoundError):
            await store.append_token_usage_record("s", {"n": 1})
        assert await store.list_sessions() == []


async def test_forty_tasks_of_twenty_five_appends(make_store: StoreFactory) -> None:
    async with make_store() as store, make_store() as other:
        await store.save_runtime_session(Session(id="s"))

        async def appender(task: int) -> None:
            target = store if task % 2 else other
            for seq in range(25):
                await target.append_token_usage_record("s", {"task": task, "seq": seq})

        async with trio.open_nursery() as nursery:
            for task in range(40):
                nursery.start_soon(appender, task)
        records = await store.read_token_usage("s")
    assert len(records) == 1000
    for task in range(40):
        assert [r["seq"] for r in records if r["task"] == task] == list(range(25))


# --- list and delete -----------------------------------------------------------------


async def test_list_sessions_newest_first_with_message_count(make_store: StoreFactory) -> None:
    async with make_store() as store:
        for i, name in enumerate(["a", "b", "c"]):
            await store.save_runtime_session(
                Session(id=name, messages=[msg(str(j)) for j in range(i)])
            )
        await store.set_title("a", "touched last")
        summaries = await store.list_sessions()
    assert [s.id for s in summaries] == ["a", "c", "b"]
    assert [s.message_count for s in summaries] == [0, 2, 1]
    assert summaries[0].title == "touched last" and summaries[0].metadata_version == 1
    assert summaries[0].updated_at > summaries[1].updated_at > summaries[2].updated_at


async def test_delete_session(make_store: StoreFactory) -> None:
    async with make_store() as store, make_store() as other:
        await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
        await store.append_token_usage_record("s", {"n": 1})
        await store.save_runtime_session(Session(id="keep"))
        assert await other.delete_session("s") is True
        assert await store.load_session("s") is None
        assert await store.read_token_usage("s") == []
        assert await store.delete_session("s") is False
        assert [s.id for s in await store.list_sessions()] == ["keep"]
        # A session saved again after a delete starts afresh.
        again = Session(id="s", messages=[msg("b")])
        await store.save_runtime_session(again)
        assert await other.load_session("s") == again
        assert await other.read_token_usage("s") == []


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["", ".", "..", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 201])
async def test_bad_session_ids_are_refused(make_store: StoreFactory, bad_id: str) -> None:
    async with make_store() as store:
        with pytest.raises(InvalidSessionIdError):
            await store.save_runtime_session(Session(id=bad_id))
        with pytest.raises(InvalidSessionIdError):
            await store.load_session(bad_id)
        with pytest.raises(InvalidSessionIdError):
            await store.append_token_usage_record(bad_id, {"n": 1})
        with pytest.raises(InvalidSessionIdError):
            await store.set_title(bad_id, "t")
        with pytest.raises(InvalidSessionIdError):
            await store.delete_session(bad_id)
        assert await store.list_sessions() == []


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", (1, 2), object(), float("nan"), datetime(2024, 1, 1)],
    ids=["set", "bytes", "tuple", "object", "nan", "naive-datetime"],
)
async def test_values_that_are_not_plain_json_are_refused(
    make_store: StoreFactory, value: Any
) -> None:
    async with make_store() as store:
        good = Session(id="s", messages=[msg("a", "fine")], metadata={"k": 1})
        await store.save_runtime_session(good)
        before = await store.load_session("s")
        bad_meta = Session(id="s", metadata={"k": value})
        with pytest.raises((TypeError, ValueError)):
            await store.save_runtime_session(bad_meta)
        bad_message = Session(id="s", messages=[msg("a", "fine"), msg("b", [value])])
        with pytest.raises((TypeError, ValueError)):
            await store.checkpoint_runtime_session(bad_message)
        with pytest.raises((TypeError, ValueError)):
            await store.save_runtime_session(Session(id="new", runtime_state={"v": value}))
        assert await store.load_session("s") == before
        assert await store.load_session("new") is None
        assert [s.id for s in await store.list_sessions()] == ["s"]


async def test_the_log_reads_back_as_json_objects(make_store: StoreFactory) -> None:
    """Records read back are what json.loads makes of the text given."""
    text = '{"model": "m", "nested": {"a": [1, 2.5, null]}, "s": "\\u00e9"}'
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        await store.append_token_usage_record("s", text)
        assert await store.read_token_usage("s") == [json.loads(text)]
