"""Values that must read back equal, or be refused (issue 11, items 9 to 11).

The contract: ``load_session`` returns a Session ``==`` the one written, and a
value that would not read back equal is refused, never converted; a refused
call changes nothing. The bad-value matrices are unit tests of the checks
(``sessionactors._model``); each kind of refusal then goes once through the
store, on both backends, checking that nothing persisted changed (on the file
store, the session's whole directory byte for byte).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import orjson
import pytest
import trio
import trio.testing
from conftest import Gate
from support import rich_session, session_files

import sessionactors._plan
import sessionactors._runner
from sessionactors import Message, Session, SessionStore
from sessionactors._model import check_datetime, converter
from sessionactors._values import check_json, copy_for_save, encode_record, json_copy

NEW_YORK = ZoneInfo("America/New_York")

# 2026-11-01 01:30 happens twice in New York (EDT, then EST): a fold.
FOLD_FIRST = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)
FOLD_SECOND = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
# 2026-03-08 02:30 never happens in New York: a gap.
GAP = datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK)
GAP_FOLD = datetime(2026, 3, 8, 2, 30, tzinfo=NEW_YORK, fold=1)
# Offsets whose fraction of a second the ISO text cannot keep.
MICRO_OFFSET = datetime(2026, 1, 1, tzinfo=timezone(timedelta(microseconds=5)))
MICRO_OFFSET_WIDE = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, microseconds=7)))

UNSTORABLE_DATETIMES = [FOLD_FIRST, FOLD_SECOND, GAP, GAP_FOLD, MICRO_OFFSET, MICRO_OFFSET_WIDE]

STORABLE_DATETIMES = [
    datetime(2026, 6, 1, 12, 0, tzinfo=NEW_YORK),  # summer time, no fold
    datetime(2026, 12, 1, 12, 0, tzinfo=NEW_YORK),  # winter time, no fold
    datetime(2026, 11, 1, 3, 30, tzinfo=NEW_YORK, fold=1),  # fold=1 where it changes nothing
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))),
    datetime(1900, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")),  # local mean time: +00:19:32
    datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
]


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def smuggle(instance: object, name: str, value: object) -> None:
    """Set a field without its validator, as a bug elsewhere in a runtime might."""
    object.__setattr__(instance, name, value)


async def saved_session(store: SessionStore, session_id: str = "s") -> Session:
    session = Session(
        id=session_id,
        title="kept",
        messages=[Message(id="m0", role="user", content={"text": "hello"})],
        metadata={"x": 1.0},
        runtime_state={"step": 1},
    )
    await store.save_runtime_session(session)
    return session


async def assert_refused(
    store: SessionStore,
    disk: Path | None,
    session_id: str,
    call: Callable[[], Awaitable[object]],
    error: type[Exception],
) -> None:
    """``call`` raises ``error`` and leaves the session exactly as it was."""
    before = await store.load_session(session_id)
    files = session_files(disk, session_id)
    usage = await store.read_token_usage(session_id)
    with pytest.raises(error):
        await call()
    assert await store.load_session(session_id) == before
    assert await store.read_token_usage(session_id) == usage
    assert session_files(disk, session_id) == files


# --- item 9: datetimes ------------------------------------------------------------------


@pytest.mark.parametrize("value", UNSTORABLE_DATETIMES, ids=repr)
def test_a_datetime_that_would_not_read_back_equal_is_refused(value: datetime) -> None:
    # What the stored text reads back as is not == the value: the reason it is
    # refused. (An offset with a fraction of a second is refused even where
    # this Python's parser happens to keep it, as for MICRO_OFFSET_WIDE: the
    # rule is "whole seconds", not "what one parser version gets right".)
    if value is not MICRO_OFFSET_WIDE:
        assert datetime.fromisoformat(value.isoformat()) != value
    with pytest.raises(ValueError):
        check_datetime(value)
    # Built freely (only a naive datetime is refused on construction): the
    # store call refuses it, with nothing written (the tests below).
    Message(id="m", role="user", created_at=value)
    Session(id="s", created_at=value)


#: Instants outside the years 1 to 9999 in UTC, though their wall times are inside them:
#: no reader of them in UTC (a listing's sort, PostgreSQL's) could hold them.
BEYOND_THE_YEARS = [
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=5))),
]
#: Within a day of the ends, their instants inside the years: kept.
AT_THE_EDGES = [
    datetime(9999, 12, 31, 18, 0, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, 5, 0, tzinfo=timezone(timedelta(hours=5))),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
]


@pytest.mark.parametrize("value", BEYOND_THE_YEARS, ids=repr)
def test_a_datetime_whose_instant_is_beyond_the_years_1_to_9999_is_refused(
    value: datetime,
) -> None:
    with pytest.raises(OverflowError):
        value.astimezone(timezone.utc)
    with pytest.raises(ValueError, match="outside the years 1 to 9999"):
        check_datetime(value)


async def test_a_save_with_a_created_at_beyond_the_years_changes_nothing(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))
    for value in BEYOND_THE_YEARS:
        beyond = Session(id="s", created_at=value)
        await assert_refused(
            store, disk, "s", lambda s=beyond: store.save_runtime_session(s), ValueError
        )
    for value in AT_THE_EDGES:
        check_datetime(value)


@pytest.mark.parametrize("value", STORABLE_DATETIMES, ids=repr)
def test_a_datetime_that_reads_back_equal_is_kept(value: datetime) -> None:
    check_datetime(value)
    assert converter.structure(converter.unstructure(value, datetime), datetime) == value


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("message", FOLD_SECOND),
        ("message", MICRO_OFFSET),
        ("created_at", GAP),
        ("created_at", MICRO_OFFSET_WIDE),
    ],
    ids=["message-fold", "message-micro-offset", "created-gap", "created-micro-offset"],
)
async def test_a_save_holding_an_unstorable_datetime_changes_nothing(
    store: SessionStore, disk: Path | None, where: str, value: datetime
) -> None:
    session = await saved_session(store)
    if where == "message":
        message = Message(id="m1", role="user", content="new")
        smuggle(message, "created_at", value)
        session.messages.append(message)
    else:
        smuggle(session, where, value)
    await assert_refused(store, disk, "s", lambda: store.save_runtime_session(session), ValueError)


async def test_storable_datetimes_read_back_equal_through_the_store(store: SessionStore) -> None:
    session = Session(
        id="s",
        created_at=STORABLE_DATETIMES[0],
        messages=[
            Message(id=f"m{n}", role="user", created_at=value)
            for n, value in enumerate(STORABLE_DATETIMES)
        ],
    )
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session


# --- item 9: subclasses -----------------------------------------------------------------


class SessionSubclass(Session):
    pass


class MessageSubclass(Message):
    pass


def test_subclasses_do_not_read_back_equal() -> None:
    # attrs' == compares classes: a subclass read back as the base is not equal.
    assert SessionSubclass(id="s") != Session(id="s", created_at=datetime.now(timezone.utc))
    message = Message(id="m", role="user")
    assert MessageSubclass(id="m", role="user") != message


async def test_a_session_subclass_is_refused(store: SessionStore, disk: Path | None) -> None:
    await saved_session(store)
    subclassed = SessionSubclass(id="s", title="other", metadata={"x": 2.0})
    await assert_refused(
        store, disk, "s", lambda: store.save_runtime_session(subclassed), TypeError
    )
    await assert_refused(
        store, disk, "s", lambda: store.checkpoint_runtime_session(subclassed), TypeError
    )
    fresh = SessionSubclass(id="fresh")
    await assert_refused(store, disk, "fresh", lambda: store.save_runtime_session(fresh), TypeError)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["save", "checkpoint"])
async def test_a_message_subclass_is_refused(
    store: SessionStore, disk: Path | None, checkpoint: bool
) -> None:
    session = await saved_session(store)
    session.messages.append(MessageSubclass(id="m1", role="user", content="sub"))
    save = store.checkpoint_runtime_session if checkpoint else store.save_runtime_session
    await assert_refused(store, disk, "s", lambda: save(session), TypeError)
    # In place of a persisted message too (a whole rewrite).
    session.messages[:] = [MessageSubclass(id="m0", role="user", content={"text": "hello"})]
    await assert_refused(store, disk, "s", lambda: save(session), TypeError)


# --- item 9: metadata is checked and copied in one step ----------------------------------


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int


class Text(str):
    pass


# Each is refused by check_json; json_copy must refuse it too, with the same error type.
NOT_JSON: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    (1, 2),
    {1, 2},
    b"bytes",
    uuid.UUID(int=1),
    Colour.RED,
    datetime(2026, 1, 1, tzinfo=timezone.utc),
    Point(1),
    orjson.Fragment(b"1"),
    2**64,
    -(2**63) - 1,
    "lone \udc80",
    {1: "int key"},
    {Text("key"): "a key of a str subclass"},
    nested_list(249),  # with the dict around it: 251 levels, one too many
    object(),
]

# Each reads back equal (subclasses as their base): json_copy keeps it.
PLAIN_JSON: list[Any] = [
    None,
    True,
    0,
    2**64 - 1,
    -(2**63),
    -0.0,
    5e-324,
    "text \u2028 \U0001f600",
    [1, [2.5, {"a": None}]],
    nested_list(248),  # with the dict around it: 250 levels, the most there may be
    collections.OrderedDict(b=1, a=2),
    Text("sub"),
    Level.HIGH,
]


@pytest.mark.parametrize("value", NOT_JSON, ids=lambda value: type(value).__name__)
def test_json_copy_refuses_what_check_json_refuses(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as checked:
        check_json({"v": value}, "metadata")
    with pytest.raises(checked.type):
        json_copy({"v": value}, "metadata")


@pytest.mark.parametrize("value", PLAIN_JSON, ids=lambda value: type(value).__name__)
def test_json_copy_keeps_plain_json_as_a_deep_copy(value: Any) -> None:
    original = {"v": value, "list": [1, {"x": 1}]}
    check_json(original)
    copy = json_copy(original, "metadata")
    assert copy == original
    copy["list"][1]["x"] = 2  # the copy shares nothing with the original
    assert original["list"][1]["x"] == 1


@pytest.mark.parametrize("where", ["metadata", "runtime_state"])
@pytest.mark.parametrize("value", NOT_JSON, ids=lambda value: type(value).__name__)
def test_a_saves_copy_refuses_what_check_json_refuses(value: Any, where: str) -> None:
    with pytest.raises((TypeError, ValueError)) as checked:
        check_json({"v": value}, where)
    session = Session(id="s", **{where: {"v": value}})
    with pytest.raises(checked.type, match=where):
        copy_for_save(session)


@pytest.mark.parametrize("where", ["metadata", "runtime_state"])
@pytest.mark.parametrize("value", PLAIN_JSON, ids=lambda value: type(value).__name__)
def test_a_saves_copy_keeps_plain_json_as_a_deep_copy(value: Any, where: str) -> None:
    original = {"v": value, "list": [1, {"x": 1}]}
    session = Session(id="s", metadata={"m": [1]}, runtime_state={"r": {"s": 2}})
    setattr(session, where, original)
    copy = copy_for_save(session)
    assert (copy.metadata, copy.runtime_state) == (session.metadata, session.runtime_state)
    getattr(copy, where)["list"][1]["x"] = 2  # the copy shares nothing with the original
    assert original["list"][1]["x"] == 1


def test_json_copy_refuses_a_cycle() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError):
        json_copy(cyclic, "metadata")


# --- item 9: another task changes metadata while a save is in flight --------------------


class FlushGate:
    """Holds the first write of a pending snapshot in its worker thread until opened.

    The batch has checked the save by then (``SegmentPlan._save``) and not yet
    encoded it (``SegmentPlan.flush``): the window in which another task's
    change used to reach the encoder unchecked.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.armed = False  # set by the test once its setup is written
        self.used = False
        original = sessionactors._plan.SegmentPlan.flush

        def gated(plan: Any) -> Any:  # a generator, as the planner's flush is
            if plan.pending is not None and self.armed and not self.used:
                self.used = True
                self.entered.set()
                self.released.wait(30)  # bounded, so a broken test cannot hang forever
            return (yield from original(plan))

        monkeypatch.setattr(sessionactors._plan.SegmentPlan, "flush", gated)

    async def wait_entered(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, 30)

    def open(self) -> None:
        self.released.set()


