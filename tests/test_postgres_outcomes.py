"""PostgreSQL: every acknowledged write stays, none is applied twice, refused ones change nothing.

These run on a private cluster (``pg_cluster.py``), since they crash, stop
and cut off the server; they need only the PostgreSQL binaries (``.ci/run``
installs them) and are skipped only when there are none.

- A server crash-restarted (``pg_ctl restart -m immediate``) again and again
  during a burst of appends and saves (issue #11, item 1).
- A proxy that lets a COMMIT through, swallows its answer and cuts every
  connection, and the first lookup's too (item 2).
- A save refused for its values, from a fresh store (item 3).
- The error callers get when the server is gone for good (item 8).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import attrs
import psycopg
import pytest
import trio
from pg_cluster import Cluster, find_bindir, private_cluster

import sessionactors
import sessionactors.storage.postgres
import sessionactors.storage.postgres.backend
import sessionactors.storage.postgres.session
import sessionactors.storage.protocol
from sessionactors import Message, Session
from sessionactors.storage.protocol import Commit

#: Crash restarts of the restart test; .ci/run keeps the default.
RESTARTS = int(os.environ.get("SESSIONACTORS_TEST_PG_RESTARTS", "20"))
#: Bounds each wait for the store to make progress again (seconds).
PROGRESS_BOUND = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries (initdb): .ci/run installs them")
    with private_cluster() as running:
        yield running


# --- the proxy ----------------------------------------------------------------------------

#: What a transaction that writes sends (the old code's and the new code's alike).
WRITES = (b"INSERT INTO sessionactors_", b"UPDATE sessionactors_", b"DELETE FROM sessionactors_")


@attrs.define(eq=False)
class _Pair:
    """One proxied connection: the store's side, the server's side."""

    client: trio.SocketStream
    server: trio.SocketStream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    started: bool = False  # the startup message has gone through
    wrote: bool = False  # the open transaction sent a write
    swallowing: bool = False
    tail: bytes = b""  # the last bytes sent, for markers split across reads


class CommitProxy:
    """A TCP proxy on 127.0.0.1 that can lose the answer to a COMMIT.

    Armed, the next COMMIT of a transaction that wrote is forwarded to the
    server; the server's answer is read (so the COMMIT has run) and dropped,
    then every connection is cut. The next ``cut_lookups`` connections of
    the store's outcome lookups are cut too; with ``refuse_after`` every new
    connection is, until :meth:`accept_again`.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.pairs: set[_Pair] = set()
        self.armed = False
        self.cut_lookups = 0
        self.refusing = False
        self.refuse_after = False
        self.swallowed = 0  # COMMITs that ran and whose answers were dropped
        self.signal = Signal()
        self.lookups_cut = 0

    def arm(self, *, cut_lookups: int = 1, refuse_after: bool = False) -> None:
        self.armed = True
        self.cut_lookups = cut_lookups
        self.refuse_after = refuse_after

    def has_swallowed(self, count: int) -> Callable[[], bool]:
        return lambda: self.swallowed >= count

    def accept_again(self) -> None:
        self.refusing = False

    def cut_all(self) -> None:
        for pair in list(self.pairs):
            pair.scope.cancel()

    async def handle(self, client: trio.SocketStream) -> None:
        if self.refusing:
            await trio.aclose_forcefully(client)
            return
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        pair = _Pair(client, server)
        self.pairs.add(pair)
        try:
            with pair.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._upstream, pair)
                    nursery.start_soon(self._downstream, pair)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # one side went away: the other goes too
        finally:
            self.pairs.discard(pair)
            await trio.aclose_forcefully(server)
            await trio.aclose_forcefully(client)

    async def _upstream(self, pair: _Pair) -> None:
        name = sessionactors.storage.postgres.backend.LOOKUP_APPLICATION_NAME.encode()
        async for chunk in pair.client:
            if not pair.started and b"application_name" in chunk:
                pair.started = True
                if name in chunk and self.cut_lookups > 0:
                    self.cut_lookups -= 1
                    self.lookups_cut += 1
                    pair.scope.cancel()
                    return
            seen = pair.tail + chunk
            pair.tail = seen[-64:]
            if any(marker in seen for marker in WRITES):
                pair.wrote = True
            if b"COMMIT\x00" in seen or b"ROLLBACK\x00" in seen:
                if self.armed and pair.wrote and b"COMMIT\x00" in seen:
                    self.armed = False
                    pair.swallowing = True
                pair.wrote = False
            await pair.server.send_all(chunk)
        pair.scope.cancel()

    async def _downstream(self, pair: _Pair) -> None:
        dropped = b""
        async for chunk in pair.server:
            if not pair.swallowing:
                await pair.client.send_all(chunk)
                continue
            dropped += chunk
            if b"COMMIT\x00" in dropped or b"ROLLBACK\x00" in dropped:
                # The server has answered: its transaction has ended. Nobody hears it.
                self.swallowed += b"COMMIT\x00" in dropped
                self.signal.notify()
                self.refusing = self.refuse_after
                self.cut_all()
                return
        pair.scope.cancel()


