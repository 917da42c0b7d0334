"""The bytes of a PostgreSQL store per session: sums of ``pg_column_size`` over its rows.

An estimate, and said to be one: a row's size as the server stores it
(``pg_column_size`` of the whole row: its values, compressed where
PostgreSQL compresses them, and the row's header), without the indexes,
the pages' free space and dead rows a ``VACUUM`` has not reclaimed yet. A
deleted row's space is reused by the table's new rows; it goes back to the
operating system only with ``VACUUM FULL``.

Per session (see :mod:`.schema`):

- *transcript*: its head row, the row of its latest revision, and the
  message rows of the head's transcript below its message count;
- *history*: the rows of its older revisions kept, and the message rows
  they alone read (other transcripts, or the rows past a rewind's count);
- *usage*: its token-usage rows.

A fork copies its source's message rows (``WRITE_FORK``), so nothing is
shared between sessions. The tables are those of the URL's current schema
(its ``search_path``), as the store's own connections use.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.conninfo

from ..disk_use import SessionBytes
from .schema import MESSAGES, REVISIONS, SESSIONS, USAGE

__all__ = ["ESTIMATE", "session_bytes"]

#: What the figures are, for a person reading them.
ESTIMATE = (
    "row sizes (pg_column_size), without indexes, free space and dead rows; "
    "forks copy their rows, so no bytes are shared"
)

# Each row's size is taken in a scan of its table alone (MATERIALIZED), then
# summed per session: a whole-row value formed in another plan (a
# correlated index scan, say) may differ by its varlena headers, and the
# figures would no longer add up to what the tables hold.
_SIZES = f"""
WITH heads AS MATERIALIZED (
    SELECT id, revision, transcript, message_count, pg_column_size(s.*) AS size
    FROM {SESSIONS} s
),
revisions AS MATERIALIZED (
    SELECT session_id, revision, pg_column_size(r.*) AS size FROM {REVISIONS} r
),
messages AS MATERIALIZED (
    SELECT session_id, transcript, position, pg_column_size(m.*) AS size FROM {MESSAGES} m
),
usage AS MATERIALIZED (
    SELECT session_id, sum(pg_column_size(u.*)) AS size FROM {USAGE} u GROUP BY session_id
),
revision_sizes AS (
    SELECT r.session_id,
        coalesce(sum(r.size) FILTER (WHERE r.revision = h.revision), 0) AS latest,
        coalesce(sum(r.size) FILTER (WHERE r.revision <> h.revision), 0) AS older
    FROM revisions r JOIN heads h ON h.id = r.session_id
    GROUP BY r.session_id
),
message_sizes AS (
    SELECT m.session_id,
        coalesce(sum(m.size) FILTER (WHERE m.transcript = h.transcript
            AND m.position < h.message_count), 0) AS current,
        coalesce(sum(m.size) FILTER (WHERE m.transcript <> h.transcript
            OR m.position >= h.message_count), 0) AS older
    FROM messages m JOIN heads h ON h.id = m.session_id
    GROUP BY m.session_id
)
SELECT h.id,
    h.size + coalesce(r.latest, 0) + coalesce(m.current, 0),
    coalesce(r.older, 0) + coalesce(m.older, 0),
    coalesce(u.size, 0)
FROM heads h
LEFT JOIN revision_sizes r ON r.session_id = h.id
LEFT JOIN message_sizes m ON m.session_id = h.id
LEFT JOIN usage u ON u.session_id = h.id
"""


def session_bytes(url: str) -> list[SessionBytes]:
    """Every session's bytes in the database ``url`` names, the largest total first (blocks).

    One read-only transaction on a connection of its own, so the figures of
    all sessions are of one moment.
    """
    kwargs: dict[str, Any] = {"autocommit": False}
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(url):
        kwargs["application_name"] = "sessionactors-du"
    with psycopg.connect(url, **kwargs) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        rows = conn.execute(_SIZES).fetchall()
        conn.rollback()
    found = [
        SessionBytes(str(session_id), int(transcript), int(history), int(usage))
        for session_id, transcript, history, usage in rows
    ]
    found.sort(key=lambda row: (-row.total, row.session_id))
    return found
