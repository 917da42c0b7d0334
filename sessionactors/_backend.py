"""The storage boundary: what an actor's batch needs from a backend, and the file backend.

A backend has two levels. :class:`Backend` is the store's: it opens and
closes, hands each actor the storage of its session, and lists summaries.
:class:`SessionStorage` is the actor's: every method of its batch code
(``_Segment`` and ``run_batch`` in ``_actor.py``) goes through it, inside one
:meth:`SessionStorage.lock` hold. ``SessionFiles`` satisfies it as it is; the
PostgreSQL backend (``_postgres.py``) implements it over one transaction.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ._errors import CorruptSessionError, LockBusy
from ._files import IoCounts, SessionFiles, list_summaries
from ._model import Session, SessionSummary
from ._steps import Head, Stored, Version

__all__ = ["Backend", "FileBackend", "LockBusy", "SegmentRolledBack", "SessionStorage"]


class SegmentRolledBack(Exception):
    """Raised on leaving :meth:`SessionStorage.lock`: the batch's transaction did not commit.

    A transactional backend raises it when what was done under the hold did
    not take effect, or may not have (a COMMIT whose outcome could not be
    learned: ``error`` then says so), so the batch code drops every result it
    computed under that hold: no caller is told of a write that is not there.
    With ``retry`` (only when nothing took effect) the batch runs the same ops
    again (the backend has already waited its backoff); without, each op
    fails with ``error``, a public exception (never this one).
    """

    def __init__(self, error: Exception, *, retry: bool) -> None:
        super().__init__(str(error))
        #: What each op of the batch fails with when it is not retried.
        self.error = error
        self.retry = retry


class SessionStorage(Protocol):
    """One session's storage, used by that session's actor only.

    It executes the planner's steps (``_steps.py``) durably and reports what
    it did; it decides nothing about merging or which messages are new.
    Methods other than :meth:`lock` are called while it is held: it
    serializes the session's writers across stores, processes and hosts (the
    file backend's ``flock``, the PostgreSQL backend's transaction and row
    lock).
    """

    session_id: str
    counts: IoCounts

    def lock(self, *, create: bool, wait: bool = True) -> AbstractContextManager[bool]:
        """Hold the session exclusively; yields whether it may exist.

        Without ``create``, yields False when there certainly is no session.
        Without ``wait``, raises :class:`LockBusy` rather than wait for a
        holder elsewhere (a backend may wait anyway). Leaving it may raise
        :class:`SegmentRolledBack`.
        """
        ...

    def exists(self) -> bool: ...

    def read_head(self) -> Head | None: ...

    def read_session(self) -> Stored | None: ...

    def read_usage(self) -> list[dict[str, Any]]: ...

    def write_snapshot(
        self, session: Session, *, append_from: int | None, trusted: bool
    ) -> Version | None:
        """See :class:`~._steps.WriteSnapshot`; the messages are checked already."""
        ...

    def write_metadata(self, session: Session) -> None: ...

    def append_usage(self, data: bytes) -> None:
        """Append whole token-usage lines (compact JSON, each ending in a newline)."""
        ...

    def delete(self) -> bool: ...


class Backend(Protocol):
    """What a store persists into; made by ``open_store``, one per store."""

    async def aopen(self, limiter: trio.CapacityLimiter) -> None: ...

    async def aclose(self) -> None: ...

    def session(self, session_id: str) -> SessionStorage: ...

    def list_summaries(self) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        """Every readable session's summary, newest first, and the errors of the others.

        Blocks: called in a worker thread.
        """
        ...


@attrs.define
class FileBackend:
    """The default backend: a directory per session under ``root`` (``_files.py``)."""

    root: Path
    fsync: bool

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        root = self.root
        await trio.to_thread.run_sync(
            lambda: root.mkdir(parents=True, exist_ok=True), limiter=limiter
        )

    async def aclose(self) -> None:
        pass

    def session(self, session_id: str) -> SessionFiles:
        return SessionFiles(self.root, session_id, self.fsync)

    def list_summaries(self) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        return list_summaries(self.root)