@pytest.fixture
def flush_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[FlushGate]:
    gate = FlushGate(monkeypatch)
    yield gate
    gate.open()


async def test_nan_set_between_the_check_and_the_write_is_never_stored_as_null(
    store: SessionStore, flush_gate: FlushGate
) -> None:
    session = await saved_session(store)
    flush_gate.armed = True  # hold the next save's write
    session.metadata["x"] = 2.0
    session.runtime_state["y"] = [1, 2]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.save_runtime_session, session)
        await flush_gate.wait_entered()  # checked, not yet encoded
        session.metadata["x"] = float("nan")
        session.runtime_state["y"].append(float("inf"))
        flush_gate.open()
    loaded = await store.load_session("s")
    assert loaded is not None
    # What the caller's object held when the save was made, never a null.
    assert loaded.metadata == {"x": 2.0}
    assert loaded.runtime_state == {"step": 1, "y": [1, 2]}


async def test_nan_set_while_the_save_waits_behind_a_busy_batch_is_never_stored(
    store: SessionStore, gates: Callable[[str], Gate]
) -> None:
    session = await saved_session(store)
    gate = gates("s")  # holds the next batch of "s" in its worker thread
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.load_session, "s")
        await gate.wait_entered()  # the actor is busy with that load
        session.metadata["x"] = 2.0
        nursery.start_soon(store.save_runtime_session, session)
        await trio.testing.wait_all_tasks_blocked()  # the save is in the mailbox
        session.metadata["x"] = float("nan")  # before its batch starts
        gate.open()
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.metadata == {"x": 2.0}  # as it stood when the save was made
    assert loaded.updated_at == session.updated_at  # the save took effect on the caller's object


