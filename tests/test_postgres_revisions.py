"""PostgreSQL revisions: the rows behind them, the migration from schema 2, forks on the server.

The contract of revisions (history, rewind, fork) is checked on every backend
by the conformance suite; these look at what only this backend has: its
tables, the statements a write costs, its migration, and a fork's source
read without a lock. Every test here needs SESSIONACTORS_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import pytest
import trio
from support import msg

import sessionactors
import sessionactors.storage.postgres.session
import sessionactors.storage.postgres.transaction
from sessionactors import Revision, Session
from sessionactors._errors import (
    CorruptSessionError,
    RevisionNotFoundError,
    SessionNotFoundError,
)
from sessionactors.storage.postgres import SCHEMA_VERSION, PostgresBackend
from sessionactors.storage.postgres.schema import MIGRATIONS

IST = timezone(timedelta(hours=5, minutes=30))


def _rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _transcripts(url: str, session_id: str) -> dict[uuid.UUID, int]:
    """Each transcript of the session that has message rows, and how many."""
    rows = _rows(
        url,
        "SELECT transcript, count(*) FROM sessionactors_messages"
        " WHERE session_id = %s GROUP BY transcript",
        session_id,
    )
    return dict(rows)


def _revisions(url: str, session_id: str) -> list[tuple[int, str, uuid.UUID, int]]:
    return [
        (revision, kind, transcript, count)
        for revision, kind, transcript, count in _rows(
            url,
            "SELECT revision, kind, transcript, message_count FROM sessionactors_revisions"
            " WHERE session_id = %s ORDER BY revision",
            session_id,
        )
    ]


# --- the migration from schema 2 ----------------------------------------------------------

V2_INSERT = """
INSERT INTO sessionactors_sessions (title, title_version, pinned, metadata_version, created_at,
    updated_at, updated_order, message_count, transcript, metadata, runtime_state, id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s)
