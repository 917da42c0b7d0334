"""The PostgreSQL backend: sessions in tables, one transaction per batch of an actor.

psycopg 3's synchronous API over a ``psycopg_pool.ConnectionPool``; every
call blocks and runs in a worker thread with the rest of the actor's batch
(psycopg's async API is asyncio-only). Tables (schema version 1, recorded in
``sessionactors_schema``)::

    sessionactors_sessions     one row a session: the authoritative group,
                               created_at/updated_at (ISO 8601 text, offsets
                               kept), message_count, transcript (a generation
                               id), metadata and runtime_state (json)
    sessionactors_messages     (session_id, position) -> body (json): the
                               transcript, one row a message
    sessionactors_token_usage  (session_id, seq) -> record (json): append-only

``json``, not ``jsonb``: it keeps the text as written, so every value reads
back equal (``jsonb`` turns ``1e300`` into an integer and refuses ``\\u0000``).

A batch holds ``pg_advisory_xact_lock`` on the session id's hash (which also
serializes the creation of a session that has no row yet) and the row's
``SELECT ... FOR UPDATE``, applies the merge rule to what it read, writes, and
commits once. Like the file backend's journal, a save whose persisted
messages are an unchanged prefix of its transcript inserts only the new
messages; any other change deletes the rows and inserts the transcript anew
under a new generation id.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson
import psycopg
import psycopg.conninfo
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool

from ._backend import SegmentRolledBack
from ._errors import CorruptSessionError, UnsupportedFormatError
from ._files import IoCounts
from ._merge import Authoritative
from ._model import (
    KnownTranscript,
    Message,
    Session,
    SessionSummary,
    check_messages,
    converter,
    decode_record,
    edit_mark,
    encode_message,
    structure_session,
)

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresSession"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SESSIONS = "sessionactors_sessions"
MESSAGES = "sessionactors_messages"
USAGE = "sessionactors_token_usage"

#: Statements taking the schema from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE {SESSIONS} (
            id text PRIMARY KEY,
            title text NOT NULL,
            title_version bigint NOT NULL,
            pinned boolean NOT NULL,
            metadata_version bigint NOT NULL,
            created_at text NOT NULL,
            updated_at text NOT NULL,
            updated_order timestamptz NOT NULL,
            message_count integer NOT NULL,
            transcript text NOT NULL,
            metadata json NOT NULL,
            runtime_state json NOT NULL
        )""",
        f"""CREATE TABLE {MESSAGES} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            position integer NOT NULL,
            body json NOT NULL,
            PRIMARY KEY (session_id, position)
        )""",
        f"""CREATE TABLE {USAGE} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            seq bigint NOT NULL,
            record json NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
    ],
}

_MIGRATION_LOCK = 0x5E55_AC70  # pg_advisory_xact_lock key serializing migrations
#: Tries of one batch when the connection fails or the transaction must be retried.
ATTEMPTS = 5
_BACKOFF = 0.02  # seconds, doubled each retry, with jitter

_LOCK = f"""
SELECT l.xid, s.title, s.title_version, s.pinned, s.metadata_version, s.created_at,
    s.updated_at, s.message_count, s.transcript
FROM (SELECT pg_advisory_xact_lock(%s) AS locked, pg_current_xact_id()::text AS xid) AS l
LEFT JOIN LATERAL (
    SELECT * FROM {SESSIONS} WHERE id = %s AND l.xid IS NOT NULL FOR UPDATE
) AS s ON true
"""
_INSERT = f"""
INSERT INTO {SESSIONS} (title, title_version, pinned, metadata_version, created_at,
    updated_at, updated_order, message_count, transcript, metadata, runtime_state, id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s)
RETURNING id
"""
_UPDATE = f"""
UPDATE {SESSIONS} SET title = %s, title_version = %s, pinned = %s, metadata_version = %s,
    created_at = %s, updated_at = %s, updated_order = %s, message_count = %s, transcript = %s,
    metadata = %s::json, runtime_state = %s::json