# --- item 10: deep nesting is a ValueError, never a RecursionError ----------------------


DEEP = 100_000


@pytest.mark.parametrize(
    "record",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"a":' + "[" * DEEP + "]" * DEEP + "}",
        ('{"a":' * DEEP + "1" + "}" * DEEP).encode(),
        nested_dict(DEEP),
        {"a": nested_list(DEEP)},
    ],
    ids=["str-array", "str-object", "str-in-object", "bytes-object", "mapping", "mapping-list"],
)
def test_a_deeply_nested_record_is_a_value_error(record: Any) -> None:
    with pytest.raises(ValueError):
        encode_record(record)


def test_a_cyclic_record_is_a_value_error() -> None:
    record: dict[str, Any] = {}
    record["self"] = record
    with pytest.raises(ValueError):
        encode_record(record)


def test_the_check_runs_out_of_stack_as_a_value_error() -> None:
    # Called with little stack left, the check fails for want of stack, not
    # for the value: still a ValueError, never a RecursionError.
    value = nested_list(200)
    frames = 0
    frame = sys._getframe()
    while frame is not None:
        frames += 1
        frame = frame.f_back  # type: ignore[assignment]
    headroom = 100  # fewer frames than the value's depth needs

    def descend(levels: int) -> None:
        if levels:
            descend(levels - 1)
        else:
            check_json(value)

    with pytest.raises(ValueError):
        descend(sys.getrecursionlimit() - frames - headroom)


