"""Pages of summaries by keyset, and the changes a write notifies: what a UI reads of the database.

A write's changes are sent with ``pg_notify`` inside the write's own
transaction, pipelined with its COMMIT (:func:`notification`), so they
reach every listening connection (:mod:`.feed`) when, and only if, it
commits, in commit order.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import psycopg

from ..._errors import CorruptSessionError
from ..._listing import ListQuery
from ..._model import Change, SessionSummary
from .rows import BIGINT_MAX, decode_summaries
from .schema import SESSIONS

__all__ = ["channel_for", "notification", "page"]

_COLUMNS = (
    "id, title, pinned, title_version, metadata_version, created_at, updated_at,"
    " message_count, revision, forked_from"
)
#: Rows read at a time while a title filter (applied here: PostgreSQL has no casefold) passes few.
_CHUNK = 500


def channel_for(schema: str) -> str:
    """The notification channel of the tables in ``schema`` (an identifier of at most 63 bytes)."""
    return "sessionactors_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def page(
    conn: psycopg.Connection[Any], query: ListQuery
) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """The page ``query`` asks for, by keyset on the ``_page`` indexes."""
    found: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    before = query.before
    while True:
        where = []
        args: list[Any] = []
        if query.pinned is not None:
            where.append("pinned = %s")
            args.append(query.pinned)
        if before is not None:
            where.append('(updated_order, id COLLATE "C") < (%s, %s)')
            args.extend(before)
        wanted = query.limit if query.title_fold is None and query.limit is not None else None
        # LIMIT takes a bigint: a larger limit asks for every row, as the largest does.
        chunk = _CHUNK if wanted is None else min(wanted, BIGINT_MAX)
        text = f"SELECT {_COLUMNS}, updated_order FROM {SESSIONS}"
        if where:
            text += " WHERE " + " AND ".join(where)
        text += ' ORDER BY updated_order DESC, id COLLATE "C" DESC LIMIT %s'
        rows = conn.execute(text, [*args, chunk]).fetchall()
        summaries, bad = decode_summaries([row[:-1] for row in rows])
        errors.extend(bad)
        found.extend(summary for summary in summaries if query.admits(summary))
        if query.limit is not None and len(found) >= query.limit:
            return found[: query.limit], errors
        if len(rows) < chunk:
            return found, errors
        before = (rows[-1][-1], rows[-1][0])


def notification(changes: list[Change]) -> str:
    """The payload telling watchers of ``changes`` (sent with the write's COMMIT)."""
    return orjson.dumps([[c.session_id, c.kind, c.revision] for c in changes]).decode()
