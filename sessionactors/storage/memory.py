"""Sessions in this process's memory: ``open_store("memory://")`` or ``"memory://name"``.

Nothing is durable: it is for tests and for programs that want the store's
semantics (serialized writes, the merge rule, batching) without a disk. A
session is kept as the bytes a save would write (its JSON, encoded once), so
what is loaded is a fresh object equal to what was saved, exactly as from
the file store, never a reference to the caller's object.

``memory://`` is private to the store that opens it and goes with it;
``memory://name`` is shared by every store of this process naming it and
lives as long as the process.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson
import trio

from .._errors import CorruptSessionError, LockBusy, RevisionNotFoundError
from .._listing import ListQuery
from .._merge import Authoritative
from .._model import (
    Change,
    Revision,
    Session,
    SessionSummary,
    converter,
    decode_record,
    encode_message,
    structure_session,
    summary_of,
)
from .._util import last
from .protocol import Commit, Head, IoCounts, Stored, Version, published

__all__ = ["SCHEME", "MemoryBackend", "MemorySession", "MemorySpace"]

SCHEME = "memory://"


@attrs.frozen
class _Stored:
    """One session as saved: its fields and each message as encoded JSON, and its summary.

    Messages are kept one encoded line each, as a journal holds them: a save
    that appends encodes only its new messages, and the ones before are
    kept as they were written (never re-encoded from objects changed since).
    """

    head: bytes  # every field but the messages, as JSON
    messages: tuple[bytes, ...]
    summary: SessionSummary
    #: Names this transcript: unique in the process, never handed out twice.
    transcript: int
    kind: str
    #: The fields of the head a planner asks for, kept decoded.
    created_at: Any
    forked_from_revision: int | None

    @property
    def group(self) -> Authoritative:
        summary = self.summary
        return Authoritative(
            title=summary.title,
            title_version=summary.title_version,
            pinned=summary.pinned,
            metadata_version=summary.metadata_version,
        )

    @property
    def version(self) -> Version:
        return (self.transcript, len(self.messages))

    def as_head(self) -> Head:
        summary = self.summary
        return Head(
            self.group,
            self.version,
            summary.revision,
            self.created_at,
            summary.forked_from,
            self.forked_from_revision,
        )

    def as_revision(self) -> Revision:
        summary = self.summary
        return Revision(
            revision=summary.revision,
            kind=self.kind,
            updated_at=summary.updated_at,
            message_count=summary.message_count,
            title=summary.title,
            pinned=summary.pinned,
            title_version=summary.title_version,
            metadata_version=summary.metadata_version,
        )

    def decode(self, session_id: str, tail: int | None = None) -> Stored:
        """The session as new objects (with ``tail``: its last ``tail`` messages only)."""
        where = f"{SCHEME} session {session_id!r}"
        data = orjson.loads(self.head)
        data["messages"] = [orjson.loads(line) for line in last(self.messages, tail)]
        return Stored(structure_session(where, data), self.version)


#: One session's kept revisions, oldest first; each write replaces it whole,
#: so a reader holding one never sees it change.
_History = tuple[_Stored, ...]


#: Transcript names: a session deleted and made again never gets an old one.
_transcripts = itertools.count(1)


def _store(session: Session, messages: tuple[bytes, ...], transcript: int, kind: str) -> _Stored:
    summary = summary_of(session, message_count=len(messages))
    fields = converter.unstructure(attrs.evolve(session, messages=[]), Session)
    del fields["messages"]
    return _Stored(
        orjson.dumps(fields),
        messages,
        summary,
        transcript,
        kind,
        session.created_at,
        session.forked_from_revision,
    )


@attrs.define(eq=False)
class _SessionLock:
    """A session's lock and how many hold or wait for it (it is dropped at none)."""

    lock: threading.Lock = attrs.field(factory=threading.Lock)
    users: int = 0


