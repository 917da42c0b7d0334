"""What a crashed writer leaves in a session directory, and removing a session's files.

Temporary files, and journals no snapshot names (or, once a session is in
a log, every slot and journal of the older format; before it has one, every
link a killed fork made) are leftovers: under the session's lock none is in
use, so they are removed. Kept damaged files
(see :data:`~.layout.KEPT_SUFFIX`) never are, nor anything that is not a
name of the store's own (a directory named like a leftover, say).
"""

from __future__ import annotations

import contextlib
import os

from ..._errors import CorruptSessionError
from .generations import list_log
from .layout import LOG_FILE, SLOT_FILES, is_journal, is_temp, made_by_a_writer
from .slots import newest, read_slots

__all__ = ["abandoned", "remove_files", "sweep"]


def sweep(dir_fd: int, directory: str, session_id: str) -> None:
    """Remove temporary files and journals no snapshot names (locked).

    Only names in the locked directory are removed (a link among them is
    removed, never what it points to), and kept damaged files never.
    """
    with os.scandir(dir_fd) as entries:
        # A directory named like a leftover is not one of ours: left alone.
        names = [entry.name for entry in entries if not entry.is_dir(follow_symlinks=False)]
    listing = list_log(dir_fd)
    if listing.own:
        # A session in a log: the slots and journals of an older format are
        # what a crash in its move left (the log holds all of it).
        for name in names:
            if is_temp(name) or is_journal(name) or name in SLOT_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
        return
    # No generation of its own: links are what a fork killed before its
    # generation was in place left (or a delete that stopped), needed by nothing.
    for name in listing.links.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
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


def abandoned(dir_fd: int) -> bool:
    """Whether the directory holds nothing but what :func:`sweep` removes of one with no session.

    So a first write, a fork, an import or a delete stopped by a crash leaves
    it (its temporary files, a fork's links, journals no snapshot names);
    call it when no snapshot and no token-usage log is there. Anything else
    in it (a log generation of its own, a sub-directory, a stranger's file)
    makes it no leftover.
    """
    with os.scandir(dir_fd) as entries:
        found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    listing = list_log(dir_fd)
    if listing.own or any(is_dir for _, is_dir in found):
        return False
    links = set(listing.links.values())
    return all(made_by_a_writer(name) or name in links for name, _ in found)


def remove_files(dir_fd: int) -> None:
    """Remove the usage log, the log's generations and the snapshot slots (locked)."""
    for name in (LOG_FILE, *SLOT_FILES, *list_log(dir_fd).names):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
