"""The file backend: a directory per session under a root, and listing them."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import trio

from ..._errors import CorruptSessionError
from ..._model import SessionSummary
from .session import SessionFiles

__all__ = ["FileBackend", "list_summaries", "read_summary"]


def read_summary(root: Path, session_id: str) -> SessionSummary | None:
    """The summary of one session from its latest revision, or None if it has none."""
    return SessionFiles(root, session_id, False).summary()


def list_summaries(root: Path) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """Every readable session's summary, newest first, and the errors of the others.

    A session that cannot be read (a file or directory the process may not
    read, a slot that is a directory) is one of the errors, as a
    :class:`CorruptSessionError` naming what failed: one such session never
    hides the others. Entries of the root that are not directories (symbolic
    links included) are not sessions and are passed over.
    """
    summaries: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return summaries, errors
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            summary = read_summary(root, entry.name)
        except CorruptSessionError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            where = exc.filename if isinstance(exc.filename, str) else entry.path
            errors.append(CorruptSessionError(where, f"cannot be read: {exc.strerror or exc}"))
            continue
        if summary is not None:
            summaries.append(summary)
    summaries.sort(key=lambda summary: summary.updated_at, reverse=True)
    return summaries, errors


@attrs.define
class FileBackend:
    """The default backend: a directory per session under ``root``."""

    root: Path
    fsync: bool

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        root = self.root
        await trio.to_thread.run_sync(
            lambda: root.mkdir(parents=True, exist_ok=True), limiter=limiter
        )

    async def aclose(self) -> None:
        pass

    def session(self, session_id: str) -> SessionFiles:
        return SessionFiles(self.root, session_id, self.fsync)

    def list_summaries(self) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        return list_summaries(self.root)
