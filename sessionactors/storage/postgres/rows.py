"""The statements on a session's rows, and how rows map to and from sessions.

What a column cannot hold is refused here (:func:`check_columns`) before any
statement is sent; timestamps are stored as ISO 8601 text (offsets kept)
beside a ``timestamptz`` that orders the listing.

A write is one statement (the head's row, the revision's row and the new
message rows, as data-modifying CTEs), followed in the same round trip by
the retention delete once the session has revisions to drop.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import attrs
import orjson

from ..._errors import CorruptSessionError
from ..._merge import Authoritative
from ..._model import Revision, Session, SessionSummary, converter, structure_session
from ..protocol import Head, Version
from .schema import MESSAGES, REVISIONS, SESSIONS, USAGE

__all__ = [
    "BIGINT_MAX",
    "DELETE_SESSION",
    "DROP_REVISIONS",
    "INSERT_USAGE",
    "READ_EXTRA",
    "READ_HEAD",
    "READ_HISTORY",
    "READ_REVISION",
    "READ_REVISION_MESSAGES",
    "READ_SOURCE",
    "READ_TRANSCRIPT",
    "READ_USAGE",
    "WRITE_FORK",
    "WRITE_METADATA",
    "WRITE_NEW",
    "WRITE_NEXT",
    "HeadRow",
    "RevisionRow",
    "check_columns",
    "decode_head",
    "decode_history",
    "decode_revision",
    "decode_session",
    "decode_summaries",
    "head_of",
    "head_values",
    "iso",
    "version_of",
    "where",
]

_HEAD_COLUMNS = """title, title_version, pinned, metadata_version, created_at, updated_at,
    message_count, transcript, revision, forked_from, forked_from_revision, appendable"""
READ_HEAD = f"SELECT {_HEAD_COLUMNS} FROM {SESSIONS} WHERE id = %s FOR UPDATE"
#: The free JSON of a revision (the latest: the head's).
READ_EXTRA = (
    f"SELECT metadata::text, runtime_state::text FROM {REVISIONS}"
    f" WHERE session_id = %s AND revision = %s"
)
#: A transcript's first ``count`` messages: (session_id, transcript, count).
READ_TRANSCRIPT = (
    f"SELECT body::text FROM {MESSAGES} WHERE session_id = %s AND transcript = %s"
    f" AND position >= %s AND position < %s ORDER BY position"
)
_REVISION_COLUMNS = """title, title_version, pinned, metadata_version, created_at, updated_at,
    message_count, transcript, metadata::text, runtime_state::text"""
READ_REVISION = (
    f"SELECT {_REVISION_COLUMNS} FROM {REVISIONS} WHERE session_id = %s AND revision = %s"
)
READ_REVISION_MESSAGES = f"""
SELECT m.body::text FROM {REVISIONS} r JOIN {MESSAGES} m
    ON m.session_id = r.session_id AND m.transcript = r.transcript
    AND m.position < r.message_count
WHERE r.session_id = %s AND r.revision = %s ORDER BY m.position
"""
READ_HISTORY = f"""
SELECT revision, kind, updated_at, message_count, title, pinned, title_version, metadata_version
FROM {REVISIONS} WHERE session_id = %s AND revision >= %s ORDER BY revision DESC
"""
#: Another session's head and one of its revisions (NULL: its latest), without a lock.
READ_SOURCE = f"""
SELECT {", ".join(f"s.{c.strip()}" for c in _HEAD_COLUMNS.split(","))},
    r.title, r.title_version, r.pinned, r.metadata_version, r.created_at, r.updated_at,
    r.message_count, r.transcript, r.metadata::text, r.runtime_state::text
FROM {SESSIONS} s LEFT JOIN {REVISIONS} r
    ON r.session_id = s.id AND r.revision = coalesce(%(revision)s::bigint, s.revision)
WHERE s.id = %(id)s
"""
READ_USAGE = f"SELECT record::text FROM {USAGE} WHERE session_id = %s ORDER BY seq"

_INSERT_HEAD = f"""
INSERT INTO {SESSIONS} (id, title, title_version, pinned, metadata_version, created_at,
    updated_at, updated_order, message_count, transcript, revision, forked_from,
    forked_from_revision, appendable)