WHERE id = %s
RETURNING id
"""
# The session's row and its new messages in one statement (the foreign key
# is checked at the statement's end, when the row is there).
_WITH_MESSAGES = f"""
WITH head AS ({{}})
INSERT INTO {MESSAGES} (session_id, position, body)
SELECT head.id, t.p, t.b::json FROM head, unnest(%s::integer[], %s::text[]) AS t(p, b)
"""
_INSERT_WITH_MESSAGES = _WITH_MESSAGES.format(_INSERT)
_UPDATE_WITH_MESSAGES = _WITH_MESSAGES.format(_UPDATE)
_INSERT_USAGE = f"""
INSERT INTO {USAGE} (session_id, seq, record)
SELECT %(id)s, base.n + t.n, t.r::json
FROM unnest(%(records)s::text[]) WITH ORDINALITY AS t(r, n),
     (SELECT coalesce(max(seq), 0) AS n FROM {USAGE} WHERE session_id = %(id)s) AS base
"""


def lock_key(session_id: str) -> int:
    """A signed 64-bit advisory-lock key for a session id (a collision only serializes)."""
    digest = hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _retryable(error: BaseException) -> bool:
    """A lost or refused connection, a serialization failure, a deadlock, a pool timeout."""
    return isinstance(error, psycopg.OperationalError)


def _backoff(attempt: int) -> None:
    time.sleep(_BACKOFF * 2**attempt * (0.5 + random.random()))


def _iso(value: datetime) -> str:
    text: str = converter.unstructure(value, datetime)
    return text


_BIGINT = range(-(2**63), 2**63)


def _check_columns(session: Session) -> None:
    """Refuse, before any statement, what the row's columns cannot hold.

    A failed statement would spoil the whole batch's transaction; a
    ValueError here fails only the calls that depend on this write.
    """
    if "\x00" in session.title:
        raise ValueError("title holds a NUL character, which PostgreSQL text cannot store")
    for name in ("title_version", "metadata_version"):
        if getattr(session, name) not in _BIGINT:
            raise ValueError(f"{name} does not fit in 64 bits")


def _where(session_id: str) -> str:
    return f"postgresql {SESSIONS} row {session_id!r}"


def _version(head: _Head) -> tuple[Any, ...]:
    """What names a transcript in the database: its generation and message count."""
    return (head.transcript, head.message_count)


@attrs.frozen
class _Head:
    """The columns of a session's row a batch needs to merge and append."""

    group: Authoritative
    created_at: str
    updated_at: str
    message_count: int
    transcript: str


