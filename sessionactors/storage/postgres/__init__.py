"""The PostgreSQL backend: sessions in tables, one transaction per batch of an actor.

psycopg 3's synchronous API over a ``psycopg_pool.ConnectionPool``; every
call blocks and runs in a worker thread with the rest of the actor's batch
(psycopg's async API is asyncio-only). The storage runs the steps the
planner chose, durably, and reports what it did; it decides nothing.

- :mod:`.schema`: the tables (a session's head, its kept revisions, the
  transcripts' message rows), their migrations, :data:`SCHEMA_VERSION`;
- :mod:`.rows`: the statements on a session's rows (a write and its
  retention, a fork's server-side copy), rows to and from values;
- :mod:`.retry`: which errors are tried again, how often, after what wait;
- :mod:`.outcome`: batch tokens, and the lookup of a COMMIT that got no answer;
- :mod:`.transaction`: the lock, the statements, the one COMMIT or the rollback;
- :mod:`.session`: :class:`PostgresSession`, the steps of a batch;
- :mod:`.backend`: :class:`PostgresBackend`, the pool and the listing.
"""

from __future__ import annotations

from .backend import PostgresBackend
from .schema import SCHEMA_VERSION, migrate
from .session import PostgresSession
from .transaction import lock_key

__all__ = ["SCHEMA_VERSION", "PostgresBackend", "PostgresSession", "lock_key", "migrate"]
