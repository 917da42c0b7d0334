"""The storage boundary: what a store needs of a backend, and an actor of its session's storage.

A backend has two levels. :class:`Backend` is the store's: it opens and
closes, hands each actor the storage of its session, and lists summaries.
:class:`SessionStorage` is the actor's: it executes the planner's steps
(``_plan.py``, carried by ``_batch.py``) inside one :meth:`SessionStorage.lock`
hold: files (``storage/files/``), one PostgreSQL transaction
(``storage/postgres/``), or this process's memory (``storage/memory.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import attrs
import trio

from .._errors import CorruptSessionError, LockBusy
from .._listing import ListQuery
from .._merge import Authoritative
from .._model import Change, Revision, Session, SessionSummary

__all__ = [
    "Backend",
    "Commit",
    "Head",
    "IoCounts",
    "LockBusy",
    "SegmentRolledBack",
    "SessionStorage",
    "Stored",
    "Version",
    "published",
]


#: Names a persisted transcript on its storage (the file store: its journal,
#: counted size and message count); equal versions, the same transcript.
Version = tuple[Any, ...]


@attrs.frozen
class Head:
    """What a storage holds of a session's latest revision: all but the transcript and free JSON."""

    group: Authoritative
    #: None: a transcript that cannot be appended to (an older format).
    version: Version | None
    #: The latest revision (a session of a format before revisions: 1).
    revision: int
    created_at: datetime
    forked_from: str | None
    forked_from_revision: int | None

    @classmethod
    def of(cls, session: Session, version: Version | None) -> Head:
        return cls(
            Authoritative.of(session),
            version,
            session.revision,
            session.created_at,
            session.forked_from,
            session.forked_from_revision,
        )


@attrs.frozen
class Commit:
    """What a write is, beside the session it writes (whose ``revision`` is set).

    ``keep_from``: the oldest revision the session's history must keep; a
    storage may drop the ones before it (it need not).
    """

    kind: str
    keep_from: int


@attrs.frozen
class Stored:
    """A whole persisted session and the version of its transcript."""

    session: Session
    version: Version | None


@attrs.define
class IoCounts:
    """What one batch's storage work did, added up in the store's statistics."""

    snapshots_written: int = 0
    journal_appends: int = 0
    journal_rewrites: int = 0
    append_batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0

    def __add__(self, other: IoCounts) -> IoCounts:
        pairs = zip(attrs.astuple(self), attrs.astuple(other), strict=True)
        return IoCounts(*(mine + theirs for mine, theirs in pairs))


def published(
    session_id: str, summary: SessionSummary | None, kind: str | None, *, usage: bool
) -> list[Change]:
    """The changes a watcher is handed for one :meth:`SessionStorage.publish`, in order."""
    changes: list[Change] = []
    if kind == "delete":
        return [Change(session_id, "delete", None)]
    if kind is not None and summary is not None:
        changes.append(Change(session_id, kind, summary.revision))
    if usage:
        changes.append(Change(session_id, "usage", None))
    return changes


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

    def read_session(self, tail: int | None = None) -> Stored | None:
        """The latest revision; with ``tail``, holding only its last ``tail`` messages.

        Only those messages are decoded (a reader of a conversation's latest
        turns pays for them, not for the transcript); the count is still
        checked against the revision's, and the version names the whole
        transcript.
        """
        ...

    def read_revision(self, revision: int) -> Stored | None:
        """The session as revision ``revision`` left it; None when it is not kept."""
        ...

    def read_history(self, oldest: int) -> list[Revision]:
        """The kept revisions from ``oldest`` on, newest first."""
        ...

    def read_source(
        self, source_id: str, revision: int | None
    ) -> tuple[Head, Stored | None] | None:
        """Another session, for a fork: its head and its ``revision`` (None: the latest).

        None when there is no such session; the Stored is None when that
        revision is not kept. The source is held for the read only.
        """
        ...

    def read_usage(self) -> list[dict[str, Any]]: ...

    def write_snapshot(
        self,
        session: Session,
        commit: Commit,
        *,
        append_from: int | None,
        trusted: bool,
        transcript_of: Version | None = None,
        replaced: tuple[int, ...] = (),
    ) -> Version | None:
        """See :class:`~._steps.WriteSnapshot`; the messages are checked already."""
        ...

    def write_metadata(self, session: Session, commit: Commit) -> None: ...

    def write_fork(
        self, session: Session, source_id: str, transcript_of: Version | None
    ) -> Version | None:
        """Make this session, a fork of ``source_id``'s transcript at ``transcript_of``.

        ``session.messages`` equal that transcript: a storage may reference or
        copy it where it is rather than write the messages again. Raises
        :class:`~.._errors.RevisionNotFoundError` when the source no longer
        keeps it.
        """
        ...

    def write_import(self, session: Session, commit: Commit, usage: bytes) -> Version | None:
        """Make this session (revision 1, checked) with the token-usage lines ``usage``.

        Both take effect or neither, whatever crashes: no reader sees the
        session without its records, nor the records where there is no session.
        """
        ...

    def append_usage(self, data: bytes) -> None:
        """Append whole token-usage lines (compact JSON, each ending in a newline)."""
        ...

    def delete(self) -> bool: ...

    def publish(self, summary: SessionSummary | None, kind: str | None, *, usage: bool) -> None:
        """Tell listings and watchers what this hold changed (see :class:`~.._steps.Publish`).

        The last step of a hold. ``summary`` None with ``kind`` ``"delete"``:
        the session was deleted; ``kind`` None: no revision was written.
        """
        ...


class Backend(Protocol):
    """What a store persists into; made by ``open_store``, one per store."""

    async def aopen(self, limiter: trio.CapacityLimiter) -> None: ...

    async def aclose(self) -> None: ...

    def session(self, session_id: str) -> SessionStorage: ...

    def list_summaries(
        self, query: ListQuery
    ) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        """The page ``query`` asks for, each summary as the session is now; the errors of others.

        Blocks: called in a worker thread.
        """
        ...

    async def follow(
        self,
        session_id: str | None,
        put: Callable[[Change], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand ``put`` each change (of ``session_id``, or every session) until cancelled.

        Every change whose write returns after ``task_status.started()`` is
        handed over, or a later one of the same session: for one session in
        commit order, each revision at most once. ``put`` may be called from
        any thread and never blocks.
        """
        ...