VALUES (%(id)s, %(title)s, %(title_version)s, %(pinned)s, %(metadata_version)s,
    %(created_at)s, %(updated_at)s, %(updated_order)s, %(count)s, %(transcript)s,
    %(revision)s, %(forked_from)s, %(forked_from_revision)s, true)
RETURNING id, appendable
"""
# appendable: exact, whatever the write (rows this statement inserts are not
# seen by it, nor are they at or beyond the new count).
_UPDATE_HEAD = f"""
UPDATE {SESSIONS} SET title = %(title)s, title_version = %(title_version)s,
    pinned = %(pinned)s, metadata_version = %(metadata_version)s, created_at = %(created_at)s,
    updated_at = %(updated_at)s, updated_order = %(updated_order)s, message_count = %(count)s,
    transcript = %(transcript)s, revision = %(revision)s,
    appendable = NOT EXISTS (
        SELECT FROM {MESSAGES} WHERE session_id = %(id)s AND transcript = %(transcript)s
        AND position >= %(count)s
    )
WHERE id = %(id)s
RETURNING id, appendable
"""
_INSERT_REVISION = f"""
INSERT INTO {REVISIONS} (session_id, revision, kind, title, title_version, pinned,
    metadata_version, created_at, updated_at, message_count, transcript, metadata, runtime_state)
SELECT head.id, %(revision)s, %(kind)s, %(title)s, %(title_version)s, %(pinned)s,
    %(metadata_version)s, %(created_at)s, %(updated_at)s, %(count)s, %(transcript)s,
    %(metadata)s::json, %(runtime_state)s::json
FROM head
"""
# The head's row, the revision's row and the new messages in one statement
# (the foreign keys are checked at the statement's end, when the row is
# there). ``copy_from``: a transcript whose first ``copy_count`` rows, but
# those at the positions ``skip``, are the first messages of this one (a save
# appending to a transcript it cannot append to in place, or replacing some
# of its messages); NULL copies nothing.
_WRITE = f"""
WITH head AS ({{}}),
revision AS ({_INSERT_REVISION}),
copied AS (
    INSERT INTO {MESSAGES} (session_id, transcript, position, body)
    SELECT m.session_id, %(transcript)s, m.position, m.body FROM {MESSAGES} m
    WHERE m.session_id = %(id)s AND m.transcript = %(copy_from)s::uuid
        AND m.position < %(copy_count)s AND m.position <> ALL(%(skip)s::integer[])
),
added AS (
    INSERT INTO {MESSAGES} (session_id, transcript, position, body)
    SELECT head.id, %(transcript)s, t.p, t.b::json
    FROM head, unnest(%(positions)s::integer[], %(bodies)s::text[]) AS t(p, b)
)
SELECT appendable FROM head
"""
#: A new session's first revision.
WRITE_NEW = _WRITE.format(_INSERT_HEAD)
#: A new revision of a session that has a row.
WRITE_NEXT = _WRITE.format(_UPDATE_HEAD)
#: A revision changing the group and updated_at only: the rest is the previous revision's.
WRITE_METADATA = f"""
WITH head AS (
    UPDATE {SESSIONS} SET title = %(title)s, title_version = %(title_version)s,
        pinned = %(pinned)s, metadata_version = %(metadata_version)s,
        created_at = %(created_at)s, updated_at = %(updated_at)s,
        updated_order = %(updated_order)s, revision = %(revision)s
    WHERE id = %(id)s
    RETURNING id
)
INSERT INTO {REVISIONS} (session_id, revision, kind, title, title_version, pinned,
    metadata_version, created_at, updated_at, message_count, transcript, metadata, runtime_state)
SELECT head.id, %(revision)s, %(kind)s, %(title)s, %(title_version)s, %(pinned)s,
    %(metadata_version)s, %(created_at)s, %(updated_at)s, r.message_count, r.transcript,
    r.metadata, r.runtime_state
