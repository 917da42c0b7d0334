"""The tables and their migrations: schema version 4, recorded in ``sessionactors_schema``.

Tables::

    sessionactors_sessions     one row a session, its latest revision's head:
                               the authoritative group, created_at/updated_at
                               (ISO 8601 text, offsets kept), message_count,
                               transcript (uuid), revision, the lineage
                               (forked_from, forked_from_revision), appendable
    sessionactors_revisions    (session_id, revision) -> kind, the group,
                               created_at, updated_at, message_count,
                               transcript, metadata, runtime_state: one row a
                               kept revision, the latest included
    sessionactors_messages     (session_id, transcript, position) -> body
                               (json): one row a message of a transcript
    sessionactors_token_usage  (session_id, seq) -> record (json): append-only
    sessionactors_batches      token (uuid) -> written: one row a writing
                               transaction of the last TOKEN_RETENTION

Indexes ``(updated_order, id)`` and ``(pinned, updated_order, id)``, both
descending with ids in the "C" collation, serve the pages of
``list_sessions`` (schema 4).

A revision's messages are its transcript's rows below its message_count.
Message rows are never changed nor deleted one by one: a save that appends
adds rows to its transcript, any other change of the messages starts a new
transcript (a uuid, never used again), a rewind names an older one, and a
transcript goes as a whole once no kept revision names it. So ``(transcript,
message_count)`` names the same messages for as long as it can be read.
``appendable``: no row of the head's transcript lies at or beyond its
message_count (a rewind to a shorter prefix is not), so a save may append
to it in place.

``json``, not ``jsonb``: it keeps the text as written, so every value reads
back equal (``jsonb`` turns ``1e300`` into an integer and refuses ``\\u0000``).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..._errors import UnsupportedFormatError

__all__ = [
    "BATCHES",
    "MESSAGES",
    "MIGRATIONS",
    "REVISIONS",
    "SCHEMA_VERSION",
    "SESSIONS",
    "USAGE",
    "migrate",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
SESSIONS = "sessionactors_sessions"
REVISIONS = "sessionactors_revisions"
MESSAGES = "sessionactors_messages"
USAGE = "sessionactors_token_usage"
BATCHES = "sessionactors_batches"

_OLD_MESSAGES = "sessionactors_messages_v2"

#: Statements taking the schema from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE {SESSIONS} (
            id text PRIMARY KEY,
            title text NOT NULL,
            title_version bigint NOT NULL,
            pinned boolean NOT NULL,
            metadata_version bigint NOT NULL,
            created_at text NOT NULL,
            updated_at text NOT NULL,
            updated_order timestamptz NOT NULL,
            message_count integer NOT NULL,
            transcript text NOT NULL,
            metadata json NOT NULL,
            runtime_state json NOT NULL
        )""",
        f"""CREATE TABLE {MESSAGES} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            position integer NOT NULL,
            body json NOT NULL,
            PRIMARY KEY (session_id, position)
        )""",
        f"""CREATE TABLE {USAGE} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            seq bigint NOT NULL,
            record json NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
    ],
    2: [
        f"""CREATE TABLE {BATCHES} (
            token uuid PRIMARY KEY,
            written timestamptz NOT NULL DEFAULT now()
        )""",
        f"CREATE INDEX {BATCHES}_written ON {BATCHES} (written)",
    ],
    # Revisions. Each session becomes its revision 1 (kind "save"), as it
    # stands; its messages become the rows of its transcript, which keeps its
    # generation id (text before, a uuid now: the library wrote uuid4().hex).
    3: [
        f"""ALTER TABLE {SESSIONS}
            ALTER COLUMN transcript TYPE uuid USING transcript::uuid,
            ADD COLUMN revision bigint NOT NULL DEFAULT 1,
            ADD COLUMN forked_from text,
            ADD COLUMN forked_from_revision bigint,
            ADD COLUMN appendable boolean NOT NULL DEFAULT true""",
        f"""CREATE TABLE {REVISIONS} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            revision bigint NOT NULL,
            kind text NOT NULL,
            title text NOT NULL,
            title_version bigint NOT NULL,
            pinned boolean NOT NULL,
            metadata_version bigint NOT NULL,
            created_at text NOT NULL,
            updated_at text NOT NULL,
            message_count integer NOT NULL,
            transcript uuid NOT NULL,
            metadata json NOT NULL,
            runtime_state json NOT NULL,
            PRIMARY KEY (session_id, revision)
        )""",
        f"""INSERT INTO {REVISIONS} (session_id, revision, kind, title, title_version, pinned,
                metadata_version, created_at, updated_at, message_count, transcript, metadata,
                runtime_state)
            SELECT id, 1, 'save', title, title_version, pinned, metadata_version, created_at,
                updated_at, message_count, transcript, metadata, runtime_state
            FROM {SESSIONS}""",
        # The free JSON is the revisions'; the defaults only filled the rows there were.
        f"""ALTER TABLE {SESSIONS}
            DROP COLUMN metadata,
            DROP COLUMN runtime_state,
            ALTER COLUMN revision DROP DEFAULT,
            ALTER COLUMN appendable DROP DEFAULT""",
        # A new table rather than an UPDATE of every row: one copy, no dead rows.
        f"ALTER TABLE {MESSAGES} RENAME TO {_OLD_MESSAGES}",
        f"ALTER INDEX {MESSAGES}_pkey RENAME TO {_OLD_MESSAGES}_pkey",
        f"""CREATE TABLE {MESSAGES} (
            session_id text NOT NULL REFERENCES {SESSIONS} (id) ON DELETE CASCADE,
            transcript uuid NOT NULL,
            position integer NOT NULL,
            body json NOT NULL,
            PRIMARY KEY (session_id, transcript, position)
        )""",
        f"""INSERT INTO {MESSAGES} (session_id, transcript, position, body)
            SELECT m.session_id, s.transcript, m.position, m.body
            FROM {_OLD_MESSAGES} m JOIN {SESSIONS} s ON s.id = m.session_id""",
        f"DROP TABLE {_OLD_MESSAGES}",
    ],
    # Pages of list_sessions: keyset order (updated_at, id) descending, ids
    # compared byte by byte ("C") as Python compares them, and pinned pages.
    4: [
        f"""CREATE INDEX {SESSIONS}_page
            ON {SESSIONS} (updated_order DESC, (id COLLATE "C") DESC)""",
        f"""CREATE INDEX {SESSIONS}_pinned_page
            ON {SESSIONS} (pinned, updated_order DESC, (id COLLATE "C") DESC)""",
    ],
}

_MIGRATION_LOCK = 0x5E55_AC70  # pg_advisory_xact_lock key serializing migrations


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`, in one transaction.

    Raises:
        UnsupportedFormatError: the database was migrated by a newer version.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    conn.execute("CREATE TABLE IF NOT EXISTS sessionactors_schema (version integer NOT NULL)")
    row = conn.execute("SELECT max(version) FROM sessionactors_schema").fetchone()
    version = row[0] if row is not None and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        conn.rollback()
        raise UnsupportedFormatError(
            "postgresql sessionactors_schema",
            f"schema version {version}; this version of sessionactors knows up to "
            f"{SCHEMA_VERSION}: upgrade it to use this database",
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[step]:
            conn.execute(statement)
        logger.info("sessionactors schema migrated to version %d", step)
    if version < SCHEMA_VERSION:  # one row: the version the tables are at
        conn.execute("DELETE FROM sessionactors_schema")
        conn.execute("INSERT INTO sessionactors_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    conn.commit()
