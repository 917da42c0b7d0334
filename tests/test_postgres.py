"""What only the PostgreSQL backend promises: hosts sharing a database, lost connections, schema.

Every test here needs SESSIONACTORS_TEST_POSTGRES_DSN (see conftest.py).
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import psycopg
import pytest
import trio
from shared_children import run_shared_children

import sessionactors
from sessionactors import Message, Session
from sessionactors._errors import UnsupportedFormatError
from sessionactors.storage.postgres import SCHEMA_VERSION, PostgresBackend

SID = "shared"
RENAMES = 40  # what shared_child.py's "ui" role does
APPENDS = 300  # what its "appender" role does
HOSTS = [
    ("runtime-fresh", "rt-a"),  # a new stale copy on every save
    ("runtime-reuse", "rt-b"),  # one object saved over and over
    ("ui", "ui"),
    ("appender", "ap-1"),
]


async def test_four_hosts_share_one_session_without_clobbering(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four processes, a store each, on one database: the database serializes them.

    Two save stale copies, one renames, one appends, all at once. The
    renamer's last title and versions are what stays; every record is there
    once, in the order it was appended; the last snapshot is one writer's, whole.
    """
    async with sessionactors.open_store(postgres_url, durability="flush") as store:
        await store.save_runtime_session(Session(id=SID, title="start"))
    started = time.monotonic()
    done = await run_shared_children(HOSTS, postgres_url, SID, tmp_path, finite=("ui", "ap-1"))
    elapsed = time.monotonic() - started
    # They overlapped: both runtimes saved while the renamer and the appender ran.
    for runtime in ("rt-a", "rt-b"):
        for other in ("ui", "ap-1"):
            assert any(done[other][0] <= t <= done[other][-1] for t in done[runtime])
    print(
        f"4 hosts in {elapsed:.2f} s: saves rt-a={len(done['rt-a'])} rt-b={len(done['rt-b'])},"
        f" renames={len(done['ui'])}, appends={len(done['ap-1'])}"
    )

    async with sessionactors.open_store(postgres_url, durability="flush") as store:
        session = await store.load_session(SID)
        records = await store.read_token_usage(SID)
    assert session is not None
    assert (session.title, session.title_version, session.metadata_version) == (
        f"t{RENAMES}",
        RENAMES,
        RENAMES,
    )
    writer, i = session.metadata["writer"], session.metadata["i"]
    assert writer in ("rt-a", "rt-b")
    assert session.runtime_state == {"writer": writer, "i": i, "count": i % 17}
    assert session.messages == [
        Message(id=f"{writer}-{j}", role="assistant", content=i) for j in range(i % 17)
    ]
    assert [r["seq"] for r in records] == list(range(APPENDS))
    assert all(
        r == {"proc": "ap-1", "seq": r["seq"], "pad": "p" * (r["seq"] % 97)} for r in records
    )


def _terminate_store_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'sessionactors' AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


async def test_lost_connections_are_retried_and_no_record_is_lost_or_doubled(
    postgres_url: str,
) -> None:
    """The server drops every connection of the store, again and again, mid-flood.

    Every call still returns (the batch is retried on a fresh connection),
    and each record is in the log once: a batch whose COMMIT lost its
    connection is looked up (its batch token) before it is run again.
    """
    terminated = 0
    async with sessionactors.open_store(postgres_url, durability="fsync") as store:
        session = Session(id="s")
        await store.save_runtime_session(session)

        async def appender(task: int) -> None:
            for seq in range(60):
                await store.append_token_usage_record("s", {"task": task, "seq": seq})

        async def saver() -> None:
            for i in range(60):
                session.messages.append(Message(id=f"m{i}", role="user", content=i))
                await store.save_runtime_session(session)

        async with trio.open_nursery() as nursery:
            for task in range(5):
                nursery.start_soon(appender, task)
            nursery.start_soon(saver)
            for _ in range(4):
                await trio.sleep(0.05)
                terminated += await trio.to_thread.run_sync(
                    _terminate_store_connections, postgres_url
                )
        records = await store.read_token_usage("s")
        loaded = await store.load_session("s")
    assert terminated > 0
    assert Counter((r["task"], r["seq"]) for r in records) == Counter(
        (task, seq) for task in range(5) for seq in range(60)
    )
    for task in range(5):
        assert [r["seq"] for r in records if r["task"] == task] == list(range(60))
    assert loaded == session


