"""Pages of summaries by keyset, and a watch by ``LISTEN``: what a UI reads of the database.

A write's changes are sent with ``pg_notify`` inside the write's own
transaction, pipelined with its COMMIT (:func:`notification`), so they
reach every listening connection when, and only if, it commits, in commit
order. A watch holds one connection of
its own, listening, in a thread.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import trio
from psycopg import sql

from ..._errors import CorruptSessionError
from ..._listing import ListQuery
from ..._model import Change, SessionSummary
from .rows import BIGINT_MAX, decode_summaries
from .schema import SESSIONS

__all__ = ["channel_for", "follow_notifications", "notification", "page"]

_COLUMNS = (
    "id, title, pinned, title_version, metadata_version, created_at, updated_at,"
    " message_count, revision, forked_from"
)
#: Rows read at a time while a title filter (applied here: PostgreSQL has no casefold) passes few.
_CHUNK = 500
#: Seconds the listening thread waits for a notification before it looks whether to stop.
_LISTEN_TICK = 0.2
_NO_LIMIT = trio.CapacityLimiter(math.inf)


def channel_for(schema: str) -> str:
    """The notification channel of the tables in ``schema`` (an identifier of at most 63 bytes)."""
    return "sessionactors_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def page(
    conn: psycopg.Connection[Any], query: ListQuery
) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """The page ``query`` asks for, by keyset on the ``_page`` indexes."""
    found: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    before = query.before
    while True:
        where = []
        args: list[Any] = []
        if query.pinned is not None:
            where.append("pinned = %s")
            args.append(query.pinned)
        if before is not None:
            where.append('(updated_order, id COLLATE "C") < (%s, %s)')
            args.extend(before)
        wanted = query.limit if query.title_fold is None and query.limit is not None else None
        # LIMIT takes a bigint: a larger limit asks for every row, as the largest does.
        chunk = _CHUNK if wanted is None else min(wanted, BIGINT_MAX)
        text = f"SELECT {_COLUMNS}, updated_order FROM {SESSIONS}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += ' ORDER BY updated_order DESC, id COLLATE "C" DESC LIMIT %s'
        rows = conn.execute(text, [*args, chunk]).fetchall()
        summaries, bad = decode_summaries([row[:-1] for row in rows])
        errors.extend(bad)
        found.extend(summary for summary in summaries if query.admits(summary))
        if query.limit is not None and len(found) >= query.limit:
            return found[: query.limit], errors
        if len(rows) < chunk:
            return found, errors
        before = (rows[-1][-1], rows[-1][0])


def notification(changes: list[Change]) -> str:
    """The payload telling watchers of ``changes`` (sent with the write's COMMIT)."""
    return orjson.dumps([[c.session_id, c.kind, c.revision] for c in changes]).decode()


async def follow_notifications(
    connect: Callable[[], psycopg.Connection[Any]],
    channel: str,
    session_id: str | None,
    put: Callable[[Change], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand ``put`` every change notified on ``channel`` from the ``LISTEN`` on, until cancelled."""

    def listen() -> psycopg.Connection[Any]:
        conn = connect()
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    conn = await trio.to_thread.run_sync(listen, limiter=_NO_LIMIT)
    stop = threading.Event()

    def receive() -> None:
        try:
            while not stop.is_set():
                for notification in conn.notifies(timeout=_LISTEN_TICK):
                    for sid, kind, revision in orjson.loads(notification.payload):
                        if session_id is None or sid == session_id:
                            put(Change(sid, kind, revision))
        finally:
            conn.close()

    task_status.started()
    try:
        await trio.to_thread.run_sync(receive, abandon_on_cancel=True, limiter=_NO_LIMIT)
    finally:
        stop.set()  # the thread closes its connection within a tick