class MemorySpace:
    """The sessions of one ``memory://`` name, and the locks that serialize their writers.

    Writers are worker threads of any store sharing the space: each session
    has a lock, made when first wanted and dropped when nobody holds or waits
    for it, so nothing here grows with the sessions ever locked.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the dicts, held for no I/O
        self._locks: dict[str, _SessionLock] = {}
        self.sessions: dict[str, _History] = {}
        self.usage: dict[str, list[bytes]] = {}
        # The watches of this space: each is handed every change (never blocking).
        self.watchers: set[Callable[[Change], None]] = set()

    def announce(self, changes: list[Change]) -> None:
        with self._mutex:
            watchers = list(self.watchers)
        for put in watchers:
            for change in changes:
                put(change)

    @contextlib.contextmanager
    def locked(self, session_id: str, *, wait: bool) -> Iterator[None]:
        with self._mutex:
            entry = self._locks.setdefault(session_id, _SessionLock())
            entry.users += 1
        try:
            if not entry.lock.acquire(blocking=wait):
                raise LockBusy(session_id)
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            with self._mutex:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[session_id]

    @contextlib.contextmanager
    def watching(self, put: Callable[[Change], None]) -> Iterator[None]:
        with self._mutex:
            self.watchers.add(put)
        try:
            yield
        finally:
            with self._mutex:
                self.watchers.discard(put)

    def summaries(self) -> list[SessionSummary]:
        with self._mutex:
            return [history[-1].summary for history in self.sessions.values()]

    # Changes go through the mutex too, so a listing never sees a dict change
    # size under it; a session's writers are serialized by its lock already.

    def history(self, session_id: str) -> _History:
        with self._mutex:
            return self.sessions.get(session_id, ())

    def put(self, session_id: str, stored: _Stored, keep_from: int) -> None:
        """Add ``stored`` as the session's latest revision, dropping those before ``keep_from``."""
        with self._mutex:
            kept = [
                old
                for old in self.sessions.get(session_id, ())
                if old.summary.revision >= keep_from
            ]
            self.sessions[session_id] = (*kept, stored)

    def remove(self, session_id: str) -> bool:
        with self._mutex:
            self.usage.pop(session_id, None)
            return self.sessions.pop(session_id, None) is not None


_named: dict[str, MemorySpace] = {}
_named_mutex = threading.Lock()


def space_for(url: str) -> MemorySpace:
    """The space ``url`` names: a new private one for a bare ``memory://``."""
    name = url[len(SCHEME) :]
    if not name:
        return MemorySpace()
    with _named_mutex:
        return _named.setdefault(name, MemorySpace())


