"""The checks of ``sessionactors verify``: what can be wrong in a store, and the safe repairs.

Each check is a small function of one session directory that yields the
problems it finds; :data:`CHECKS` lists them, so a new file of a session (a
journal beside the snapshot, say) gets its own check beside the others.
Decoding goes through the file backend's own decoders, never a second reader.

Only two repairs exist, both safe while the session's lock is held: cutting a
torn last line off a token-usage log (a crashed append; the library cuts it
before its next append anyway) and removing a temporary snapshot file a
crashed save left behind. Nothing here deletes or rewrites a session.
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
    LOG_FILE,
    SESSION_FILE,
    SessionFiles,
    cut_torn_tail,
    fsync_dir,
    is_journal,
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
    "session_names",
    "verify_session",
]

# At most this many bad line numbers are listed in one problem.
_MAX_LINES_LISTED = 5


class Repair(enum.Enum):
    """The repairs ``--repair`` may make; every other problem is only reported."""

    TRUNCATE_TORN_TAIL = "cut off"
    TRUNCATE_UNCOUNTED = "cut back to the counted size"
    REMOVE_TEMP_FILE = "removed"
    REMOVE_ORPHAN_JOURNAL = "orphan removed"


@attrs.frozen
class Problem:
    """One thing wrong in a store.

    Attributes:
        path: the file or directory at fault.
        message: what is wrong, for a person.
        repair: the safe repair, or None if it can only be reported.
        transient: a writer in the middle of its work looks like this for an
            instant, so the problem is confirmed under the session's lock.
    """

    path: Path
    message: str
    repair: Repair | None = None
    transient: bool = False


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
    for slot in read_slots(str(where.path), where.name):
        if isinstance(slot, CorruptSessionError):
            yield Problem(
                Path(slot.path),
                f"corrupt: {slot.reason}; the other slot (seq {snapshot.seq}) is read, "
                "and the next save rewrites this one",
                transient=True,  # a writer rewrites a slot in place
            )
    yield from _check_head(path, snapshot.head)
    try:
        session = SessionFiles(where.root, where.name, fsync=False).read_session()
    except CorruptSessionError as exc:
        yield Problem(Path(exc.path), f"corrupt: {exc.reason}")
        return
    except OSError as exc:
        yield Problem(path, f"cannot be read: {exc.strerror or exc}")
        return
    if session is None:  # deleted meanwhile
        return


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
            )


Check = Callable[[SessionDir], Iterator[Problem]]

#: Every check of one session directory, in the order their problems print.
CHECKS: tuple[Check, ...] = (
    check_name,
    check_snapshot,
    check_journals,
    check_usage_log,
    check_temp_files,
)


def run_checks(where: SessionDir) -> list[Problem]:
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


_REPAIRS: dict[Repair, Callable[[Problem], None]] = {
    Repair.TRUNCATE_TORN_TAIL: _truncate_torn_tail,
    Repair.TRUNCATE_UNCOUNTED: _truncate_uncounted,
    Repair.REMOVE_TEMP_FILE: _remove_file,
    Repair.REMOVE_ORPHAN_JOURNAL: _remove_file,
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