async def test_schema_is_created_once_and_a_newer_one_is_refused(postgres_url: str) -> None:
    async with (
        sessionactors.open_store(postgres_url) as first,
        sessionactors.open_store(postgres_url) as second,
    ):
        await first.save_runtime_session(Session(id="s"))
        assert [s.id for s in await second.list_sessions()] == ["s"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        versions = conn.execute("SELECT version FROM sessionactors_schema").fetchall()
        assert versions == [(SCHEMA_VERSION,)]
        conn.execute("INSERT INTO sessionactors_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(UnsupportedFormatError, match="upgrade"):
        async with sessionactors.open_store(postgres_url):
            pass  # pragma: no cover


@pytest.mark.parametrize("part", ["database", "user"])
async def test_a_database_that_cannot_be_opened_fails_the_opening_with_its_cause(
    postgres_url: str, part: str
) -> None:
    """A missing database or role is psycopg's own error, naming it, not a pool's timeout."""
    parts = urllib.parse.urlsplit(postgres_url)
    missing = "sa_missing_x"
    if part == "database":
        url = urllib.parse.urlunsplit(parts._replace(path=f"/{missing}"))
    else:
        url = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{missing}@{parts.hostname}:{parts.port}")
        )
    with pytest.raises(psycopg.OperationalError, match=f'"{missing}" does not exist') as raised:
        async with sessionactors.open_store(url):
            pass  # pragma: no cover
    assert type(raised.value) is psycopg.OperationalError  # not its subclass PoolTimeout


async def test_a_listing_reads_the_years_last_hour_whatever_the_servers_time_zone(
    postgres_url: str,
) -> None:
    """A session's instant is read back in UTC: at +05:30 it would be in the year 10000."""
    parts = urllib.parse.urlsplit(postgres_url)
    query = [
        (key, f"{value} -ctimezone=Asia/Kolkata" if key == "options" else value)
        for key, value in urllib.parse.parse_qsl(parts.query)
    ]
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)  # libpq: %20, not +
    url = urllib.parse.urlunsplit(parts._replace(query=encoded))
    last_hour = datetime(9999, 12, 31, 18, 0, tzinfo=timezone(timedelta(hours=-5)))
    async with sessionactors.open_store(url) as store:
        await store.save_runtime_session(Session(id="src"))
        lines = (await store.export_session("src")).splitlines(keepends=True)
        line = orjson.loads(lines[1])
        line["session"]["updated_at"] = last_hour.isoformat()
        lines[1] = orjson.dumps(line) + b"\n"
        body = b"".join(lines[:-1])
        end = {"end": {"lines": len(lines), "sha256": hashlib.sha256(body).hexdigest()}}
        await store.import_session(body + orjson.dumps(end) + b"\n", session_id="late")
        listed = await store.list_sessions()
    assert [summary.id for summary in listed] == ["late", "src"]
    assert listed[0].updated_at == last_hour


@pytest.mark.parametrize(("durability", "setting"), [("fsync", "on"), ("flush", "off")])
def test_durability_maps_to_synchronous_commit(
    postgres_url: str, durability: str, setting: str
) -> None:
    backend = PostgresBackend(postgres_url, fsync=durability == "fsync", max_connections=2)
    backend.open()
    try:
        with backend.pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row == (setting,)
    finally:
        backend.close()


async def test_a_password_is_not_shown_as_the_root(postgres_url: str) -> None:
    backend = PostgresBackend(
        "postgresql://user:secret@db.example/app", fsync=True, max_connections=1
    )
    assert backend.display_url == "postgresql://user:***@db.example/app"
    async with sessionactors.open_store(postgres_url) as store:
        assert store.root == postgres_url  # no password in it: shown as given


async def test_what_a_column_cannot_hold_fails_that_call_only(postgres_url: str) -> None:
    """A NUL in a title is refused up front (ValueError), nothing written; the store serves on."""
    async with sessionactors.open_store(postgres_url) as store:
        await store.save_runtime_session(Session(id="s"))
        with pytest.raises(ValueError, match="NUL"):
            await store.set_title("s", "a\x00b")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.append_token_usage_record, "s", {"n": 1})
            nursery.start_soon(store.append_token_usage_record, "s", {"n": 2})
        records = await store.read_token_usage("s")
        assert sorted(r["n"] for r in records) == [1, 2]  # two tasks: either order
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.title == "" and loaded.metadata_version == 0


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
async def test_a_stricter_default_isolation_changes_nothing(
    postgres_url: str, isolation: str
) -> None:
    """A database or role defaulting to a stricter isolation is overridden.

    The lock statement must read the row after it holds the lock, and a
    commit's lookup must see what committed while it waited: both need READ
    COMMITTED, whatever the server's default.
    """
    parts = urllib.parse.urlsplit(postgres_url)
    query = urllib.parse.parse_qsl(parts.query)
    options = dict(query).get("options", "")
    query = [(k, v) for k, v in query if k != "options"]
    escaped = isolation.replace(" ", "\\ ")  # libpq's options split on unescaped spaces
    query.append(("options", f"{options} -cdefault_transaction_isolation={escaped}".strip()))
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)  # libpq: %20, not +
    url = urllib.parse.urlunsplit(parts._replace(query=encoded))
    async with sessionactors.open_store(url) as one, sessionactors.open_store(url) as two:
        await one.save_runtime_session(Session(id="log"))
        for i in range(20):
            async with trio.open_nursery() as nursery:
                for store in (one, two):
                    session = Session(id=f"s{i}", messages=[Message(id="m", role="u", content=i)])
                    nursery.start_soon(store.save_runtime_session, session)
                    nursery.start_soon(store.append_token_usage_record, "log", {"i": i})
        records = await one.read_token_usage("log")
    assert len(records) == 40
