"""What deleting sessions would free, on a store's backend, for ``prune``.

On files: the bytes of a session directory's files that no session left
in place holds too (:func:`..storage.files.disk_use.freed`: a fork's link
to a pruned session's generation keeps that file). On PostgreSQL: the
session's row sizes, an estimate (:mod:`..storage.postgres.disk_use`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import trio

from ..storage.files.disk_use import StoredFile, freed, store_files

__all__ = ["Space", "measure"]


@attrs.frozen
class Space:
    """The bytes the deletion of some of the measured sessions would free."""

    #: Per session: its files (on files), or None on PostgreSQL.
    files: dict[str, list[StoredFile]] | None
    #: Per session: its bytes (on PostgreSQL), or None on files.
    rows: dict[str, int] | None
    #: What the figures are, when they are an estimate.
    estimate: str | None = None

    def alone(self, session_id: str) -> int:
        """Bytes the deletion of this session alone would free."""
        return self.together([session_id])

    def together(self, session_ids: Iterable[str]) -> int:
        """Bytes the deletion of all these sessions would free (shared ones counted once)."""
        if self.rows is not None:
            return sum(self.rows.get(session_id, 0) for session_id in session_ids)
        assert self.files is not None
        return freed({session_id: self.files.get(session_id, []) for session_id in session_ids})


async def measure(location: Path | str, session_ids: Sequence[str]) -> Space:
    """The space of these sessions of the store at ``location`` (a directory or a URL)."""
    if isinstance(location, str):
        from ..storage.postgres.disk_use import ESTIMATE, session_bytes

        counted = await trio.to_thread.run_sync(session_bytes, location)
        return Space(None, {counts.session_id: counts.total for counts in counted}, ESTIMATE)

    return Space(await trio.to_thread.run_sync(store_files, location, session_ids), None)
