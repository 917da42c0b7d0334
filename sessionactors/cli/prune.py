"""``sessionactors prune``: delete the sessions not updated for a while, safely.

Selected: the sessions whose ``updated_at`` is older than now minus
``--older-than`` (with ``--keep-pinned``, the unpinned ones only); a session
the listing cannot read is never selected. ``--dry-run`` lists them with
the bytes each would free, and changes nothing.

Otherwise each goes in turn. With ``--archive DIR`` its export is written
to ``DIR/<id>.jsonl`` (the id percent-encoded as in a ``list`` cursor; a
name already taken gets ``~2``, ``~3``, ...: an older archive is never
replaced), synced with its directory, *before* the session is deleted.
The delete names the revision the listing saw (``if_revision``): a session
written since (a save, a title, a pin) is not deleted but kept, and its
archive, already stale, removed. So a session in use is never lost to a
prune that looked at it a moment before; and an archive is never of a
revision other than the one deleted.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import orjson
import trio

from .. import (
    CorruptSessionError,
    SessionNotFoundError,
    SessionStore,
    SessionSummary,
    VersionConflictError,
)
from .common import EXIT_OK, UsageError, sessions_naming_skips, store_location, with_store
from .durable import fsync_directory, remove_durably, write_new_durably
from .freed import Space, measure
from .listing import percent_encoded
from .progress import Progress
from .text import WIDTH, Column, clean, header, number, plural, row, utc

__all__ = ["Report", "archive_name", "prune_selected", "run", "select"]

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".jsonl"
#: The longest archive file name kept whole (a file name has at most 255 bytes;
#: room is left for ``~N``, the suffix, and a temporary file's additions).
_LONGEST_STEM = 160

_COLUMNS: tuple[Column, ...] = (
    ("ID", 30, False),
    ("UPDATED (UTC)", 19, False),
    ("PINNED", 6, False),
    ("FREES", 12, True),
)


def select(
    summaries: Sequence[SessionSummary], cutoff: datetime | None, *, keep_pinned: bool
) -> list[SessionSummary]:
    """The sessions last updated before ``cutoff`` (None: none), the oldest first."""
    if cutoff is None:
        return []
    chosen = [
        summary
        for summary in summaries
        if summary.updated_at < cutoff and not (keep_pinned and summary.pinned)
    ]
    chosen.sort(key=lambda summary: (summary.updated_at, summary.id))
    return chosen


def cutoff_of(now: datetime, older_than: timedelta) -> datetime | None:
    """``now - older_than``; None when that is before any time there is (nothing is older)."""
    try:
        return now - older_than
    except OverflowError:
        return None


def archive_name(session_id: str) -> str:
    """The stem of a session's archive: its id percent-encoded, one file name whatever it holds.

    An id too long to stay one file name once encoded keeps its first part
    and gains a digest of the whole (the archive itself holds the id).
    """
    stem = percent_encoded(session_id)
    if len(stem) <= _LONGEST_STEM:
        return stem
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    kept = session_id
    while len(percent_encoded(kept)) > _LONGEST_STEM - len(digest) - 1:
        kept = kept[:-1]
    return f"{percent_encoded(kept)}-{digest}"


@attrs.define
class Report:
    """What a prune did, so far: the sessions deleted, kept, found gone, and the archives."""

    deleted: list[str] = attrs.field(factory=list)
    #: Written while the prune ran: not deleted.
    kept: list[str] = attrs.field(factory=list)
    #: Deleted by someone else before the prune reached them.
    gone: list[str] = attrs.field(factory=list)
    #: Not deleted: it could not be read (a warning said why).
    left: list[str] = attrs.field(factory=list)
    archives: dict[str, Path] = attrs.field(factory=dict)


def _revision_of(data: bytes) -> int:
    """The revision an archive holds (its header's)."""
    revision: int = orjson.loads(data[: data.find(b"\n")])["revision"]
    return revision


async def _archive(store: SessionStore, summary: SessionSummary, directory: Path) -> Path | None:
    """Write the export of ``summary``'s revision to ``directory``; None if the session changed.

    Raises:
        SessionNotFoundError: it is gone.
    """
    data = await store.export_session(summary.id)
    if _revision_of(data) != summary.revision:
        return None  # written since it was listed: kept, and no archive of it
    stem = archive_name(summary.id)
    return await trio.to_thread.run_sync(write_new_durably, directory, stem, ARCHIVE_SUFFIX, data)


async def prune_selected(
    store: SessionStore,
    selected: Sequence[SessionSummary],
    *,
    archive: Path | None,
    report: Report,
    done: Callable[[str, str], None] = lambda session_id, outcome: None,
) -> None:
    """Delete each of ``selected`` unless written since it was listed; archive it first.

    ``report`` is filled as it goes (so it tells what was done when a
    failure stops it); ``done(id, outcome)`` is told each session's outcome:
    ``deleted``, ``kept``, ``gone`` or ``left`` (alone: it cannot be read).

    Raises:
        OSError: an archive could not be written: the prune stops there,
            before that session is deleted.
    """
    for summary in selected:
        session_id = summary.id
        written: Path | None = None
        try:
            if archive is not None:
                written = await _archive(store, summary, archive)
                if written is None:
                    report.kept.append(session_id)
                    done(session_id, "kept")
                    continue
            existed = await store.delete_session(session_id, if_revision=summary.revision)
        except VersionConflictError:
            # Written between the listing (or the export) and the delete.
            if written is not None:
                await trio.to_thread.run_sync(remove_durably, written)
            report.kept.append(session_id)
            done(session_id, "kept")
            continue
        except SessionNotFoundError:
            existed = False
        except CorruptSessionError as exc:
            logger.warning("session %r left alone: %s", session_id, exc)
            report.left.append(session_id)
            done(session_id, "left")
            continue
        if not existed:
            report.gone.append(session_id)
            if written is not None:
                report.archives[session_id] = written  # the last copy there is: kept
            done(session_id, "gone")
            continue
        report.deleted.append(session_id)
        if written is not None:
            report.archives[session_id] = written
        done(session_id, "deleted")


def _archive_directory(text: str) -> Path:
    """``--archive DIR``: made if missing (its parent must exist), and durably so.

    An archive synced in a directory whose own name is not would be lost
    with it by a power cut, after its session was deleted.
    """
    directory = Path(text)
    try:
        directory.mkdir()
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise UsageError(f"cannot make the archive directory {text!r}: no such parent") from None
    else:
        fsync_directory(directory.absolute().parent)
    if not directory.is_dir():
        raise UsageError(f"--archive {text!r} is not a directory")
    return directory


def _dry_run(selected: Sequence[SessionSummary], space: Space, since: str) -> None:
    print(header(_COLUMNS))
    for summary in selected:
        values = (
            summary.id,
            utc(summary.updated_at, short=True),
            "yes" if summary.pinned else "no",
            number(space.alone(summary.id), 12),
        )
        print(row(values, _COLUMNS))
    total = space.together(summary.id for summary in selected)
    _say(
        f"would delete {plural(len(selected), 'session')} not updated since {since}, "
        f"freeing {plural(total, 'byte')}; nothing was changed (dry run)"
    )
    if space.estimate is not None:
        _say(f"PostgreSQL: an estimate: {space.estimate}")
    else:
        _say(
            "Bytes a session shares with one that stays (a fork's links) are not freed; "
            "the total frees those the sessions listed share among themselves."
        )


def _say(text: str) -> None:
    """A sentence, wrapped to the terminal's width."""
    print(textwrap.fill(text, WIDTH - 1))


def _summary(report: Report, space: Space) -> str:
    freed = space.together(report.deleted)
    text = f"deleted {plural(len(report.deleted), 'session')}, freed {plural(freed, 'byte')}"
    if space.estimate is not None:
        text += " (an estimate)"
    text += f", kept {len(report.kept)} written meanwhile"
    if report.gone:
        text += f", {len(report.gone)} already gone"
    return text


def run(args: argparse.Namespace) -> int:
    """Prune the sessions of ``args.root`` not updated for ``args.older_than``."""
    location = store_location(args.root)
    archive = None if args.archive is None or args.dry_run else _archive_directory(args.archive)

    async def prune(store: SessionStore) -> None:
        now = datetime.now(timezone.utc)
        cutoff = cutoff_of(now, args.older_than)
        since = "the earliest time there is" if cutoff is None else f"{utc(cutoff)} UTC"
        selected = select(await sessions_naming_skips(store), cutoff, keep_pinned=args.keep_pinned)
        if not selected:
            print(
                f"no sessions to prune in {clean(os.fspath(store.root))}: none updated "
                f"before {since}" + (" and unpinned" if args.keep_pinned else "")
            )
            return
        space = await measure(location, [summary.id for summary in selected])
        if args.dry_run:
            _dry_run(selected, space, since)
            return
        report = Report()
        progress = Progress(len(selected), sys.stderr, minimum=1, label="prune")
        count = 0

        def done(session_id: str, outcome: str) -> None:
            nonlocal count
            count += 1
            progress.clear()
            if outcome != "left":  # a warning said it already
                print(_line(session_id, outcome, report), flush=True)
            progress.update(count)

        progress.update(count)
        try:
            await prune_selected(store, selected, archive=archive, report=report, done=done)
        finally:
            progress.clear()
            _say(_summary(report, space))

    with_store(location, prune, writes=True)
    return EXIT_OK


def _line(session_id: str, outcome: str, report: Report) -> str:
    """One session's outcome, as the prune goes."""
    archived = report.archives.get(session_id)
    where = "" if archived is None else f" (archived as {clean(os.fspath(archived))})"
    if outcome == "kept":
        return f"kept {session_id!r}: written while the prune ran"
    if outcome == "gone":
        return f"{session_id!r} was already deleted, by another{where}"
    return f"deleted {session_id!r}{where}"
