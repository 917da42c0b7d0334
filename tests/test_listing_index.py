"""The file store's listing index (``<root>/.sessionactors/index.sqlite3``) is only a cache.

Whatever happens to it, a listing equals what a full scan with
``load_session`` finds: the index deleted, truncated (to nothing or to half)
or garbled in the middle, with the store open or between stores, is rebuilt;
rows left behind by "another version" (edited with sqlite3 to older
summaries, or missing for a session written behind the index's back) are
corrected, as are sessions whose index update failed; a writer SIGKILLed
between a session's write and the index's update (at random moments, and
deterministically in that window) is noticed as a dead writer, and the next
listing reconciles every row. ``.sessionactors`` is no session id and is
never listed. Only behaviour is checked, not how a dead writer is recorded.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from support import msg
from test_listing import all_pages, key, select, summary_of

import sessionactors
import sessionactors.storage.files.index as index_module
from sessionactors import InvalidSessionIdError, Session, SessionStore, SessionSummary

CHILD = Path(__file__).parent / "children" / "index_child.py"
INDEX = Path(".sessionactors") / "index.sqlite3"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@asynccontextmanager
async def opened(root: Path) -> AsyncIterator[SessionStore]:
    async with sessionactors.open_store(root, durability="flush") as store:
        yield store


async def full_scan(store: SessionStore, root: Path) -> list[SessionSummary]:
    """What a listing must be: every session directory under root, as load_session shows it."""
    found = []
    for entry in sorted(os.listdir(root)):
        if entry == ".sessionactors" or not (root / entry).is_dir():
            continue
        session = await store.load_session(entry)
        if session is not None:
            found.append(summary_of(session))
    return sorted(found, key=key, reverse=True)


async def check_listings(store: SessionStore, root: Path) -> list[SessionSummary]:
    """The whole list, pages and filtered pages all agree with a full scan."""
    expected = await full_scan(store, root)
    assert await store.list_sessions() == expected
    assert [s for page in await all_pages(store, 7) for s in page] == expected
    for filters in ({"pinned": True}, {"title_contains": "STRASSE"}):
        wanted = select(expected, pinned=filters.get("pinned"), title=filters.get("title_contains"))
        assert [s for page in await all_pages(store, 3, **filters) for s in page] == wanted
    return expected


def indexed_ids(root: Path) -> set[str]:
    """The live rows of a sound index (the check that it was rebuilt)."""
    with sqlite3.connect(f"file:{root / INDEX}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ids = {row[0] for row in conn.execute("SELECT id FROM sessions WHERE deleted = 0")}
    conn.close()
    return ids


async def populate(store: SessionStore, count: int = 40) -> None:
    rng = random.Random(count)
    for n in range(count):
        session_id = f"s{n:03d}"
        messages = [msg(f"m{i}", "x" * 50) for i in range(rng.randint(0, 4))]
        await store.save_runtime_session(Session(id=session_id, messages=messages))
        if n % 3 == 0:
            await store.set_title(session_id, rng.choice(["Straße", "strasse 2", "Other"]))
        if n % 4 == 0:
            await store.set_pinned(session_id, True)
    await store.delete_session("s005")


def damage(root: Path, how: str, seed: int) -> None:
    index = root / INDEX
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
    elif how == "emptied":
        os.truncate(index, 0)
    elif how == "halved":
        os.truncate(index, index.stat().st_size // 2)
    else:
        rng = random.Random(seed)
        size = index.stat().st_size
        with index.open("r+b") as file:
            file.seek(rng.randrange(size // 4, size // 2))
            file.write(rng.randbytes(rng.choice([16, 300, 4096])))


HOW = ["deleted", "emptied", "halved", *[f"garbled-{n}" for n in range(1, 9)]]


#: The busy timeout the index's connections get here (the library's is a minute): a call
#: that waits for a lock nobody will let go of shows as a run this long, not a hung test.
BUSY = 3.0


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    connect = sqlite3.connect

    def patched(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs["timeout"] = min(kwargs.get("timeout", BUSY), BUSY)
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", patched)


async def use(store: SessionStore, root: Path) -> list[SessionSummary]:
    """Listings right, then writes, then listings right again."""
    await check_listings(store, root)
    await store.save_runtime_session(Session(id="after", title="Strasse"))
    await store.set_pinned("s001", True)
    await store.delete_session("s002")
    return await check_listings(store, root)


@pytest.mark.usefixtures("short_busy_timeout")
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("store_open", [False, True], ids=["between-stores", "store-open"])
async def test_a_damaged_index_is_rebuilt_and_listings_stay_right(
    root: Path, how: str, store_open: bool
) -> None:
    async with opened(root) as store:
        await populate(store)
        await check_listings(store, root)
        started = time.monotonic()
        if store_open:
            damage(root, how, seed=HOW.index(how))
            expected = await use(store, root)
    if not store_open:
        damage(root, how, seed=HOW.index(how))
        async with opened(root) as store:
            expected = await use(store, root)
    # Closing included: no call waited for a lock (see BUSY).
    assert time.monotonic() - started < BUSY
    async with opened(root) as store:  # and the next store builds or finds a sound index
        assert await check_listings(store, root) == expected
    assert indexed_ids(root) == {s.id for s in expected}


def rewrite_rows(root: Path, rows: dict[str, SessionSummary]) -> None:
    """Make the index say ``rows`` (as "another version" that never told it would leave it)."""
    with sqlite3.connect(root / INDEX) as conn:
        for session_id, summary in rows.items():
            blob = orjson.dumps(sessionactors._model.converter.unstructure(summary))
            updated = (summary.updated_at - EPOCH) // timedelta(microseconds=1)
            changed = conn.execute(
                "UPDATE sessions SET summary = ?, updated_us = ?, pinned = ?, title_fold = ?,"
                " revision = ? WHERE id = ?",
                (blob, updated, int(summary.pinned), summary.title.casefold(), summary.revision,
                 session_id),
            ).rowcount  # fmt: skip
            assert changed == 1
    conn.close()


async def test_rows_older_than_the_files_are_corrected(root: Path) -> None:
    """Sessions written behind the index's back: each page that meets a row fixes it."""
    async with opened(root) as store:
        await populate(store)
        old = {s.id: s for s in await store.list_sessions()}
        for session_id in ("s001", "s002", "s039"):
            await store.save_runtime_session(Session(id=session_id, messages=[msg("new")]))
            await store.set_title(session_id, "Renamed Straße")
    rewrite_rows(root, {session_id: old[session_id] for session_id in ("s001", "s002", "s039")})
    async with opened(root) as store:
        expected = await full_scan(store, root)
        assert expected[:3] != [old["s039"], old["s002"], old["s001"]]
        first = await store.list_sessions(limit=3)
        assert all(summary in expected for summary in first)  # never a stale summary
        await check_listings(store, root)


