"""What one ``watch`` holds between a backend's feed and its reader: bounded, coalesced."""

from __future__ import annotations

import contextlib
import threading

import trio

from ._model import Change

__all__ = ["ChangeBuffer"]


class ChangeBuffer:
    """The changes a watch has not handed out yet: at most three a session, whatever the load.

    Per session it keeps the latest revision, whether token usage was
    appended since, and a delete: a later revision replaces an earlier one
    (the reader may be handed a later revision without the ones before, never
    one older than it has seen), so a reader that does not keep up holds a
    bounded amount of memory per session and never slows a writer. Sessions
    are handed out in the order they first changed.

    ``put`` may be called from any thread (the memory backend's writers,
    PostgreSQL's listening thread) and never blocks on the reader.
    """

    def __init__(self, session_id: str | None) -> None:
        self.session_id = session_id
        self._pending: dict[str, list[Change]] = {}
        self._mutex = threading.Lock()
        self._token = trio.lowlevel.current_trio_token()
        self._arrived = trio.Event()
        self._closed = False
        self._error: Exception | None = None

    def put(self, change: Change) -> None:
        if self.session_id is not None and change.session_id != self.session_id:
            return
        with self._mutex:
            if self._closed:
                return
            was_empty = not self._pending
            kept = self._pending.setdefault(change.session_id, [])
            if change.kind == "delete":
                kept.clear()
            else:
                revision = change.revision is not None
                # Replace the pending change of its sort since the last delete.
                for position in range(len(kept) - 1, -1, -1):
                    older = kept[position]
                    if older.kind == "delete":
                        break
                    if (older.revision is not None) == revision:
                        del kept[position]
                        break
            kept.append(change)
        if was_empty:
            with contextlib.suppress(trio.RunFinishedError):  # the watcher's run is over
                self._token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self._arrived.set()

    def fail(self, error: Exception) -> None:
        """The feed ended: the reader gets ``error`` once it has read what came before.

        The first error is the one told: a feed that failed before its store
        closed keeps its own.
        """
        with self._mutex:
            if self._closed:
                return
            self._error = error
            self._closed = True
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._wake)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            self._pending.clear()

    def __aiter__(self) -> ChangeBuffer:
        return self

    async def __anext__(self) -> Change:
        while True:
            with self._mutex:
                if self._pending:
                    session_id = next(iter(self._pending))
                    kept = self._pending.pop(session_id)
                    change = kept.pop(0)
                    if kept:  # the rest after every other session's turn
                        self._pending[session_id] = kept
                    return change
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._closed:
                    raise StopAsyncIteration
                self._arrived = trio.Event()
                arrived = self._arrived
            await arrived.wait()

    def statistics(self) -> int:
        """How many changes wait to be read (for tests of the bound)."""
        with self._mutex:
            return sum(map(len, self._pending.values()))
