"""Verify's repairs of a session in a log (format 3 or 4), made under the session's lock.

Each is what the session's next write would do anyway: cut the bytes after
the last whole commit of its own generation, or remove a name no reader
follows. A link (another session's generation) is never cut nor written:
only its name here is ever removed, never what it links. Every file is
reached through the directory's descriptor, never through a symbolic link.
"""

from __future__ import annotations

import contextlib
import os

from ..._errors import CorruptSessionError
from .durable import directory_at, open_at
from .generations import list_log, read_tip
from .problems import Problem

__all__ = ["cut_log_tail", "remove_name"]


def cut_log_tail(problem: Problem) -> None:
    """Cut an own generation back to its last whole commit, durably.

    The last whole commit is found again here (the checks found the tail
    under the same hold of the lock), so nothing counted is ever cut.
    """
    directory = str(problem.path.parent)
    name = problem.path.name
    with directory_at(directory) as fd:
        if fd is None:
            return
        if name not in {file for _, file in list_log(fd).own.values()}:
            raise CorruptSessionError(str(problem.path), "not a generation of this session")
        _, last = read_tip(fd, directory, name, problem.path.parent.name)
        file = open_at(fd, directory, name, os.O_WRONLY)
        try:
            if os.fstat(file).st_size > last.end:
                os.ftruncate(file, last.end)
                os.fsync(file)
        finally:
            os.close(file)


def remove_name(problem: Problem) -> None:
    """Remove a name from the session's directory, durably (a link: never its target)."""
    with directory_at(str(problem.path.parent)) as fd:
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(problem.path.name, dir_fd=fd)
        os.fsync(fd)