async def test_a_row_older_than_its_session_is_corrected_where_a_page_meets_it(root: Path) -> None:
    """What an older version's write leaves (README): a row behind its session.

    The page that reaches the row shows the session as it is and corrects
    the row; from then on it sorts where it belongs. Deleting the index
    (the documented remedy) puts every row right at once.
    """
    async with opened(root) as store:
        await populate(store)
        oldest = (await store.list_sessions())[-1]
        await store.save_runtime_session(Session(id="s010", messages=[msg("newest")]))
    rewrite_rows(root, {"s010": attrs.evolve(oldest, id="s010")})
    async with opened(root) as store:
        expected = await full_scan(store, root)
        assert expected[0].id == "s010"
        assert await store.list_sessions() == expected  # a full listing meets the row
        assert (await store.list_sessions(limit=5))[0].id == "s010"  # corrected since
    rewrite_rows(root, {"s010": attrs.evolve(oldest, id="s010")})
    shutil.rmtree(root / ".sessionactors")
    async with opened(root) as store:
        assert [s for page in await all_pages(store, 5) for s in page] == expected


async def test_a_session_the_index_never_heard_of_is_listed(root: Path, tmp_path: Path) -> None:
    """A session directory written by a store that knows no index (copied in here)."""
    async with opened(root) as store:
        await populate(store)
        await store.list_sessions()
    elsewhere = tmp_path / "elsewhere"
    async with opened(elsewhere) as other:
        await other.save_runtime_session(Session(id="stranger", title="From an old version"))
    os.rename(elsewhere / "stranger", root / "stranger")
    async with opened(root) as store:
        expected = await full_scan(store, root)
        assert "stranger" in {s.id for s in expected}
        assert await store.list_sessions() == expected


# --- a writer killed ------------------------------------------------------------------------


async def run_child(root: Path, seed: int, mode: str, kill_after: float | None) -> None:
    ready = root.parent / "ready"
    ready.unlink(missing_ok=True)
    args = [sys.executable, str(CHILD), str(root), str(seed), mode]
    process = await trio.lowlevel.open_process(args)
    try:
        with trio.fail_after(30):
            while not ready.exists():
                assert process.returncode is None or mode == "victim", "the child died"
                if process.returncode is not None:
                    break
                await trio.sleep(0.005)
            if kill_after is not None:
                await trio.sleep(kill_after)
                process.send_signal(signal.SIGKILL)
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["random", "victim"])
async def test_a_writer_killed_mid_write_leaves_listings_right(root: Path, mode: str) -> None:
    rng = random.Random(mode)
    for trial in range(5 if mode == "random" else 3):
        seed = rng.randrange(10**6)
        await run_child(root, seed, mode, rng.uniform(0.0, 0.3) if mode == "random" else None)
        async with opened(root) as store:
            expected = await check_listings(store, root)
            ids = {s.id for s in expected}
            assert f"first-{seed}" in ids
            if mode == "victim":
                assert f"victim-{seed}" in ids, trial  # written; the index never told
        assert indexed_ids(root) == ids


