"""The checks of ``sessionactors verify``: what can be wrong in a store, and the safe repairs.

Each check is a small function of one session directory that yields the
problems it finds; :data:`CHECKS` lists them, so a new file of a session (a
journal beside the snapshot, say) gets its own check beside the others.
Decoding goes through the file backend's own decoders, never a second reader.

Each problem has a severity: *damage* (a file the library cannot read, or
values it would not write) or a *leftover* of an interrupted write, which
readers ignore and the session's next write clears anyway. Only leftovers
are repaired, each safe while the session's lock is held: cutting a torn
last line off a token-usage log, the bytes after the last whole commit off
a log's generation or uncounted bytes off a journal; removing a temporary
file, a generation or a link the session no longer needs, the files of an
older format beside a log, a journal no snapshot names, or a directory left
without a session and holding at most such leftovers; and making absent
an older snapshot slot a failed or killed rewrite left empty or torn beside
a whole newer one. A log with damage gets none of its repairs. Nothing here
deletes or rewrites a session, nor a damaged file the store kept aside, and
no repair changes what a reader of the session gets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .backend import session_ids
from .checks import run_checks
from .durable import cut_torn_tail, directory_at, fsync_dir
from .layout import SLOT_FILES
from .leftovers import abandoned, sweep
from .log_repairs import cut_log_tail, remove_name
from .problems import Problem, Repair, SessionDir, SessionReport
from .session import SessionFiles
from .slots import read_snapshot_at

__all__ = ["session_names", "verify_session"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def session_names(root: Path) -> list[str]:
    """The names of the store's directories (symlinks and plain files are not sessions)."""
    names = session_ids(root)
    names.sort()
    return names


# --- the repairs ----------------------------------------------------------------------


def _truncate_torn_tail(problem: Problem) -> None:
    fd = os.open(problem.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        cut_torn_tail(fd, os.fstat(fd).st_size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _truncate_uncounted(problem: Problem) -> None:
    snapshot = read_snapshot_at(str(problem.path.parent), problem.path.parent.name)
    assert snapshot is not None  # under the lock, as when the problem was found
    fd = os.open(problem.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        os.ftruncate(fd, snapshot.journal_size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_file(problem: Problem) -> None:
    try:
        os.unlink(problem.path)
    except FileNotFoundError:
        return
    fsync_dir(problem.path.parent)


def _remove_stray_usage(problem: Problem) -> None:
    """Remove records left without their session, and their directory once it is empty."""
    _remove_file(problem)
    _remove_if_abandoned(problem.path.parent)


def _remove_abandoned_directory(problem: Problem) -> None:
    _remove_if_abandoned(problem.path)


def _remove_if_abandoned(directory: Path) -> None:
    """Remove a directory without a session, with what writers left in it (locked)."""
    with directory_at(str(directory)) as fd:
        if fd is None or not abandoned(fd):
            return  # something else is in it: reported on its own
        sweep(fd, str(directory), directory.name)
    try:
        os.rmdir(directory)
    except OSError:
        return
    fsync_dir(directory.parent)


def _clear_older_slot(problem: Problem) -> None:
    """Make an older slot left empty or torn absent (the checks, under the lock,
    found the newer slot whole and the session reading whole).

    The second slot is cut to nothing, which reads as absent (as the library
    makes it beside a first snapshot); the first is removed, since an empty
    first slot reads as torn. Either way the next save makes it whole again:
    a missing slot is made under a temporary name and renamed into place.
    """
    if problem.path.name == SLOT_FILES[1]:
        fd = os.open(problem.path, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        _remove_file(problem)


_REPAIRS: dict[Repair, Callable[[Problem], None]] = {
    Repair.TRUNCATE_TORN_TAIL: _truncate_torn_tail,
    Repair.TRUNCATE_UNCOUNTED: _truncate_uncounted,
    Repair.REMOVE_TEMP_FILE: _remove_file,
    Repair.REMOVE_ORPHAN_JOURNAL: _remove_file,
    Repair.REMOVE_STRAY_USAGE: _remove_stray_usage,
    Repair.REMOVE_ABANDONED_DIRECTORY: _remove_abandoned_directory,
    Repair.CLEAR_OLDER_SLOT: _clear_older_slot,
    Repair.CUT_LOG_TAIL: cut_log_tail,
    Repair.REMOVE_UNNEEDED_GENERATION: remove_name,
    Repair.REMOVE_UNNEEDED_LINK: remove_name,
    Repair.REMOVE_OLDER_FORMAT: remove_name,
}


# --- one session -------------------------------------------------------------------------


def verify_session(
    root: Path, name: str, *, repair: bool, history: int | None = None
) -> SessionReport:
    """Check one directory of the store; with ``repair``, make the safe repairs.

    ``history``: the store's, if known; a log must then keep the generations
    of the newest ``history`` revisions (without it, a missing one is
    history the store dropped).

    A problem a live writer could cause for an instant (a torn tail, a
    temporary file, a directory without its snapshot yet) is confirmed while
    holding the session's lock, and repaired only then, so verify may run
    beside stores that are writing.

    Raises:
        OSError: the session's lock could not be taken for a repair.
    """
    where = SessionDir(root, name, history)
    problems = run_checks(where)
    if not any(problem.transient for problem in problems):
        return SessionReport(problems, [])
    repaired: list[Problem] = []
    files = SessionFiles(root, name, fsync=True)
    try:
        with files.lock(create=False) as present:
            if not present:
                return SessionReport([], [])  # deleted meanwhile
            problems = run_checks(where)
            if repair:
                for problem in problems:
                    if problem.repair is not None:
                        _REPAIRS[problem.repair](problem)
                        repaired.append(problem)
                if repaired:
                    # A repair may have removed the directory (records left
                    # without their session): nothing is left to check then.
                    problems = run_checks(where) if where.path.exists() else []
    except OSError:
        if repair:
            raise
        return SessionReport(problems, [])  # no right to lock: report what was seen
    return SessionReport(problems, repaired)
