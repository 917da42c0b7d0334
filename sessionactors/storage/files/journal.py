"""The message journal: one message a line, of which the snapshot counts the first bytes.

A save appends new messages to the journal the snapshot names, or writes a
whole new journal under a new name; bytes beyond the counted size (a crash
between an append and its snapshot) are ignored by readers and cut off by
the next append. A damaged journal a save replaces is kept under a second
name (see :data:`~.layout.KEPT_SUFFIX`), never deleted.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..._errors import CorruptSessionError
from ..._model import Message, converter, encode_message
from ..protocol import IoCounts
from .durable import append_synced, create_whole, open_at, read_prefix
from .layout import KEPT_SUFFIX
from .snapshot import Snapshot

__all__ = [
    "append_journal",
    "counted_lines",
    "encode_messages",
    "keep",
    "read_journal",
    "undecodable",
    "write_journal",
]

#: Bounds of the retry loop: a loop that cannot end is a hang, not a retry.
_KEEP_TRIES = 1000


def encode_messages(messages: Sequence[Message]) -> bytearray:
    """Journal lines for ``messages``, one compact JSON object each.

    Each line is added to one buffer as soon as it is made: keeping every
    line alive until a join costs several times the encoding itself.
    """
    lines = bytearray()
    for message in messages:
        lines += encode_message(message, newline=True)
    return lines


def read_journal(dir_fd: int, directory: str, snapshot: Snapshot) -> list[Any]:
    """The messages the snapshot counts, as JSON values."""
    lines = counted_lines(dir_fd, directory, snapshot)
    try:
        return [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError as exc:
        assert snapshot.journal is not None
        path = os.path.join(directory, snapshot.journal)
        raise CorruptSessionError(path, f"unreadable message: {exc}") from None


def counted_lines(dir_fd: int, directory: str, snapshot: Snapshot) -> list[bytes]:
    """The journal lines the snapshot counts (decoded by the caller).

    Raises:
        CorruptSessionError: the journal is missing, shorter than counted,
            holds another count of lines, or is not a file. When the
            snapshot was read beside a damaged newer slot, that slot is
            named instead: the journal was replaced by the snapshot lost in it.
    """
    assert snapshot.journal is not None
    path = os.path.join(directory, snapshot.journal)
    size = snapshot.journal_size
    try:
        data = read_prefix(dir_fd, directory, snapshot.journal, size)
    except FileNotFoundError:
        named_by = os.path.basename(snapshot.path)
        raise _cause(snapshot, path, f"journal missing, named by {named_by}") from None
    if len(data) != size or (size and not data.endswith(b"\n")):
        raise _cause(snapshot, path, f"journal shorter than the {size} bytes counted")
    lines = data.split(b"\n")[:-1]
    if len(lines) != snapshot.message_count:
        count = snapshot.message_count
        raise _cause(snapshot, path, f"{len(lines)} messages where {count} are counted")
    return lines


def _cause(snapshot: Snapshot, path: str, reason: str) -> CorruptSessionError:
    """The error for a journal that does not match ``snapshot``: it, or the slot behind it.

    A snapshot read beside a damaged slot is most likely the older one,
    whose journal the save lost in the damaged slot replaced: that slot
    is named, the cause, and the journal in the reason.
    """
    damaged = snapshot.damaged_beside
    if damaged is None:
        return CorruptSessionError(path, reason)
    return CorruptSessionError(
        damaged.path,
        f"{damaged.reason}; the other slot ({os.path.basename(snapshot.path)}) "
        f"names a journal that does not match it ({path}: {reason})",
    )


def undecodable(path: str, lines: Sequence[bytes]) -> CorruptSessionError | None:
    """Why the journal at ``path`` is damaged, if a line of it does not load as a message.

    The same decoding a load does: a line that is JSON but not a valid
    message (a field of the wrong type, a datetime that does not parse) is
    damage too, and such a journal must be kept, not replaced silently.
    """
    for number, line in enumerate(lines, 1):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return CorruptSessionError(path, f"line {number}: unreadable message: {exc}")
        if not isinstance(value, dict):
            return CorruptSessionError(path, f"line {number}: not a JSON object")
        try:
            converter.structure(value, Message)
        except Exception as exc:  # cattrs groups every field error in its own exception
            return CorruptSessionError(path, f"line {number}: not a valid message: {exc!r}")
    return None


def keep(dir_fd: int, directory: str, name: str) -> str:
    """Give the damaged file ``name`` a second name that says so, and return it (locked).

    A hard link: the file keeps its name (and the snapshot naming it
    stays whole) until the save that replaces it is in place, and a name
    already taken is never overwritten. The new name is made durable by
    the directory fsync of the journal written next.

    Raises:
        OSError: no second name could be made; nothing was changed.
    """
    for number in range(_KEEP_TRIES):
        kept = f"{name}.{number}{KEPT_SUFFIX}" if number else f"{name}{KEPT_SUFFIX}"
        try:
            os.link(name, kept, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        return kept
    raise OSError(
        errno.EEXIST,
        f"{_KEEP_TRIES} names taken: no name left to keep the damaged file under",
        os.path.join(directory, name),
    )


def write_journal(
    dir_fd: int,
    directory: str,
    name: str,
    data: bytes | bytearray,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    """Make the new journal ``name`` holding ``data``, durably, name included (locked)."""
    # The directory sync makes the new name durable before a snapshot uses it.
    create_whole(dir_fd, directory, name, data, sync, sync_directory)
    counts.journal_rewrites += 1
    counts.bytes_written += len(data)


def append_journal(
    dir_fd: int,
    directory: str,
    name: str,
    size: int,
    data: bytes | bytearray,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
) -> None:
    """Append ``data`` durably to the journal ``name`` of ``size`` counted bytes (locked).

    Bytes beyond ``size`` (lines a crash left uncounted) are cut off first.
    """
    if not data:
        return
    fd = open_at(dir_fd, directory, name, os.O_RDWR | os.O_APPEND)
    try:
        actual = os.fstat(fd).st_size
        if actual < size:
            path = os.path.join(directory, name)
            raise CorruptSessionError(path, f"journal shorter than the {size} bytes counted")
        if actual > size:
            os.ftruncate(fd, size)  # lines a crash left uncounted
        append_synced(fd, data, size, sync)
    finally:
        os.close(fd)
    counts.journal_appends += 1
    counts.bytes_written += len(data)
