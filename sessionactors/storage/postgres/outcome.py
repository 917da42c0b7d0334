"""Batch tokens: what a COMMIT that got no answer did, learned without running it again.

A transaction that wrote also inserts a fresh token, in the same COMMIT
round trip. When the answer to the COMMIT is lost, a connection of its own
waits for the session's advisory lock (so that transaction has ended,
however) and looks the token up, again with backoff while the server is out
of reach; the batch runs again only when its token is certainly absent.
Transaction ids are not used for this: after a crash the server hands out
again those whose commit never reached the WAL.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg

from .retry import LOOKUP_ATTEMPTS, lookup_backoff
from .schema import BATCHES

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = [
    "EXPIRE_BATCHES",
    "LOOKUP_HORIZON",
    "RECORD_BATCH",
    "TOKEN_RETENTION",
    "outcome_of",
]

logger = logging.getLogger(__name__)

#: How long a writing transaction's token is kept. A lookup that finds no
#: token says "not committed" only while the transaction began less than
#: LOOKUP_HORIZON ago (by the server's clock, as the expiry is): any later,
#: its token might have expired, and the outcome is reported unknown.
TOKEN_RETENTION = "10 minutes"
LOOKUP_HORIZON = "5 minutes"
_LOOKUP_LOCK_TIMEOUT = "5s"  # waiting for the transaction looked up to end

RECORD_BATCH = f"INSERT INTO {BATCHES} (token) VALUES (%s)"
# A few expired tokens go with each writing transaction: the table holds
# about TOKEN_RETENTION's worth. SKIP LOCKED: never wait on another batch.
EXPIRE_BATCHES = f"""
DELETE FROM {BATCHES} WHERE token IN (
    SELECT token FROM {BATCHES} WHERE written < now() - interval '{TOKEN_RETENTION}'
    ORDER BY written LIMIT 16 FOR UPDATE SKIP LOCKED
)
"""
_LOOKUP = f"""
SELECT EXISTS (SELECT FROM {BATCHES} WHERE token = %s),
    clock_timestamp() - %s::timestamptz < interval '{LOOKUP_HORIZON}'
"""


def outcome_of(
    backend: PostgresBackend,
    session_id: str,
    key: int,
    token: uuid.UUID,
    started: datetime,
    error: psycopg.Error,
) -> bool:
    """Whether the transaction that wrote ``token`` committed; its COMMIT failed with ``error``.

    Runs on a connection of its own and first takes the session's advisory
    lock (``key``), so that transaction has ended, on whatever connection it
    ran. Tries again, with backoff, while the server cannot be reached; the
    batch itself is never run again to find out.

    Raises:
        ConnectionError: the outcome could not be learned.
    """
    last: BaseException | str = "no lookup ran"
    for attempt in range(LOOKUP_ATTEMPTS):
        if attempt:
            lookup_backoff(attempt - 1)
        try:
            with backend.lookup_connection() as conn:
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (_LOOKUP_LOCK_TIMEOUT,))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                row = conn.execute(_LOOKUP, (token, started)).fetchone()
                conn.rollback()
        except psycopg.OperationalError as exc:  # out of reach, or the lock not free yet
            logger.info("session %r: lookup of a commit failed: %s", session_id, exc)
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
        f"PostgreSQL session {session_id!r}: the outcome of a write is unknown: its"
        f" COMMIT got no answer ({error}) and looking it up failed ({last}). It was not"
        " run again: it took effect once, or not at all"
    )
    unknown.__cause__ = error
    raise unknown
