"""One batch's transaction: lock the session, run its statements, commit once or roll back.

A batch holds ``pg_advisory_xact_lock`` on the session id's hash (which also
serializes the creation of a session that has no row yet) and the row's
``SELECT ... FOR UPDATE``, runs its steps, and commits once. A transaction
that wrote records a batch token with its COMMIT (:mod:`.outcome`), so a
COMMIT that got no answer is looked up, never run again on a guess.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors

from ..protocol import SegmentRolledBack
from .outcome import EXPIRE_BATCHES, RECORD_BATCH, outcome_of
from .retry import ATTEMPTS, backoff, refused_by_server, retryable
from .rows import READ_HEAD

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["Transaction", "lock_key"]

logger = logging.getLogger(__name__)

# The lateral condition makes the row's read wait for the advisory lock; the
# transaction's start time dates its token (see LOOKUP_HORIZON).
# Two statements, pipelined (one round trip): under READ COMMITTED each
# statement reads a snapshot taken when it starts, so the row is read after
# the lock is held. In one statement the snapshot would predate the wait, and
# a row another store inserted meanwhile would be missed (its INSERT would
# then fail on the primary key).
_LOCK = "SELECT pg_advisory_xact_lock(%s), now()"
_NOTIFY = "SELECT pg_notify(%s, %s)"


def lock_key(session_id: str) -> int:
    """A signed 64-bit advisory-lock key for a session id (a collision only serializes)."""
    digest = hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Transaction:
    """The transactions of one session's batches, one at a time.

    :meth:`run` opens one and locks the session; :meth:`statements` runs
    statements in it. Any exception inside (a database error, or one a
    caller caught) rolls the whole transaction back: leaving :meth:`run`
    then raises ``SegmentRolledBack``, so the batch drops every result it
    computed (and runs again, up to :data:`~.retry.ATTEMPTS` times, when the
    error is retryable). A COMMIT that got no answer is looked up by its
    token (:func:`~.outcome.outcome_of`), never run again on a guess.
    """

    def __init__(self, backend: PostgresBackend, session_id: str) -> None:
        self.session_id = session_id
        self._backend = backend
        self._key = lock_key(session_id)
        self._conn: psycopg.Connection[Any] | None = None
        self._failure: Exception | None = None
        self._wrote = False  # a statement that writes was sent in this transaction
        self._attempt = 0
        # pg_notify payloads, sent with the COMMIT (in its round trip).
        self._notifications: list[tuple[str, str]] = []
        # Writes whose results nobody reads: sent with the next statements,
        # or with the COMMIT (a round trip fewer for a batch that only writes).
        self._deferred: list[tuple[str, Any]] = []

    @contextlib.contextmanager
    def run(self) -> Iterator[tuple[Any, ...] | None]:
        """Hold the session's lock in a new transaction; yields its row (:data:`~.rows.READ_HEAD`).

        Always waits: row locks are held for one short transaction.
        """
        pool = self._backend.pool
        self._failure = None
        self._wrote = False
        self._notifications = []
        self._deferred = []
        try:
            conn = pool.getconn()
        except psycopg.Error as exc:
            raise self._rolled_back(exc) from exc
        try:
            try:
                started, row = self._begin(conn)
                yield row
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
            pool.putconn(conn)

    def _begin(self, conn: psycopg.Connection[Any]) -> tuple[datetime, tuple[Any, ...] | None]:
        """Lock the session, read its row; the transaction's start time, and the row."""
        with conn.pipeline():
            locked = conn.execute(_LOCK, (self._key,))
            read = conn.execute(READ_HEAD, (self.session_id,))
        lock_row = locked.fetchone()
        assert lock_row is not None
        row = read.fetchone()
        self._conn = conn
        started: datetime = lock_row[1]
        return started, row

    def notify(self, channel: str, payload: str) -> None:
        """Send ``payload`` on ``channel`` with the COMMIT: heard when, and if, it commits."""
        self._notifications.append((channel, payload))

    def _send_notifications(self, conn: psycopg.Connection[Any]) -> None:
        for notification in self._notifications:
            conn.execute(_NOTIFY, notification)

    def _send_deferred(self, conn: psycopg.Connection[Any]) -> None:
        deferred, self._deferred = self._deferred, []
        for query, params in deferred:
            conn.execute(query, params)

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
                with conn.pipeline():
                    self._send_notifications(conn)
                    conn.commit()
            except psycopg.Error as exc:  # nothing written: whatever happened, a rerun is safe
                raise self._rolled_back(exc) from exc
            return
        token = uuid.uuid4()
        commit_sent = False
        try:
            with conn.pipeline():
                # A deferred write the server refuses fails the pipeline here:
                # what follows it is not run, and the COMMIT becomes a rollback.
                self._send_deferred(conn)
                self._send_notifications(conn)
                conn.execute(RECORD_BATCH, (token,))
                conn.execute(EXPIRE_BATCHES)
                commit_sent = True
                conn.commit()
        except Exception as exc:
            if not commit_sent or (isinstance(exc, psycopg.Error) and refused_by_server(exc)):
                # Refused, or failed before the COMMIT went out (a deferred write
                # psycopg could not send: values are checked before, this is the
                # guard): certainly not committed.
                self._abort(conn)
                raise self._rolled_back(exc) from exc
            if not isinstance(exc, psycopg.Error):
                raise
            # The answer is lost. Close the connection so the server finishes
            # that transaction (a COMMIT it has read commits, else it aborts).
            conn.close()
            try:
                committed = outcome_of(
                    self._backend, self.session_id, self._key, token, started, exc
                )
            except ConnectionError as unknown:
                self._attempt = 0
                raise SegmentRolledBack(unknown, retry=False) from exc
            if not committed:
                raise self._rolled_back(exc) from exc
            logger.warning("commit of session %r committed despite %s", self.session_id, exc)

    def _rolled_back(self, error: Exception) -> SegmentRolledBack:
        retry = retryable(error) and self._attempt + 1 < ATTEMPTS
        if retry:
            logger.info("session %r: retrying after %s", self.session_id, error)
            if not isinstance(error, psycopg.errors.TransactionRollback):
                # A lost connection: the pool's idle ones may be lost too
                # (a server restart); replace those before the next try.
                with contextlib.suppress(psycopg.Error):
                    self._backend.pool.check()
            backoff(self._attempt)
            self._attempt += 1
        else:
            self._attempt = 0
        return SegmentRolledBack(error, retry=retry)

    def _cursor(self) -> psycopg.Connection[Any]:
        if self._failure is not None:
            raise self._failure  # the transaction is lost: do nothing more in it
        if self._conn is None:
            raise RuntimeError("PostgresSession used outside lock()")
        return self._conn

    @contextlib.contextmanager
    def statements(
        self, *, pipeline: bool = True, write: bool = False
    ) -> Iterator[psycopg.Connection[Any]]:
        """Run statements in the transaction; any error spoils it.

        Several statements are pipelined (one round trip); one needs no
        pipeline. An error after a statement was sent (a database error, or
        a value psycopg cannot encode: values are checked before, but this
        is the guard) marks the transaction lost, so leaving :meth:`run`
        rolls it back even if the caller catches the error.
        """
        conn = self._cursor()
        self._wrote = self._wrote or write
        try:
            with conn.pipeline() if pipeline or self._deferred else contextlib.nullcontext():
                self._send_deferred(conn)  # first: these statements may read what they wrote
                yield conn
        except Exception as exc:
            self._failure = exc
            raise

    def defer(self, query: str, params: Any) -> None:
        """Run a writing statement whose result nobody reads, in this transaction's order.

        It is sent with the transaction's next statements or with its COMMIT,
        in that round trip: a batch that only writes makes two round trips
        (the lock and the row, then its writes and the COMMIT), not three. A
        refusal then fails the COMMIT, which rolls the whole transaction back,
        as a failed statement does.
        """
        self._cursor()  # the transaction must be usable
        self._wrote = True
        self._deferred.append((query, params))


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.rollback()
