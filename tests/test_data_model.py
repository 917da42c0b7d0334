"""The data model through the store (docs/reference.md: "Data model"): every kind of
value reads back equal, and a value that would not is refused with nothing written.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
The value checker itself, with its full matrices, is unit-tested in
test_values.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import (
    JSON_VALUES,
    NOT_PLAIN_JSON,
    msg,
    rich_session,
    session_files,
)

from sessionactors import (
    Message,
    Session,
    SessionStore,
)

# --- round trips --------------------------------------------------------------------------


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


# --- bad values (the matrix is support.NOT_PLAIN_JSON) ------------------------------------


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
    before = session_files(disk, "s")

    bad = Session(id="s", messages=[msg("a", {"ok": [1]}), msg("b")], metadata={"m": 2})
    place(bad, value)
    with pytest.raises((TypeError, ValueError)):
        await call(bad)
    assert await store.load_session("s") == persisted
    assert session_files(disk, "s") == before

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
