"""Session ids (docs/reference.md: "Session ids"): every method refuses a bad one.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
The matrix is support.BAD_IDS; ids that are not a str, and the exact limits on
the file store, are in test_faults.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import (
    BAD_IDS,
    files_under,
    msg,
)

from sessionactors import (
    InvalidSessionIdError,
    Session,
    SessionStore,
    SessionStoreError,
)

# --- bad and unusual ids ------------------------------------------------------------------


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