FROM head JOIN {REVISIONS} r ON r.session_id = head.id AND r.revision = %(previous)s
"""
# A fork: its rows and a copy of the source's transcript rows, made only if
# every row of that transcript is there (the source's history may have
# dropped it since it was read: nothing is locked there). One statement,
# so one snapshot: ``source`` is read once.
WRITE_FORK = f"""
WITH source AS (
    SELECT position, body FROM {MESSAGES}
    WHERE session_id = %(source_id)s AND transcript = %(source_transcript)s
        AND position < %(count)s
),
head AS (
    INSERT INTO {SESSIONS} (id, title, title_version, pinned, metadata_version, created_at,
        updated_at, updated_order, message_count, transcript, revision, forked_from,
        forked_from_revision, appendable)
    SELECT %(id)s, %(title)s, %(title_version)s, %(pinned)s, %(metadata_version)s,
        %(created_at)s, %(updated_at)s, %(updated_order)s::timestamptz, %(count)s,
        %(transcript)s, %(revision)s, %(forked_from)s, %(forked_from_revision)s, true
    WHERE (SELECT count(*) FROM source) = %(count)s
    RETURNING id, appendable
),
revision AS ({_INSERT_REVISION}),
copied AS (
    INSERT INTO {MESSAGES} (session_id, transcript, position, body)
    SELECT head.id, %(transcript)s, source.position, source.body FROM head, source
)
SELECT (SELECT count(*) FROM head), EXISTS (SELECT FROM {SESSIONS} WHERE id = %(source_id)s)
"""
# History retention: the revisions before ``keep`` (a few a write: bounded),
# and the rows of each transcript that none of the others names. It runs
# after the write, which it sees: the new revision's transcript stays.
_DROP_AT_MOST = 16
DROP_REVISIONS = f"""
WITH dropped AS (
    DELETE FROM {REVISIONS} WHERE session_id = %(id)s AND revision IN (
        SELECT revision FROM {REVISIONS} WHERE session_id = %(id)s AND revision < %(keep)s
        ORDER BY revision LIMIT {_DROP_AT_MOST}
    )
    RETURNING revision, transcript
)
DELETE FROM {MESSAGES} WHERE session_id = %(id)s AND transcript IN (
    SELECT d.transcript FROM dropped d WHERE NOT EXISTS (
        SELECT FROM {REVISIONS} r
        WHERE r.session_id = %(id)s AND r.transcript = d.transcript
            AND r.revision NOT IN (SELECT revision FROM dropped)
    )
)
"""
DELETE_SESSION = f"DELETE FROM {SESSIONS} WHERE id = %s"
INSERT_USAGE = f"""
INSERT INTO {USAGE} (session_id, seq, record)
SELECT %(id)s, base.n + t.n, t.r::json
FROM unnest(%(records)s::text[]) WITH ORDINALITY AS t(r, n),
     (SELECT coalesce(max(seq), 0) AS n FROM {USAGE} WHERE session_id = %(id)s) AS base
"""


@attrs.frozen
class RevisionRow:
    """What a revision's row holds but its free JSON (kept as text)."""

    group: Authoritative
    created_at: str
    updated_at: str
    message_count: int
    transcript: uuid.UUID


@attrs.frozen
class HeadRow:
    """The columns of a session's row a batch needs: its latest revision and lineage."""

    latest: RevisionRow
    revision: int
    forked_from: str | None
    forked_from_revision: int | None
    #: No row of the transcript lies at or beyond message_count: appends go in place.
    appendable: bool

    @property
    def transcript(self) -> uuid.UUID:
        return self.latest.transcript

    @property
    def message_count(self) -> int:
        return self.latest.message_count


def _revision_row(row: tuple[Any, ...]) -> RevisionRow:
    return RevisionRow(
        Authoritative(title=row[0], title_version=row[1], pinned=row[2], metadata_version=row[3]),
        created_at=row[4],
        updated_at=row[5],
        message_count=row[6],
        transcript=row[7],
    )


def decode_head(row: tuple[Any, ...]) -> HeadRow:
    """A :data:`READ_HEAD` row (or the first twelve columns of a :data:`READ_SOURCE` one)."""
    return HeadRow(
        _revision_row(row),
        revision=row[8],
        forked_from=row[9],
        forked_from_revision=row[10],
        appendable=row[11],
    )


def decode_revision(row: tuple[Any, ...]) -> tuple[RevisionRow, tuple[str, str]]:
    """A :data:`READ_REVISION` row: the revision, and its free JSON's text."""
    return _revision_row(row), (row[8], row[9])


def version_of(revision: RevisionRow) -> Version:
    """What names a transcript in the database: its id and message count."""
    return (revision.transcript, revision.message_count)


def head_of(session_id: str, head: HeadRow) -> Head:
    latest = head.latest
    return Head(
        latest.group,
        version_of(latest),
        head.revision,
        _datetime(session_id, latest.created_at),
        head.forked_from,
        head.forked_from_revision,
    )


