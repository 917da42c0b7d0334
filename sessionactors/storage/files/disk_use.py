"""The bytes of a file store, per session and per kind of file, each file counted once.

A session directory's regular files are of four kinds (see
:mod:`.generations`, :mod:`.layout`):

- its *transcript*: the log generation its latest revision is in (the
  current one) and the chain of bases its transcript starts from (own
  generations, or another session's linked by a fork); a session of format
  1 or 2, not moved into a log yet, has its snapshot slots and journals;
- its *history*: the other generations and links, kept for older revisions
  (or left by a writer that had not pruned them yet);
- its *usage*: the token-usage log;
- *other*: leftovers of interrupted writes, damaged files kept aside, any
  other file.

A fork hard-links the generations its transcript lies in, so one file may
be in several directories: files are told apart by ``(st_dev, st_ino)``,
and :func:`count_once` counts each in one session's row (the session that
wrote it, if it still holds it under its own name; else the first by id),
the others saying they share it. Sizes are ``st_size``: what the files
hold, not the blocks the filesystem gives them.

Nothing here takes a lock or writes: a writer may change a directory while
it is read (a new generation, an old one pruned), so a session whose files
change under the reading is read again.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from ..._errors import CorruptSessionError
from ..disk_use import SessionBytes
from .backend import session_ids
from .durable import directory_at
from .generations import Listing, list_log, parse_gen, read_header
from .index import INDEX_DIR
from .layout import LOG_FILE, SLOT_FILES, is_journal

__all__ = [
    "Part",
    "StoredFile",
    "count_once",
    "freed",
    "index_bytes",
    "session_files",
    "store_files",
]

logger = logging.getLogger(__name__)

Part = Literal["transcript", "history", "usage", "other"]

#: A directory whose files keep changing while they are read is read this many times at most.
_TRIES = 10


@attrs.frozen
class StoredFile:
    """One regular file of a session directory."""

    name: str
    part: Part
    size: int
    #: ``(st_dev, st_ino)``: the same file under several names or directories.
    key: tuple[int, int]
    #: ``st_nlink``: how many names the file has, in this store or elsewhere.
    links: int

    @property
    def own(self) -> bool:
        """Whether the session wrote it (a fork's link is another session's generation)."""
        return not (self.part in ("transcript", "history") and self.name.startswith("link."))


def session_files(root: Path, session_id: str) -> list[StoredFile] | None:
    """The regular files of the directory ``<root>/<session_id>``; None if there is none.

    Raises:
        OSError: the directory or a file cannot be read (after
            retrying while a writer changes the directory).
        CorruptSessionError: something other than a directory is there.
    """
    directory = os.path.join(root, session_id)
    for attempt in range(_TRIES):
        with directory_at(directory) as dir_fd:
            if dir_fd is None:
                return None
            try:
                return _read(dir_fd, directory)
            except FileNotFoundError:
                # A writer removed a file between the listing and its stat or
                # its header: the listing is stale; read it again.
                if attempt == _TRIES - 1:
                    raise
    raise AssertionError("unreachable")


def _read(dir_fd: int, directory: str) -> list[StoredFile]:
    listing = list_log(dir_fd)
    with os.scandir(dir_fd) as entries:
        found = [(entry.name, entry.stat(follow_symlinks=False)) for entry in entries]
    names = {name for name, _ in found}
    if not set(listing.names) <= names:
        raise FileNotFoundError(directory)  # changed between the two listings
    transcript = _transcript_files(dir_fd, directory, listing)
    files = []
    for name, info in found:
        if stat.S_ISREG(info.st_mode):
            part = _part(name, listing, transcript)
            key = (info.st_dev, info.st_ino)
            files.append(StoredFile(name, part, info.st_size, key, info.st_nlink))
    return files


def _transcript_files(dir_fd: int, directory: str, listing: Listing) -> set[str]:
    """The current generation and the bases its transcript starts from (as they are named here).

    A header that cannot be read stops the chain: the files past it are
    counted as history, and the damage is warned about (``verify`` tells more).
    """
    names: set[str] = set()
    name = listing.current
    while name is not None and name not in names:
        names.add(name)
        try:
            header = read_header(dir_fd, directory, name)
        except CorruptSessionError as exc:
            logger.warning("%s (du counts the generations past it as history)", exc)
            break
        name = None if header.base is None else listing.file_of(header.base[0])
    return names


def _part(name: str, listing: Listing, transcript: set[str]) -> Part:
    if name in transcript:
        return "transcript"
    if parse_gen(name) is not None and name in listing.names:
        return "history"
    if name == LOG_FILE:
        return "usage"
    if listing.current is None and (name in SLOT_FILES or is_journal(name)):
        return "transcript"  # format 1 or 2: the snapshot and its journal
    return "other"


def store_files(root: Path, names: Iterable[str] | None = None) -> dict[str, list[StoredFile]]:
    """Each session directory's files (``names``, or every one), by name.

    A directory that cannot be read is left out and warned about (its name
    and why), so one never hides the others.
    """
    found: dict[str, list[StoredFile]] = {}
    for name in sorted(session_ids(root) if names is None else names):
        try:
            files = session_files(root, name)
        except (OSError, CorruptSessionError) as exc:
            logger.warning("session %r left out: %s", name, exc)
            continue
        if files is not None:
            found[name] = files
    return found


def index_bytes(root: Path) -> int:
    """The bytes of the root's listing index (:data:`.index.INDEX_DIR`), which no session holds."""
    total = 0
    for directory, _, names in os.walk(root / INDEX_DIR):
        for name in names:
            try:
                info = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue  # a journal of SQLite's, gone meanwhile
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _unique(files: Iterable[StoredFile]) -> dict[tuple[int, int], StoredFile]:
    return {file.key: file for file in files}


