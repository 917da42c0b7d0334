"""Files the commands write for the user (archives), made whole and durable before they count.

A file is written under a temporary name in its own directory, synced,
then given its name, and the directory synced: a crash or a full disk at
any instant leaves the file as it was (or absent), never a part of the new
one, and once the call returns the file survives a power cut. ``prune``
deletes a session only after its archive is written so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fsync_directory", "remove_durably", "write_durably", "write_new_durably"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Errors of a filesystem that has no hard links (FAT, some network filesystems).
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` (made, renamed, removed) durable."""
    fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _synced_temp(directory: Path, name: str, data: bytes) -> Iterator[Path]:
    """A temporary file beside ``name`` in ``directory`` holding ``data``, synced; removed after."""
    temp = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # renamed away already, or what a failure left


def write_durably(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data``, replacing what it held, durably (temporary file, rename)."""
    directory = path.parent
    with _synced_temp(directory, path.name, data) as temp:
        os.replace(temp, path)
    fsync_directory(directory)


def write_new_durably(directory: Path, stem: str, suffix: str, data: bytes) -> Path:
    """A new file holding ``data`` in ``directory``, durably; never one that exists replaced.

    Named ``<stem><suffix>`` if that is free, else ``<stem>~2<suffix>``,
    ``<stem>~3<suffix>`` and so on: an archive of an earlier session of the
    same id (pruned before, made again since) is kept. The name is taken
    atomically (a hard link to the synced temporary file), so two writers
    never take the same one.
    """
    with _synced_temp(directory, stem + suffix, data) as temp:
        number = 1
        while True:
            path = directory / (f"{stem}{suffix}" if number == 1 else f"{stem}~{number}{suffix}")
            try:
                _take(temp, path)
                break
            except FileExistsError:
                number += 1
    fsync_directory(directory)
    return path


def _take(temp: Path, path: Path) -> None:
    """Give the synced ``temp`` the name ``path``, if no file has it (else FileExistsError)."""
    try:
        os.link(temp, path)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here: take the name with an empty file, then rename
        # over it (a crash in between leaves that empty file, never a torn archive).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666))
        os.replace(temp, path)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if it is there) and sync its directory."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_directory(path.parent)
