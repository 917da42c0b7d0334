"""The checks of ``sessionactors verify``: what can be wrong in one session directory.

Each check is a small function of one session directory that yields the
problems it finds; :data:`CHECKS` lists them, so a new file of a session (a
journal beside the snapshot, say) gets its own check beside the others. A
session in a log (format 3 or 4) is checked by :mod:`.log_checks`; one not yet
moved into a log (formats 1 and 2) by the snapshot's checks
(:mod:`.snapshot_checks`) and :func:`check_journals`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import orjson

from ..._errors import CorruptSessionError, InvalidSessionIdError
from ..._ids import validate_session_id
from .layout import is_journal, is_kept, is_temp
from .log_checks import check_log, has_log
from .problems import Problem, Repair, SessionDir, Severity
from .slots import read_snapshot_at
from .snapshot_checks import check_snapshot

__all__ = ["CHECKS", "Check", "run_checks"]

# At most this many bad line numbers are listed in one problem.
_MAX_LINES_LISTED = 5


def check_name(where: SessionDir) -> Iterator[Problem]:
    """The directory's name must be a session id the library accepts."""
    try:
        validate_session_id(where.name)
    except InvalidSessionIdError as exc:
        yield Problem(where.path, f"not a valid session id: {exc}")


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


def check_older_format(where: SessionDir) -> Iterator[Problem]:
    """A session of format 1 or 2: its snapshot slots and its journal.

    Beside a log they are leftovers of its move into the log, which
    :func:`check_log` reports.
    """
    if has_log(where):
        return
    yield from check_snapshot(where)
    yield from check_journals(where)


Check = Callable[[SessionDir], Iterator[Problem]]

#: Every check of one session directory, in the order their problems print.
CHECKS: tuple[Check, ...] = (
    check_name,
    check_older_format,
    check_log,
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