def count_once(by_session: Mapping[str, Sequence[StoredFile]]) -> list[SessionBytes]:
    """Each session's bytes, every file counted in one row only: the largest total first.

    A file several sessions hold is counted in the row of the session that
    wrote it (that holds it under its own name), or, once that one is
    deleted, of the first holder by id; every holder's ``shared`` counts it.
    """
    holders: dict[tuple[int, int], list[tuple[str, StoredFile]]] = {}
    for session_id in sorted(by_session):
        for file in _unique(by_session[session_id]).values():
            holders.setdefault(file.key, []).append((session_id, file))
    counter = {
        key: min(held, key=lambda pair: (not pair[1].own, pair[0]))[0]
        for key, held in holders.items()
    }
    rows = []
    for session_id in sorted(by_session):
        parts: dict[Part, int] = {"transcript": 0, "history": 0, "usage": 0, "other": 0}
        shared = 0
        others: set[str] = set()
        for file in _unique(by_session[session_id]).values():
            sharers = {holder for holder, _ in holders[file.key] if holder != session_id}
            if sharers:
                shared += file.size
                others |= sharers
            if counter[file.key] == session_id:
                parts[file.part] += file.size
        rows.append(
            SessionBytes(
                session_id,
                parts["transcript"],
                parts["history"],
                parts["usage"],
                parts["other"],
                shared,
                tuple(sorted(others)),
            )
        )
    rows.sort(key=lambda row: (-row.total, row.session_id))
    return rows


def freed(by_session: Mapping[str, Sequence[StoredFile]]) -> int:
    """The bytes deleting all these sessions would free: their files no one else holds.

    A file is freed when every one of its names (``st_nlink``) is in these
    sessions' directories: a generation a fork left out of them links is not.
    """
    names: dict[tuple[int, int], int] = {}
    files: dict[tuple[int, int], StoredFile] = {}
    for held in by_session.values():
        for file in held:
            names[file.key] = names.get(file.key, 0) + 1
            files[file.key] = file
    return sum(file.size for key, file in files.items() if names[key] >= file.links)
