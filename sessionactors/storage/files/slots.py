"""The snapshot's two slots: reading both, choosing the newer whole one, writing the older.

A write rewrites the older slot in place while the newer one stays whole, so
a crash at any instant leaves one whole snapshot, the one before or the new
one; readers take the whole slot with the higher ``seq``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence

import attrs

from ..._errors import CorruptSessionError, UnsupportedFormatError
from .durable import CREATE_EMPTY, create_whole, directory_at, open_at, read_at, write_all
from .layout import SLOT_FILES, temp_name
from .snapshot import Snapshot, decode_snapshot, recorded_id

__all__ = [
    "check_owner",
    "decode_slots",
    "newest",
    "next_slot",
    "read_slots",
    "read_snapshot_at",
    "write_slot",
]


def read_slots(
    directory: str, session_id: str, *, dir_fd: int | None = None
) -> list[Snapshot | CorruptSessionError | None]:
    """Each snapshot slot of a session: decoded, why it does not decode, or absent.

    An empty second slot counts as absent: the first snapshot makes it ready
    for the next one. (An empty first slot is torn: the library makes it
    whole by a rename, and cuts it to nothing only when a rewrite fails, with
    the other slot whole beside it.)

    Args:
        directory: the session's directory, as errors name it.
        dir_fd: that directory, open; without it, it is opened here.

    Raises:
        CorruptSessionError: ``directory`` is not a directory (a symbolic
            link, a file), or a slot is one.
    """
    if dir_fd is None:
        with directory_at(directory) as opened:
            if opened is None:
                return [None, None]
            return read_slots(directory, session_id, dir_fd=opened)
    raws = [read_at(dir_fd, directory, name) for name in SLOT_FILES]
    return decode_slots(directory, session_id, raws)


def decode_slots(
    directory: str, session_id: str, raws: Sequence[bytes | None]
) -> list[Snapshot | CorruptSessionError | None]:
    """The slots of :func:`read_slots`, from their bytes (None: absent)."""
    slots: list[Snapshot | CorruptSessionError | None] = []
    for slot, (name, raw) in enumerate(zip(SLOT_FILES, raws, strict=True)):
        if raw is None or (slot == 1 and not raw):
            slots.append(None)
            continue
        try:
            slots.append(decode_snapshot(os.path.join(directory, name), raw, session_id, slot))
        except CorruptSessionError as exc:
            slots.append(exc)
    return slots


def read_snapshot_at(
    directory: str, session_id: str, *, tries: int = 3, dir_fd: int | None = None
) -> Snapshot | None:
    """The newer whole slot of a session's snapshot, or None if it has none.

    One slot may be torn (a crash while it was rewritten, or a writer of
    another process rewriting it right now): the other one, the snapshot
    before, is then the answer. Only when no slot decodes is the session
    corrupt. A reader that is not holding the lock may meet both slots in
    the middle of two rewrites in a row, so that case is read again.

    Raises:
        CorruptSessionError: a slot exists and none decodes.
    """
    if dir_fd is None:
        with directory_at(directory) as opened:
            if opened is None:
                return None
            return read_snapshot_at(directory, session_id, tries=tries, dir_fd=opened)
    for attempt in range(tries):
        try:
            return newest(read_slots(directory, session_id, dir_fd=dir_fd))
        except UnsupportedFormatError:
            raise  # never fall back from a newer writer's snapshot to an older one
        except CorruptSessionError:
            if attempt + 1 == tries:
                raise
        time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


def newest(slots: Sequence[Snapshot | CorruptSessionError | None]) -> Snapshot | None:
    """The whole slot with the higher ``seq``, or None if no slot exists.

    A slot chosen while the other does not decode carries that error as
    ``damaged_beside``: should its journal be missing, that is the cause.

    Raises:
        UnsupportedFormatError: a slot is written by a newer version of the library.
        CorruptSessionError: a slot exists and none decodes.
    """
    found = [slot for slot in slots if isinstance(slot, Snapshot)]
    errors = [slot for slot in slots if isinstance(slot, CorruptSessionError)]
    for error in errors:
        if isinstance(error, UnsupportedFormatError):
            raise error
    if found:
        chosen = max(found, key=lambda snapshot: snapshot.seq)
        return attrs.evolve(chosen, damaged_beside=errors[0]) if errors else chosen
    if errors:
        raise errors[0]
    return None


def next_slot(latest: Snapshot | None) -> tuple[int, int]:
    """The slot and ``seq`` of the next snapshot: the older slot, one higher."""
    if latest is None:
        return 0, 1
    return 1 - latest.slot, latest.seq + 1


def check_owner(directory: str, session_id: str, raw: Callable[[int], bytes | None]) -> None:
    """Refuse a directory whose snapshot records another session's id.

    On a case- or normalization-insensitive filesystem ``<root>/a`` opens
    session ``"A"``'s directory: nothing of it may be read, written or
    deleted as ``"a"``'s. A slot too damaged to name any id proves nothing
    either way and is left to the reads that decode it.

    Args:
        raw: the bytes of a slot by its number (read when asked, in order).
    """
    for slot, name in enumerate(SLOT_FILES):
        data = raw(slot)
        recorded = recorded_id(data) if data else None
        if recorded is not None and recorded != session_id:
            raise CorruptSessionError(
                os.path.join(directory, name),
                f"holds session {recorded!r}, not {session_id!r}: refused "
                "(a case- or normalization-insensitive filesystem?)",
            )


def write_slot(
    dir_fd: int,
    directory: str,
    slot: int,
    data: bytes,
    old_size: int | None,
    *,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    """Write the older snapshot slot (under the lock).

    An existing slot is rewritten in place: the newer slot stays whole
    meanwhile, so a crash at any instant leaves the snapshot before this
    one readable, and this slot reads as torn (its checksum, or bytes
    after it) until the new bytes are complete and the old ones cut off.
    That costs one fsync: no file is made, none renamed. A slot that does
    not exist yet (a session's first snapshot, or a format-1 session's
    upgrade) is made whole under a temporary name and renamed into
    place, so no reader ever meets a torn slot with no whole one beside it.

    Args:
        old_size: the slot's length now, if known: bytes of the old slot
            beyond the new one are cut off, and a slot known to be no
            longer than the new bytes needs no cut.
    """
    name = SLOT_FILES[slot]
    try:
        fd = open_at(dir_fd, directory, name, os.O_WRONLY)
    except FileNotFoundError:
        _create_slot(dir_fd, directory, name, data, sync, sync_directory)
        return
    try:
        try:
            write_all(fd, data, offset=0)
            if old_size is None or old_size > len(data):
                os.ftruncate(fd, len(data))
            sync(fd)
        except BaseException:
            # The new bytes may be whole in the page cache though the
            # call fails: make the slot torn, so readers keep the one before.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            raise
    finally:
        os.close(fd)


def _create_slot(
    dir_fd: int,
    directory: str,
    name: str,
    data: bytes,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    temp = temp_name(name)
    create_whole(
        dir_fd,
        directory,
        temp,
        data,
        sync,
        lambda: os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd),
    )
    # Make the second slot too, empty (it reads as absent), so the next
    # snapshot rewrites it in place: one directory fsync covers both names.
    with contextlib.suppress(FileExistsError):
        os.close(open_at(dir_fd, directory, SLOT_FILES[1], CREATE_EMPTY))
    sync_directory()
