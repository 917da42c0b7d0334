"""Verify's checks of a session's snapshot: its slots, its head and the session they hold.

Decoding goes through the file backend's own decoders, never a second reader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._errors import CorruptSessionError
from .durable import directory_at
from .layout import FORMAT, LOG_FILE
from .leftovers import abandoned
from .problems import Problem, Repair, SessionDir, Severity
from .session import SessionFiles
from .slots import read_slots, read_snapshot_at
from .snapshot import Snapshot, decode_snapshot

__all__ = ["check_snapshot", "is_count"]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A snapshot slot is one line and a checksum line; read at most this much of one.
_SLOT_READ_LIMIT = 1 << 26


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
        usage = where.path / LOG_FILE
        if usage.is_file():
            yield Problem(
                usage,
                "a token-usage log without its session: what an import or a delete stopped"
                " by a crash leaves; no read returns it, and a session made under this id"
                " removes it first",
                repair=Repair.REMOVE_STRAY_USAGE,
                transient=True,  # an import writes the records, then the session
                severity=Severity.LEFTOVER,
            )
            return
        with directory_at(str(where.path)) as fd:
            left = fd is not None and abandoned(fd)
        if left:
            yield Problem(
                where.path,
                "a directory without a session, holding at most what a writer makes on its"
                " way (temporary files, a fork's links): what a first write, a fork, an"
                " import or a delete stopped by a crash leaves; no read returns it",
                repair=Repair.REMOVE_ABANDONED_DIRECTORY,
                transient=True,  # a first save creates the directory, then the file
                severity=Severity.LEFTOVER,
            )
            return
        yield Problem(
            where.path,
            "no log and no session.json: not a session (a foreign directory)",
            transient=True,
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
    next write moves the session into a log, and removes both); anything
    else undecodable is damage.
    """
    for index, slot in enumerate(read_slots(str(where.path), where.name)):
        if not isinstance(slot, CorruptSessionError):
            continue
        left = _interrupted_rewrite(slot.path, index, where.name, newer) if session_whole else None
        if left is None:
            yield Problem(
                Path(slot.path),
                f"corrupt: {slot.reason}; the other slot (seq {newer.seq}) is read, "
                "and the next write moves the session into a log, without this one",
                transient=True,  # an older version's writer rewrites a slot in place
            )
            continue
        yield Problem(
            Path(slot.path),
            f"older snapshot slot {left}; readers use the newer slot (seq {newer.seq}), "
            "which is whole, and the next write moves the session into a log, without this one",
            repair=Repair.CLEAR_OLDER_SLOT,
            transient=True,  # an older version's writer rewrites a slot in place
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
