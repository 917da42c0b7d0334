"""The PostgreSQL backend: sessions in tables, one transaction per batch of an actor.

psycopg 3's synchronous API over a ``psycopg_pool.ConnectionPool``; every
call blocks and runs in a worker thread with the rest of the actor's batch
(psycopg's async API is asyncio-only). Tables (schema version 2, recorded in
``sessionactors_schema``)::

    sessionactors_sessions     one row a session: the authoritative group,
                               created_at/updated_at (ISO 8601 text, offsets
                               kept), message_count, transcript (a generation
                               id), metadata and runtime_state (json)
    sessionactors_messages     (session_id, position) -> body (json): the
                               transcript, one row a message
    sessionactors_token_usage  (session_id, seq) -> record (json): append-only
    sessionactors_batches      token (uuid) -> written: one row a writing
                               transaction of the last TOKEN_RETENTION

``json``, not ``jsonb``: it keeps the text as written, so every value reads
back equal (``jsonb`` turns ``1e300`` into an integer and refuses ``\\u0000``).

A batch holds ``pg_advisory_xact_lock`` on the session id's hash (which also
serializes the creation of a session that has no row yet) and the row's
``SELECT ... FOR UPDATE``, applies the merge rule to what it read, writes, and
commits once. A transaction that wrote also inserts a fresh token, in the
same COMMIT round trip: when the answer to the COMMIT is lost, a connection
of its own waits for the session's advisory lock (so that transaction has
ended, however) and looks the token up, again with backoff while the server
is out of reach; the batch runs again only when its token is certainly
absent. Transaction ids are not used for this: after a crash the server hands
out again those whose commit never reached the WAL.

Like the file backend's journal, a save whose persisted messages are an
unchanged prefix of its transcript inserts only the new messages; any other
change deletes the rows and inserts the transcript anew under a new
generation id.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs
import orjson
import psycopg
import psycopg.conninfo
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool

from ._errors import CorruptSessionError, UnsupportedFormatError
from ._merge import Authoritative
from ._model import (
    Session,
    SessionSummary,
    converter,
    decode_record,
    encode_message,
    structure_session,
)
from ._steps import Head, Stored, Version
from .storage.protocol import IoCounts, SegmentRolledBack

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresSession"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SESSIONS = "sessionactors_sessions"
MESSAGES = "sessionactors_messages"
USAGE = "sessionactors_token_usage"
BATCHES = "sessionactors_batches"
#: How long a writing transaction's token is kept. A lookup that finds no
#: token says "not committed" only while the transaction began less than
#: LOOKUP_HORIZON ago (by the server's clock, as the expiry is): any later,
#: its token might have expired, and the outcome is reported unknown.
TOKEN_RETENTION = "10 minutes"
LOOKUP_HORIZON = "5 minutes"

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
    2: [
        f"""CREATE TABLE {BATCHES} (
            token uuid PRIMARY KEY,
            written timestamptz NOT NULL DEFAULT now()
        )""",
        f"CREATE INDEX {BATCHES}_written ON {BATCHES} (written)",
    ],
}

_MIGRATION_LOCK = 0x5E55_AC70  # pg_advisory_xact_lock key serializing migrations
#: Tries of one batch when the connection fails or the transaction must be retried.
ATTEMPTS = 5
_BACKOFF = 0.02  # seconds, doubled each retry, with jitter
#: Tries of the lookup of a batch whose COMMIT got no answer (about 6 s of
#: backoff in all, enough for a server's crash restart); then its callers get
#: a ConnectionError saying the outcome is unknown.
LOOKUP_ATTEMPTS = 10
_LOOKUP_BACKOFF_MAX = 1.0  # seconds
#: The lookup's own connection is named so (unless the URL names its connections).
LOOKUP_APPLICATION_NAME = "sessionactors-lookup"
_LOOKUP_CONNECT_TIMEOUT = 5  # seconds (libpq's connect_timeout)
_LOOKUP_LOCK_TIMEOUT = "5s"  # waiting for the transaction looked up to end
#: How long a batch waits for one of the pool's connections (when all are in
#: use, or lost and being replaced) before that try fails with PoolTimeout.
CONNECTION_WAIT = 10.0  # seconds

# The lateral condition makes the row's read wait for the advisory lock; the
# transaction's start time dates its token (see LOOKUP_HORIZON).
# Two statements, pipelined (one round trip): under READ COMMITTED each
# statement reads a snapshot taken when it starts, so the row is read after
# the lock is held. In one statement the snapshot would predate the wait, and
# a row another store inserted meanwhile would be missed (its INSERT would
# then fail on the primary key).
_LOCK = "SELECT pg_advisory_xact_lock(%s), now()"
_READ_HEAD = f"""
SELECT title, title_version, pinned, metadata_version, created_at, updated_at,
    message_count, transcript
