"""The statements on a session's rows, and how rows map to and from sessions.

What a column cannot hold is refused here (:func:`check_columns`) before any
statement is sent; timestamps are stored as ISO 8601 text (offsets kept)
beside a ``timestamptz`` that orders the listing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import orjson

from ..._errors import CorruptSessionError
from ..._merge import Authoritative
from ..._model import Session, SessionSummary, converter, structure_session
from ..protocol import Version
from .schema import MESSAGES, SESSIONS, USAGE

__all__ = [
    "DELETE_MESSAGES",
    "DELETE_SESSION",
    "INSERT",
    "INSERT_USAGE",
    "INSERT_WITH_MESSAGES",
    "LIST_SUMMARIES",
    "READ_EXTRA",
    "READ_HEAD",
    "READ_MESSAGES",
    "READ_USAGE",
    "UPDATE",
    "UPDATE_METADATA",
    "UPDATE_WITH_MESSAGES",
    "HeadRow",
    "check_columns",
    "decode_head",
    "decode_session",
    "decode_summaries",
    "iso",
    "row_values",
    "version_of",
    "where",
]

READ_HEAD = f"""
SELECT title, title_version, pinned, metadata_version, created_at, updated_at,
    message_count, transcript
FROM {SESSIONS} WHERE id = %s FOR UPDATE
"""
READ_EXTRA = f"SELECT metadata::text, runtime_state::text FROM {SESSIONS} WHERE id = %s"
READ_MESSAGES = f"SELECT body::text FROM {MESSAGES} WHERE session_id = %s ORDER BY position"
READ_USAGE = f"SELECT record::text FROM {USAGE} WHERE session_id = %s ORDER BY seq"
INSERT = f"""
INSERT INTO {SESSIONS} (title, title_version, pinned, metadata_version, created_at,
    updated_at, updated_order, message_count, transcript, metadata, runtime_state, id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s)
RETURNING id
"""
UPDATE = f"""
UPDATE {SESSIONS} SET title = %s, title_version = %s, pinned = %s, metadata_version = %s,
    created_at = %s, updated_at = %s, updated_order = %s, message_count = %s, transcript = %s,
    metadata = %s::json, runtime_state = %s::json
WHERE id = %s
RETURNING id
"""
# The session's row and its new messages in one statement (the foreign key
# is checked at the statement's end, when the row is there).
_WITH_MESSAGES = f"""
WITH head AS ({{}})
INSERT INTO {MESSAGES} (session_id, position, body)
SELECT head.id, t.p, t.b::json FROM head, unnest(%s::integer[], %s::text[]) AS t(p, b)
"""
INSERT_WITH_MESSAGES = _WITH_MESSAGES.format(INSERT)
UPDATE_WITH_MESSAGES = _WITH_MESSAGES.format(UPDATE)
UPDATE_METADATA = (
    f"UPDATE {SESSIONS} SET title = %s, title_version = %s, pinned = %s,"
    f" metadata_version = %s, updated_at = %s, updated_order = %s WHERE id = %s"
)
DELETE_MESSAGES = f"DELETE FROM {MESSAGES} WHERE session_id = %s"
DELETE_SESSION = f"DELETE FROM {SESSIONS} WHERE id = %s"
INSERT_USAGE = f"""
INSERT INTO {USAGE} (session_id, seq, record)
SELECT %(id)s, base.n + t.n, t.r::json
FROM unnest(%(records)s::text[]) WITH ORDINALITY AS t(r, n),
     (SELECT coalesce(max(seq), 0) AS n FROM {USAGE} WHERE session_id = %(id)s) AS base
"""
LIST_SUMMARIES = (
    f"SELECT id, title, pinned, title_version, metadata_version, created_at,"
    f" updated_at, message_count FROM {SESSIONS} ORDER BY updated_order DESC, id"
)


@attrs.frozen
class HeadRow:
    """The columns of a session's row a batch needs to merge and append."""

    group: Authoritative
    created_at: str
    updated_at: str
    message_count: int
    transcript: str


def decode_head(row: tuple[Any, ...]) -> HeadRow:
    return HeadRow(
        Authoritative(title=row[0], title_version=row[1], pinned=row[2], metadata_version=row[3]),
        created_at=row[4],
        updated_at=row[5],
        message_count=row[6],
        transcript=row[7],
    )


def version_of(head: HeadRow) -> Version:
    """What names a transcript in the database: its generation and message count."""
    return (head.transcript, head.message_count)


def where(session_id: str) -> str:
    return f"postgresql {SESSIONS} row {session_id!r}"


def iso(value: datetime) -> str:
    text: str = converter.unstructure(value, datetime)
    return text


_BIGINT = range(-(2**63), 2**63)


def check_columns(session: Session) -> None:
    """Refuse, before any statement, what the row's columns cannot hold.

    A failed statement would spoil the whole batch's transaction; a
    ValueError here fails only the calls that depend on this write.
    """
    if "\x00" in session.title:
        raise ValueError("title holds a NUL character, which PostgreSQL text cannot store")
    session.title.encode("utf-8")  # UnicodeEncodeError (a lone surrogate) now, not mid-batch
    for name in ("title_version", "metadata_version"):
        if getattr(session, name) not in _BIGINT:
            raise ValueError(f"{name} does not fit in 64 bits")


def row_values(
    session_id: str,
    session: Session,
    *,
    created_at: str,
    updated_at: str,
    transcript: str,
    metadata: str,
    runtime_state: str,
) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT` and :data:`UPDATE`, in their order."""
    return (
        session.title,
        session.title_version,
        session.pinned,
        session.metadata_version,
        created_at,
        updated_at,
        session.updated_at,
        len(session.messages),
        transcript,
        metadata,
        runtime_state,
        session_id,
    )


def decode_session(
    session_id: str,
    head: HeadRow,
    extra: tuple[Any, ...] | None,
    bodies: list[tuple[Any, ...]],
) -> Session:
    """The session from its head, its :data:`READ_EXTRA` row and its :data:`READ_MESSAGES` rows.

    Raises:
        CorruptSessionError: unreadable JSON, a wrong count of messages, bad values.
    """
    where_ = where(session_id)
    assert extra is not None
    try:
        metadata, runtime_state = orjson.loads(extra[0]), orjson.loads(extra[1])
        messages = [orjson.loads(row[0]) for row in bodies]
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(where_, f"unreadable JSON: {exc}") from None
    if len(messages) != head.message_count:
        raise CorruptSessionError(
            where_, f"{len(messages)} messages where {head.message_count} are counted"
        )
    group = head.group
    data = {
        "id": session_id,
        "title": group.title,
        "title_version": group.title_version,
        "pinned": group.pinned,
        "metadata_version": group.metadata_version,
        "created_at": head.created_at,
        "updated_at": head.updated_at,
        "messages": messages,
        "metadata": metadata,
        "runtime_state": runtime_state,
    }
    return structure_session(where_, data)


def decode_summaries(
    rows: list[tuple[Any, ...]],
) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """The summaries of :data:`LIST_SUMMARIES` rows, and an error for each unreadable one."""
    summaries: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    for row in rows:
        try:
            summaries.append(
                SessionSummary(
                    id=row[0],
                    title=row[1],
                    pinned=row[2],
                    title_version=row[3],
                    metadata_version=row[4],
                    created_at=converter.structure(row[5], datetime),
                    updated_at=converter.structure(row[6], datetime),
                    message_count=row[7],
                )
            )
        except (TypeError, ValueError) as exc:
            errors.append(CorruptSessionError(where(row[0]), f"bad timestamp: {exc}"))
    return summaries, errors
