"""The backend of a ``postgresql://`` root: the pool, its connections, the listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.conninfo
import trio
from psycopg_pool import ConnectionPool

from ..._errors import CorruptSessionError
from ..._listing import ListQuery
from ..._model import Change, SessionSummary
from ..._util import without_password
from .feed import follow_notifications
from .listing import channel_for, page
from .retry import ATTEMPTS, backoff
from .schema import migrate
from .session import PostgresSession

__all__ = ["CONNECTION_WAIT", "LOOKUP_APPLICATION_NAME", "PostgresBackend"]

#: The lookup's own connection is named so (unless the URL names its connections).
LOOKUP_APPLICATION_NAME = "sessionactors-lookup"
_WATCH_NAME = "sessionactors-watch"
#: Seconds (libpq's connect_timeout) a lookup's or a watch's connection of its
#: own may take to connect, unless the URL sets it.
_CONNECT_TIMEOUT = 5
#: The opening connection's, unless the URL sets one: a server that does not
#: answer (a dropped SYN) fails the opening, not waits as long as the OS does.
_FIRST_CONNECT_TIMEOUT = 10
#: How long a batch waits for one of the pool's connections (when all are in
#: use, or lost and being replaced) before that try fails with PoolTimeout.
CONNECTION_WAIT = 10.0  # seconds


class PostgresBackend:
    """Sessions in a PostgreSQL database; a store's backend for a ``postgresql://`` root."""

    def __init__(self, url: str, *, fsync: bool, max_connections: int) -> None:
        self.url = url
        self.fsync = fsync
        self.max_connections = max_connections
        self.display_url = without_password(url)
        self._pool: ConnectionPool | None = None
        #: The channel the writes of these tables notify (named by their schema).
        self.channel = channel_for("")

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
        """Connect and create or migrate the schema (blocks).

        The schema is made on one connection of its own, first: a server that
        cannot be reached, a login refused or a database missing raises
        psycopg's own error at once (``psycopg.OperationalError`` naming the
        cause), not a pool's timeout half a minute later.
        """
        with psycopg.connect(
            self.url, **self._options("sessionactors", _FIRST_CONNECT_TIMEOUT)
        ) as conn:
            self._configure(conn)
            migrate(conn)
            row = conn.execute("SELECT current_schema()").fetchone()
            conn.commit()
        self.channel = channel_for("" if row is None else str(row[0]))
        pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.max_connections,
            kwargs=self._options("sessionactors"),
            configure=self._configure,
            timeout=CONNECTION_WAIT,
            open=False,
            name="sessionactors",
        )
        try:
            pool.open(wait=True, timeout=30.0)
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
        # A listing reads timestamps back as datetimes: in UTC, every instant
        # the store takes is one Python holds (at another offset, the year
        # 9999's last hours would be year 10000's).
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()

    def session(self, session_id: str) -> PostgresSession:
        return PostgresSession(self, session_id)

    def _options(self, name: str, connect_timeout: int | None = None) -> dict[str, Any]:
        """A connection's keyword arguments: ``name`` and ``connect_timeout``
        (seconds, libpq's), each unless the URL sets its own."""
        given = psycopg.conninfo.conninfo_to_dict(self.url)
        options: dict[str, Any] = {"autocommit": False}
        if "application_name" not in given:
            options["application_name"] = name
        if connect_timeout is not None and "connect_timeout" not in given:
            options["connect_timeout"] = connect_timeout
        return options

    def lookup_connection(self) -> psycopg.Connection[Any]:
        """A new connection outside the pool (whose connections may all be lost), for lookups."""
        conn = psycopg.connect(self.url, **self._options(LOOKUP_APPLICATION_NAME, _CONNECT_TIMEOUT))
        # Under REPEATABLE READ the lookup's snapshot would predate its wait
        # for the lock, and a commit made meanwhile would look absent.
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

    def list_summaries(
        self, query: ListQuery
    ) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        for attempt in range(ATTEMPTS):
            try:
                with self.pool.connection() as conn:
                    return page(conn, query)
            except psycopg.OperationalError:
                if attempt + 1 == ATTEMPTS:
                    raise
                backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def follow(
        self,
        session_id: str | None,
        put: Callable[[Change], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand ``put`` the database's changes by ``LISTEN``, on a connection of the watch's own."""

        # A bounded connect: the store's close waits for its watches' feeds.
        options = {**self._options(_WATCH_NAME, _CONNECT_TIMEOUT), "autocommit": True}

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(self.url, **options)

        await follow_notifications(connect, self.channel, session_id, put, task_status=task_status)