"""


def _make_schema_2(url: str, sessions: list[Session]) -> dict[str, str]:
    """Tables of schema 2 holding ``sessions`` as version 2 wrote them; their transcript ids."""
    transcripts: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        for statement in (*MIGRATIONS[1], *MIGRATIONS[2]):
            conn.execute(statement)
        conn.execute("CREATE TABLE sessionactors_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO sessionactors_schema VALUES (2)")
        for session in sessions:
            transcripts[session.id] = uuid.uuid4().hex  # what version 2 named them
            conn.execute(
                V2_INSERT,
                (
                    session.title,
                    session.title_version,
                    session.pinned,
                    session.metadata_version,
                    session.created_at.isoformat(),
                    session.updated_at.isoformat(),
                    session.updated_at,
                    len(session.messages),
                    transcripts[session.id],
                    orjson.dumps(session.metadata).decode(),
                    orjson.dumps(session.runtime_state).decode(),
                    session.id,
                ),
            )
            for position, message in enumerate(session.messages):
                conn.execute(
                    "INSERT INTO sessionactors_messages (session_id, position, body)"
                    " VALUES (%s, %s, %s::json)",
                    (
                        session.id,
                        position,
                        sessionactors._model.encode_message(message).decode(),
                    ),
                )
        conn.execute(
            "INSERT INTO sessionactors_token_usage (session_id, seq, record)"
            """ VALUES ('old', 1, '{"n": 1}'), ('old', 2, '{"n": 2}')"""
        )
    return transcripts


async def test_a_schema_2_database_is_migrated_each_session_becoming_its_revision_1(
    postgres_url: str,
) -> None:
    created = datetime(2024, 3, 1, 9, 30, tzinfo=IST)
    old = Session(
        id="old",
        title="From version 2",
        title_version=2,
        pinned=True,
        metadata_version=3,
        created_at=created,
        updated_at=created + timedelta(hours=1),
        messages=[msg(f"m{i}", {"i": i, "big": 1e300}) for i in range(3)],
        metadata={"agent": "coder", "nested": [1, {"a": None}]},
        runtime_state={"step": 7, "nul": "a\u0000b"},
    )
    empty = Session(id="empty", updated_at=created)
    transcripts = _make_schema_2(postgres_url, [old, empty])

    async with sessionactors.open_store(postgres_url, durability="flush") as store:
        expected = copy.deepcopy(old)
        expected.revision = 1
        assert await store.load_session("old") == expected
        assert await store.load_session("old", revision=1) == expected
        loaded_empty = await store.load_session("empty")
        assert loaded_empty is not None and loaded_empty.revision == 1
        assert loaded_empty.messages == [] and loaded_empty.forked_from is None
        assert await store.session_history("old") == [
            Revision(
                revision=1,
                kind="save",
                updated_at=old.updated_at,
                message_count=3,
                title="From version 2",
                pinned=True,
                title_version=2,
                metadata_version=3,
            )
        ]
        summaries = {s.id: s for s in await store.list_sessions()}
        assert (summaries["old"].revision, summaries["old"].forked_from) == (1, None)
        assert summaries["old"].message_count == 3
        assert await store.read_token_usage("old") == [{"n": 1}, {"n": 2}]

        # Its transcript, kept under its old id, takes appends in place.
        before = store.statistics()
        expected.messages.append(msg("m3", "after the migration"))
        await store.save_runtime_session(expected)
        after = store.statistics()
        assert expected.revision == 2
        assert (after.journal_appends - before.journal_appends) == 1
        assert after.journal_rewrites == before.journal_rewrites
        assert _transcripts(postgres_url, "old") == {uuid.UUID(transcripts["old"]): 4}
        first = await store.load_session("old", revision=1)
        assert first is not None and first.messages == old.messages
        rewound = await store.rewind_session("old", 1)
        assert (rewound.revision, rewound.messages) == (3, old.messages)
        fork = await store.fork_session("old", "copy", revision=2)
        assert fork.messages == expected.messages and fork.forked_from_revision == 2

    assert _rows(postgres_url, "SELECT version FROM sessionactors_schema") == [(SCHEMA_VERSION,)]
    assert _rows(postgres_url, "SELECT to_regclass('sessionactors_messages_v2')") == [(None,)]
    async with sessionactors.open_store(postgres_url) as store:  # opened again: as it was
        loaded = await store.load_session("old")
        assert loaded is not None and loaded.revision == 3


async def test_a_failed_migration_leaves_schema_2_as_it_was(postgres_url: str) -> None:
    """The migration is one transaction: a transcript id that is no uuid undoes all of it."""
    _make_schema_2(postgres_url, [Session(id="old", messages=[msg("m")])])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE sessionactors_sessions SET transcript = 'not-a-uuid'")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        async with sessionactors.open_store(postgres_url):
            pass  # pragma: no cover
    assert _rows(postgres_url, "SELECT version FROM sessionactors_schema") == [(2,)]
    assert _rows(postgres_url, "SELECT count(*) FROM sessionactors_messages") == [(1,)]
    assert _rows(postgres_url, "SELECT to_regclass('sessionactors_revisions')") == [(None,)]


# --- revisions as rows, and their retention -------------------------------------------------


async def test_history_keeps_the_newest_revisions_and_the_rows_they_name(
    postgres_url: str,
) -> None:
    """Every kept revision loads as written; older ones and their transcripts' rows go."""
    async with sessionactors.open_store(postgres_url, durability="flush", history=3) as store:
        session = Session(id="s")
        written: dict[int, Session] = {}
        for i in range(12):
            if i % 4 == 3:  # an edit of an old message: a new transcript
                session.messages[0] = msg("m0", f"edited {i}")
            else:
                session.messages.append(msg(f"m{i}", i))
            await store.save_runtime_session(session)
            written[session.revision] = copy.deepcopy(session)
            if i % 5 == 4:
                titled = await store.set_title("s", f"title {i}")
                session.title = titled.title  # the caller's copy, as a runtime would
                session.title_version, session.metadata_version = (
                    titled.title_version,
                    titled.metadata_version,
                )
                written[titled.revision] = titled
        latest = max(written)
        kept = [latest - 2, latest - 1, latest]
        for revision in kept:
            assert await store.load_session("s", revision=revision) == written[revision]
        with pytest.raises(RevisionNotFoundError):
            await store.load_session("s", revision=latest - 3)
        assert [r.revision for r in await store.session_history("s")] == kept[::-1]

    rows = _revisions(postgres_url, "s")
    assert [revision for revision, *_ in rows] == kept
    named = {transcript for _, _, transcript, _ in rows}
    assert set(_transcripts(postgres_url, "s")) == named  # no rows of a dropped transcript


async def test_a_rewind_to_the_oldest_kept_revision_keeps_its_transcript(
    postgres_url: str,
) -> None:
    """The write that drops revision 1 names its transcript: those rows stay."""
    async with sessionactors.open_store(postgres_url, durability="flush", history=2) as store:
        session = Session(id="s", messages=[msg("a"), msg("b")])
        await store.save_runtime_session(session)
        first = copy.deepcopy(session)
        session.messages = [msg("c")]  # a new transcript
        await store.save_runtime_session(session)
        rewound = await store.rewind_session("s", 1)
        assert rewound.revision == 3 and rewound.messages == first.messages
        assert await store.load_session("s") == rewound
        assert [r for r, *_ in _revisions(postgres_url, "s")] == [2, 3]
        session = copy.deepcopy(rewound)
        session.messages.append(msg("d"))
        await store.save_runtime_session(session)
        assert await store.load_session("s") == session
        assert await store.load_session("s", revision=3) == rewound


