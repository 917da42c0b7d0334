"""One session's rows: the steps of a batch, run in the batch's transaction.

Every write is a revision: the session's row (its head) is updated and a
revision row inserted, in one statement with the message rows it adds.
Like the file backend's journal, a save whose persisted messages are an
unchanged prefix of its transcript inserts only the new messages; any other
change of the messages starts a new transcript (a new uuid), leaving the
rows of the old one to the revisions that name it. Which of the two a save
is, the planner decides (``append_from``). A rewind names the transcript of
the revision it goes back to, and a fork copies its source's rows on the
server (``INSERT ... SELECT``): no message is encoded again for either.
Revisions before the planner's ``keep_from`` go in the write's transaction,
with the transcripts no other revision names (:data:`~.rows.DROP_REVISIONS`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import psycopg

from ..._errors import RevisionNotFoundError, SessionNotFoundError
from ..._merge import Authoritative
from ..._model import Revision, Session, SessionSummary, decode_record, encode_message
from ..protocol import Commit, Head, IoCounts, Stored, Version, published
from .listing import notification
from .rows import (
    DELETE_SESSION,
    DROP_REVISIONS,
    INSERT_USAGE,
    READ_EXTRA,
    READ_HISTORY,
    READ_REVISION,
    READ_REVISION_MESSAGES,
    READ_SOURCE,
    READ_TRANSCRIPT,
    READ_USAGE,
    WRITE_FORK,
    WRITE_METADATA,
    WRITE_NEW,
    WRITE_NEXT,
    HeadRow,
    RevisionRow,
    check_columns,
    decode_head,
    decode_history,
    decode_revision,
    decode_session,
    head_of,
    head_values,
    version_of,
)
from .schema import USAGE
from .transaction import Transaction

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["PostgresSession"]

#: How many columns of a READ_SOURCE row are the source's head.
_HEAD_WIDTH = 12
#: Reads of a source's latest revision, dropped by its writes as it is read.
_SOURCE_READS = 3


class PostgresSession:
    """One session's rows; a :class:`~..protocol.SessionStorage` over one transaction.

    :meth:`lock` opens the transaction and locks the session; every other
    method runs in it. Any exception inside (a database error, or one a
    caller caught) rolls the whole transaction back: leaving :meth:`lock`
    then raises ``SegmentRolledBack`` (see :class:`~.transaction.Transaction`).
    """

    def __init__(self, backend: PostgresBackend, session_id: str) -> None:
        self.session_id = session_id
        self.counts = IoCounts()
        self._transaction = Transaction(backend, session_id)
        self._channel = backend.channel
        self._head: HeadRow | None = None

    @contextlib.contextmanager
    def lock(self, *, create: bool, wait: bool = True) -> Iterator[bool]:
        # Always waits: row locks are held for one short transaction.
        with self._transaction.run() as row:
            self._head = None if row is None else decode_head(row)
            try:
                yield create or self._head is not None
            finally:
                self._head = None

    # --- reads ---

    def exists(self) -> bool:
        return self._head is not None

    def read_head(self) -> Head | None:
        head = self._head
        return None if head is None else head_of(self.session_id, head)

    def read_session(self, tail: int | None = None) -> Stored | None:
        head = self._head
        if head is None:
            return None
        count = head.message_count
        first = 0 if tail is None else max(0, count - tail)
        with self._transaction.statements() as conn:
            extra_cursor = conn.execute(READ_EXTRA, (self.session_id, head.revision))
            body_cursor = conn.execute(
                READ_TRANSCRIPT, (self.session_id, head.transcript, first, count)
            )
        session = decode_session(
            self.session_id,
            head,
            head.revision,
            head.latest,
            extra_cursor.fetchone(),
            body_cursor.fetchall(),
            tail,
        )
        return Stored(session, version_of(head.latest))

    def read_revision(self, revision: int) -> Stored | None:
        head = self._head
        if head is None:
            return None
        if revision == head.revision:
            return self.read_session()
        with self._transaction.statements() as conn:
            row_cursor = conn.execute(READ_REVISION, (self.session_id, revision))
            body_cursor = conn.execute(READ_REVISION_MESSAGES, (self.session_id, revision))
        row = row_cursor.fetchone()
        bodies = body_cursor.fetchall()
        if row is None:
            return None
        found, extra = decode_revision(row)
        session = decode_session(self.session_id, head, revision, found, extra, bodies)
        return Stored(session, version_of(found))

    def read_history(self, oldest: int) -> list[Revision]:
        with self._transaction.statements(pipeline=False) as conn:
            cursor = conn.execute(READ_HISTORY, (self.session_id, oldest))
        return decode_history(self.session_id, cursor.fetchall())

    def read_source(
        self, source_id: str, revision: int | None
    ) -> tuple[Head, Stored | None] | None:
        """The source's head and revision, read without a lock (see :meth:`write_fork`).

        Its latest (``revision`` None) is read again while the source's
        writes drop it between the two reads.
        """
        for _ in range(_SOURCE_READS - 1):
            found = self._read_source(source_id, revision)
            if revision is not None or found is None or found[1] is not None:
                return found
        return self._read_source(source_id, revision)

    def _read_source(
        self, source_id: str, revision: int | None
    ) -> tuple[Head, Stored | None] | None:
        with self._transaction.statements(pipeline=False) as conn:
            cursor = conn.execute(READ_SOURCE, {"id": source_id, "revision": revision})
        row = cursor.fetchone()
        if row is None:
            return None
        head = decode_head(row[:_HEAD_WIDTH])
        source_head = head_of(source_id, head)
        if row[_HEAD_WIDTH] is None:  # no such revision row (r.title is NOT NULL)
            return source_head, None
        found, extra = decode_revision(row[_HEAD_WIDTH:])
        # Its own statement, so a later snapshot: the rows are the same or,
        # dropped by the source's history meanwhile, missing (never others).
        with self._transaction.statements(pipeline=False) as conn:
            cursor = conn.execute(
                READ_TRANSCRIPT, (source_id, found.transcript, 0, found.message_count)
            )
        bodies = cursor.fetchall()
        if len(bodies) != found.message_count:
            return source_head, None  # that revision has gone since
        number = head.revision if revision is None else revision
        session = decode_session(source_id, head, number, found, extra, bodies)
        return source_head, Stored(session, version_of(found))

    def read_usage(self) -> list[dict[str, Any]]:
        with self._transaction.statements(pipeline=False) as conn:
            cursor = conn.execute(READ_USAGE, (self.session_id,))
        return [decode_record(text, f"postgresql {USAGE}") for (text,) in cursor.fetchall()]

    # --- writes ---

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
        """Write revision ``session.revision``; with ``append_from``, only the messages after it.

        An append goes into the head's transcript when nothing lies beyond
        its end there (else its prefix is copied, on the server, into a new
        one). With ``replaced``, the prefix but those positions is copied
        into a new one and the messages there are written. ``transcript_of``
        (a rewind) names a transcript of this session: no message row is written.
        """
        check_columns(session)
        head = self._head
        messages = session.messages
        count = len(messages)
        copy_from: uuid.UUID | None = None
        start = 0
        if transcript_of is not None:
            transcript, start = _transcript(transcript_of, count), count
        elif head is not None and append_from is not None:
            start = append_from
            if head.appendable and not replaced:
                transcript = head.transcript
            else:
                transcript, copy_from = uuid.uuid4(), head.transcript
        else:
            transcript = uuid.uuid4()
        skip = list(replaced) if copy_from is not None else []
        written = [*skip, *range(start, count)]
        bodies = [encode_message(messages[i]).decode() for i in written]
        metadata = orjson.dumps(session.metadata).decode()
        runtime_state = orjson.dumps(session.runtime_state).decode()
        values = head_values(self.session_id, session, transcript)
        values.update(
            kind=commit.kind,
            metadata=metadata,
            runtime_state=runtime_state,
            copy_from=copy_from,
            copy_count=start if copy_from is not None else 0,
            skip=skip,
            positions=written,
            bodies=bodies,
        )
        # The row is locked (or, absent, its creation is: the advisory lock).
        write = WRITE_NEW if head is None else WRITE_NEXT
        if transcript_of is None:
            # No row lies beyond the new end: a new transcript holds only what
            # this write puts in it, and an append in place starts at the end
            # of an appendable one. So nothing is read back: it goes with the COMMIT.
            self._transaction.defer(write, values)
            self._defer_drop(commit)
            appendable = True
        else:
            # A rewind's transcript: an older revision may have gone past its end.
            with self._transaction.statements(pipeline=commit.keep_from > 1, write=True) as conn:
                cursor = conn.execute(write, values)
                self._drop_revisions(conn, commit)
            row = cursor.fetchone()
            if row is None:  # pragma: no cover - the row is locked: it cannot have gone
                raise RuntimeError(f"session {self.session_id!r}: its row went while locked")
            appendable = bool(row[0])
        self.counts.snapshots_written += 1
        if transcript_of is not None:
            pass
        elif start:
            self.counts.journal_appends += 1 if bodies else 0
        else:
            self.counts.journal_rewrites += 1
        self.counts.bytes_written += sum(map(len, bodies)) + len(metadata) + len(runtime_state)
        latest = RevisionRow(
            Authoritative.of(session),
            values["created_at"],
            values["updated_at"],
            count,
            transcript,
        )
        lineage = session if head is None else head
        self._head = HeadRow(
            latest,
            session.revision,
            lineage.forked_from,
            lineage.forked_from_revision,
            appendable=appendable,
        )
        return (transcript, count)

    def write_metadata(self, session: Session, commit: Commit) -> None:
        check_columns(session)
        head = self._head
        assert head is not None  # the planner read the session under this lock
        values = head_values(self.session_id, session, head.transcript)
        values.update(kind=commit.kind, previous=head.revision)
        self._transaction.defer(WRITE_METADATA, values)
        self._defer_drop(commit)
        self.counts.snapshots_written += 1
        latest = attrs.evolve(
            head.latest,
            group=Authoritative.of(session),
            created_at=values["created_at"],
            updated_at=values["updated_at"],
        )
        self._head = attrs.evolve(head, latest=latest, revision=session.revision)

    def write_fork(
        self, session: Session, source_id: str, transcript_of: Version | None
    ) -> Version:
        """Make this session, its messages a copy of the source's rows made on the server.

        The source was read without a lock (:meth:`read_source`): its rows
        are copied in one statement that makes nothing unless all are there.
        """
        check_columns(session)
        assert transcript_of is not None  # this storage always names its transcripts
        count = len(session.messages)
        source_transcript = _transcript(transcript_of, count)
        transcript = uuid.uuid4()
        metadata = orjson.dumps(session.metadata).decode()
        runtime_state = orjson.dumps(session.runtime_state).decode()
        values = head_values(self.session_id, session, transcript)
        values.update(
            kind="fork",
            metadata=metadata,
            runtime_state=runtime_state,
            source_id=source_id,
            source_transcript=source_transcript,
        )
        with self._transaction.statements(pipeline=False, write=True) as conn:
            cursor = conn.execute(WRITE_FORK, values)
        row = cursor.fetchone()
        assert row is not None
        made, source_exists = row
        if not made:  # nothing was written
            if not source_exists:
                raise SessionNotFoundError(source_id)
            raise RevisionNotFoundError(
                source_id, session.forked_from_revision or 0, "no longer kept"
            )
        self.counts.snapshots_written += 1
        self.counts.bytes_written += len(metadata) + len(runtime_state)
        latest = RevisionRow(
            Authoritative.of(session),
            values["created_at"],
            values["updated_at"],
            count,
            transcript,
        )
        self._head = HeadRow(
            latest,
            session.revision,
            session.forked_from,
            session.forked_from_revision,
            appendable=True,
        )
        return (transcript, count)

    def _drop_revisions(self, conn: psycopg.Connection[Any], commit: Commit) -> None:
        """Drop the revisions before ``commit.keep_from`` (sent after the write, which it sees)."""
        if commit.keep_from > 1:
            conn.execute(DROP_REVISIONS, {"id": self.session_id, "keep": commit.keep_from})

    def _defer_drop(self, commit: Commit) -> None:
        """:meth:`_drop_revisions`, deferred after a deferred write."""
        if commit.keep_from > 1:
            self._transaction.defer(
                DROP_REVISIONS, {"id": self.session_id, "keep": commit.keep_from}
            )

    def write_import(self, session: Session, commit: Commit, usage: bytes) -> Version:
        """Both in this transaction: they commit together or not at all."""
        version = self.write_snapshot(session, commit, append_from=None, trusted=True)
        if usage:
            self.append_usage(usage)
        return version

    def append_usage(self, data: bytes) -> None:
        records = data.decode().split("\n")
        records.pop()  # empty after the final newline
        self._transaction.defer(INSERT_USAGE, {"id": self.session_id, "records": records})
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        with self._transaction.statements(pipeline=False, write=True) as conn:
            cursor = conn.execute(DELETE_SESSION, (self.session_id,))
        self._head = None
        return cursor.rowcount > 0

    def publish(self, summary: SessionSummary | None, kind: str | None, *, usage: bool) -> None:
        """Notify the watchers in this transaction: they hear of it when, and if, it commits."""
        changes = published(self.session_id, summary, kind, usage=usage)
        if changes:
            self._transaction.notify(self._channel, notification(changes))


def _transcript(version: Version, count: int) -> uuid.UUID:
    """The transcript a :class:`Version` of this storage names, for ``count`` messages."""
    transcript, counted = version
    if not isinstance(transcript, uuid.UUID) or counted != count:
        raise ValueError(f"not a transcript of {count} messages here: {version!r}")
    return transcript