async def test_a_deeply_nested_usage_record_through_the_store_writes_nothing(
    store: SessionStore, disk: Path | None
) -> None:
    await saved_session(store)
    await store.append_token_usage_record("s", {"tokens": 1})
    deep = '{"a":' * DEEP + "1" + "}" * DEEP
    await assert_refused(
        store, disk, "s", lambda: store.append_token_usage_record("s", deep), ValueError
    )
    nested = nested_dict(DEEP)
    await assert_refused(
        store, disk, "s", lambda: store.append_token_usage_record("s", nested), ValueError
    )


@pytest.mark.parametrize("where", ["metadata", "runtime_state", "content", "extra", "cycle"])
async def test_a_session_nested_too_deep_changes_nothing(
    store: SessionStore, disk: Path | None, where: str
) -> None:
    session = await saved_session(store)
    if where == "cycle":
        session.metadata["self"] = session.metadata
    elif where in ("metadata", "runtime_state"):
        getattr(session, where)["deep"] = nested_dict(DEEP)
    elif where == "content":
        session.messages.append(Message(id="m1", role="user", content=nested_list(DEEP)))
    else:
        session.messages.append(Message(id="m1", role="user", extra=nested_dict(DEEP)))
    await assert_refused(store, disk, "s", lambda: store.save_runtime_session(session), ValueError)