# --- the index's own name -------------------------------------------------------------------


async def test_the_index_directory_is_no_session(root: Path) -> None:
    async with opened(root) as store:
        await store.save_runtime_session(Session(id="s"))
        assert (root / INDEX).exists()
        bad = ".sessionactors"
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.save_runtime_session(Session(id=bad)),
            lambda: store.checkpoint_runtime_session(Session(id=bad)),
            lambda: store.load_session(bad),
            lambda: store.delete_session(bad),
            lambda: store.set_title(bad, "x"),
            lambda: store.set_pinned(bad, True),
            lambda: store.update_session(bad, lambda s: None),
            lambda: store.session_history(bad),
            lambda: store.append_token_usage_record(bad, {"a": 1}),
            lambda: store.fork_session("s", bad),
            lambda: store.read_token_usage(bad),
        ]
        for call in calls:
            with pytest.raises(InvalidSessionIdError):
                await call()
        assert [s.id for s in await store.list_sessions()] == ["s"]
        (root / INDEX).unlink()
        assert [s.id for s in await store.list_sessions()] == ["s"]
        assert indexed_ids(root) == {"s"}


async def test_forking_from_the_index_directory_is_refused(root: Path) -> None:
    """As a fork's source too, ``.sessionactors`` is no session id (not an unknown session)."""
    async with opened(root) as store:
        await store.save_runtime_session(Session(id="s"))
        with pytest.raises(InvalidSessionIdError):
            await store.fork_session(".sessionactors", "t")
        assert await store.load_session("t") is None


# --- an index update that failed --------------------------------------------------------------