async def test_an_append_after_a_rewind_never_changes_what_another_store_knows(
    postgres_url: str,
) -> None:
    """A transcript's rows are never written twice, so a version names one list of messages.

    Store B reads revision 2 (four messages). Store A rewinds to revision 1
    (two of them) and appends others: those go to a new transcript, so B's
    next save sees a version it does not know and writes its messages whole.
    """
    async with (
        sessionactors.open_store(postgres_url, durability="flush") as a,
        sessionactors.open_store(postgres_url, durability="flush") as b,
    ):
        session = Session(id="s", messages=[msg("m0"), msg("m1")])
        await a.save_runtime_session(session)
        session.messages += [msg("m2"), msg("m3")]
        await a.save_runtime_session(session)
        seen_by_b = await b.load_session("s")
        assert seen_by_b is not None and len(seen_by_b.messages) == 4

        rewound = await a.rewind_session("s", 1)
        rewound.messages += [msg("other-2"), msg("other-3")]
        await a.save_runtime_session(rewound)
        assert rewound.revision == 4
        assert await a.load_session("s", revision=2) == await b.load_session("s", revision=2)

        seen_by_b.messages.append(msg("m4"))
        await b.save_runtime_session(seen_by_b)
        loaded = await a.load_session("s")
        assert loaded is not None
        assert [m.id for m in loaded.messages] == ["m0", "m1", "m2", "m3", "m4"]
        again = await a.load_session("s", revision=4)
        assert again is not None
        assert [m.id for m in again.messages] == ["m0", "m1", "other-2", "other-3"]


# --- what a write costs ---------------------------------------------------------------------


