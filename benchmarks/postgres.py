"""Throughput on PostgreSQL: sessionactors' batching actors against a classic port.

Run with a server: ``python benchmarks/postgres.py --dsn postgresql://user@host:port/db``
(``--repeats N``, ``--quick``). Each run works in a fresh schema, dropped
afterwards. Workloads (durability "fsync", i.e. ``synchronous_commit = on``):

* hot session: 64 tasks saving one session 10 times each (stale copies);
* many sessions: 1,000 sessions saved 5 times each, one message more each time;
* token usage: 10,000 records from 500 tasks over 5 sessions.

The classic port is what a store without actors does: per call, one
transaction from a connection pool (BEGIN; SELECT ... FOR UPDATE; merge;
INSERT/UPDATE of the whole document; COMMIT), run in a worker thread, as
many at once as the store's threads (32).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import orjson
import psycopg
import trio
from psycopg_pool import ConnectionPool

from sessionactors import Message, Session, open_store
from sessionactors._merge import Authoritative, merge_authoritative
from sessionactors._model import converter
from sessionactors._values import check_session, encode_record

THREADS = 32
#: The actors' counters printed beside each ratio: what explains a win (or its loss).
SHOWN = ("saves_requested", "appends_requested", "batches", "snapshots_written", "append_batches")


def _schema_url(dsn: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _message(step: int) -> Message:
    return Message(id=f"m{step}", role="user", content=f"step {step} " + "lorem ipsum " * 20)


class ClassicStore:
    """One transaction per call, the whole session as one JSON document."""

    def __init__(self, url: str) -> None:
        self.pool = ConnectionPool(url, min_size=1, max_size=THREADS, open=False)
        self.limiter = trio.CapacityLimiter(THREADS)

    def open(self) -> None:
        self.pool.open(wait=True)
        with self.pool.connection() as conn:
            conn.execute(
                "CREATE TABLE classic_sessions (id text PRIMARY KEY, title text NOT NULL,"
                " title_version bigint NOT NULL, pinned boolean NOT NULL,"
                " metadata_version bigint NOT NULL, document json NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE classic_usage (session_id text NOT NULL, seq bigint NOT NULL,"
                " record json NOT NULL, PRIMARY KEY (session_id, seq))"
            )

    def _save(self, session: Session) -> None:
        check_session(session, session.messages)
        caller = Authoritative(
            session.title, session.title_version, session.pinned, session.metadata_version
        )
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT title, title_version, pinned, metadata_version FROM classic_sessions"
                " WHERE id = %s FOR UPDATE",
                (session.id,),
            ).fetchone()
            group = merge_authoritative(None if row is None else Authoritative(*row), caller)
            document = orjson.dumps(converter.unstructure(session)).decode()
            conn.execute(
                "INSERT INTO classic_sessions VALUES (%s, %s, %s, %s, %s, %s::json)"
                " ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title,"
                " title_version = EXCLUDED.title_version, pinned = EXCLUDED.pinned,"
                " metadata_version = EXCLUDED.metadata_version, document = EXCLUDED.document",
                (session.id, group.title, group.title_version, group.pinned,
                 group.metadata_version, document),
            )  # fmt: skip

    def _append(self, session_id: str, line: bytes) -> None:
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT 1 FROM classic_sessions WHERE id = %s FOR UPDATE", (session_id,)
            ).fetchone()
            if row is None:
                raise KeyError(session_id)
            conn.execute(
                "INSERT INTO classic_usage SELECT %s, coalesce(max(seq), 0) + 1, %s::json"
                " FROM classic_usage WHERE session_id = %s",
                (session_id, line.decode(), session_id),
            )

    async def save_runtime_session(self, session: Session) -> None:
        await trio.to_thread.run_sync(self._save, session, limiter=self.limiter)

    async def append_token_usage_record(self, session_id: str, record: Any) -> None:
        line = encode_record(record)
        await trio.to_thread.run_sync(self._append, session_id, line, limiter=self.limiter)


# --- workloads: each takes a store, prepares untimed, returns the timed seconds ---


def _counters(store: Any) -> dict[str, int]:
    """The actors' statistics now (the classic port keeps none)."""
    if not hasattr(store, "statistics"):
        return {}
    counters: dict[str, int] = attrs.asdict(store.statistics())
    return counters


