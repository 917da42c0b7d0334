"""load_session, list_sessions and delete_session (docs/reference.md: "`SessionStore`").

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py);
file checks are guarded by ``disk`` (``None`` off the file store). Listing
around damaged sessions is in test_faults.py and test_file_safety.py.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from conftest import StoreFactory
from support import (
    files_under,
    log_path,
    msg,
    rich_session,
)

import sessionactors
from sessionactors import (
    Session,
    SessionStore,
)

# --- loading ------------------------------------------------------------------------------


async def test_load_of_an_unknown_id_returns_none(store: SessionStore, disk: Path | None) -> None:
    assert await store.load_session("never-saved") is None
    # A read creates nothing.
    assert await store.list_sessions() == []
    assert files_under(disk) == []
    await store.save_runtime_session(Session(id="other"))
    assert await store.load_session("never-saved") is None


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


# --- listing and deleting -----------------------------------------------------------------


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
            revision=loaded.revision,
            forked_from=loaded.forked_from,
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
