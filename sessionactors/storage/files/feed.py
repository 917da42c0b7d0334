"""A watch of a file root: the index's rows read again whenever the index file changes.

Every write of every store on the root (any process) ends by updating the
index in a transaction that appends to its WAL file, so a change of any
file in the index's directory is the signal to read the rows whose ``seq``
is above the last one seen. The signal comes from inotify (through
``asyncinotify``, whose file descriptor trio waits on: no thread, no
polling); where the platform has none, the index is polled every
:data:`POLL_INTERVAL` seconds instead. A row holds only its session's latest
revision, so a watcher that falls behind is handed the latest, never a
backlog, and what it holds stays bounded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from ..._model import Change
from ..told import ToldRevisions
from .index import NOTE_SEEN_EVERY, ListingIndex, changes_of

__all__ = ["POLL_INTERVAL", "follow_index"]

logger = logging.getLogger(__name__)

#: Seconds between reads of the index where there is no inotify.
POLL_INTERVAL = 0.05
#: Seconds after which the index is read even without a signal: a last resort
#: (a signal the kernel dropped when its queue overflowed).
_SAFETY_INTERVAL = 1.0
#: Seconds after a read a signal woke the watch for, when the rows are read
#: once more, signal or not: a write's append to the WAL signals before its
#: commit shows (SQLite publishes it through shared memory, which inotify
#: does not see), so a read right after the signal may not find it yet.
_SECOND_LOOK = 0.02
_NO_LIMIT = trio.CapacityLimiter(math.inf)


def _inotify(directory: str) -> Any | None:
    """An inotify instance watching ``directory``, non-blocking; None where there is none."""
    try:
        from asyncinotify import InitFlags, Inotify, Mask
    except (ImportError, OSError):  # not Linux: no inotify
        return None
    try:
        inotify = Inotify(flags=InitFlags.CLOEXEC | InitFlags.NONBLOCK, sync_timeout=0)
        inotify.add_watch(
            directory,
            Mask.MODIFY | Mask.CREATE | Mask.MOVED_TO | Mask.DELETE | Mask.CLOSE_WRITE,
        )
    except OSError as exc:  # out of inotify instances or watches
        logger.warning("watching %s by polling: inotify refused (%s)", directory, exc)
        return None
    return inotify


async def follow_index(
    index: ListingIndex,
    session_id: str | None,
    put: Callable[[Change], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand ``put`` every change recorded in ``index`` after this starts, until cancelled."""
    watch, epoch, seen = await trio.to_thread.run_sync(index.add_watch, limiter=_NO_LIMIT)
    noted = seen  # how far the index knows this watch read: rows past it stay
    inotify = _inotify(str(index.directory))
    # Each session's latest revision handed over (see _news).
    handed: ToldRevisions[_Handed] = ToldRevisions()
    try:
        task_status.started()
        signalled = False
        while True:
            signalled = await _wait_for_signal(
                inotify, _SECOND_LOOK if signalled else _SAFETY_INTERVAL
            )
            now = await trio.to_thread.run_sync(index.changes, seen, session_id, limiter=_NO_LIMIT)
            # A delete whose row went unread (with an index removed, or pruned) is
            # looked for in the files.
            missed = seen < now.pruned
            if now.epoch != epoch:
                # The index was built anew (removed or damaged by hand): its seq
                # numbers start again, so every row may be news, and its
                # directory may be a new one to watch.
                epoch, seen, missed = now.epoch, 0, True
                now = await trio.to_thread.run_sync(
                    index.changes, seen, session_id, limiter=_NO_LIMIT
                )
                if inotify is not None:
                    inotify.close()
                inotify = _inotify(str(index.directory))
            if missed:
                for gone in await _gone(index, now.rows, handed):
                    put(Change(gone, "delete", None))
            after = seen
            for row in now.rows:
                for change in _news(row, after, handed):
                    put(change)
            # Every change up to the index's latest was in this read (a watch
            # of one session reads its own rows only).
            seen = max(seen, now.last)
            if seen - noted >= NOTE_SEEN_EVERY or missed:
                await trio.to_thread.run_sync(
                    index.note_seen, watch, epoch, seen, limiter=_NO_LIMIT
                )
                noted = seen
    finally:
        if inotify is not None:
            inotify.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(index.remove_watch, watch, limiter=_NO_LIMIT)


#: A session's revision handed to a watcher: its number and its updated_at.
_Handed = tuple[int, int]
#: Handed for a session told deleted from its files (no revision is 0): the
#: delete's row, if it comes after (a delete removes the files first), is
#: not told again.
_TOLD_GONE: _Handed = (0, 0)


async def _gone(
    index: ListingIndex, rows: list[tuple[Any, ...]], handed: ToldRevisions[_Handed]
) -> list[str]:
    """The sessions told of that ``rows`` do not show and the files no longer hold."""
    listed = {row[0] for row in rows}
    unlisted = [told for told in handed if told not in listed and handed.get(told) != _TOLD_GONE]
    gone = await trio.to_thread.run_sync(index.absent, unlisted, limiter=_NO_LIMIT)
    for session_id in gone:
        handed.tell(session_id, _TOLD_GONE)
    return gone


def _news(row: tuple[Any, ...], after: int, handed: ToldRevisions[_Handed]) -> list[Change]:
    """What a row of :meth:`ListingIndex.changes` tells a watcher that was handed ``handed``.

    A row shows a session's latest state only. A revision already handed
    (a row corrected, or read again from an index built anew) is not handed
    twice. Another at or below it is a session deleted and made again
    between two reads: the watcher is told of the delete first.
    """
    news: list[Change] = []
    for _, change in changes_of(row, after):
        if change.kind == "delete":
            told_gone = handed.get(change.session_id) == _TOLD_GONE
            handed.forget(change.session_id)
            if told_gone:
                continue
        elif change.revision is not None:
            this = (change.revision, row[-2])
            last = handed.get(change.session_id)
            if last == this:
                continue
            if last is not None and last[0] >= change.revision:
                news.append(Change(change.session_id, "delete", None))
            handed.tell(change.session_id, this)
        news.append(change)
    return news


async def _wait_for_signal(inotify: Any | None, at_most: float) -> bool:
    """Until a file of the index's directory changes, or ``at_most`` seconds (a poll's
    interval, without inotify) pass; whether it was a signal."""
    if inotify is None:
        await trio.sleep(POLL_INTERVAL)
        return False
    with trio.move_on_after(at_most):
        await trio.lowlevel.wait_readable(inotify.fd)
    signalled = False
    while inotify.sync_get() is not None:  # drain: one read of the rows serves them all
        signalled = True
    return signalled