async def test_a_session_whose_index_update_failed_is_still_listed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index was locked past its timeout when told of two writes (logged, swallowed):
    the sessions are written, so this store's listings, and another's, must show them."""
    original = index_module._publish

    def locked(conn: sqlite3.Connection, root: Path, session_id: str, *args: Any) -> None:
        if session_id in ("late", "s010"):
            raise sqlite3.OperationalError("database is locked")
        original(conn, root, session_id, *args)

    async with opened(root) as store:
        await populate(store)
        await check_listings(store, root)  # the index is complete: no reconciling is due
        monkeypatch.setattr(index_module, "_publish", locked)
        await store.save_runtime_session(Session(id="late", title="Straße"))
        await store.save_runtime_session(Session(id="s010", messages=[msg("newest")]))
        monkeypatch.undo()
        expected = await full_scan(store, root)
        assert [s.id for s in expected[:2]] == ["s010", "late"]
        await check_listings(store, root)
    async with opened(root) as store:
        await check_listings(store, root)


def _row_of(root: Path, session_id: str) -> tuple[int, str] | None:
    with sqlite3.connect(f"file:{root / INDEX}?mode=ro", uri=True) as conn:
        found = conn.execute("SELECT revision, kind FROM sessions WHERE id = ?", (session_id,))
        row = found.fetchone()
    conn.close()
    return None if row is None else (row[0], row[1])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_threads_that_come_and_go_leave_no_connection_behind(tmp_path: Path) -> None:
    """Worker threads retire when idle and new ones start: the index's connections
    (and their descriptors) are reused, not one more kept per thread ever seen."""
    index = index_module.ListingIndex(tmp_path, lambda _: None, lambda: [])

    def publish_on_a_new_thread(number: int) -> None:
        summary = summary_of(Session(id=f"s{number}", created_at=EPOCH))
        thread = threading.Thread(target=index.publish, args=(summary.id, summary, "save", False))
        thread.start()
        thread.join()

    try:
        publish_on_a_new_thread(0)
        before = _open_fds()
        for number in range(1, 40):
            publish_on_a_new_thread(number)
        assert _open_fds() <= before
        assert indexed_ids(tmp_path) == {f"s{number}" for number in range(40)}
    finally:
        index.close()


def test_an_index_that_cannot_be_opened_is_not_taken_for_a_damaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store out of file descriptors (SQLite: "unable to open database file") gets
    the error; the index file, which other stores and watches use, stays as it is."""
    writer = index_module.ListingIndex(tmp_path, lambda _: None, lambda: [])
    reader = index_module.ListingIndex(tmp_path, lambda _: None, lambda: [])
    summary = summary_of(Session(id="kept", created_at=EPOCH))
    connect = sqlite3.connect

    def out_of_descriptors(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(str(tmp_path / "no such directory" / "index.sqlite3"))

    try:
        writer.publish("kept", summary, "save", False)
        inode = (tmp_path / INDEX).stat().st_ino
        monkeypatch.setattr(sqlite3, "connect", out_of_descriptors)
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            reader.changes(0, None)
        monkeypatch.undo()
        assert (tmp_path / INDEX).stat().st_ino == inode
        assert _row_of(tmp_path, "kept") == (summary.revision, "save")
        assert reader.changes(0, None).last == writer.changes(0, None).last == 1
    finally:
        writer.close()
        reader.close()


def _raised(action: Callable[[], object]) -> sqlite3.DatabaseError:
    try:
        action()
    except sqlite3.DatabaseError as exc:
        return exc
    raise AssertionError("no error")


def test_what_sqlite_says_of_a_file_it_could_not_use_is_not_taken_for_damage(
    tmp_path: Path,
) -> None:
    """Only a file SQLite finds damaged is removed and built again; an error of its
    surroundings (extended result codes included) or a connection closed under its
    user leaves the file, which other stores use, in place."""
    good = tmp_path / "good.sqlite3"
    with sqlite3.connect(good) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    closed = sqlite3.connect(good)
    closed.close()
    garbled = tmp_path / "garbled.sqlite3"
    garbled.write_bytes(b"not a database at all" * 300)
    read_only = sqlite3.connect(f"file:{good}?mode=ro", uri=True)
    try:
        surroundings = [
            _raised(lambda: sqlite3.connect(tmp_path / "missing" / "x.sqlite3")),
            _raised(lambda: sqlite3.connect(good, timeout=0).execute("BEGIN IMMEDIATE")),
            _raised(lambda: read_only.execute("INSERT INTO t VALUES (1)")),
            _raised(lambda: closed.execute("SELECT 1")),
        ]
        damage = _raised(lambda: sqlite3.connect(garbled).execute("SELECT * FROM t"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        read_only.close()
    assert [index_module._not_damage(exc) for exc in surroundings] == [True] * 4
    assert not index_module._not_damage(damage)


def _error_with_code(code: int) -> sqlite3.Error:
    error = sqlite3.OperationalError(f"code {code}")
    error.sqlite_errorcode = code  # as SQLite's extended result codes come
    return error


@pytest.mark.parametrize(
    ("code", "surroundings"),
    [
        (8 | 4 << 8, True),  # SQLITE_READONLY_DBMOVED
        (8 | 6 << 8, True),  # SQLITE_READONLY_DIRECTORY
        (10 | 13 << 8, True),  # SQLITE_IOERR_FSTAT
        (14 | 2 << 8, True),  # SQLITE_CANTOPEN_ISDIR
        (11 | 1 << 8, False),  # SQLITE_CORRUPT_VTAB
        (11 | 3 << 8, False),  # SQLITE_CORRUPT_INDEX
        (26, False),  # SQLITE_NOTADB
    ],
)
def test_an_extended_result_code_is_judged_by_its_primary_code(
    code: int, surroundings: bool
) -> None:
    """SQLite reports extended codes (the primary code in the low byte): one of the
    surroundings' leaves the file in place, one of damage has it built again."""
    assert index_module._not_damage(_error_with_code(code)) is surroundings


def test_a_watch_notes_nothing_in_an_index_built_anew_since_its_read(tmp_path: Path) -> None:
    """What it read of the old index says nothing of the new one's rows."""
    index = index_module.ListingIndex(tmp_path, lambda _: None, lambda: [])
    try:
        watch, epoch, seen = index.add_watch()
        index.note_seen(watch, "an older epoch", seen + 5)
        index.note_seen(watch, epoch, seen + 1)
        with sqlite3.connect(f"file:{tmp_path / INDEX}?mode=ro", uri=True) as conn:
            noted = conn.execute("SELECT seen FROM watches WHERE id = ?", (watch.id,)).fetchall()
        conn.close()
        assert noted == [(seen + 1,)]
        index.note_seen(watch, "an older epoch", seen + 5)
        with sqlite3.connect(f"file:{tmp_path / INDEX}?mode=ro", uri=True) as conn:
            noted = conn.execute("SELECT seen FROM watches WHERE id = ?", (watch.id,)).fetchall()
        conn.close()
        assert noted == [(seen + 1,)]
    finally:
        index.close()