class PostgresBackend:
    """Sessions in a PostgreSQL database; a store's backend for a ``postgresql://`` root."""

    def __init__(self, url: str, *, fsync: bool, max_connections: int) -> None:
        self.url = url
        self.fsync = fsync
        self.max_connections = max_connections
        self.display_url = _without_password(url)
        self._pool: ConnectionPool | None = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL backend is not open")
        return self._pool

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        await trio.to_thread.run_sync(self.open, limiter=limiter)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.close)

    def open(self) -> None:
        """Connect and create or migrate the schema (blocks)."""
        kwargs: dict[str, Any] = {"autocommit": False}
        if "application_name" not in psycopg.conninfo.conninfo_to_dict(self.url):
            kwargs["application_name"] = "sessionactors"
        pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_connections,
            kwargs=kwargs,
            configure=self._configure,
            open=False,
            name="sessionactors",
        )
        pool.open(wait=True, timeout=30.0)
        try:
            with pool.connection() as conn:
                migrate(conn)
        except BaseException:
            pool.close()
            raise
        self._pool = pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # durability: "fsync" waits for the WAL flush, "flush" does not.
        setting = "on" if self.fsync else "off"
        conn.execute(f"SET synchronous_commit = {setting}")
        conn.commit()

    def session(self, session_id: str) -> PostgresSession:
        return PostgresSession(self, session_id)

    def list_summaries(self) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        query = (
            f"SELECT id, title, pinned, title_version, metadata_version, created_at,"
            f" updated_at, message_count FROM {SESSIONS} ORDER BY updated_order DESC, id"
        )
        for attempt in range(ATTEMPTS):
            try:
                with self.pool.connection() as conn:
                    rows = conn.execute(query).fetchall()
                break
            except psycopg.OperationalError:
                if attempt + 1 == ATTEMPTS:
                    raise
                _backoff(attempt)
        summaries: list[SessionSummary] = []
        errors: list[CorruptSessionError] = []
        for row in rows:
            try:
                summaries.append(
                    SessionSummary(
                        id=row[0],
                        title=row[1],
                        pinned=row[2],
                        title_version=row[3],
                        metadata_version=row[4],
                        created_at=converter.structure(row[5], datetime),
                        updated_at=converter.structure(row[6], datetime),
                        message_count=row[7],
                    )
                )
            except (TypeError, ValueError) as exc:
                errors.append(CorruptSessionError(_where(row[0]), f"bad timestamp: {exc}"))
        return summaries, errors


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`, in one transaction.

    Raises:
        UnsupportedFormatError: the database was migrated by a newer version.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS sessionactors_schema (version integer NOT NULL)")
    row = conn.execute("SELECT max(version) FROM sessionactors_schema").fetchone()
    version = row[0] if row is not None and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        conn.rollback()
        raise UnsupportedFormatError(
            "postgresql sessionactors_schema",
            f"schema version {version}; this version of sessionactors knows up to "
            f"{SCHEMA_VERSION}: upgrade it to use this database",
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[step]:
            conn.execute(statement)
        conn.execute("INSERT INTO sessionactors_schema (version) VALUES (%s)", (step,))
        logger.info("sessionactors schema migrated to version %d", step)
    conn.commit()


class PostgresSession:
    """One session's rows; a :class:`~._backend.SessionStorage` over one transaction.

    :meth:`lock` opens the transaction and locks the session; every other
    method runs in it. A database error inside marks the transaction failed:
    leaving :meth:`lock` then rolls back and raises ``SegmentRolledBack``, so
    the batch drops every result it computed (and runs again, up to
    :data:`ATTEMPTS` times, when the error is retryable).
    """

    def __init__(self, backend: PostgresBackend, session_id: str) -> None:
        self.session_id = session_id
        self.counts = IoCounts()
        self._backend = backend
        self._key = lock_key(session_id)
        self._conn: psycopg.Connection[Any] | None = None
        self._head: _Head | None = None
        self._known: KnownTranscript | None = None  # version: (transcript, count)
        self._failure: BaseException | None = None
        self._attempt = 0

    # --- the transaction ---

    @contextlib.contextmanager
    def lock(self, *, create: bool, wait: bool = True) -> Iterator[bool]:
        # Always waits: row locks are held for one short transaction.
        pool = self._backend.pool
        self._failure = None
        try:
            conn = pool.getconn()
        except psycopg.Error as exc:
            raise self._rolled_back(exc) from None
        try:
            try:
                row = conn.execute(_LOCK, (self._key, self.session_id)).fetchone()
            except psycopg.Error as exc:
                _rollback(conn)
                raise self._rolled_back(exc) from None
            assert row is not None
            xid: str = row[0]
            self._head = None if row[1] is None else _decode_head(row[1:])
            self._conn = conn
            try:
                yield create or self._head is not None
            except BaseException as exc:
                _rollback(conn)
                self._known = None
                if isinstance(exc, psycopg.Error):
                    raise self._rolled_back(exc) from None
                raise
            if self._failure is not None:
                _rollback(conn)
                self._known = None
                raise self._rolled_back(self._failure)
            try:
                conn.commit()
            except psycopg.Error as exc:
                if self._outcome_of(xid) is not True:
                    self._known = None
                    raise self._rolled_back(exc) from None
                logger.warning("commit of session %r committed despite %s", self.session_id, exc)
            self._attempt = 0
        finally:
            self._conn = None
            self._head = None
            pool.putconn(conn)

    def _rolled_back(self, error: BaseException) -> SegmentRolledBack:
        retry = _retryable(error) and self._attempt + 1 < ATTEMPTS
        if retry:
            logger.info("session %r: retrying after %s", self.session_id, error)
            if not isinstance(error, psycopg.errors.TransactionRollback):
                # A lost connection: the pool's idle ones may be lost too
                # (a server restart); replace those before the next try.
                with contextlib.suppress(psycopg.Error):
                    self._backend.pool.check()
            _backoff(self._attempt)
            self._attempt += 1
        else:
            self._attempt = 0
        return SegmentRolledBack(error, retry=retry)

    def _outcome_of(self, xid: str) -> bool | None:
        """Whether a transaction whose COMMIT failed committed; None if unknown."""
        for _ in range(20):
            try:
                with self._backend.pool.connection(timeout=5.0) as conn:
                    row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except psycopg.Error:
                return None
            status = None if row is None else row[0]
            if status == "committed":
                return True
            if status == "aborted":
                return False
            time.sleep(0.05)  # "in progress": the server is still finishing it
        return None

    def _cursor(self) -> psycopg.Connection[Any]:
        if self._failure is not None:
            raise self._failure  # the transaction is lost: do nothing more in it
        if self._conn is None:
            raise RuntimeError("PostgresSession used outside lock()")
        return self._conn

    @contextlib.contextmanager
    def _statements(self, *, pipeline: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """Run statements in the transaction; a database error spoils it.

        Several statements are pipelined (one round trip); one needs no pipeline.
        """
        conn = self._cursor()
        try:
            with conn.pipeline() if pipeline else contextlib.nullcontext():
                yield conn
        except psycopg.Error as exc:
            self._failure = exc
            raise

    # --- reads ---

    def read_group(self) -> Authoritative | None:
        return None if self._head is None else self._head.group

    def exists(self) -> bool:
        return self._head is not None

    def read_session(self) -> Session | None:
        if self._head is None:
            return None
        return self._read_session(self._head)

    def _read_session(self, head: _Head, *, fresh: bool = False) -> Session:
        with self._statements() as conn:
            extra_cursor = conn.execute(
                f"SELECT metadata::text, runtime_state::text FROM {SESSIONS} WHERE id = %s",
                (self.session_id,),
            )
            body_cursor = conn.execute(
                f"SELECT body::text FROM {MESSAGES} WHERE session_id = %s ORDER BY position",
                (self.session_id,),
            )
        extra = extra_cursor.fetchone()
        bodies = body_cursor.fetchall()
        where = _where(self.session_id)
        assert extra is not None
        try:
            metadata, runtime_state = orjson.loads(extra[0]), orjson.loads(extra[1])
            messages = [orjson.loads(row[0]) for row in bodies]
        except orjson.JSONDecodeError as exc:
            raise CorruptSessionError(where, f"unreadable JSON: {exc}") from None
        if len(messages) != head.message_count:
            raise CorruptSessionError(
                where, f"{len(messages)} messages where {head.message_count} are counted"
            )
        group = head.group
        data = {
            "id": self.session_id,
            "title": group.title,
            "title_version": group.title_version,
            "pinned": group.pinned,
            "metadata_version": group.metadata_version,
            "created_at": head.created_at,
            "updated_at": head.updated_at,
            "messages": messages,
            "metadata": metadata,
            "runtime_state": runtime_state,
        }
        session = structure_session(where, data)
        mark = edit_mark()
        if fresh or not self._known_matches(head):
            self._known = KnownTranscript(_version(head), list(session.messages), mark)
        return session

    def _known_matches(self, head: _Head) -> bool:
        return self._known is not None and self._known.version == _version(head)

    def known_prefix(self, messages: Sequence[Message]) -> int:
        return 0 if self._known is None else self._known.prefix(messages)

    def persisted_messages(self, incoming: Sequence[Message]) -> list[Message]:
        head = self._head
        if head is None:
            return []
        if self._known is not None and self._known_matches(head):
            own = self._known.persisted(incoming)
            if own is not None:
                return own
        return self._read_session(head, fresh=True).messages

    def read_usage(self) -> list[dict[str, Any]]:
        with self._statements(pipeline=False) as conn:
            cursor = conn.execute(
                f"SELECT record::text FROM {USAGE} WHERE session_id = %s ORDER BY seq",
                (self.session_id,),
            )
        return [decode_record(text, f"postgresql {USAGE}") for (text,) in cursor.fetchall()]

    # --- writes ---

    def write_session(self, session: Session, *, checked: int = 0) -> None:
        _check_columns(session)
        head = self._head
        known = self._known
        messages = session.messages
        mark = edit_mark()
        if (
            head is not None
            and known is not None
            and self._known_matches(head)
            and known.prefix(messages) == len(known.messages)
        ):
            transcript, start = head.transcript, len(known.messages)
        else:
            check_messages(messages, checked)  # all of it is written: all of it is checked
            transcript, start = uuid.uuid4().hex, 0
        bodies = [encode_message(m).decode() for m in messages[start:]]
        metadata = orjson.dumps(session.metadata).decode()
        runtime_state = orjson.dumps(session.runtime_state).decode()
        created_at, updated_at = _iso(session.created_at), _iso(session.updated_at)
        values = (
            session.title,
            session.title_version,
            session.pinned,
            session.metadata_version,
            created_at,
            updated_at,
            session.updated_at,
            len(messages),
            transcript,
            metadata,
            runtime_state,
            self.session_id,
        )
        # The row is locked (or, absent, its creation is: the advisory lock).
        with self._statements(pipeline=start == 0 and head is not None) as conn:
            if start == 0 and head is not None:
                conn.execute(f"DELETE FROM {MESSAGES} WHERE session_id = %s", (self.session_id,))
            if bodies:
                positions = list(range(start, len(messages)))
                query = _INSERT_WITH_MESSAGES if head is None else _UPDATE_WITH_MESSAGES
                conn.execute(query, (*values, positions, bodies))
            else:
                conn.execute(_INSERT if head is None else _UPDATE, values)
        self.counts.snapshots_written += 1
        if start:
            self.counts.journal_appends += 1 if bodies else 0
        else:
            self.counts.journal_rewrites += 1
        self.counts.bytes_written += sum(map(len, bodies)) + len(metadata) + len(runtime_state)
        self._head = _Head(
            Authoritative.of(session), created_at, updated_at, len(messages), transcript
        )
        self._known = KnownTranscript((transcript, len(messages)), list(messages), mark)

    def write_group(self, session: Session) -> None:
        _check_columns(session)
        head = self._head
        if head is None:
            self.write_session(session)
            return
        updated_at = _iso(session.updated_at)
        with self._statements(pipeline=False) as conn:
            conn.execute(
                f"UPDATE {SESSIONS} SET title = %s, title_version = %s, pinned = %s,"
                f" metadata_version = %s, updated_at = %s, updated_order = %s WHERE id = %s",
                (
                    session.title,
                    session.title_version,
                    session.pinned,
                    session.metadata_version,
                    updated_at,
                    session.updated_at,
                    self.session_id,
                ),
            )
        self.counts.snapshots_written += 1
        self._head = attrs.evolve(head, group=Authoritative.of(session), updated_at=updated_at)

    def append(self, data: bytes) -> None:
        records = data.decode().split("\n")
        records.pop()  # empty after the final newline
        with self._statements(pipeline=False) as conn:
            conn.execute(_INSERT_USAGE, {"id": self.session_id, "records": records})
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        with self._statements(pipeline=False) as conn:
            cursor = conn.execute(f"DELETE FROM {SESSIONS} WHERE id = %s", (self.session_id,))
        self._head = None
        self._known = None
        return cursor.rowcount > 0


def _decode_head(row: tuple[Any, ...]) -> _Head:
    return _Head(
        Authoritative(title=row[0], title_version=row[1], pinned=row[2], metadata_version=row[3]),
        created_at=row[4],
        updated_at=row[5],
        message_count=row[6],
        transcript=row[7],
    )


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()
