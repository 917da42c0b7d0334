"""A watch by ``LISTEN``: the changes writes notify, on a connection of the watch's own.

Notifications reach a connection only while it listens. When the watch's
connection is lost (a server restart, a connection cut), the watch listens
again on a new one, then reads what was written meanwhile from the tables:
the latest revision of each session whose ``updated_at`` is at most a
minute before the loss, and a delete for each session it had told of that
is gone (of the last 10,000 it told of). What that read cannot see is not
told: token-usage changes of the gap, an import whose archive's
``updated_at`` is older, a session deleted and made again up to the
revision told. A change committed while the watch listens again may come
both from that read and as a notification.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import trio
from psycopg import sql

from ..._model import Change
from ..told import ToldRevisions
from .schema import REVISIONS, SESSIONS

__all__ = ["follow_notifications"]

logger = logging.getLogger(__name__)

#: Seconds the listening thread waits for a notification before it looks whether to stop.
_LISTEN_TICK = 0.2
#: Seconds between tries to listen again after a loss: the first wait, the longest.
_RELISTEN_FIRST, _RELISTEN_MOST = 0.1, 5.0
#: How far before the last moment the connection was known to work the tables
#: are read back after a loss: a write's clock may be behind the watch's,
#: and a write may commit a while after it took its time.
_LOOK_BACK = timedelta(seconds=60)
_NO_LIMIT = trio.CapacityLimiter(math.inf)


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
    # The latest revision told of the sessions told of last, so none is
    # told twice after a loss.
    told: ToldRevisions[int] = ToldRevisions()

    def tell(change: Change) -> None:
        sid = change.session_id
        if change.kind == "delete":
            told.forget(sid)
        elif change.revision is not None:
            if (told.get(sid) or 0) >= change.revision:
                return  # told by the read after a loss
            told.tell(sid, change.revision)
        put(change)

    def listen_again(alive: datetime) -> psycopg.Connection[Any] | None:
        """Listen on a new connection and tell what was missed since ``alive``.

        Tried at once, then at growing intervals, until it works or the
        watch stops (None).
        """
        wait = _RELISTEN_FIRST
        while not stop.is_set():
            try:
                again = listen()
                try:
                    missed = _written_since(again, alive - _LOOK_BACK, session_id, set(told))
                except BaseException:
                    again.close()
                    raise
            except psycopg.OperationalError as exc:
                logger.debug("a watch cannot listen again yet: %s", exc)
            else:
                for change in _news(missed, told):
                    tell(change)
                return again
            stop.wait(wait)
            wait = min(_RELISTEN_MOST, wait * 2)
        return None

    def receive() -> None:
        nonlocal conn
        alive = datetime.now(timezone.utc)
        try:
            while not stop.is_set():
                try:
                    for notification in conn.notifies(timeout=_LISTEN_TICK):
                        for sid, kind, revision in orjson.loads(notification.payload):
                            if session_id is None or sid == session_id:
                                tell(Change(sid, kind, revision))
                    alive = datetime.now(timezone.utc)
                except psycopg.OperationalError as exc:
                    logger.warning("a watch lost its connection (%s); listening again", exc)
                    conn.close()
                    again = listen_again(alive)
                    if again is None:
                        return
                    conn = again
        finally:
            conn.close()

    task_status.started()
    try:
        await trio.to_thread.run_sync(receive, abandon_on_cancel=True, limiter=_NO_LIMIT)
    finally:
        stop.set()  # the thread closes its connection within a tick


def _written_since(
    conn: psycopg.Connection[Any], since: datetime, session_id: str | None, told: set[str]
) -> dict[str, tuple[str, int]]:
    """Each session written since ``since`` or in ``told``, if it still is: its latest kind and
    revision (read on the listening connection, once it listens again)."""
    text = (
        f"SELECT s.id, r.kind, s.revision FROM {SESSIONS} s JOIN {REVISIONS} r"
        " ON r.session_id = s.id AND r.revision = s.revision"
        " WHERE (s.updated_order >= %s OR s.id = ANY(%s))"
    )
    args: list[Any] = [since, list(told)]
    if session_id is not None:
        text += " AND s.id = %s"
        args.append(session_id)
    return {row[0]: (row[1], row[2]) for row in conn.execute(text, args)}


def _news(latest: dict[str, tuple[str, int]], told: ToldRevisions[int]) -> list[Change]:
    """What a watch that told ``told`` missed, the tables showing ``latest`` now.

    A session told of and gone was deleted; one at a revision below the one
    told was deleted and made again.
    """
    news = [Change(sid, "delete", None) for sid in told if sid not in latest]
    for sid, (kind, revision) in latest.items():
        last = told.get(sid)
        if last is not None and last > revision:
            news.append(Change(sid, "delete", None))
        if last != revision:
            news.append(Change(sid, kind, revision))
    return news
