"""The retry policy: which errors a batch is tried again for, how often, after what wait."""

from __future__ import annotations

import random
import time

import psycopg

__all__ = [
    "ATTEMPTS",
    "LOOKUP_ATTEMPTS",
    "backoff",
    "lookup_backoff",
    "refused_by_server",
    "retryable",
]

#: Tries of one batch when the connection fails or the transaction must be retried.
ATTEMPTS = 5
_BACKOFF = 0.02  # seconds, doubled each retry, with jitter
#: Tries of the lookup of a batch whose COMMIT got no answer (about 6 s of
#: backoff in all, enough for a server's crash restart); then its callers get
#: a ConnectionError saying the outcome is unknown.
LOOKUP_ATTEMPTS = 10
_LOOKUP_BACKOFF_MAX = 1.0  # seconds


def retryable(error: BaseException) -> bool:
    """A lost or refused connection, a serialization failure, a deadlock, a pool timeout."""
    return isinstance(error, psycopg.OperationalError)


def backoff(attempt: int) -> None:
    time.sleep(_BACKOFF * 2**attempt * (0.5 + random.random()))


def lookup_backoff(attempt: int) -> None:
    time.sleep(min(_LOOKUP_BACKOFF_MAX, 2.5 * _BACKOFF * 2**attempt) * (0.5 + random.random()))


def refused_by_server(error: psycopg.Error) -> bool:
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