def where(session_id: str) -> str:
    return f"postgresql {SESSIONS} row {session_id!r}"


def _datetime(session_id: str, text: Any) -> datetime:
    try:
        value: datetime = converter.structure(text, datetime)
    except (TypeError, ValueError) as exc:
        raise CorruptSessionError(where(session_id), f"bad timestamp: {exc}") from None
    return value


def iso(value: datetime) -> str:
    text: str = converter.unstructure(value, datetime)
    return text


#: The largest value of a ``bigint`` column (and of a ``LIMIT``).
BIGINT_MAX = 2**63 - 1
_BIGINT = range(-BIGINT_MAX - 1, BIGINT_MAX + 1)


def check_columns(session: Session) -> None:
    """Refuse, before any statement, what the row's columns cannot hold.

    A failed statement would spoil the whole batch's transaction; a
    ValueError here fails only the calls that depend on this write.
    """
    if "\x00" in session.title:
        raise ValueError("title holds a NUL character, which PostgreSQL text cannot store")
    session.title.encode("utf-8")  # UnicodeEncodeError (a lone surrogate) now, not mid-batch
    for name in ("title_version", "metadata_version", "revision"):
        if getattr(session, name) not in _BIGINT:
            raise ValueError(f"{name} does not fit in 64 bits")


def head_values(session_id: str, session: Session, transcript: uuid.UUID) -> dict[str, Any]:
    """The parameters naming the session's head, shared by every write statement."""
    return {
        "id": session_id,
        "title": session.title,
        "title_version": session.title_version,
        "pinned": session.pinned,
        "metadata_version": session.metadata_version,
        "created_at": iso(session.created_at),
        "updated_at": iso(session.updated_at),
        "updated_order": session.updated_at,
        "count": len(session.messages),
        "transcript": transcript,
        "revision": session.revision,
        "forked_from": session.forked_from,
        "forked_from_revision": session.forked_from_revision,
    }


def decode_session(
    session_id: str,
    head: HeadRow,
    revision: int,
    row: RevisionRow,
    extra: tuple[Any, ...] | None,
    bodies: list[tuple[Any, ...]],
    tail: int | None = None,
) -> Session:
    """Revision ``revision`` from its row, its free JSON and its message rows.

    ``tail``: the rows are the transcript's last ``tail`` messages only.

    Raises:
        CorruptSessionError: unreadable JSON, a wrong count of messages, bad values.
    """
    where_ = where(session_id)
    if extra is None:  # the session's row names a revision whose row is gone
        raise CorruptSessionError(where_, f"revision {revision} has no row")
    try:
        metadata, runtime_state = orjson.loads(extra[0]), orjson.loads(extra[1])
        messages = [orjson.loads(body[0]) for body in bodies]
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(where_, f"unreadable JSON: {exc}") from None
    expected = row.message_count if tail is None else min(tail, row.message_count)
    if len(messages) != expected:
        raise CorruptSessionError(
            where_,
            f"revision {revision}: {len(messages)} messages, {expected} counted",
        )
    group = row.group
    data = {
        "id": session_id,
        "title": group.title,
        "title_version": group.title_version,
        "pinned": group.pinned,
        "metadata_version": group.metadata_version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "messages": messages,
        "metadata": metadata,
        "runtime_state": runtime_state,
        "revision": revision,
        "forked_from": head.forked_from,
        "forked_from_revision": head.forked_from_revision,
    }
    return structure_session(where_, data)


def decode_history(session_id: str, rows: list[tuple[Any, ...]]) -> list[Revision]:
    """The :class:`Revision` of each :data:`READ_HISTORY` row."""
    return [
        Revision(
            revision=row[0],
            kind=row[1],
            updated_at=_datetime(session_id, row[2]),
            message_count=row[3],
            title=row[4],
            pinned=row[5],
            title_version=row[6],
            metadata_version=row[7],
        )
        for row in rows
    ]


def decode_summaries(
    rows: list[tuple[Any, ...]],
) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """The summaries of rows of the listing's columns, and an error for each unreadable one."""
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
                    revision=row[8],
                    forked_from=row[9],
                )
            )
        except (TypeError, ValueError) as exc:
            errors.append(CorruptSessionError(where(row[0]), f"bad timestamp: {exc}"))
    return summaries, errors
