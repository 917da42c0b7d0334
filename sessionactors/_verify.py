"""The checks of ``sessionactors verify``: what can be wrong in a store, and the safe repairs.

Each check is a small function of one session directory that yields the
problems it finds; :data:`CHECKS` lists them, so a new file of a session (a
journal beside the snapshot, say) gets its own check beside the others.
Decoding goes through the file backend's own decoders, never a second reader.

Each problem has a severity: *damage* (a file the library cannot read, or
values it would not write) or a *leftover* of an interrupted write, which
readers ignore and the session's next write clears anyway. Only leftovers
are repaired, each safe while the session's lock is held: cutting a torn
last line off a token-usage log or uncounted bytes off a journal, removing
a temporary snapshot file or a journal no snapshot names, and making absent
an older snapshot slot a failed or killed rewrite left empty or torn beside
a whole newer one. Nothing here deletes or rewrites a session, nor a damaged
file the store kept aside, and no repair changes what a reader of the
session gets.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from ._errors import CorruptSessionError, InvalidSessionIdError
from ._files import (
    FORMAT,
    LOG_FILE,
    SESSION_FILE,
    SLOT_FILES,
    SessionFiles,
    Snapshot,
    cut_torn_tail,
    decode_snapshot,
    fsync_dir,
    is_journal,
    is_kept,
    is_temp,
    read_slots,
    read_snapshot_at,
)
from ._store import validate_session_id

__all__ = [
    "CHECKS",
    "Problem",
    "Repair",
    "SessionDir",
    "SessionReport",
    "Severity",
    "session_names",
    "verify_session",
]

# At most this many bad line numbers are listed in one problem.
_MAX_LINES_LISTED = 5
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A snapshot slot is one line and a checksum line; read at most this much of one.
_SLOT_READ_LIMIT = 1 << 26


class Severity(enum.Enum):
    """How bad a problem is."""

    #: A file the library cannot read, or values it would not write.
    DAMAGE = "damage"
    #: What an interrupted write (a crash, a full disk) left: readers ignore
    #: it and the session's next write clears it; ``--repair`` may too.
    LEFTOVER = "leftover"


class Repair(enum.Enum):
    """The repairs ``--repair`` may make; every other problem is only reported."""

    TRUNCATE_TORN_TAIL = "cut off"
    TRUNCATE_UNCOUNTED = "cut back to the counted size"
    REMOVE_TEMP_FILE = "removed"
    REMOVE_ORPHAN_JOURNAL = "orphan removed"
    CLEAR_OLDER_SLOT = "made absent; the newer slot is kept"


@attrs.frozen
class Problem:
    """One thing wrong in a store.

    Attributes:
        path: the file or directory at fault.
        message: what is wrong, for a person.
        repair: the safe repair, or None if it can only be reported.
        transient: a writer in the middle of its work looks like this for an
            instant, so the problem is confirmed under the session's lock.
        severity: damage, or a leftover of an interrupted write.
    """

    path: Path
    message: str
    repair: Repair | None = None
    transient: bool = False
    severity: Severity = Severity.DAMAGE


@attrs.frozen
class SessionDir:
    """One directory of the store, as the checks see it."""

    root: Path
    name: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def session_path(self) -> Path:
        return self.path / SESSION_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE


@attrs.frozen
class SessionReport:
    """What verifying one directory found and, with ``repair``, fixed.

    Attributes:
        problems: the problems that remain.
        repaired: the problems that were repaired.
    """

    problems: list[Problem]
    repaired: list[Problem]


def session_names(root: Path) -> list[str]:
    """The names of the store's directories (symlinks and plain files are not sessions)."""
    names = [entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    names.sort()
    return names


# --- the checks ---------------------------------------------------------------------


def check_name(where: SessionDir) -> Iterator[Problem]:
    """The directory's name must be a session id the library accepts."""
    try:
        validate_session_id(where.name)
    except InvalidSessionIdError as exc:
        yield Problem(where.path, f"not a valid session id: {exc}")


def check_snapshot(where: SessionDir) -> Iterator[Problem]:
    """The snapshot exists, its head is sane, and it decodes with its messages."""
    try:
        snapshot = read_snapshot_at(str(where.path), where.name)
    except CorruptSessionError as exc:
        yield Problem(Path(exc.path), f"corrupt: {exc.reason}")
        return
    except OSError as exc:
        yield Problem(where.session_path, f"cannot be read: {exc.strerror or exc}")
        return
    if snapshot is None:
        yield Problem(
            where.path,
            "no session.json: not a session (an abandoned or foreign directory)",
            transient=True,  # a first save creates the directory, then the file
        )
        return
    path = Path(snapshot.path)
    unreadable = list(_read_session_problems(where, path))
    yield from _check_slots(where, snapshot, session_whole=not unreadable)
    yield from _check_head(path, snapshot.head)
    yield from unreadable


def _read_session_problems(where: SessionDir, path: Path) -> Iterator[Problem]:
    """Why the session does not read whole (its journal, its messages), if it does not."""
    try:
        SessionFiles(where.root, where.name, fsync=False).read_session()
    except CorruptSessionError as exc:
        yield Problem(Path(exc.path), f"corrupt: {exc.reason}")
    except OSError as exc:
        yield Problem(path, f"cannot be read: {exc.strerror or exc}")


def _check_slots(where: SessionDir, newer: Snapshot, *, session_whole: bool) -> Iterator[Problem]:
    """The slot beside ``newer`` (the one readers use) that does not decode, if any.

    A slot a rewrite left empty or torn, beside a whole newer slot of a
    session that reads whole, is a leftover (readers use the newer slot; the
    next save rewrites this one); anything else undecodable is damage.
    """
    for index, slot in enumerate(read_slots(str(where.path), where.name)):
        if not isinstance(slot, CorruptSessionError):
            continue
        left = _interrupted_rewrite(slot.path, index, where.name, newer) if session_whole else None
        if left is None:
            yield Problem(
                Path(slot.path),
                f"corrupt: {slot.reason}; the other slot (seq {newer.seq}) is read, "
                "and the next save rewrites this one",
                transient=True,  # a writer rewrites a slot in place
            )
            continue
        yield Problem(
            Path(slot.path),
            f"older snapshot slot {left}; readers use the newer slot (seq {newer.seq}), "
            "which is whole, and the next save rewrites this one",
            repair=Repair.CLEAR_OLDER_SLOT,
            transient=True,  # a writer rewrites a slot in place
            severity=Severity.LEFTOVER,
        )


def _interrupted_rewrite(path: str, slot: int, session_id: str, newer: Snapshot) -> str | None:
    """What an interrupted rewrite left in slot number ``slot``, or None if not that.

    A rewrite writes the new bytes over the old ones, then cuts the old
    ones' tail off. A rewrite that fails (ENOSPC, EIO) cuts the slot to
    nothing; a crash after the write and before the cut leaves a whole
    snapshot one ``seq`` above the newer slot, then the old bytes' tail.
    Anything else (a checksum that does not match, say) is not told apart
    from damage, and is not called a leftover.
    """
    raw = _read_slot_bytes(path)
    if raw is None:
        return None
    if not raw:
        return "left empty by a rewrite that failed (a full disk, say)"
    line, _, rest = raw.partition(b"\n")
    checksum, _, stale = rest.partition(b"\n")
    if not stale.endswith(b"\n"):  # the old bytes ended with their checksum line
        return None
    head = line + b"\n" + checksum + b"\n"
    try:
        unconfirmed = decode_snapshot(path, head, session_id, slot)
    except CorruptSessionError:
        return None
    if unconfirmed.format != FORMAT or unconfirmed.seq != newer.seq + 1:
        return None
    return (
        "torn by a crash between its rewrite and the cut after it: a snapshot no save "
        f"confirmed (seq {unconfirmed.seq}), then {len(stale)} bytes of the one before"
    )


def _read_slot_bytes(path: str) -> bytes | None:
    """The bytes of a slot file (a link is not followed), or None if they cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(_SLOT_READ_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)


def is_count(value: Any) -> bool:
    """A non-negative int (bools, which are ints to Python, excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_head(path: Path, head: dict[str, Any]) -> Iterator[Problem]:
    """The raw head's values, named one by one (the decoder only says which is wrong)."""
    title_version = head.get("title_version")
    metadata_version = head.get("metadata_version")
    insane = [
        f"{key} is {head.get(key)!r}, not a non-negative integer"
        for key in ("title_version", "metadata_version", "message_count")
        if not is_count(head.get(key))
    ]
    if not isinstance(head.get("title"), str):
        insane.append(f"title is {head.get('title')!r}, not a string")
    if not isinstance(head.get("pinned"), bool):
        insane.append(f"pinned is {head.get('pinned')!r}, not true or false")
    for reason in insane:
        yield Problem(path, f"bad head: {reason}")
    if is_count(title_version) and is_count(metadata_version):
        assert isinstance(title_version, int) and isinstance(metadata_version, int)
        if title_version > metadata_version:
            yield Problem(
                path,
                f"versions disagree: title_version {title_version} > "
                f"metadata_version {metadata_version} (every title edit bumps both)",
            )


def check_usage_log(where: SessionDir) -> Iterator[Problem]:
    """Every complete line of ``token-usage.jsonl`` is one JSON object; no torn tail."""
    path = where.log_path
    bad: list[int] = []
    torn = 0
    try:
        with open(path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.endswith(b"\n"):
                    torn = len(line)
                    break
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    record = None
                if not isinstance(record, dict):
                    bad.append(number)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem(path, f"cannot be read: {exc.strerror or exc}")
        return
    if bad:
        listed = ", ".join(str(number) for number in bad[:_MAX_LINES_LISTED])
        if len(bad) > _MAX_LINES_LISTED:
            listed += f" and {len(bad) - _MAX_LINES_LISTED} more"
        lines = "line" if len(bad) == 1 else "lines"
        yield Problem(path, f"{lines} {listed}: not a JSON object")
    if torn:
        yield Problem(
            path,
            f"torn tail: {torn} bytes after the last complete line",
            repair=Repair.TRUNCATE_TORN_TAIL,
            transient=True,
            severity=Severity.LEFTOVER,
        )


def check_temp_files(where: SessionDir) -> Iterator[Problem]:
    """No temporary snapshot file is left over from a crashed save."""
    try:
        names = sorted(os.listdir(where.path))
    except OSError as exc:
        yield Problem(where.path, f"cannot be listed: {exc.strerror or exc}")
        return
    for name in names:
        if is_temp(name):
            yield Problem(
                where.path / name,
                "stray temporary file (a crashed save)",
                repair=Repair.REMOVE_TEMP_FILE,
                transient=True,  # a save in progress writes it, then renames it
                severity=Severity.LEFTOVER,
            )


def check_kept_files(where: SessionDir) -> Iterator[Problem]:
    """Damaged files the store set aside rather than delete: for a person to look into.

    A save that replaces a journal whose lines do not decode keeps it under
    a name ending in ``.corrupt``. It is damage that nothing reads any more,
    reported until someone removes it; ``--repair`` never does.
    """
    try:
        names = sorted(name for name in os.listdir(where.path) if is_kept(name))
    except OSError:
        return  # check_temp_files reports it
    for name in names:
        yield Problem(
            where.path / name,
            "a damaged file the store kept rather than delete (a save replaced it): "
            "look into it, then remove it yourself; verify never does",
        )


def check_journals(where: SessionDir) -> Iterator[Problem]:
    """No bytes beyond what the snapshot counts, and no journal it does not name."""
    try:
        snapshot = read_snapshot_at(str(where.path), where.name)
    except (OSError, CorruptSessionError):
        return  # check_snapshot reports it; without a snapshot nothing is an orphan
    if snapshot is None:
        return
    try:
        names = sorted(name for name in os.listdir(where.path) if is_journal(name))
    except OSError:
        return  # check_temp_files reports it
    for name in names:
        path = where.path / name
        if name != snapshot.journal:
            yield Problem(
                path,
                "journal no snapshot names (a crashed rewrite)",
                repair=Repair.REMOVE_ORPHAN_JOURNAL,
                transient=True,  # a rewrite writes it, then the snapshot naming it
                severity=Severity.LEFTOVER,
            )
            continue
        try:
            extra = path.stat().st_size - snapshot.journal_size
        except OSError:
            continue  # a missing journal is check_snapshot's
        if extra > 0:
            yield Problem(
                path,
                f"{extra} bytes beyond the {snapshot.journal_size} counted (a crashed save)",
                repair=Repair.TRUNCATE_UNCOUNTED,
                transient=True,  # a save appends, then writes the snapshot counting it
                severity=Severity.LEFTOVER,
            )


Check = Callable[[SessionDir], Iterator[Problem]]

#: Every check of one session directory, in the order their problems print.
CHECKS: tuple[Check, ...] = (
    check_name,
    check_snapshot,
    check_journals,
    check_kept_files,
    check_usage_log,
    check_temp_files,
)


def run_checks(where: SessionDir) -> list[Problem]:
    try:
        os.listdir(where.path)
    except OSError as exc:
        # One problem, not one per file: nothing in it can be checked (EACCES, say).
        unreadable = Problem(where.path, f"cannot be read: {exc.strerror or exc}")
        return [*check_name(where), unreadable]
    return [problem for check in CHECKS for problem in check(where)]


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
    Repair.CLEAR_OLDER_SLOT: _clear_older_slot,
}


# --- one session -------------------------------------------------------------------------


def verify_session(root: Path, name: str, *, repair: bool) -> SessionReport:
    """Check one directory of the store; with ``repair``, make the safe repairs.

    A problem a live writer could cause for an instant (a torn tail, a
    temporary file, a directory without its snapshot yet) is confirmed while
    holding the session's lock, and repaired only then, so verify may run
    beside stores that are writing.

    Raises:
        OSError: the session's lock could not be taken for a repair.
    """
    where = SessionDir(root, name)
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
                    problems = run_checks(where)
    except OSError:
        if repair:
            raise
        return SessionReport(problems, [])  # no right to lock: report what was seen
    return SessionReport(problems, repaired)
