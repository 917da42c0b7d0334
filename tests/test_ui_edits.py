"""The UI edits set_title and set_pinned (docs/reference.md: "`SessionStore`").

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
How UI edits survive a runtime's save (the merge rule) is in test_save.py;
retitle and pin as pure functions in test_merge.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import StoreFactory
from support import (
    EMPTY_TITLES,
    files_under,
    msg,
    session_files,
)

from sessionactors import (
    Session,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
)

# --- helpers ------------------------------------------------------------------------------


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


# --- set_title ----------------------------------------------------------------------------


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


@pytest.mark.parametrize("title", EMPTY_TITLES)
async def test_set_title_refuses_an_empty_title(
    store: SessionStore, disk: Path | None, title: str
) -> None:
    await store.save_runtime_session(Session(id="s", title="kept"))
    persisted = await store.load_session("s")
    before = session_files(disk, "s")
    with pytest.raises(ValueError):
        await store.set_title("s", title)
    assert session_files(disk, "s") == before
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


# --- set_pinned ---------------------------------------------------------------------------


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


@pytest.mark.parametrize("edit", ["title", "pinned"])
async def test_an_edit_that_would_move_metadata_version_past_its_largest_writes_nothing(
    store: SessionStore, disk: Path | None, edit: str
) -> None:
    """Every backend stores 64-bit versions: the edit is refused, not written beyond them."""
    await store.save_runtime_session(Session(id="s", metadata_version=2**63 - 1))
    persisted = await store.load_session("s")
    before = disk_state(disk, "s")

    with pytest.raises(ValueError, match="metadata_version"):
        if edit == "title":
            await store.set_title("s", "renamed")
        else:
            await store.set_pinned("s", True)

    assert await store.load_session("s") == persisted
    assert disk_state(disk, "s") == before
    assert persisted is not None
    await store.save_runtime_session(persisted)  # what the store wrote, it takes back


# --- concurrent edits ---------------------------------------------------------------------


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
