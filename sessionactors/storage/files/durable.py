"""Durable file primitives: opens that never follow a link, whole writes, reads, cuts.

Plain synchronous functions; everything here blocks. Every file of a session
is opened relative to its directory's descriptor with ``O_NOFOLLOW``, and a
link or a directory met there is refused with :class:`CorruptSessionError`
naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ..._errors import CorruptSessionError
from .layout import temp_name

__all__ = [
    "CREATE_EMPTY",
    "READ",
    "append_synced",
    "cut_torn_tail",
    "directory_at",
    "fsync_dir",
    "open_at",
    "open_directory",
    "read_at",
    "read_prefix",
    "refused",
    "write_all",
]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A session directory: never through a symbolic link at ``<root>/<id>``.
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
#: Added to every open of a file in a session directory (``dir_fd`` relative).
#: O_NONBLOCK changes nothing for a regular file; it makes a FIFO someone put
#: in place of one fail (ENXIO, EAGAIN) instead of blocking the worker thread,
#: and with it the store, for good.
_IN_DIRECTORY = os.O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK
READ = os.O_RDONLY
CREATE_EMPTY = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_READ_CHUNK = 65536


def write_all(fd: int, data: bytes | bytearray, offset: int | None = None) -> None:
    """Write all of ``data``: at the file's offset, or at ``offset`` (pwrite)."""
    view = memoryview(data)
    while view:
        if offset is None:
            written = os.write(fd, view)
        else:
            written = os.pwrite(fd, view, offset)
            offset += written
        if not written:  # never for a regular file; bounds the loop for anything else
            raise OSError(errno.EIO, "a write wrote nothing")
        view = view[written:]


def append_synced(fd: int, data: bytes | bytearray, size: int, sync: Callable[[int], None]) -> None:
    """Append ``data`` to a file of ``size`` bytes, durably; on failure, cut it back."""
    try:
        write_all(fd, data)
        sync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def create_whole(
    dir_fd: int,
    directory: str,
    name: str,
    data: bytes | bytearray,
    sync: Callable[[int], None],
    finish: Callable[[], None],
) -> None:
    """Create ``name`` holding ``data``, synced, then ``finish()`` (a rename, a directory sync).

    If anything fails before ``finish`` returns, ``name`` is removed: a file
    made for nothing is never left behind to be taken for a whole one.
    """
    fd = open_at(dir_fd, directory, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            write_all(fd, data)
            sync(fd)
        finally:
            os.close(fd)
        finish()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise


def replace_whole(
    dir_fd: int,
    directory: str,
    name: str,
    data: bytes | bytearray,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> None:
    """Make ``name`` hold ``data``, whole: under a temporary name, synced, then renamed over it.

    A crash leaves ``name`` as it was or as ``data`` (and maybe a temporary
    file, which the sweep removes), never a part of it.
    """
    temp = temp_name(name)

    def put_in_place() -> None:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        sync_directory()

    create_whole(dir_fd, directory, temp, data, sync, put_in_place)


def refused(path: str, exc: OSError) -> CorruptSessionError | None:
    """The error for what an ``O_NOFOLLOW`` open inside a session directory met, if refused."""
    if exc.errno == errno.ELOOP:
        return CorruptSessionError(path, "a symbolic link, not a file of the session: refused")
    if exc.errno == errno.EISDIR:
        return CorruptSessionError(path, "a directory, not a file of the session: refused")
    return None


def open_at(dir_fd: int, directory: str, name: str, flags: int, mode: int = 0o644) -> int:
    """Open ``name`` in a session directory open as ``dir_fd``, never through a link.

    Raises:
        CorruptSessionError: ``name`` is a symbolic link, or a directory
            opened for writing; ``directory`` names it.
        OSError: as ``os.open`` raises it otherwise, naming the whole path.
    """
    try:
        return os.open(name, flags | _IN_DIRECTORY, mode, dir_fd=dir_fd)
    except OSError as exc:
        path = os.path.join(directory, name)
        refusal = refused(path, exc)
        if refusal is not None:
            raise refusal from None
        # The same error, naming the whole path rather than the name opened.
        raise type(exc)(exc.errno, exc.strerror, path) from None


def read_at(dir_fd: int, directory: str, name: str) -> bytes | None:
    """The whole file ``name`` of a session directory, or None if it does not exist.

    Read in pieces of ``_READ_CHUNK`` bytes until one comes back short, which
    for a regular file means its end: a small file (a snapshot slot) costs
    one ``read`` and no ``fstat``.

    Raises:
        CorruptSessionError: ``name`` is a symbolic link or a directory.
    """
    try:
        fd = open_at(dir_fd, directory, name, READ)
    except FileNotFoundError:
        return None
    try:
        chunks = [os.read(fd, _READ_CHUNK)]
        while len(chunks[-1]) == _READ_CHUNK:
            chunks.append(os.read(fd, _READ_CHUNK))
        return b"".join(chunks)
    except OSError as exc:
        refusal = refused(os.path.join(directory, name), exc)
        if refusal is not None:
            raise refusal from None
        raise
    finally:
        os.close(fd)


def read_prefix(dir_fd: int, directory: str, name: str, size: int) -> bytes:
    """The first ``size`` bytes of the file ``name`` (fewer if it is shorter)."""
    path = os.path.join(directory, name)
    fd = open_at(dir_fd, directory, name, READ)
    try:
        chunks: list[bytes] = []
        left = size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        refusal = refused(path, exc)
        if refusal is not None:
            raise refusal from None
        raise
    finally:
        os.close(fd)


def open_directory(directory: str) -> int | None:
    """``<root>/<id>`` open, never through a symbolic link; None if it does not exist.

    The id is one path component (``validate_session_id``), and
    ``O_NOFOLLOW`` refuses a link as that last component, so this opens the
    root's own entry as ``openat(root_fd, id, O_NOFOLLOW)`` would, without
    an open of the root on every call.

    Raises:
        CorruptSessionError: something other than a directory is there.
    """
    try:
        return os.open(directory, _OPEN_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    try:
        kind = "a symbolic link" if os.path.islink(directory) else "a file"
    except OSError:
        kind = "something"
    raise CorruptSessionError(directory, f"{kind}, not a session directory: refused")


@contextlib.contextmanager
def directory_at(directory: str) -> Iterator[int | None]:
    """:func:`open_directory`, closed again on the way out."""
    fd = open_directory(directory)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_tail(fd: int, size: int) -> int:
    """Truncate a log of ``size`` bytes after its last newline; return the new size.

    A log whose last byte is a newline (or that is empty) is left as it is.
    """
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end