@contextlib.contextmanager
def _recording_round_trips(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> Iterator[None]:
    """Record in order each statements() block (a round trip of its own), each
    deferred statement as it is sent, and each COMMIT once done."""
    transaction = sessionactors.storage.postgres.transaction.Transaction
    rows = sessionactors.storage.postgres.rows
    names = {rows.WRITE_NEXT: "write", rows.DROP_REVISIONS: "drop"}
    statements, send_deferred, commit = (
        transaction.statements,
        transaction._send_deferred,
        transaction._commit,
    )

    def recording_statements(self: Any, **kwargs: Any) -> Any:
        events.append("statements")
        return statements(self, **kwargs)

    def recording_send_deferred(self: Any, conn: Any) -> None:
        events.extend(names.get(query, query) for query, _ in self._deferred)
        send_deferred(self, conn)

    def recording_commit(self: Any, conn: Any, started: Any) -> None:
        commit(self, conn, started)
        events.append("commit")

    with monkeypatch.context() as patch:
        patch.setattr(transaction, "statements", recording_statements)
        patch.setattr(transaction, "_send_deferred", recording_send_deferred)
        patch.setattr(transaction, "_commit", recording_commit)
        yield


async def test_a_save_appending_a_message_sends_its_writes_with_the_commit(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its write is one statement, sent in the COMMIT's round trip; past the
    history, the retention delete rides with it."""
    async with sessionactors.open_store(postgres_url, durability="flush", history=2) as store:
        session = Session(id="s", messages=[msg("m0")])
        await store.save_runtime_session(session)
        events: list[str] = []
        with _recording_round_trips(monkeypatch, events):
            session.messages.append(msg("m1"))
            await store.save_runtime_session(session)  # revision 2: nothing to drop
        assert events == ["write", "commit"]
        events.clear()
        with _recording_round_trips(monkeypatch, events):
            session.messages.append(msg("m2"))
            await store.save_runtime_session(session)  # revision 3 drops revision 1
        assert events == ["write", "drop", "commit"]
        assert [r for r, *_ in _revisions(postgres_url, "s")] == [2, 3]
        assert (await store.load_session("s")) == session


async def test_a_rewind_and_a_fork_encode_no_message(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both name or copy rows on the server: no message is encoded again in Python."""
    async with sessionactors.open_store(postgres_url, durability="flush") as store:
        session = Session(id="s", messages=[msg(f"m{i}", i) for i in range(20)])
        await store.save_runtime_session(session)
        first = copy.deepcopy(session)
        session.messages = [msg("x")]
        await store.save_runtime_session(session)

        def refuse(*args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("a message was encoded")

        with monkeypatch.context() as patch:
            patch.setattr(sessionactors.storage.postgres.session, "encode_message", refuse)
            rewound = await store.rewind_session("s", 1)
            fork = await store.fork_session("s", "f", revision=1)
        assert rewound.messages == first.messages == fork.messages
        assert await store.load_session("f") == fork
        summary = next(s for s in await store.list_sessions() if s.id == "f")
        assert (summary.revision, summary.forked_from, summary.message_count) == (1, "s", 20)
        assert _transcripts(postgres_url, "f") == {next(iter(_transcripts(postgres_url, "f"))): 20}
        assert await store.delete_session("s")
        assert await store.load_session("f") == fork  # its own rows: the source's went


# --- a fork's source, read without a lock ---------------------------------------------------


def _fork_after(url: str, damage: str) -> Exception | None:
    """Fork "src" as "copy", running ``damage`` (SQL) between the read and the copy."""
    backend = PostgresBackend(url, fsync=False, max_connections=2)
    backend.open()
    error: Exception | None = None
    try:
        storage = backend.session("copy")
        with storage.lock(create=True):
            found = storage.read_source("src", None)
            assert found is not None
            head, stored = found
            assert stored is not None
            with psycopg.connect(url, autocommit=True) as other:
                other.execute(damage)
            made = Session(
                id="copy",
                title=stored.session.title,
                messages=stored.session.messages,
                revision=1,
                forked_from="src",
                forked_from_revision=head.revision,
            )
            try:
                storage.write_fork(made, "src", stored.version)
            except (RevisionNotFoundError, SessionNotFoundError) as exc:
                error = exc  # the batch code fails that call and commits the rest
    finally:
        backend.close()
    return error


@pytest.mark.parametrize(
    ("damage", "raised"),
    [
        # What the source's retention does once that revision is dropped.
        ("DELETE FROM sessionactors_messages WHERE session_id = 'src'", RevisionNotFoundError),
        ("DELETE FROM sessionactors_sessions WHERE id = 'src'", SessionNotFoundError),
    ],
)
async def test_a_fork_whose_source_changes_under_it_makes_nothing(
    postgres_url: str, damage: str, raised: type[Exception]
) -> None:
    async with sessionactors.open_store(postgres_url) as store:
        await store.save_runtime_session(Session(id="src", messages=[msg("a"), msg("b")]))
    error = await trio.to_thread.run_sync(_fork_after, postgres_url, damage)
    assert isinstance(error, raised)
    for table, column in [
        ("sessionactors_sessions", "id"),
        ("sessionactors_revisions", "session_id"),
        ("sessionactors_messages", "session_id"),
    ]:
        assert _rows(postgres_url, f"SELECT count(*) FROM {table} WHERE {column} = 'copy'") == [
            (0,)
        ]
    async with sessionactors.open_store(postgres_url) as store:
        assert await store.load_session("copy") is None


async def test_forks_of_a_session_being_written_elsewhere_copy_one_revision_whole(
    postgres_url: str,
) -> None:
    """Another store saves the source (rewrites and appends, history 2) while forks are made.

    Each fork is its source at the revision it names, exactly; none waits on
    the source's lock, so nothing deadlocks.
    """
    saved: dict[int, list[str]] = {}
    forks: list[Session] = []
    async with (
        sessionactors.open_store(postgres_url, durability="flush", history=2) as writer,
        sessionactors.open_store(postgres_url, durability="flush", history=2) as forker,
    ):
        session = Session(id="src", messages=[msg("start")])
        await writer.save_runtime_session(session)
        saved[session.revision] = [m.id for m in session.messages]
        done = trio.Event()

        async def write() -> None:
            for i in range(150):
                if i % 3 == 0:
                    session.messages = [msg(f"fresh{i}")]
                else:
                    session.messages.append(msg(f"m{i}"))
                await writer.save_runtime_session(session)
                saved[session.revision] = [m.id for m in session.messages]
            done.set()

        async def fork() -> None:
            n = 0
            while not done.is_set():
                with contextlib.suppress(RevisionNotFoundError):
                    forks.append(await forker.fork_session("src", f"f{n}"))
                n += 1

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                nursery.start_soon(fork)
        assert len(forks) > 5
        for made in forks:
            assert made.forked_from_revision is not None
            assert [m.id for m in made.messages] == saved[made.forked_from_revision]
            assert await forker.load_session(made.id) == made


async def test_a_latest_revision_whose_row_was_deleted_by_hand_is_corrupt(
    postgres_url: str,
) -> None:
    async with sessionactors.open_store(postgres_url) as store:
        await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM sessionactors_revisions WHERE session_id = 's'")
    async with sessionactors.open_store(postgres_url) as store:
        with pytest.raises(CorruptSessionError, match="revision 1 has no row"):
            await store.load_session("s")
