"""One session's rows: the steps of a batch, run in the batch's transaction.

Like the file backend's journal, a save whose persisted messages are an
unchanged prefix of its transcript inserts only the new messages; any other
change deletes the rows and inserts the transcript anew under a new
generation id. Which of the two a save is, the planner decides
(``append_from``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from ..._merge import Authoritative
from ..._model import Session, decode_record, encode_message
from ..protocol import Head, IoCounts, Stored, Version
from .rows import (
    DELETE_MESSAGES,
    DELETE_SESSION,
    INSERT,
    INSERT_USAGE,
    INSERT_WITH_MESSAGES,
    READ_EXTRA,
    READ_MESSAGES,
    READ_USAGE,
    UPDATE,
    UPDATE_METADATA,
    UPDATE_WITH_MESSAGES,
    HeadRow,
    check_columns,
    decode_head,
    decode_session,
    iso,
    row_values,
    version_of,
)
from .schema import USAGE
from .transaction import Transaction

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["PostgresSession"]


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
        return None if head is None else Head(head.group, version_of(head))

    def read_session(self) -> Stored | None:
        head = self._head
        if head is None:
            return None
        return Stored(self._read_session(head), version_of(head))

    def _read_session(self, head: HeadRow) -> Session:
        with self._transaction.statements() as conn:
            extra_cursor = conn.execute(READ_EXTRA, (self.session_id,))
            body_cursor = conn.execute(READ_MESSAGES, (self.session_id,))
        extra = extra_cursor.fetchone()
        bodies = body_cursor.fetchall()
        return decode_session(self.session_id, head, extra, bodies)

    def read_usage(self) -> list[dict[str, Any]]:
        with self._transaction.statements(pipeline=False) as conn:
            cursor = conn.execute(READ_USAGE, (self.session_id,))
        return [decode_record(text, f"postgresql {USAGE}") for (text,) in cursor.fetchall()]

    # --- writes ---

    def write_snapshot(
        self, session: Session, *, append_from: int | None, trusted: bool
    ) -> Version:
        """Write the row; with ``append_from``, insert only the messages after it."""
        check_columns(session)
        head = self._head
        messages = session.messages
        if head is not None and append_from is not None:
            transcript, start = head.transcript, append_from
        else:
            transcript, start = uuid.uuid4().hex, 0
        bodies = [encode_message(m).decode() for m in messages[start:]]
        metadata = orjson.dumps(session.metadata).decode()
        runtime_state = orjson.dumps(session.runtime_state).decode()
        created_at, updated_at = iso(session.created_at), iso(session.updated_at)
        values = row_values(
            self.session_id,
            session,
            created_at=created_at,
            updated_at=updated_at,
            transcript=transcript,
            metadata=metadata,
            runtime_state=runtime_state,
        )
        # The row is locked (or, absent, its creation is: the advisory lock).
        rewrite = start == 0 and head is not None
        with self._transaction.statements(pipeline=rewrite, write=True) as conn:
            if rewrite:
                conn.execute(DELETE_MESSAGES, (self.session_id,))
            if bodies:
                positions = list(range(start, len(messages)))
                query = INSERT_WITH_MESSAGES if head is None else UPDATE_WITH_MESSAGES
                conn.execute(query, (*values, positions, bodies))
            else:
                conn.execute(INSERT if head is None else UPDATE, values)
        self.counts.snapshots_written += 1
        if start:
            self.counts.journal_appends += 1 if bodies else 0
        else:
            self.counts.journal_rewrites += 1
        self.counts.bytes_written += sum(map(len, bodies)) + len(metadata) + len(runtime_state)
        self._head = HeadRow(
            Authoritative.of(session), created_at, updated_at, len(messages), transcript
        )
        return (transcript, len(messages))

    def write_metadata(self, session: Session) -> None:
        check_columns(session)
        head = self._head
        assert head is not None  # the planner read the session under this lock
        updated_at = iso(session.updated_at)
        with self._transaction.statements(pipeline=False, write=True) as conn:
            conn.execute(
                UPDATE_METADATA,
                (
                    session.title,
                    session.title_version,
                    session.pinned,
                    session.metadata_version,
                    updated_at,
                    session.updated_at,
                    self.session_id,
                ),
            )
        self.counts.snapshots_written += 1
        self._head = attrs.evolve(head, group=Authoritative.of(session), updated_at=updated_at)

    def append_usage(self, data: bytes) -> None:
        records = data.decode().split("\n")
        records.pop()  # empty after the final newline
        with self._transaction.statements(pipeline=False, write=True) as conn:
            conn.execute(INSERT_USAGE, {"id": self.session_id, "records": records})
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        with self._transaction.statements(pipeline=False, write=True) as conn:
            cursor = conn.execute(DELETE_SESSION, (self.session_id,))
        self._head = None
        return cursor.rowcount > 0
