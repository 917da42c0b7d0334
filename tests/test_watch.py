"""``store.watch`` (docs/reference.md, "Watching changes"): what one process sees of its writes.

Every test runs on every backend (files, memory, PostgreSQL) unless marked:
each kind of change with its revision, in commit order; a watch of one
session; nothing from before the watch began; another store on the same
location; leaving the block (the feed is gone: nothing left listening, the
store closes at once); errors on opening; a delete and a save handled in
one batch; and, on the file store, a batch of index rows read at once, the
index deleted or damaged under a watch (a delete it held, or made after,
still told, and once), and the rows of deleted sessions removed after a
while, but not under a watch that has not read them. Other processes, load and the bound on
what an unread watch holds: test_watch_processes.py.

Watches use real time (their feeds run in threads or wait on inotify), each
wait bounded by a generous ``trio.fail_after``; no test asserts how fast.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from conftest import Gate, StoreFactory, file_only

import sessionactors.storage.files.feed
import sessionactors.storage.files.index
import sessionactors.storage.memory
from sessionactors import (
    Change,
    InvalidSessionIdError,
    Message,
    Session,
    SessionStore,
    StoreClosedError,
)
from sessionactors.storage.files.backend import session_ids
from sessionactors.storage.files.index import ListingIndex
from sessionactors.storage.files.session import SessionFiles
from sessionactors.storage.files.writers import Writer
from sessionactors.storage.told import ToldRevisions

#: Seconds any one expected change may take to arrive (generous: never a timing check).
WAIT = 20.0


class Watcher:
    """A watch read by a task of its own, keeping every change it was handed, in order."""

    def __init__(self, store: SessionStore, session_id: str | None, pause: float) -> None:
        self.store = store
        self.session_id = session_id
        self.pause = pause  # seconds asleep after each change: a slow reader
        self.changes: list[Change] = []
        self.buffer: Any = None  # what the watch yielded
        self._arrived = trio.Event()  # set (and replaced) at each change

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.store.watch(self.session_id) as changes:
            self.buffer = changes
            task_status.started()
            async for change in changes:
                self.changes.append(change)
                self._arrived.set()
                self._arrived = trio.Event()
                if self.pause:
                    await trio.sleep(self.pause)

    async def wait_for(self, done: Callable[[list[Change]], bool], timeout: float = WAIT) -> None:
        """Until ``done(changes)`` holds; fails (showing what came) after ``timeout`` seconds."""
        try:
            with trio.fail_after(timeout):
                while not done(self.changes):
                    await self._arrived.wait()
        except trio.TooSlowError:
            raise AssertionError(f"not seen in {timeout}s; got {self.changes[-20:]}") from None

    async def drained(self) -> None:
        """Until the reader has taken every change the watch holds (none can come twice then)."""
        with trio.fail_after(WAIT):
            while self.buffer.statistics():
                await self._arrived.wait()  # set as the reader takes each one
        await trio.sleep(0.1)  # room for anything still on its way

    async def wait_for_count(self, count: int) -> None:
        await self.wait_for(lambda changes: len(changes) >= count)

    def of(self, session_id: str) -> list[Change]:
        return [change for change in self.changes if change.session_id == session_id]


@asynccontextmanager
async def watching(
    store: SessionStore, session_id: str | None = None, *, pause: float = 0.0
) -> AsyncIterator[Watcher]:
    """A :class:`Watcher` whose watch has begun; stopped on leaving."""
    watcher = Watcher(store, session_id, pause)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        yield watcher
        nursery.cancel_scope.cancel()


def check_order(changes: list[Change]) -> None:
    """Per session: revisions strictly increase (each at most once) until a delete."""
    last: dict[str, int] = {}
    for change in changes:
        if change.kind == "delete":
            last.pop(change.session_id, None)
        elif change.revision is not None:
            before = last.get(change.session_id, 0)
            assert change.revision > before, (change, before, changes)
            last[change.session_id] = change.revision


async def test_each_kind_of_write_is_reported_with_its_revision(store: SessionStore) -> None:
    session = Session(id="s", messages=[Message(id="m1", role="user", content="hi")])
    expected: list[Change] = []
    async with watching(store) as watcher:

        async def step(change: Change | None) -> None:
            if change is not None:
                expected.append(change)
            await watcher.wait_for_count(len(expected))

        await store.save_runtime_session(session)
        await step(Change("s", "save", session.revision))
        session.messages.append(Message(id="m2", role="assistant", content="ho"))
        await store.checkpoint_runtime_session(session)
        await step(Change("s", "checkpoint", session.revision))
        await step(Change("s", "title", (await store.set_title("s", "Title")).revision))
        await store.set_title("s", " Title ")  # unchanged: no revision, no change
        await step(Change("s", "pinned", (await store.set_pinned("s", True)).revision))
        updated = await store.update_session("s", lambda s: s.metadata.update(n=1))
        await step(Change("s", "update", updated.revision))
        await store.update_session("s", lambda s: None)  # changes nothing: no change
        await step(Change("s", "rewind", (await store.rewind_session("s", 1)).revision))
        await step(Change("f", "fork", (await store.fork_session("s", "f")).revision))
        await store.append_token_usage_record("s", {"input_tokens": 3})
        await step(Change("s", "usage", None))
        assert await store.delete_session("s")
        await step(Change("s", "delete", None))
        assert not await store.delete_session("s")  # nothing deleted: no change
        await store.save_runtime_session(Session(id="s"))  # the same id again
        await step(Change("s", "save", 1))
        await store.save_runtime_session(Session(id="end"))
        await step(Change("end", "save", 1))
    assert [c.revision for c in expected[:6]] == [1, 2, 3, 4, 5, 6]
    assert watcher.changes == expected


async def test_back_to_back_writes_arrive_in_commit_order(store: SessionStore) -> None:
    session = Session(id="s")
    async with watching(store) as watcher:
        for n in range(30):
            session.messages.append(Message(id=f"m{n}", role="user", content=n))
            if n % 3 == 0:
                await store.checkpoint_runtime_session(session)
            else:
                await store.save_runtime_session(session)
            if n % 5 == 0:
                await store.set_pinned("s", n % 2 == 0)
            if n % 7 == 0:
                await store.append_token_usage_record("s", {"n": n})
        final = session.revision
        await watcher.wait_for(lambda changes: any(c.revision == final for c in changes))
        await watcher.drained()
    check_order(watcher.changes)
    # Each revision handed out is the one of that number, with its kind.
    kinds = {entry.revision: entry.kind for entry in await store.session_history("s")}
    for change in watcher.changes:
        if change.revision is not None:
            assert change.kind == kinds[change.revision], change
    assert {c.kind for c in watcher.changes} <= {"save", "checkpoint", "pinned", "usage"}


async def test_a_watch_of_one_session_sees_only_it(store: SessionStore) -> None:
    async with watching(store, "a") as only_a, watching(store) as every:
        for session_id in ("ab", "b", "a", "A", "a b"):
            await store.save_runtime_session(Session(id=session_id))
        await store.append_token_usage_record("ab", {"n": 1})
        await store.set_title("b", "bee")
        await store.delete_session("b")
        await store.set_title("a", "the one")
        await only_a.wait_for(lambda changes: Change("a", "title", 2) in changes)
        await every.wait_for(lambda changes: len({c.session_id for c in changes}) == 5)
        await every.wait_for(lambda changes: Change("a", "title", 2) in changes)
        await store.save_runtime_session(Session(id="a b"))
        await every.wait_for(lambda changes: Change("a b", "save", 2) in changes)
    # A reader that lags may be handed the title without the save before it.
    assert only_a.changes in (
        [Change("a", "save", 1), Change("a", "title", 2)],
        [Change("a", "title", 2)],
    )
    assert {c.session_id for c in every.changes} == {"ab", "b", "a", "A", "a b"}


async def test_writes_made_before_the_watch_began_are_not_reported(
    store: SessionStore,
) -> None:
    for n in range(3):
        await store.save_runtime_session(Session(id="old"))
        await store.append_token_usage_record("old", {"n": n})
    await store.save_runtime_session(Session(id="gone"))
    await store.delete_session("gone")
    async with watching(store) as watcher, watching(store, "old") as of_old:
        await store.save_runtime_session(Session(id="new"))
        await store.set_title("old", "renamed")
        await watcher.wait_for_count(2)
        await of_old.wait_for_count(1)
        await trio.sleep(0.2)  # room for anything that should not come
    assert watcher.changes == [Change("new", "save", 1), Change("old", "title", 4)]
    assert of_old.changes == [Change("old", "title", 4)]


async def test_writes_of_another_store_on_the_location_are_seen(
    make_store: StoreFactory,
) -> None:
    async with (
        make_store() as watched,
        make_store() as other,
        watching(watched) as watcher,
        watching(other, "s") as own,
    ):
        session = Session(id="s")
        for _ in range(3):
            await other.save_runtime_session(session)
        await other.append_token_usage_record("s", {"n": 1})
        title = Change(
            "s", "title", (await watched.set_title("s", "from the first store")).revision
        )
        await watcher.wait_for(lambda changes: title in changes)
        await own.wait_for(lambda changes: title in changes)
        await other.delete_session("s")
        await watcher.wait_for(lambda changes: Change("s", "delete", None) in changes)
        await own.wait_for(lambda changes: Change("s", "delete", None) in changes)
    for seen in (watcher.changes, own.changes):
        check_order(seen)
        assert seen[-1] == Change("s", "delete", None)


def listening(backend: str, location: str | Path) -> int:
    """How many watches of this location are listening now (inotify fds, LISTENs, subscribers)."""
    if backend == "file":
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if "inotify" in _link(f"/proc/self/fd/{fd}"))
    if backend == "memory":
        return len(sessionactors.storage.memory.space_for(str(location)).watchers)
    import psycopg

    from sessionactors.storage.postgres.listing import channel_for

    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(str(location)).query))
    schema = query["options"].removeprefix("-csearch_path=")
    dsn = os.environ["SESSIONACTORS_TEST_POSTGRES_DSN"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s",
            (f'LISTEN "{channel_for(schema)}"%',),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed in between
        return ""


async def stops_listening(backend: str, location: str | Path, count: int) -> None:
    with trio.fail_after(WAIT):  # PostgreSQL's listening thread closes within a tick
        while (now := listening(backend, location)) != count:
            assert now > count, "a watch was counted that was never opened"
            await trio.sleep(0.02)


async def test_leaving_the_block_stops_the_watch(
    make_store: StoreFactory, backend: str, location: str | Path
) -> None:
    with trio.fail_after(WAIT):
        async with make_store() as store:
            before = listening(backend, location)
            async with store.watch() as changes:
                assert listening(backend, location) == before + 1
                await store.save_runtime_session(Session(id="s"))
            assert [change async for change in changes] == []  # over, at once
            await store.save_runtime_session(Session(id="s"))
            assert changes.statistics() == 0  # nothing collects after leaving
            await stops_listening(backend, location, before)
            # Left by a break, and by an exception, which comes out as itself.
            async with store.watch("s") as changes:
                await store.save_runtime_session(Session(id="s"))
                async for change in changes:
                    assert change == Change("s", "save", 3)
                    break
            with pytest.raises(KeyError, match="mine"):
                async with store.watch() as changes:
                    raise KeyError("mine")
            with trio.move_on_after(0.1) as cancelled:  # cancelled while it waits
                async with store.watch() as changes:
                    await trio.sleep_forever()
            assert cancelled.cancelled_caught
            await stops_listening(backend, location, before)
        # The store closed promptly: no feed was left running behind it.


async def test_a_watch_another_task_holds_open_ends_when_the_store_closes(
    make_store: StoreFactory,
) -> None:
    """Its reader gets what came, then StoreClosedError; the store's block is left at once."""
    heard: list[Change] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery, make_store() as store:
            watching = trio.Event()

            async def reader() -> None:
                with pytest.raises(StoreClosedError):
                    async with store.watch() as changes:
                        watching.set()
                        async for change in changes:
                            heard.append(change)

            nursery.start_soon(reader)
            await watching.wait()
            await store.save_runtime_session(Session(id="s"))
            # The store is closed; the reader's loop ended with it.
    assert heard in ([], [Change("s", "save", 1)])


