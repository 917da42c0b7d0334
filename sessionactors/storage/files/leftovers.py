"""What a crashed writer leaves in a session directory, and removing a session's files.

Temporary files and journals no snapshot names are leftovers: under the
session's lock none is in use, so they are removed. Kept damaged files
(see :data:`~.layout.KEPT_SUFFIX`) never are, nor anything that is not a
name of the store's own (a directory named like a leftover, say).
"""

from __future__ import annotations

import contextlib
import os

from ..._errors import CorruptSessionError
from .layout import LOG_FILE, SLOT_FILES, is_journal, is_temp
from .slots import newest, read_slots

__all__ = ["remove_files", "sweep"]


def sweep(dir_fd: int, directory: str, session_id: str) -> None:
    """Remove temporary files and journals no snapshot names (locked).

    Only names in the locked directory are removed (a link among them is
    removed, never what it points to), and kept damaged files never.
    """
    with os.scandir(dir_fd) as entries:
        # A directory named like a leftover is not one of ours: left alone.
        names = [entry.name for entry in entries if not entry.is_dir(follow_symlinks=False)]
    slots = read_slots(directory, session_id, dir_fd=dir_fd)
    if any(isinstance(slot, CorruptSessionError) for slot in slots):
        # A damaged slot may name a journal (the newest transcript, even):
        # leave everything as it is for whoever looks into it.
        return
    snapshot = newest(slots)
    keep = snapshot.journal if snapshot is not None else None
    for name in names:
        if is_temp(name) or (is_journal(name) and name != keep):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)


def remove_files(dir_fd: int) -> None:
    """Remove the usage log and the snapshot slots, those that exist (locked)."""
    for name in (LOG_FILE, *SLOT_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
