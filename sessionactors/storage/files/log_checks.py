"""Verify's check of a session in a log (format 3 or 4): damage, then what crashes left.

Damage: a record of a counted part whose checksum does not match, a
message or commit that does not decode, a reference to a generation that
is not here, history that disagrees with the log (see :mod:`.log_history`),
and a whole but damaged record after the last commit (perhaps a later
revision: never cut). Leftovers, which readers ignore and the session's
next write clears: the bytes a crash left after the last whole commit,
generations and links the session no longer needs (unreachable from the
current generation), and the slots and journals of an older format beside
the log. A session with damage gets no repair of its log files: what looks
like a leftover beside damage may be what someone needs to look into it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from ..._errors import CorruptSessionError
from .durable import directory_at, open_at
from .generations import Generation, list_log
from .layout import SLOT_FILES, is_journal
from .log_history import check_history, check_references, check_values, reachable
from .log_scan import LogScan, scan_log
from .problems import Problem, Repair, SessionDir, Severity
from .records import MESSAGE, REPLACE, parse_record
from .session import SessionFiles

__all__ = ["check_log", "has_log"]


def has_log(where: SessionDir) -> bool:
    """Whether the directory holds a generation of its own: a session in a log (format 3 or 4)."""
    with contextlib.suppress(CorruptSessionError, OSError), directory_at(str(where.path)) as fd:
        return fd is not None and bool(list_log(fd).own)
    return False


def check_log(where: SessionDir) -> Iterator[Problem]:
    """The log's problems, damage first; nothing for a directory without log files."""
    try:
        with directory_at(str(where.path)) as fd:
            problems = [] if fd is None else _log_problems(where, fd)
    except CorruptSessionError as exc:
        problems = [Problem(Path(exc.path), f"corrupt: {exc.reason}")]
    except OSError as exc:
        problems = [Problem(where.path, f"cannot be read: {exc.strerror or exc}")]
    yield from problems


def _log_problems(where: SessionDir, fd: int) -> list[Problem]:
    listing = list_log(fd)
    if not listing.own:
        # Links and no generation: a fork that crashed before making its
        # own (a session of an older format never has links).
        links = sorted(listing.links.values())
        return [_unneeded(where.path / name, link=True) for name in links]
    scan = scan_log(where, fd)
    needed = reachable(scan)
    found = [
        *scan.damage,
        *check_references(scan, needed, where.history),
        *check_history(scan),
        *check_values(scan, needed),
    ]
    tails = [_tail(scan, fd, gen) for gen in sorted(needed) if gen in scan.listing.own]
    found += [problem for problem in tails if problem is not None]
    if not _damaged(found):
        found += _read_as_the_library_does(where)
    unneeded = _unneeded_gens(scan, needed)
    leftovers = [
        *(_unneeded(scan.path(gen), link=gen not in listing.own) for gen in unneeded),
        *_older_format_files(where, fd),
    ]
    if _damaged(found):
        found = [_unrepaired(problem) for problem in found]
        leftovers = [_unrepaired(problem) for problem in leftovers]
    return found + leftovers


def _damaged(problems: list[Problem]) -> bool:
    return any(problem.severity is Severity.DAMAGE for problem in problems)


def _unrepaired(problem: Problem) -> Problem:
    """A leftover beside damage: reported, never repaired (see the module's docstring)."""
    if problem.repair is None:
        return problem
    return attrs.evolve(
        problem,
        message=f"{problem.message}; not repaired while the session's log is damaged",
        repair=None,
    )


