"""The tables and their migrations: schema version 2, recorded in ``sessionactors_schema``.

Tables::

    sessionactors_sessions     one row a session: the authoritative group,
                               created_at/updated_at (ISO 8601 text, offsets
                               kept), message_count, transcript (a generation
                               id), metadata and runtime_state (json)
    sessionactors_messages     (session_id, position) -> body (json): the
                               transcript, one row a message
    sessionactors_token_usage  (session_id, seq) -> record (json): append-only
    sessionactors_batches      token (uuid) -> written: one row a writing
                               transaction of the last TOKEN_RETENTION

``json``, not ``jsonb``: it keeps the text as written, so every value reads
back equal (``jsonb`` turns ``1e300`` into an integer and refuses ``\\u0000``).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from ..._errors import UnsupportedFormatError

__all__ = ["BATCHES", "MESSAGES", "MIGRATIONS", "SCHEMA_VERSION", "SESSIONS", "USAGE", "migrate"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SESSIONS = "sessionactors_sessions"
MESSAGES = "sessionactors_messages"
USAGE = "sessionactors_token_usage"
BATCHES = "sessionactors_batches"

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