async def test_a_watch_needs_an_open_store_and_a_valid_id(make_store: StoreFactory) -> None:
    async with make_store() as store:
        for bad in ["", ".", "..", "a/b", "a\\b", "a\x00b", "x" * 201]:
            with pytest.raises(InvalidSessionIdError):
                async with store.watch(bad):
                    pytest.fail("a watch of an invalid id began")
    with pytest.raises(StoreClosedError):
        async with store.watch():
            pytest.fail("a watch of a closed store began")
    with pytest.raises(StoreClosedError):
        async with store.watch("s"):
            pytest.fail("a watch of a closed store began")


async def test_a_delete_and_a_save_in_one_batch_end_with_the_save(
    store: SessionStore, gates: Callable[[str], Gate]
) -> None:
    for _ in range(3):
        await store.save_runtime_session(Session(id="s"))
    recreated = Session(id="s", messages=[Message(id="new", role="user", content=1)])
    async with watching(store, "s") as watcher:
        gate = gates("s")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.save_runtime_session, Session(id="s"))  # held: rev 4
            await gate.wait_entered()
            nursery.start_soon(store.delete_session, "s")  # queued behind it...
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.save_runtime_session, recreated)  # ...and this after
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        assert recreated.revision == 1
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.revision == 1
        # The last write returned: its revision (or a later one) must come.
        await watcher.wait_for(lambda changes: Change("s", "save", 1) in changes, timeout=5)
        await store.save_runtime_session(Session(id="s"))
        await watcher.wait_for(lambda changes: Change("s", "save", 2) in changes)
    assert watcher.changes[-2:] == [Change("s", "save", 1), Change("s", "save", 2)]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_watch_whose_connection_is_cut_listens_again_and_tells_what_it_missed(
    store: SessionStore, location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the watch's connection, and the next connections fail for a
    while: writes of that gap are told once it listens again, each revision once."""
    import threading

    import psycopg

    from sessionactors.storage.postgres.listing import channel_for

    back = threading.Event()
    connect = psycopg.connect

    def away(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("application_name") == "sessionactors-watch" and not back.is_set():
            raise psycopg.OperationalError("the server is away")
        return connect(*args, **kwargs)

    await store.save_runtime_session(Session(id="gone"))
    async with watching(store) as watcher:
        await store.save_runtime_session(Session(id="s"))
        await store.save_runtime_session(Session(id="gone"))
        await watcher.wait_for(lambda changes: Change("gone", "save", 2) in changes)
        monkeypatch.setattr(psycopg, "connect", away)
        schema = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["options"]
        channel = channel_for(schema.removeprefix("-csearch_path="))
        with psycopg.connect(os.environ["SESSIONACTORS_TEST_POSTGRES_DSN"]) as admin:
            cut = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                " FROM pg_stat_activity WHERE query LIKE %s",
                (f'LISTEN "{channel}"%',),
            ).fetchone()
        assert cut == (1,)
        await store.save_runtime_session(Session(id="s"))
        await store.delete_session("gone")
        await store.save_runtime_session(Session(id="new"))
        await trio.sleep(0.5)  # a try or two to listen again fail meanwhile
        back.set()
        missed = [Change("s", "save", 2), Change("gone", "delete", None), Change("new", "save", 1)]
        await watcher.wait_for(lambda changes: all(change in changes for change in missed))
        await store.save_runtime_session(Session(id="s"))
        await watcher.wait_for(lambda changes: Change("s", "save", 3) in changes)
        await watcher.drained()
    check_order(watcher.changes)
    assert len(set(watcher.changes)) == len(watcher.changes)
    assert watcher.changes[:2] == [Change("s", "save", 1), Change("gone", "save", 2)]
    assert sorted(watcher.changes[2:-1], key=repr) == sorted(missed, key=repr)
    assert watcher.changes[-1] == Change("s", "save", 3)


@file_only
async def test_index_rows_read_at_once_each_give_their_changes(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file feed reads every index row changed since its last read; here it
    # is held until three writes have landed, so it reads them in one go.
    released = trio.Event()
    wait_for_signal = sessionactors.storage.files.feed._wait_for_signal

    async def held(inotify: object, at_most: float) -> bool:
        await released.wait()
        return await wait_for_signal(inotify, at_most)

    monkeypatch.setattr(sessionactors.storage.files.feed, "_wait_for_signal", held)
    async with watching(store) as watcher:
        await store.save_runtime_session(Session(id="a"))
        await store.save_runtime_session(Session(id="b"))
        await store.append_token_usage_record("a", {"n": 1})
        released.set()
        await watcher.wait_for(lambda changes: Change("a", "usage", None) in changes)
        await watcher.wait_for(lambda changes: Change("a", "save", 1) in changes, timeout=3)
    assert sorted(watcher.changes, key=repr) == sorted(
        [Change("a", "save", 1), Change("b", "save", 1), Change("a", "usage", None)], key=repr
    )


def test_a_watch_remembers_the_sessions_it_told_of_last_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a long watch over many sessions holds does not grow with every session it saw."""
    monkeypatch.setattr(ToldRevisions, "KEPT", 3)
    told: ToldRevisions[int] = ToldRevisions()
    for revision, session_id in enumerate("abc", start=1):
        told.tell(session_id, revision)
    told.tell("a", 7)  # told again: among the latest now
    told.tell("d", 1)
    assert list(told) == ["c", "a", "d"]
    assert (told.get("a"), told.get("b")) == (7, None)
    told.forget("c")
    assert list(told) == ["a", "d"]


@file_only
async def test_a_session_deleted_and_made_again_between_two_reads_is_told_as_such(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index row shows the new session only, with the created_at of the copy that
    made it again (a runtime's stale copy): its revisions are news all the same."""
    copy = Session(id="s")
    for _ in range(4):
        await store.save_runtime_session(copy)
    released = trio.Event()
    wait_for_signal = sessionactors.storage.files.feed._wait_for_signal

    async def held(inotify: object, at_most: float) -> bool:
        await released.wait()
        return await wait_for_signal(inotify, at_most)

    async with watching(store, "s") as watcher:
        await store.save_runtime_session(copy)
        await watcher.wait_for(lambda changes: Change("s", "save", 5) in changes)
        monkeypatch.setattr(sessionactors.storage.files.feed, "_wait_for_signal", held)
        await trio.sleep(1.5)  # the feed is in the held wait
        await store.delete_session("s")
        await store.save_runtime_session(copy)
        await store.save_runtime_session(copy)
        assert copy.revision == 2
        released.set()
        await watcher.wait_for(lambda changes: Change("s", "save", 2) in changes, timeout=3)
    assert watcher.changes == [
        Change("s", "save", 5),
        Change("s", "delete", None),
        Change("s", "save", 2),
    ]


@file_only
async def test_a_signal_that_came_before_its_commit_showed_is_looked_at_again(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite appends to its WAL (the signal), then publishes the commit in shared memory
    (no signal): a read right after the signal may miss it. The feed looks again soon,
    not only at its last-resort interval (made a minute here)."""
    monkeypatch.setattr(sessionactors.storage.files.feed, "_SAFETY_INTERVAL", 60.0)
    changes = sessionactors.storage.files.index.ListingIndex.changes
    hidden: list[bool] = []

    def first_read_sees_nothing(index: Any, after: int, session_id: str | None) -> Any:
        read = changes(index, after, session_id)
        if read.rows and not hidden:
            hidden.append(True)
            return attrs.evolve(read, rows=[], last=after)  # as if read before the commit showed
        return read

    monkeypatch.setattr(
        sessionactors.storage.files.index.ListingIndex, "changes", first_read_sees_nothing
    )
    async with watching(store) as watcher:
        await store.save_runtime_session(Session(id="s"))
        await watcher.wait_for(lambda seen: Change("s", "save", 1) in seen, timeout=10)
    assert hidden == [True]


@file_only
async def test_a_watch_goes_on_after_the_index_is_deleted(store: SessionStore, disk: Path) -> None:
    session = Session(id="s")
    async with watching(store) as watcher:
        await store.save_runtime_session(session)
        await watcher.wait_for(lambda changes: Change("s", "save", 1) in changes)
        index = disk / ".sessionactors"
        for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
            (index / name).unlink(missing_ok=True)
        # Writes made while the index is built anew may be missed; once the
        # feed has caught up with the new index, each one is seen again.
        for _ in range(40):
            await store.save_runtime_session(session)
            revision = session.revision
            with trio.move_on_after(0.5):
                await watcher.wait_for(lambda changes, r=revision: changes[-1].revision == r)
                break
        else:
            pytest.fail(f"no write seen after the index was deleted: {watcher.changes}")
        for n in range(5):
            await store.append_token_usage_record("s", {"n": n})
            await store.save_runtime_session(session)
            await store.save_runtime_session(Session(id=f"other{n}"))
        final = session.revision
        await watcher.wait_for(lambda changes: Change("s", "save", final) in changes)
        await watcher.wait_for(lambda changes: Change("other4", "save", 1) in changes)
    check_order(watcher.changes)
    assert sum(1 for c in watcher.changes if c.session_id.startswith("other")) == 5


@file_only
async def test_an_index_built_anew_by_a_listing_repeats_no_revision(
    store: SessionStore, disk: Path
) -> None:
    session = Session(id="s")
    async with watching(store) as watcher:
        await store.save_runtime_session(session)
        await watcher.wait_for(lambda changes: Change("s", "save", 1) in changes)
        for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
            (disk / ".sessionactors" / name).unlink(missing_ok=True)
        assert [s.id for s in await store.list_sessions()] == ["s"]  # builds it anew
        await trio.sleep(1.5)  # the feed reads the new index (at the latest each second)
        await store.save_runtime_session(session)
        await watcher.wait_for(lambda changes: Change("s", "save", 2) in changes)
    assert watcher.changes == [Change("s", "save", 1), Change("s", "save", 2)]


def _freeze_the_feed(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While the event returned is set, the file feed's reads of the index find nothing new."""
    real = sessionactors.storage.files.index.ListingIndex.changes
    last: list[Any] = []
    frozen = threading.Event()

    def changes(index: Any, after: int, session_id: str | None) -> Any:
        if frozen.is_set() and last:
            return attrs.evolve(last[-1], rows=[])
        last.append(real(index, after, session_id))
        return last[-1]

    monkeypatch.setattr(sessionactors.storage.files.index.ListingIndex, "changes", changes)
    return frozen


def _remove_index(disk: Path) -> None:
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (disk / ".sessionactors" / name).unlink(missing_ok=True)


def _index_rows(disk: Path) -> set[str]:
    """The session ids the root's index has a row of, deleted or not."""
    with contextlib.closing(sqlite3.connect(disk / ".sessionactors" / "index.sqlite3")) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM sessions")}


@asynccontextmanager
async def _watching_s_told_then_index_built_anew(
    store: SessionStore, disk: Path
) -> AsyncIterator[Watcher]:
    """A watch told of "s"; then the index removed and "t" written, whose row the new
    index holds alone."""
    async with watching(store) as watcher:
        await store.save_runtime_session(Session(id="s"))
        await watcher.wait_for(lambda seen: Change("s", "save", 1) in seen)
        _remove_index(disk)
        await store.save_runtime_session(Session(id="t"))
        await watcher.wait_for(lambda seen: Change("t", "save", 1) in seen)
        yield watcher


@file_only
async def test_a_session_deleted_once_the_index_was_built_anew_is_told_deleted(
    store: SessionStore, disk: Path
) -> None:
    """The new index holds no row of the session: the delete still reaches the watch."""
    async with _watching_s_told_then_index_built_anew(store, disk) as watcher:
        assert await store.delete_session("s")
        await watcher.wait_for(lambda changes: Change("s", "delete", None) in changes)
    check_order(watcher.changes)


@file_only
async def test_a_delete_lost_with_the_index_is_told_from_the_files(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete the old index held, removed by hand before the watch read it, is still
    told. The watch is kept from reading (told nothing new) meanwhile."""
    frozen = _freeze_the_feed(monkeypatch)
    async with watching(store) as watcher:
        for session_id in ("s", "kept"):
            await store.save_runtime_session(Session(id=session_id))
            await watcher.wait_for(lambda seen, i=session_id: Change(i, "save", 1) in seen)
        frozen.set()
        assert await store.delete_session("s")
        _remove_index(disk)
        await store.save_runtime_session(Session(id="last"))  # into a new index
        frozen.clear()
        await watcher.wait_for(lambda seen: Change("s", "delete", None) in seen)
        await watcher.wait_for(lambda seen: Change("last", "save", 1) in seen)
        await watcher.drained()
    check_order(watcher.changes)
    # "kept" is still there, though the rows read have none of it.
    assert Change("kept", "delete", None) not in watcher.changes


async def _kept_beside_deletes_kept_for(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch, changes: int
) -> None:
    """A root whose deleted rows outlive ``changes`` changes, holding a session "kept"."""
    monkeypatch.setattr(sessionactors.storage.files.index, "DELETES_KEPT_FOR", changes)
    await store.save_runtime_session(Session(id="kept"))


async def _make_and_delete(store: SessionStore, count: int) -> None:
    """Make ``count`` sessions and delete each, one after the other."""
    for n in range(count):
        await store.save_runtime_session(Session(id=f"s{n}"))
        assert await store.delete_session(f"s{n}")


@file_only
async def test_the_rows_of_deleted_sessions_are_removed_after_a_while(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root that makes and deletes sessions without end keeps a bounded index."""
    await _kept_beside_deletes_kept_for(store, monkeypatch, 6)
    await _make_and_delete(store, 30)
    # "kept" and the deletes of the last 6 changes (3 sessions made and deleted).
    assert len(_index_rows(disk)) <= 1 + 3
    assert [s.id for s in await store.list_sessions()] == ["kept"]


async def _remove_a_row(store: SessionStore) -> None:
    """Changes of other sessions, the last a delete that would remove an earlier delete's
    row (``DELETES_KEPT_FOR`` 4)."""
    for n in range(2):
        await store.save_runtime_session(Session(id=f"o{n}"))
    assert await store.delete_session("o0")
    for n in range(5):
        await store.save_runtime_session(Session(id=f"x{n}"))
    assert await store.delete_session("o1")


@file_only
@pytest.mark.parametrize("watched", [None, "old"])
async def test_a_watch_keeps_the_rows_of_deletes_it_has_not_read(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch, watched: str | None
) -> None:
    """A watch that stalls (its process stopped, its reader slow) is still told a delete
    of a session it never told of, however many changes came after; once it is gone the
    rows go. The watch is kept from reading (told nothing new) meanwhile."""
    monkeypatch.setattr(sessionactors.storage.files.index, "DELETES_KEPT_FOR", 4)
    await store.save_runtime_session(Session(id="old"))
    frozen = _freeze_the_feed(monkeypatch)
    async with watching(store, watched) as watcher:
        await store.save_runtime_session(Session(id="kept"))
        await trio.sleep(0.3)  # the feed has read once
        frozen.set()
        assert await store.delete_session("old")
        await _remove_a_row(store)
        await _remove_a_row(store)
        assert "old" in _index_rows(disk)
        frozen.clear()
        await watcher.wait_for(lambda seen: Change("old", "delete", None) in seen)
    await _remove_a_row(store)
    assert "old" not in _index_rows(disk)


@file_only
@pytest.mark.parametrize("watched", [None, "quiet"])
async def test_a_watch_that_reads_lets_the_rows_of_deletes_go(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch, watched: str | None
) -> None:
    """A watch notes how far it read (of the whole root, a watch of one session too), so
    an open watch does not keep every deleted row."""
    monkeypatch.setattr(sessionactors.storage.files.index, "DELETES_KEPT_FOR", 6)
    monkeypatch.setattr(sessionactors.storage.files.feed, "NOTE_SEEN_EVERY", 1)
    await store.save_runtime_session(Session(id="quiet"))
    async with watching(store, watched):
        await _make_and_delete(store, 20)
        await trio.sleep(1.5)  # the feed reads (at the latest each second), and notes it
        await store.save_runtime_session(Session(id="last"))
        assert await store.delete_session("last")
        # "quiet" and the deletes of the last 6 changes.
        assert len(_index_rows(disk)) <= 1 + 3


def _note_a_watch(disk: Path, *, alive: bool) -> None:
    """A watch noted in the index as having read nothing: of this process, or of one that
    is no more."""
    pid = os.getpid() if alive else int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    watch = Writer()
    with contextlib.closing(sqlite3.connect(disk / ".sessionactors" / "index.sqlite3")) as conn:
        row = (*watch.row[:3], pid, watch.row[4] if alive else "0")
        conn.execute("INSERT INTO writers VALUES (?, ?, ?, ?, ?)", row)
        conn.execute("INSERT INTO watches VALUES (?, 0)", (watch.id,))
        conn.commit()


@file_only
async def test_a_watch_whose_process_is_gone_keeps_no_deleted_rows(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _kept_beside_deletes_kept_for(store, monkeypatch, 4)
    _note_a_watch(disk, alive=False)
    await _make_and_delete(store, 20)
    assert len(_index_rows(disk)) <= 1 + 2


@file_only
async def test_a_watch_that_lets_go_of_many_rows_frees_them_a_few_at_a_delete(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete removes a bounded number of old rows: writers never wait for millions."""
    monkeypatch.setattr(sessionactors.storage.files.index, "_PRUNED_AT_ONCE", 3)
    await _kept_beside_deletes_kept_for(store, monkeypatch, 4)
    _note_a_watch(disk, alive=True)
    await _make_and_delete(store, 12)
    assert len(_index_rows(disk)) == 1 + 12
    with contextlib.closing(sqlite3.connect(disk / ".sessionactors" / "index.sqlite3")) as conn:
        conn.execute("DELETE FROM watches")  # it lets go
        conn.commit()
    await store.save_runtime_session(Session(id="one more"))
    assert await store.delete_session("one more")
    assert len(_index_rows(disk)) == 1 + 12 + 1 - 3


@file_only
async def test_a_delete_told_from_the_files_is_not_told_again_by_its_row(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete removes the files, then writes its row: a watch that looked in the files
    in between (finding the index built anew) was told already."""
    publish = ListingIndex.publish
    files_gone, written = threading.Event(), threading.Event()

    def slow_delete(index: ListingIndex, session_id: str, *rest: Any) -> None:
        if session_id == "quiet" and rest[1] == "delete":
            files_gone.set()
            time.sleep(1.5)  # the files are gone, the row not yet written
            publish(index, session_id, *rest)
            written.set()
        else:
            publish(index, session_id, *rest)

    monkeypatch.setattr(ListingIndex, "publish", slow_delete)
    frozen = _freeze_the_feed(monkeypatch)
    async with watching(store, "quiet") as watcher, trio.open_nursery() as nursery:
        await store.save_runtime_session(Session(id="quiet"))
        await watcher.wait_for(lambda seen: Change("quiet", "save", 1) in seen)
        frozen.set()
        _remove_index(disk)
        nursery.start_soon(store.delete_session, "quiet")
        await trio.to_thread.run_sync(files_gone.wait)
        frozen.clear()  # the next read makes a new index: "quiet" is looked for in the files
        await watcher.wait_for(lambda seen: Change("quiet", "delete", None) in seen)
        assert not written.is_set()
        await trio.to_thread.run_sync(written.wait)
        await trio.sleep(1.2)  # the row's read: the feed reads at least each second
        await watcher.drained()
    assert watcher.changes == [Change("quiet", "save", 1), Change("quiet", "delete", None)]


@file_only
async def test_a_watch_that_finds_the_index_damaged_goes_on(
    store: SessionStore, disk: Path
) -> None:
    async with watching(store) as watcher:
        await store.save_runtime_session(Session(id="s"))
        await watcher.wait_for(lambda seen: Change("s", "save", 1) in seen)
        with contextlib.closing(sqlite3.connect(disk / ".sessionactors" / "index.sqlite3")) as conn:
            conn.execute(  # a row whose id is not UTF-8: the next read finds it damaged
                "INSERT INTO sessions VALUES (CAST(x'ff' AS TEXT), 0, 0, '', x'', 1, 'save',"
                " 0, 99, 0, 99)"
            )
            conn.commit()
        await trio.sleep(0.5)
        await store.save_runtime_session(Session(id="t"))
        await watcher.wait_for(lambda seen: Change("t", "save", 1) in seen)


async def _reconcile_while_s_is_deleted(
    store: SessionStore,
    disk: Path,
    then: Callable[[SessionStore], Awaitable[None]] | None = None,
) -> None:
    """Reconcile the index (another store's), "s" deleted through ``store`` while its scan
    goes on (then ``then`` run)."""

    def read_entry(session_id: str) -> Any:
        entry = SessionFiles(disk, session_id, False).listing_entry()
        if session_id == "s":
            assert trio.from_thread.run(store.delete_session, "s")
            if then is not None:
                trio.from_thread.run(then, store)
        return entry

    other = ListingIndex(disk, read_entry, lambda: session_ids(disk))
    try:
        await trio.to_thread.run_sync(other.reconcile)
    finally:
        await trio.to_thread.run_sync(other.close)


@file_only
async def test_a_session_deleted_while_the_index_is_reconciled_stays_deleted(
    store: SessionStore, disk: Path
) -> None:
    """The rebuilt index's row of the delete is newer than the files its reconcile read."""
    async with _watching_s_told_then_index_built_anew(store, disk) as watcher:
        await _reconcile_while_s_is_deleted(store, disk)
        await watcher.wait_for(lambda seen: Change("s", "delete", None) in seen)
        assert [summary.id for summary in await store.list_sessions()] == ["t"]
        await watcher.drained()
    assert watcher.of("s") == [Change("s", "save", 1), Change("s", "delete", None)]


@file_only
async def test_a_session_deleted_and_its_row_removed_during_a_reconcile_stays_deleted(
    store: SessionStore, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No watch holds the rows: the delete's row is made and removed during the scan."""
    monkeypatch.setattr(sessionactors.storage.files.index, "DELETES_KEPT_FOR", 4)
    await store.save_runtime_session(Session(id="s"))
    _remove_index(disk)
    await store.save_runtime_session(Session(id="t"))  # a new index, with t's row alone
    await _reconcile_while_s_is_deleted(store, disk, then=_remove_a_row)  # s's row goes too
    assert "s" not in _index_rows(disk)
    assert "s" not in [summary.id for summary in await store.list_sessions()]