@asynccontextmanager
async def commit_proxy(target_port: int) -> AsyncIterator[CommitProxy]:
    """A :class:`CommitProxy` in front of ``target_port``, stopped on leaving."""
    proxy = CommitProxy(target_port)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()


# --- helpers -------------------------------------------------------------------------------

#: What a call may fail with while the server is crashing or cut off: public errors only.
PUBLIC_ERRORS = (psycopg.Error, OSError)


class Signal:
    """Wakes whoever waits for a state when something it depends on changed."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition()`` holds; fail after :data:`PROGRESS_BOUND` seconds."""
        with trio.move_on_after(PROGRESS_BOUND):
            while not condition():
                await self._changed.wait()
            return
        raise AssertionError(f"no {what} within {PROGRESS_BOUND} s")


@attrs.define
class Ledger:
    """What a burst's callers were told."""

    appended: set[tuple[str, int, int]] = attrs.field(factory=set)  # (session, task, n)
    failed: list[BaseException] = attrs.field(factory=list)
    saved: dict[str, int] = attrs.field(factory=dict)  # session -> messages of its last ack
    signal: Signal = attrs.field(factory=Signal)

    @property
    def acks(self) -> int:
        return len(self.appended) + sum(self.saved.values())


async def appender(
    store: sessionactors.SessionStore, session_id: str, task: int, ledger: Ledger, stop: trio.Event
) -> None:
    n = 0
    while not stop.is_set():
        try:
            await store.append_token_usage_record(session_id, {"task": task, "n": n})
        except PUBLIC_ERRORS as exc:
            ledger.failed.append(exc)
        else:
            ledger.appended.add((session_id, task, n))
            ledger.signal.notify()
        n += 1


def more_acks(ledger: Ledger, more: int = 1) -> Callable[[], bool]:
    """Whether ``more`` calls were acknowledged since this was asked."""
    target = ledger.acks + more
    return lambda: ledger.acks >= target


def message(i: int) -> Message:
    return Message(id=f"m{i}", role="user", content=f"message {i}")


async def saver(
    store: sessionactors.SessionStore, session_id: str, ledger: Ledger, stop: trio.Event
) -> None:
    session = Session(id=session_id)
    while not stop.is_set():
        session.messages.append(message(len(session.messages)))
        try:
            await store.save_runtime_session(session)
        except PUBLIC_ERRORS as exc:
            ledger.failed.append(exc)
        else:
            ledger.saved[session_id] = len(session.messages)
            ledger.signal.notify()


async def check_ledger(url: str, ledger: Ledger, appenders: dict[str, int]) -> None:
    """Every acknowledged record once, no record twice; every acknowledged save loads."""
    async with sessionactors.open_store(url) as store:
        for session_id, tasks in appenders.items():
            records = await store.read_token_usage(session_id)
            counts = Counter((session_id, r["task"], r["n"]) for r in records)
            twice = sorted(key for key, count in counts.items() if count > 1)
            assert not twice, f"records stored twice: {twice}"
            acknowledged = {key for key in ledger.appended if key[0] == session_id}
            lost = sorted(acknowledged - set(counts))
            assert not lost, f"acknowledged records lost: {lost}"
            for task in range(tasks):  # each task's records in the order it appended them
                ns = [r["n"] for r in records if r["task"] == task]
                assert ns == sorted(ns)
        for session_id, count in ledger.saved.items():
            loaded = await store.load_session(session_id)
            assert loaded is not None, f"acknowledged save of {session_id!r} lost"
            assert len(loaded.messages) >= count, f"{session_id!r}: acknowledged messages lost"
            assert loaded.messages == [message(i) for i in range(len(loaded.messages))]