# --- item 11: versions the store's own verify would call damage -------------------------


@pytest.mark.parametrize("field", ["title_version", "metadata_version"])
@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (-(2**70), ValueError), (2**63, ValueError), (True, TypeError)],
    ids=["negative", "very-negative", "beyond-bigint", "bool"],
)
def test_a_bad_version_is_refused_by_the_save_check(
    field: str, value: object, error: type[Exception]
) -> None:
    session = Session(id="s", **{field: value})  # refused by the store call, not here
    with pytest.raises(error):
        copy_for_save(session)


def test_good_versions_are_kept() -> None:
    session = Session(id="s", title_version=2**63 - 1, metadata_version=2**63 - 1)
    assert copy_for_save(session).title_version == 2**63 - 1


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("title_version", -1, ValueError),
        ("metadata_version", -1, ValueError),
        ("title_version", True, TypeError),
        ("metadata_version", False, TypeError),
    ],
)
async def test_a_save_with_a_bad_version_changes_nothing(
    store: SessionStore, disk: Path | None, field: str, value: object, error: type[Exception]
) -> None:
    session = await saved_session(store)
    smuggle(session, field, value)
    await assert_refused(store, disk, "s", lambda: store.save_runtime_session(session), error)
    fresh = Session(id="fresh")
    smuggle(fresh, field, value)
    await assert_refused(store, disk, "fresh", lambda: store.save_runtime_session(fresh), error)


@pytest.mark.parametrize("disk_wins", [False, True], ids=["caller-would-win", "disk-would-win"])
async def test_a_title_version_above_the_metadata_version_is_refused(
    store: SessionStore, disk: Path | None, disk_wins: bool
) -> None:
    session = await saved_session(store)
    if disk_wins:
        await store.set_title("s", "edited")
        await store.set_pinned("s", True)  # disk: title_version 1, metadata_version 2
    caller_version = 1 if disk_wins else 5
    session.title_version, session.metadata_version = caller_version + 1, caller_version
    await assert_refused(store, disk, "s", lambda: store.save_runtime_session(session), ValueError)
    await assert_refused(
        store, disk, "s", lambda: store.checkpoint_runtime_session(session), ValueError
    )
    fresh = Session(id="fresh", title_version=1, metadata_version=0)
    await assert_refused(
        store, disk, "fresh", lambda: store.save_runtime_session(fresh), ValueError
    )


async def test_a_title_that_is_not_utf8_is_refused_before_anything_is_written(
    store: SessionStore, disk: Path | None
) -> None:
    session = await saved_session(store)
    session.title = "bad\udc80"
    session.metadata_version = 10
    session.messages[0] = Message(id="m0", role="user", content="edited")
    await assert_refused(store, disk, "s", lambda: store.save_runtime_session(session), ValueError)


def test_the_save_copy_has_every_field_of_the_session_and_its_own_json() -> None:
    session = attrs.evolve(
        rich_session(),
        title_version=3,
        pinned=True,
        metadata_version=4,
        revision=9,
        forked_from="origin",
        forked_from_revision=2,
    )
    copy = copy_for_save(session)
    # Each field is asked for by name: a field the copy left out would take its default.
    for field in attrs.fields(Session):
        assert getattr(copy, field.name) == getattr(session, field.name), field.name
    assert copy.messages is not session.messages and copy.metadata is not session.metadata
    assert copy.runtime_state is not session.runtime_state
