"""What ``verify`` reads of a session's log (format 3 or 4): every generation, once.

An own generation (``log.<seq>.<gen>.jsonl``) is read up to its last whole
commit, its counted part; a link (``link.<gen>.jsonl``, another session's
generation, hard-linked by a fork) only up to the furthest offset a header
of this directory counts in it, since its owner may have appended since and
only that prefix is this session's. Reading goes through the file storage's
own decoder (:func:`~.generations.read_generation`), so every record of the
counted part has its checksum checked, as a load would.

What cannot be read is a problem kept in :attr:`LogScan.damage`; the checks
of :mod:`.log_checks` judge what was read.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ..._errors import CorruptSessionError
from .generations import Generation, Header, Listing, list_log, read_generation, read_header
from .problems import Problem, SessionDir

__all__ = ["LogScan", "scan_log"]


@attrs.define
class LogScan:
    """A session directory's log files, as verify read them.

    Attributes:
        listing: the own generations (by ``seq``) and the links.
        headers: by generation id, every header that reads.
        generations: by generation id, every generation whose counted part
            reads whole (an unreferenced link is not read beyond its header).
        sizes: by generation id, the size of each own generation's file.
        damage: why a file could not be read, one problem per file.
    """

    where: SessionDir
    listing: Listing
    headers: dict[str, Header] = attrs.Factory(dict)
    generations: dict[str, Generation] = attrs.Factory(dict)
    sizes: dict[str, int] = attrs.Factory(dict)
    damage: list[Problem] = attrs.Factory(list)

    def path(self, gen: str) -> Path:
        name = self.listing.file_of(gen)
        assert name is not None
        return self.where.path / name

    @property
    def current(self) -> str | None:
        """The generation id of the current generation (the highest ``seq``)."""
        if not self.listing.own:
            return None
        return max((seq, gen) for gen, (seq, _) in self.listing.own.items())[1]


def _unreadable(scan: LogScan, gen: str, exc: Exception) -> None:
    if isinstance(exc, CorruptSessionError):
        scan.damage.append(Problem(Path(exc.path), f"corrupt: {exc.reason}"))
    elif isinstance(exc, FileNotFoundError):
        # Removed since the listing: a write pruning its history, for an
        # instant; confirmed under the session's lock.
        scan.damage.append(Problem(scan.path(gen), "removed while checked", transient=True))
    else:
        assert isinstance(exc, OSError)
        scan.damage.append(Problem(scan.path(gen), f"cannot be read: {exc.strerror or exc}"))


def _link_ends(headers: dict[str, Header], links: dict[str, str]) -> dict[str, int]:
    """How much of each link this directory counts: the furthest offset a header bases on."""
    ends: dict[str, int] = {}
    for header in headers.values():
        if header.base is not None and header.base[0] in links:
            gen, offset = header.base
            ends[gen] = max(ends.get(gen, 0), offset)
    return ends


def scan_log(where: SessionDir, dir_fd: int) -> LogScan:
    """Read every log file of the session directory open as ``dir_fd``."""
    directory = str(where.path)
    scan = LogScan(where, list_log(dir_fd))
    for gen, name in sorted((gen, name) for gen, name in _files(scan.listing)):
        try:
            scan.headers[gen] = read_header(dir_fd, directory, name)
        except (CorruptSessionError, OSError) as exc:
            _unreadable(scan, gen, exc)
    for gen, (_, name) in sorted(scan.listing.own.items()):
        if gen not in scan.headers:
            continue
        try:
            scan.sizes[gen] = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
            scan.generations[gen] = read_generation(dir_fd, directory, name, where.name)
        except (CorruptSessionError, OSError) as exc:
            _unreadable(scan, gen, exc)
    for gen, end in sorted(_link_ends(scan.headers, scan.listing.links).items()):
        if gen not in scan.headers:
            continue
        try:
            # Another session's generation: its header names that session.
            scan.generations[gen] = read_generation(
                dir_fd, directory, scan.listing.links[gen], None, end
            )
        except (CorruptSessionError, OSError) as exc:
            _unreadable(scan, gen, exc)
    return scan


def _files(listing: Listing) -> list[tuple[str, str]]:
    """``(gen, file name)`` of every log file, own generations and links."""
    own = [(gen, name) for gen, (_, name) in listing.own.items()]
    return own + list(listing.links.items())