def _tail(scan: LogScan, fd: int, gen: str) -> Problem | None:
    """What lies after the last whole commit of an own generation, if anything.

    A write appends message (and replacement) records then its commit, in
    one ``write``: a crash leaves a prefix of that, whole such records and
    perhaps one cut short, which is a leftover. A whole record that is no message, or
    whose checksum does not match, no crash leaves: it is damage (a later
    commit, damaged, perhaps), and is never cut.
    """
    generation = scan.generations.get(gen)
    size = scan.sizes.get(gen)
    if generation is None or size is None or size <= generation.end:
        return None
    tail = _read_from(fd, str(scan.where.path), generation, size)
    path = scan.path(gen)
    latest = generation.commits[-1].revision
    offset = generation.end
    for line in _whole_lines(tail):
        record = parse_record(line[:-1])
        if record is None or record[0] not in (MESSAGE, REPLACE):
            return Problem(
                path,
                f"corrupt: a damaged record at byte {offset}, after the last whole commit "
                f"(revision {latest}): perhaps a later revision whose commit is damaged; "
                f"readers take revision {latest} for the latest; verify never cuts it",
            )
        offset += len(line)
    return Problem(
        path,
        f"{size - generation.end} bytes after the last whole commit (revision {latest}): "
        "what a crash left of a write; readers ignore them and the next write cuts them off",
        repair=Repair.CUT_LOG_TAIL,
        transient=True,  # a write appends its records, then its commit
        severity=Severity.LEFTOVER,
    )


def _whole_lines(data: bytes) -> Iterator[bytes]:
    """Each line of ``data`` that ends with a newline (with it); a last one cut short is not."""
    start = 0
    while (newline := data.find(b"\n", start)) >= 0:
        yield data[start : newline + 1]
        start = newline + 1


def _read_from(fd: int, directory: str, generation: Generation, size: int) -> bytes:
    """The bytes of ``generation``'s file from its counted end to ``size``."""
    file = open_at(fd, directory, generation.name, os.O_RDONLY)
    try:
        chunks: list[bytes] = []
        offset = generation.end
        while offset < size:
            chunk = os.pread(file, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(file)


def _read_as_the_library_does(where: SessionDir) -> list[Problem]:
    """The latest revision and the history, read by the file storage itself.

    The checks above judge every record; this makes sure a load, and
    ``session_history``, agree that the session reads whole.
    """
    files = SessionFiles(where.root, where.name, fsync=False)
    try:
        files.read_session()
        files.read_history(1)
    except CorruptSessionError as exc:
        return [Problem(Path(exc.path), f"corrupt: {exc.reason}")]
    except FileNotFoundError as exc:
        # A generation a write removed (its prune) after the reader listed
        # it: confirmed, or not, under the session's lock.
        return [Problem(where.path, f"changed while checked: {exc.strerror}", transient=True)]
    except OSError as exc:
        return [Problem(where.path, f"cannot be read: {exc.strerror or exc}")]
    return []


def _unneeded_gens(scan: LogScan, needed: set[str]) -> list[str]:
    gens = set(scan.listing.own) | set(scan.listing.links)
    return sorted(gens - needed, key=lambda gen: str(scan.path(gen)))


def _unneeded(path: Path, *, link: bool) -> Problem:
    if link:
        message = (
            "a link no generation of this session needs (a fork, or a write, that crashed "
            "before removing it): readers ignore it; removing it leaves the other session's "
            "file as it is"
        )
        repair = Repair.REMOVE_UNNEEDED_LINK
    else:
        message = (
            "a generation no kept revision needs (a write that crashed before removing it): "
            "readers ignore it"
        )
        repair = Repair.REMOVE_UNNEEDED_GENERATION
    return Problem(
        path,
        message,
        repair=repair,
        transient=True,  # a write makes a generation, then removes those no longer needed
        severity=Severity.LEFTOVER,
    )


def _older_format_files(where: SessionDir, fd: int) -> Iterator[Problem]:
    """The snapshot slots and journals of formats 1 and 2 beside the log."""
    with os.scandir(fd) as entries:
        names = sorted(entry.name for entry in entries if not entry.is_dir(follow_symlinks=False))
    for name in names:
        if name in SLOT_FILES or is_journal(name):
            yield Problem(
                where.path / name,
                "a file of an older format beside the log, which holds the session (a move "
                "into the log that crashed before removing it): readers ignore it",
                repair=Repair.REMOVE_OLDER_FORMAT,
                transient=True,  # a move makes the log, then removes the older files
                severity=Severity.LEFTOVER,
            )
