"""The directory lock: an ``flock`` on a session's directory itself.

The lock serializes one session's file work across processes, and costs no
file. A delete removes the directory, so after waiting for the lock the
holder checks that the directory it locked was not removed meanwhile (a
removed directory has no links left), and locks the new one if it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator

from ..._errors import LockBusy
from .durable import open_directory

__all__ = ["Locked", "locked_directory"]

#: Bounds of the retry loop: a loop that cannot end is a hang, not a retry.
_LOCK_TRIES = 100

#: The locked directory's descriptor, and whether this hold made the directory.
Locked = tuple[int, bool]


@contextlib.contextmanager
def locked_directory(
    directory: str,
    session_id: str,
    *,
    create: bool,
    wait: bool,
    made: Callable[[], None],
) -> Iterator[Locked | None]:
    """Hold the lock of ``directory``; yield its descriptor and whether it was made here.

    Without ``create``, yields None (and holds nothing) when the directory
    does not exist; with it, the directory is made, then ``made`` is called
    (to make its name durable). Without ``wait``, a lock held elsewhere
    raises :class:`LockBusy` at once. The descriptor is closed on the way
    out, which lets go of the lock.

    Raises:
        CorruptSessionError: ``directory`` is not a directory (a symbolic
            link, dangling or not, or a file): refused at once.
        OSError: the directory was removed under this lock
            ``_LOCK_TRIES`` times in a row (no retry loop is endless).
    """
    made_here = False
    for _ in range(_LOCK_TRIES):
        fd = open_directory(directory)
        if fd is None:
            if not create:
                yield None
                return
            try:
                os.mkdir(directory)
            except FileExistsError:
                continue  # made by another writer just now (what else is there is refused)
            made_here = True
            made()
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusy(session_id) from None
            if os.fstat(fd).st_nlink == 0:
                continue  # deleted while we waited: lock the new one
            yield fd, made_here
            return
        finally:
            os.close(fd)  # also releases the flock
    raise OSError(
        errno.EAGAIN,
        f"removed under the lock {_LOCK_TRIES} times in a row: given up",
        directory,
    )
