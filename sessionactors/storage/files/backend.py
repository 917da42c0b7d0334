"""The file backend: a directory per session under a root, its listing index and its watch."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from ..._errors import CorruptSessionError, InvalidSessionIdError
from ..._listing import ListQuery
from ..._model import Change, SessionSummary
from .feed import follow_index
from .index import INDEX_DIR, ListingIndex
from .session import SessionFiles

__all__ = ["FileBackend", "list_summaries", "read_summary", "session_ids"]

logger = logging.getLogger(__name__)


def read_summary(root: Path, session_id: str) -> SessionSummary | None:
    """The summary of one session from its latest revision, or None if it has none."""
    return SessionFiles(root, session_id, False).summary()


def session_ids(root: Path) -> list[str]:
    """The names of the root's directories that may be sessions (not links, not the index's)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return [
        entry.name
        for entry in entries
        if entry.name != INDEX_DIR and entry.is_dir(follow_symlinks=False)
    ]


def list_summaries(root: Path) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """Every readable session's summary, newest first, and the errors of the others.

    Read from every session's files, without the index. A session that
    cannot be read (a file or directory the process may not read, a slot
    that is a directory) is one of the errors, as a
    :class:`CorruptSessionError` naming what failed: one such session never
    hides the others.
    """
    summaries: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    for session_id in session_ids(root):
        try:
            summary = read_summary(root, session_id)
        except CorruptSessionError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            where = exc.filename if isinstance(exc.filename, str) else str(root / session_id)
            errors.append(CorruptSessionError(where, f"cannot be read: {exc.strerror or exc}"))
            continue
        if summary is not None:
            summaries.append(summary)
    return ListQuery().page(summaries), errors


@attrs.define
class FileBackend:
    """The default backend: a directory per session under ``root``."""

    root: Path
    fsync: bool
    index: ListingIndex = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        root = self.root
        self.index = ListingIndex(
            root,
            lambda session_id: SessionFiles(root, session_id, False).listing_entry(),
            lambda: session_ids(root),
        )

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        await trio.to_thread.run_sync(self._open, limiter=limiter)

    def _open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.index.close)

    def session(self, session_id: str) -> SessionFiles:
        if session_id == INDEX_DIR:
            raise InvalidSessionIdError(
                f"session id {session_id!r} is the file store's own (its listing index)"
            )
        return SessionFiles(self.root, session_id, self.fsync, index=self.index)

    def list_summaries(
        self, query: ListQuery
    ) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        try:
            return self.index.page(query)
        except (sqlite3.Error, OSError) as exc:
            # No index to be had (a root this process may only read, say):
            # every session's files, as they are.
            logger.warning("listing %s without its index: %s", self.root, exc)
            summaries, errors = list_summaries(self.root)
            return query.page(summaries), errors

    async def follow(
        self,
        session_id: str | None,
        put: Callable[[Change], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand ``put`` the root's changes from when it starts (see :func:`.feed.follow_index`)."""
        await follow_index(self.index, session_id, put, task_status=task_status)