Timed = tuple[float, dict[str, int]]


async def _timed(store: Any, tasks: list[Callable[[], Awaitable[None]]]) -> Timed:
    """Run the tasks at once: the seconds they took, and the counters' deltas meanwhile."""
    before = _counters(store)
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(task)
    elapsed = time.perf_counter() - start
    after = _counters(store)
    return elapsed, {key: after[key] - before[key] for key in SHOWN if key in after}


async def hot_session(store: Any, tasks: int = 64, saves: int = 10) -> Timed:
    await store.save_runtime_session(Session(id="hot"))

    def saver(number: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            session = Session(id="hot", messages=[_message(step) for step in range(5)])
            for i in range(saves):
                session.metadata_version = 0  # a stale copy every time
                session.runtime_state = {"task": number, "i": i}
                await store.save_runtime_session(session)

        return run

    return await _timed(store, [saver(n) for n in range(tasks)])


async def many_sessions(store: Any, sessions: int = 1000, saves: int = 5) -> Timed:
    def saver(number: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            session = Session(id=f"s{number}")
            for step in range(saves):
                session.messages.append(_message(step))
                await store.save_runtime_session(session)

        return run

    return await _timed(store, [saver(n) for n in range(sessions)])


async def token_usage(store: Any, tasks: int = 500, per_task: int = 20, sessions: int = 5) -> Timed:
    for number in range(sessions):
        await store.save_runtime_session(Session(id=f"u{number}"))

    def appender(number: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for seq in range(per_task):
                record = {"model": "m", "task": number, "seq": seq, "input_tokens": 120}
                await store.append_token_usage_record(f"u{number % sessions}", record)

        return run

    return await _timed(store, [appender(n) for n in range(tasks)])


WORKLOADS: dict[str, tuple[Callable[..., Awaitable[Timed]], int, dict[str, int]]] = {
    "hot session: 64 tasks x 10 saves": (hot_session, 640, {"tasks": 8, "saves": 5}),
    "1,000 sessions x 5 saves": (many_sessions, 5000, {"sessions": 50, "saves": 3}),
    "10,000 records, 500 tasks, 5 sessions": (token_usage, 10000, {"tasks": 50, "per_task": 4}),
}


async def _one_run(
    dsn: str, kind: str, workload: Callable[..., Awaitable[Timed]], **kw: int
) -> Timed:
    schema = f"sa_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = _schema_url(dsn, schema)
    try:
        if kind == "actors":
            async with open_store(url, durability="fsync", max_threads=THREADS) as store:
                return await workload(store, **kw)
        classic = ClassicStore(url)
        await trio.to_thread.run_sync(classic.open)
        try:
            return await workload(classic, **kw)
        finally:
            await trio.to_thread.run_sync(classic.pool.close)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def run(dsn: str, repeats: int, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for name, (workload, calls, small) in WORKLOADS.items():
        kw = small if quick else {}
        medians: dict[str, Any] = {}
        for kind in ("actors", "classic"):
            runs = [await _one_run(dsn, kind, workload, **kw) for _ in range(repeats)]
            medians[kind] = statistics.median(seconds for seconds, _ in runs)
            if kind == "actors":
                medians["counters"] = runs[-1][1]
        rows.append({"workload": name, "calls": calls, **medians})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args()
    rows = trio.run(run, args.dsn, args.repeats, args.quick)
    print(f"\nPostgreSQL, durability=fsync (synchronous_commit=on), median of {args.repeats}")
    print(f"  {'workload':<40} {'actors s':>9} {'classic s':>10} {'actors/s':>9} {'ratio':>6}")
    for row in rows:
        rate = "-" if args.quick else f"{row['calls'] / row['actors']:.0f}"
        print(
            f"  {row['workload']:<40} {row['actors']:>9.3f} {row['classic']:>10.3f}"
            f" {rate:>9}"
            f" {row['classic'] / row['actors']:>5.1f}x"
        )
    print("\n  the actors' statistics in their last run (a batch is one transaction)")
    for row in rows:
        shown = ", ".join(f"{key} {value:,}" for key, value in row["counters"].items() if value)
        print(f"  {row['workload']:<40} {shown}")


if __name__ == "__main__":
    main()