# --- item 1: crash restarts during a burst -------------------------------------------------


async def test_crash_restarts_during_a_burst_lose_nothing_acknowledged_and_double_nothing(
    cluster: Cluster,
) -> None:
    """The server is killed (``-m immediate``) and restarted again and again mid-burst.

    Several tasks append and save all along, with ``durability="fsync"``;
    calls caught by a crash may fail (with a public error). Afterwards every
    record whose append returned is in its log once, no record is there
    twice, and every session whose save returned loads with at least the
    messages of its last acknowledged save.
    """
    url = cluster.url(cluster.new_schema())
    appenders = {"a0": 3, "a1": 3}
    ledger = Ledger()
    stop = trio.Event()
    with trio.fail_after(30 + RESTARTS * 5):
        async with (
            sessionactors.open_store(url, durability="fsync") as store,
            trio.open_nursery() as nursery,
        ):
            for session_id, tasks in appenders.items():
                await store.save_runtime_session(Session(id=session_id))
                for task in range(tasks):
                    nursery.start_soon(appender, store, session_id, task, ledger, stop)
            for session_id in ("s0", "s1"):
                nursery.start_soon(saver, store, session_id, ledger, stop)
            for _ in range(RESTARTS):
                # Each crash lands mid-burst: after calls were answered since the last.
                await ledger.signal.wait_until(more_acks(ledger), "acknowledged call")
                await trio.to_thread.run_sync(cluster.restart_immediately)
            await ledger.signal.wait_until(more_acks(ledger), "call after the last restart")
            stop.set()
    print(f"{RESTARTS} restarts: {ledger.acks} acknowledged, {len(ledger.failed)} failed")
    assert ledger.appended and ledger.saved
    await check_ledger(url, ledger, appenders)


# --- item 2: a COMMIT's answer lost --------------------------------------------------------


async def test_a_lost_commit_answer_is_looked_up_not_applied_twice(cluster: Cluster) -> None:
    """The COMMIT runs but its answer is dropped, every connection cut, the first lookup too.

    Round after round, mid-burst: every call still returns (the outcome is
    learned from the batch's token, the lookup retried), every record is in
    the log exactly once.
    """
    schema = cluster.new_schema()
    rounds, tasks = 5, 4
    async with commit_proxy(cluster.port) as proxy:
        url = cluster.url(schema, proxy.port)
        ledger = Ledger()
        with trio.fail_after(60):
            async with sessionactors.open_store(url, durability="fsync") as store:
                await store.save_runtime_session(Session(id="s"))
                for round_ in range(rounds):
                    proxy.arm(cut_lookups=1)
                    stop = trio.Event()
                    async with trio.open_nursery() as nursery:
                        for task in range(round_ * tasks, (round_ + 1) * tasks):
                            nursery.start_soon(appender, store, "s", task, ledger, stop)
                        await proxy.signal.wait_until(
                            proxy.has_swallowed(round_ + 1), "COMMIT swallowed"
                        )
                        await ledger.signal.wait_until(more_acks(ledger, 8), "calls after the cut")
                        stop.set()
        assert proxy.swallowed == rounds
        assert proxy.lookups_cut == rounds
    assert ledger.failed == []
    await check_ledger(cluster.url(schema), ledger, {"s": rounds * tasks})


async def test_an_outcome_that_cannot_be_learned_fails_clearly_and_is_not_run_again(
    cluster: Cluster,
) -> None:
    """The COMMIT runs, its answer is lost, and the server stays out of reach.

    The caller gets a ConnectionError saying the outcome is unknown (not a
    private exception, and not after running the batch again); once the
    server is back, the record is there exactly once.
    """
    async with commit_proxy(cluster.port) as proxy:
        url = cluster.url(cluster.new_schema(), proxy.port)
        with trio.fail_after(60):
            async with sessionactors.open_store(url, durability="fsync") as store:
                await store.save_runtime_session(Session(id="s"))
                proxy.arm(refuse_after=True)
                with pytest.raises(ConnectionError, match="outcome of a write is unknown"):
                    await store.append_token_usage_record("s", {"n": 1})
                assert proxy.swallowed == 1
                proxy.accept_again()
                await store.append_token_usage_record("s", {"n": 2})
                records = await store.read_token_usage("s")
    assert records == [{"n": 1}, {"n": 2}]  # the first committed (its answer was lost), once