class MemoryBackend:
    """A store's backend for a ``memory://`` root."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.space = space_for(url)

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def session(self, session_id: str) -> MemorySession:
        return MemorySession(self.space, session_id)

    def list_summaries(
        self, query: ListQuery
    ) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        return query.page(self.space.summaries()), []

    async def follow(
        self,
        session_id: str | None,
        put: Callable[[Change], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        space = self.space
        with space.watching(put):
            task_status.started()
            await trio.sleep_forever()


class MemorySession:
    """One session of a :class:`MemorySpace`; a ``SessionStorage`` for its actor."""

    def __init__(self, space: MemorySpace, session_id: str) -> None:
        self.session_id = session_id
        self.counts = IoCounts()
        self._space = space

    @contextlib.contextmanager
    def lock(self, *, create: bool, wait: bool = True) -> Iterator[bool]:
        with self._space.locked(self.session_id, wait=wait):
            yield create or self.exists()

    def _stored(self) -> _Stored | None:
        history = self._space.history(self.session_id)
        return history[-1] if history else None

    def exists(self) -> bool:
        return self._stored() is not None

    def read_head(self) -> Head | None:
        stored = self._stored()
        return None if stored is None else stored.as_head()

    def read_session(self, tail: int | None = None) -> Stored | None:
        stored = self._stored()
        return None if stored is None else stored.decode(self.session_id, tail)

    def read_revision(self, revision: int) -> Stored | None:
        for stored in self._space.history(self.session_id):
            if stored.summary.revision == revision:
                return stored.decode(self.session_id)
        return None

    def read_history(self, oldest: int) -> list[Revision]:
        history = self._space.history(self.session_id)
        return [s.as_revision() for s in reversed(history) if s.summary.revision >= oldest]

    def read_source(
        self, source_id: str, revision: int | None
    ) -> tuple[Head, Stored | None] | None:
        # Its history is replaced whole by each write: read without its lock.
        history = self._space.history(source_id)
        if not history:
            return None
        wanted = history[-1].summary.revision if revision is None else revision
        for stored in history:
            if stored.summary.revision == wanted:
                return history[-1].as_head(), stored.decode(source_id)
        return history[-1].as_head(), None

    def read_usage(self) -> list[dict[str, Any]]:
        lines = self._space.usage.get(self.session_id, [])
        where = f"{SCHEME} token usage of {self.session_id!r}"
        return [decode_record(line, where) for line in lines]

    def write_snapshot(
        self,
        session: Session,
        commit: Commit,
        *,
        append_from: int | None,
        trusted: bool,
        transcript_of: Version | None = None,
        replaced: tuple[int, ...] = (),
    ) -> Version:
        previous = self._stored()
        messages = session.messages
        if transcript_of is not None:
            lines, transcript = self._transcript(self.session_id, transcript_of)
        elif append_from is not None and previous is not None:
            new = tuple(encode_message(m) for m in messages[append_from:])
            lines, transcript = previous.messages + new, previous.transcript
            if new and self._continued(previous):
                # A rewind's transcript that a kept revision goes on beyond:
                # the same version would name two transcripts.
                transcript = next(_transcripts)
            if replaced:  # the transcript's other lines are shared by older revisions
                changed = list(lines)
                for position in replaced:
                    changed[position] = encode_message(messages[position])
                lines, transcript = tuple(changed), next(_transcripts)
            self.counts.journal_appends += 1 if new or replaced else 0
        else:
            lines, transcript = tuple(encode_message(m) for m in messages), next(_transcripts)
            self.counts.journal_rewrites += 1
        return self._put(_store(session, lines, transcript, commit.kind), commit.keep_from)

    def _continued(self, stored: _Stored) -> bool:
        """Whether a kept revision holds more of ``stored``'s transcript than it does."""
        count = len(stored.messages)
        return any(
            old.transcript == stored.transcript and len(old.messages) > count
            for old in self._space.history(self.session_id)
        )

    def _transcript(self, session_id: str, version: Version) -> tuple[tuple[bytes, ...], int]:
        """The lines of ``session_id``'s transcript at ``version``, shared, not copied."""
        for stored in self._space.history(session_id):
            if stored.version == version:
                return stored.messages, stored.transcript
        raise RevisionNotFoundError(session_id, 0, "its transcript is no longer kept")

    def write_metadata(self, session: Session, commit: Commit) -> None:
        found = self._stored()
        assert found is not None  # the planner read it under this lock
        self._put(_store(session, found.messages, found.transcript, commit.kind), commit.keep_from)

    def write_fork(
        self, session: Session, source_id: str, transcript_of: Version | None
    ) -> Version:
        assert transcript_of is not None
        lines, transcript = self._transcript(source_id, transcript_of)
        return self._put(_store(session, lines, transcript, "fork"), 1)

    def _put(self, stored: _Stored, keep_from: int) -> Version:
        self._space.put(self.session_id, stored, keep_from)
        self.counts.snapshots_written += 1
        self.counts.bytes_written += len(stored.head)
        return stored.version

    def write_import(self, session: Session, commit: Commit, usage: bytes) -> Version:
        """Both in this process's memory, under the lock: no reader sees one without the other."""
        version = self.write_snapshot(session, commit, append_from=None, trusted=True)
        if usage:
            self.append_usage(usage)
        return version

    def append_usage(self, data: bytes) -> None:
        lines = data.splitlines()
        self._space.usage.setdefault(self.session_id, []).extend(lines)
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        return self._space.remove(self.session_id)

    def publish(self, summary: SessionSummary | None, kind: str | None, *, usage: bool) -> None:
        self._space.announce(published(self.session_id, summary, kind, usage=usage))