FROM {SESSIONS} WHERE id = %s FOR UPDATE
"""
_RECORD_BATCH = f"INSERT INTO {BATCHES} (token) VALUES (%s)"
# A few expired tokens go with each writing transaction: the table holds
# about TOKEN_RETENTION's worth. SKIP LOCKED: never wait on another batch.
_EXPIRE_BATCHES = f"""
DELETE FROM {BATCHES} WHERE token IN (
    SELECT token FROM {BATCHES} WHERE written < now() - interval '{TOKEN_RETENTION}'
    ORDER BY written LIMIT 16 FOR UPDATE SKIP LOCKED
)
"""
_LOOKUP = f"""
SELECT EXISTS (SELECT FROM {BATCHES} WHERE token = %s),
    clock_timestamp() - %s::timestamptz < interval '{LOOKUP_HORIZON}'
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


def _lookup_backoff(attempt: int) -> None:
    time.sleep(min(_LOOKUP_BACKOFF_MAX, 2.5 * _BACKOFF * 2**attempt) * (0.5 + random.random()))


def _refused_by_server(error: psycopg.Error) -> bool:
    """Whether the server answered with an error, so the COMMIT certainly did not happen.

    A lost connection (no SQLSTATE, or class 08), a server shutting down
    (class 57), or an error that ends the session (FATAL, PANIC) leaves the
    outcome unknown.
    """
    state = error.sqlstate
    if state is None or state.startswith(("08", "57")):
        return False
    # A FATAL or PANIC ends the session: it may come from inside the commit
    # itself (a failed WAL fsync), after which the commit can survive recovery.
    return error.diag.severity_nonlocalized not in ("FATAL", "PANIC")


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
    session.title.encode("utf-8")  # UnicodeEncodeError (a lone surrogate) now, not mid-batch
    for name in ("title_version", "metadata_version"):
        if getattr(session, name) not in _BIGINT:
            raise ValueError(f"{name} does not fit in 64 bits")


def _where(session_id: str) -> str:
    return f"postgresql {SESSIONS} row {session_id!r}"