# --- item 3: a refused save ----------------------------------------------------------------


async def test_a_refused_save_from_a_fresh_store_leaves_the_transcript_whole(
    cluster: Cluster,
) -> None:
    """A save refused for its title (a lone surrogate) writes nothing, messages included."""
    url = cluster.url(cluster.new_schema())
    original = await save_five_messages(url)
    async with sessionactors.open_store(url) as store:
        with pytest.raises(ValueError):  # UnicodeEncodeError is one
            await store.save_runtime_session(refused_edit())
    async with sessionactors.open_store(url) as store:
        assert await store.load_session("s") == original


async def test_an_error_after_a_statement_was_sent_rolls_the_transaction_back(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard behind the checks: whatever fails inside the transaction undoes all of it.

    With the up-front checks taken away, the bad title fails in psycopg
    after a token-usage INSERT was queued: at the write's call, or, for a
    write sent with the COMMIT, at the COMMIT. The batch code catches a
    call's error and goes on (failing that call only), as it does. Leaving
    the lock still rolls everything back and says so.
    """
    url = cluster.url(cluster.new_schema())
    original = await save_five_messages(url)
    monkeypatch.setattr(
        sessionactors.storage.postgres.session, "check_columns", lambda session: None
    )
    backend = sessionactors.storage.postgres.PostgresBackend(url, fsync=True, max_connections=1)
    await trio.to_thread.run_sync(backend.open)
    try:
        failed, rolled_back = await trio.to_thread.run_sync(write_and_go_on, backend.session("s"))
    finally:
        await trio.to_thread.run_sync(backend.close)
    assert rolled_back is not None, "the transaction was committed"
    assert isinstance(rolled_back.error, UnicodeEncodeError) and not rolled_back.retry
    assert failed is None or failed is rolled_back.error
    async with sessionactors.open_store(url) as store:
        assert await store.load_session("s") == original
        assert await store.read_token_usage("s") == []


def write_and_go_on(
    storage: sessionactors.storage.postgres.PostgresSession,
) -> tuple[Exception | None, sessionactors.storage.protocol.SegmentRolledBack | None]:
    """What the batch code does: a write's error fails its call only, the batch goes on.

    Returns that error, and what leaving the lock raised.
    """
    failed: Exception | None = None
    try:
        with storage.lock(create=True):
            try:
                storage.append_usage(b'{"n": 1}\n')  # a statement that writes, sent first
                storage.write_snapshot(
                    refused_edit(), Commit("save", keep_from=1), append_from=None, trusted=False
                )
            except UnicodeEncodeError as exc:
                failed = exc
    except sessionactors.storage.protocol.SegmentRolledBack as exc:
        return failed, exc
    return failed, None


async def save_five_messages(url: str) -> Session:
    original = Session(id="s", title="kept", messages=[message(i) for i in range(5)])
    async with sessionactors.open_store(url) as store:
        await store.save_runtime_session(original)
    return original


def refused_edit() -> Session:
    """Issue #11's save: a title no column can hold, a newer group, an edited transcript."""
    return Session(
        id="s",
        title="bad\udc80",
        metadata_version=10,
        messages=[message(0), Message(id="m1", role="user", content="edited")],
    )


# --- item 8: retries run out ---------------------------------------------------------------


async def test_when_retries_run_out_callers_get_the_public_error(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops for good: callers get psycopg's error, never the private wrapper."""
    # Each try waits 0.5 s for a connection, not 10: the error comes in seconds.
    monkeypatch.setattr(sessionactors.storage.postgres.backend, "CONNECTION_WAIT", 0.5)
    url = cluster.url(cluster.new_schema())
    try:
        with trio.fail_after(60):
            async with sessionactors.open_store(url) as store:
                await store.save_runtime_session(Session(id="s"))
                await trio.to_thread.run_sync(cluster.stop)
                with pytest.raises(psycopg.OperationalError) as raised:
                    await store.append_token_usage_record("s", {"n": 1})
                with pytest.raises(psycopg.OperationalError):
                    await store.set_title("s", "renamed")
    finally:
        await trio.to_thread.run_sync(cluster.start)
    assert not isinstance(raised.value, sessionactors.storage.protocol.SegmentRolledBack)