def _version(head: _Head) -> Version:
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
            timeout=CONNECTION_WAIT,
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
        # READ COMMITTED whatever the database's or role's default: the lock
        # statement and the lookup must read what committed while they waited.
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        # durability: "fsync" waits for the WAL flush, "flush" does not.
        setting = "on" if self.fsync else "off"
        conn.execute(f"SET synchronous_commit = {setting}")
        conn.commit()

    def session(self, session_id: str) -> PostgresSession:
        return PostgresSession(self, session_id)

    def lookup_connection(self) -> psycopg.Connection[Any]:
        """A new connection outside the pool (whose connections may all be lost), for lookups."""
        given = psycopg.conninfo.conninfo_to_dict(self.url)
        kwargs: dict[str, Any] = {"autocommit": False}
        if "application_name" not in given:
            kwargs["application_name"] = LOOKUP_APPLICATION_NAME
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = _LOOKUP_CONNECT_TIMEOUT
        conn = psycopg.connect(self.url, **kwargs)
        # Under REPEATABLE READ the lookup's snapshot would predate its wait
        # for the lock, and a commit made meanwhile would look absent.
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

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
        logger.info("sessionactors schema migrated to version %d", step)
    if version < SCHEMA_VERSION:  # one row: the version the tables are at
        conn.execute("DELETE FROM sessionactors_schema")
        conn.execute("INSERT INTO sessionactors_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    conn.commit()


class PostgresSession:
    """One session's rows; a :class:`~.storage.protocol.SessionStorage` over one transaction.

    :meth:`lock` opens the transaction and locks the session; every other
    method runs in it. Any exception inside (a database error, or one a
    caller caught) rolls the whole transaction back: leaving :meth:`lock`
    then raises ``SegmentRolledBack``, so the batch drops every result it
    computed (and runs again, up to :data:`ATTEMPTS` times, when the error
    is retryable). A COMMIT that got no answer is looked up by its token
    (:meth:`_outcome_of`), never run again on a guess.
    """

    def __init__(self, backend: PostgresBackend, session_id: str) -> None:
        self.session_id = session_id
        self.counts = IoCounts()
        self._backend = backend
        self._key = lock_key(session_id)
        self._conn: psycopg.Connection[Any] | None = None
        self._head: _Head | None = None
        self._failure: Exception | None = None
        self._wrote = False  # a statement that writes was sent in this transaction
        self._attempt = 0

    # --- the transaction ---

    @contextlib.contextmanager
    def lock(self, *, create: bool, wait: bool = True) -> Iterator[bool]:
        # Always waits: row locks are held for one short transaction.
        pool = self._backend.pool
        self._failure = None
        self._wrote = False
        try:
            conn = pool.getconn()
        except psycopg.Error as exc:
            raise self._rolled_back(exc) from exc
        try:
            try:
                started = self._begin(conn)
                yield create or self._head is not None
                if self._failure is not None:
                    raise self._failure  # a statement failed and its caller went on
            except Exception as exc:
                # Whatever failed, nothing of the transaction may stay.
                self._abort(conn)
                raise self._rolled_back(exc) from exc
            except BaseException:
                self._abort(conn)
                raise
            self._commit(conn, started)
            self._attempt = 0
        finally:
            self._conn = None
            self._head = None
            pool.putconn(conn)

    def _begin(self, conn: psycopg.Connection[Any]) -> datetime:
        """Lock the session, read its row; the transaction's start time."""
        with conn.pipeline():
            locked = conn.execute(_LOCK, (self._key,))
            read = conn.execute(_READ_HEAD, (self.session_id,))
        lock_row = locked.fetchone()
        assert lock_row is not None
        row = read.fetchone()
        self._head = None if row is None else _decode_head(row)
        self._conn = conn
        started: datetime = lock_row[1]
        return started

    def _abort(self, conn: psycopg.Connection[Any]) -> None:
        _rollback(conn)

    def _commit(self, conn: psycopg.Connection[Any], started: datetime) -> None:
        """Commit; a transaction that wrote records a token with its COMMIT, in one round trip.

        Raises:
            SegmentRolledBack: it did not commit, or (``error`` a
                ConnectionError) whether it did could not be learned.
        """
        if not self._wrote:
            try:
                conn.commit()
            except psycopg.Error as exc:  # nothing written: whatever happened, a rerun is safe
                raise self._rolled_back(exc) from exc
            return
        token = uuid.uuid4()
        try:
            with conn.pipeline():
                conn.execute(_RECORD_BATCH, (token,))
                conn.execute(_EXPIRE_BATCHES)
                conn.commit()
        except psycopg.Error as exc:
            if _refused_by_server(exc):
                self._abort(conn)
                raise self._rolled_back(exc) from exc
            # The answer is lost. Close the connection so the server finishes
            # that transaction (a COMMIT it has read commits, else it aborts).
            conn.close()
            try:
                committed = self._outcome_of(token, started, exc)
            except ConnectionError as unknown:
                self._attempt = 0
                raise SegmentRolledBack(unknown, retry=False) from exc
            if not committed:
                raise self._rolled_back(exc) from exc
            logger.warning("commit of session %r committed despite %s", self.session_id, exc)

    def _rolled_back(self, error: Exception) -> SegmentRolledBack:
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

    def _outcome_of(self, token: uuid.UUID, started: datetime, error: psycopg.Error) -> bool:
        """Whether the transaction that wrote ``token`` committed; its COMMIT failed with ``error``.

        Runs on a connection of its own and first takes the session's
        advisory lock, so that transaction has ended, on whatever connection
        it ran. Tries again, with backoff, while the server cannot be reached;
        the batch itself is never run again to find out.

        Raises:
            ConnectionError: the outcome could not be learned.
        """
        last: BaseException | str = "no lookup ran"
        for attempt in range(LOOKUP_ATTEMPTS):
            if attempt:
                _lookup_backoff(attempt - 1)
            try:
                with self._backend.lookup_connection() as conn:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, true)", (_LOOKUP_LOCK_TIMEOUT,)
                    )
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
                    row = conn.execute(_LOOKUP, (token, started)).fetchone()
                    conn.rollback()
            except psycopg.OperationalError as exc:  # out of reach, or the lock not free yet
                logger.info("session %r: lookup of a commit failed: %s", self.session_id, exc)
                last = exc
                continue
            except psycopg.Error as exc:
                last = exc
                break
            assert row is not None
            found, recent = row
            if found:
                return True
            if recent:
                return False
            last = f"its token may have expired ({LOOKUP_HORIZON} passed)"
            break
        unknown = ConnectionError(
            f"PostgreSQL session {self.session_id!r}: the outcome of a write is unknown: its"
            f" COMMIT got no answer ({error}) and looking it up failed ({last}). It was not"
            " run again: it took effect once, or not at all"
        )
        unknown.__cause__ = error
        raise unknown

    def _cursor(self) -> psycopg.Connection[Any]:
        if self._failure is not None:
            raise self._failure  # the transaction is lost: do nothing more in it
        if self._conn is None:
            raise RuntimeError("PostgresSession used outside lock()")
        return self._conn

    @contextlib.contextmanager
    def _statements(
        self, *, pipeline: bool = True, write: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """Run statements in the transaction; any error spoils it.

        Several statements are pipelined (one round trip); one needs no
        pipeline. An error after a statement was sent (a database error, or
        a value psycopg cannot encode: values are checked before, but this
        is the guard) marks the transaction lost, so leaving :meth:`lock`
        rolls it back even if the caller catches the error.
        """
        conn = self._cursor()
        self._wrote = self._wrote or write
        try:
            with conn.pipeline() if pipeline else contextlib.nullcontext():
                yield conn
        except Exception as exc:
            self._failure = exc
            raise

    # --- reads ---

    def exists(self) -> bool:
        return self._head is not None

    def read_head(self) -> Head | None:
        head = self._head
        return None if head is None else Head(head.group, _version(head))

    def read_session(self) -> Stored | None:
        head = self._head
        if head is None:
            return None
        return Stored(self._read_session(head), _version(head))

    def _read_session(self, head: _Head) -> Session:
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
        return structure_session(where, data)

    def read_usage(self) -> list[dict[str, Any]]:
        with self._statements(pipeline=False) as conn:
            cursor = conn.execute(
                f"SELECT record::text FROM {USAGE} WHERE session_id = %s ORDER BY seq",
                (self.session_id,),
            )
        return [decode_record(text, f"postgresql {USAGE}") for (text,) in cursor.fetchall()]

    # --- writes ---

    def write_snapshot(
        self, session: Session, *, append_from: int | None, trusted: bool
    ) -> Version:
        """Write the row; with ``append_from``, insert only the messages after it."""
        _check_columns(session)
        head = self._head
        messages = session.messages
        if head is not None and append_from is not None:
            transcript, start = head.transcript, append_from
        else:
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
        with self._statements(pipeline=start == 0 and head is not None, write=True) as conn:
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
        return (transcript, len(messages))

    def write_metadata(self, session: Session) -> None:
        _check_columns(session)
        head = self._head
        if head is None:
            self.write_snapshot(session, append_from=None, trusted=False)
            return
        updated_at = _iso(session.updated_at)
        with self._statements(pipeline=False, write=True) as conn:
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

    def append_usage(self, data: bytes) -> None:
        records = data.decode().split("\n")
        records.pop()  # empty after the final newline
        with self._statements(pipeline=False, write=True) as conn:
            conn.execute(_INSERT_USAGE, {"id": self.session_id, "records": records})
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        with self._statements(pipeline=False, write=True) as conn:
            cursor = conn.execute(f"DELETE FROM {SESSIONS} WHERE id = %s", (self.session_id,))
        self._head = None
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
