"""Durable file work of the file backend: plain synchronous functions.

Everything here blocks; the actor calls it from a worker thread, one hop per
batch of messages. A session directory holds (format 2)::

    <root>/<id>/session.json              snapshot slot 0
    <root>/<id>/session.1.json            snapshot slot 1
    <root>/<id>/messages.<gen>.jsonl      the transcript journal: one message a line
    <root>/<id>/token-usage.jsonl         one compact JSON object a line

The snapshot holds the format number, a sequence number ``seq``, the
authoritative metadata, the timestamps, ``metadata``, ``runtime_state``, the
message count, and which journal holds the messages and how many of its bytes
count: one JSON line, then its CRC-32. It lives in two slots written in turn:
a write rewrites the older slot in place (write, cut if it was longer,
fsync) while the newer one stays whole, and readers take the whole slot
with the higher ``seq``. A
crash at any instant thus leaves the snapshot before or the new one, never a
mix, and a save costs one fsync for its snapshot: no file is made, none is
renamed, so the directory needs no fsync either. A session's first snapshot
is made whole under a temporary name and renamed into place, and the second
slot is made beside it, empty (an empty second slot reads as absent).

A save whose persisted messages are an unchanged prefix of its transcript
appends only the new messages to the journal, makes them durable, then
writes the snapshot that counts them: a crash in between leaves journal bytes
beyond the counted size, which readers ignore and the next append cuts off.
Any other change of the transcript (an edit, a removal) writes a whole new
journal under a new name and then a snapshot naming it, so the journal a
snapshot names is never modified in a way it would notice. A journal thus
holds the live transcript and nothing else, and needs no compaction.

Format 1, two lines in ``session.json`` (a head like the snapshot's and a
body holding the messages), is read as it is and replaced by format 2 on the
session's next write.

Nothing here follows a symbolic link inside the root: ``<root>/<id>`` is
opened with ``O_NOFOLLOW | O_DIRECTORY`` and every file in it relative to that
descriptor with ``O_NOFOLLOW``, so a link, a stray file or a directory where
the store expects its own is refused with :class:`CorruptSessionError` naming
it, and nothing outside the root is read, written or deleted. A damaged
journal that a save replaces is kept under a name ending in
:data:`KEPT_SUFFIX`, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from ._errors import CorruptSessionError, LockBusy, UnsupportedFormatError
from ._merge import Authoritative
from ._model import (
    Message,
    Session,
    SessionSummary,
    converter,
    decode_record,
    encode_message,
    structure_session,
)
from ._steps import Head, Stored, Version
from .storage.protocol import IoCounts

__all__ = [
    "FORMAT",
    "KEPT_SUFFIX",
    "IoCounts",
    "SessionFiles",
    "is_kept",
    "list_summaries",
    "read_summary",
]

FORMAT = 2
SESSION_FILE = "session.json"
#: The snapshot's two slots, written in turn (slot 0 is format 1's only file).
SLOT_FILES = (SESSION_FILE, "session.1.json")
LOG_FILE = "token-usage.jsonl"
JOURNAL_PREFIX = "messages."
JOURNAL_SUFFIX = ".jsonl"
TEMP_SUFFIX = ".tmp"
#: A damaged file the store set aside rather than delete: ``<name>.corrupt``,
#: or ``<name>.<n>.corrupt`` when that is taken. Never swept, never deleted.
KEPT_SUFFIX = ".corrupt"
_GROUP_KEYS = ("title", "title_version", "pinned", "metadata_version")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: A session directory: never through a symbolic link at ``<root>/<id>``.
_OPEN_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
#: Added to every open of a file in a session directory (``dir_fd`` relative).
#: O_NONBLOCK changes nothing for a regular file; it makes a FIFO someone put
#: in place of one fail (ENXIO, EAGAIN) instead of blocking the worker thread,
#: and with it the store, for good.
_IN_DIRECTORY = os.O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK
_READ = os.O_RDONLY
_CREATE_EMPTY = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_READ_CHUNK = 65536
#: Bounds of the retry loops: a loop that cannot end is a hang, not a retry.
_LOCK_TRIES = 100
_KEEP_TRIES = 1000

logger = logging.getLogger(__name__)


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file a writer makes (and may leave by crashing)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def is_journal(name: str) -> bool:
    return name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX)


def is_kept(name: str) -> bool:
    """Whether ``name`` is a damaged file the store set aside (see :data:`KEPT_SUFFIX`)."""
    return name.endswith(KEPT_SUFFIX)


# --- the snapshot ------------------------------------------------------------------


@attrs.frozen
class Snapshot:
    """A decoded ``session.json`` of either format.

    Attributes:
        head: the snapshot's JSON object (format 1: its first line).
        body: format 1 only: the raw second line, holding the messages.
    """

    path: str
    head: dict[str, Any]
    body: bytes | None = None
    slot: int = 0
    size: int = 0  #: the slot's length in bytes
    #: Why the other slot does not decode, when this one was chosen beside it.
    damaged_beside: CorruptSessionError | None = attrs.field(default=None, eq=False)

    @property
    def seq(self) -> int:
        """Which of the two slots is newer: the one with the higher ``seq``."""
        seq: int = self.head.get("seq", 0)
        return seq

    @property
    def format(self) -> int:
        version: int = self.head["format"]
        return version

    @property
    def journal(self) -> str | None:
        name: str | None = self.head.get("journal")
        return name

    @property
    def journal_size(self) -> int:
        size: int = self.head.get("journal_size", 0)
        return size

    @property
    def message_count(self) -> int:
        count: int = self.head["message_count"]
        return count

    def group(self) -> Authoritative:
        return Authoritative(**{key: self.head[key] for key in _GROUP_KEYS})


def encode_head(head: dict[str, Any]) -> bytes:
    """A format-2 slot's bytes: the head as one JSON line, then its CRC-32 line.

    The CRC tells a slot torn by a crash in the middle of its rewrite from a
    whole one, so a reader falls back to the other slot.
    """
    line = orjson.dumps(head)
    return line + b"\n" + b"%08x\n" % zlib.crc32(line)


def decode_snapshot(path: str, raw: bytes, session_id: str, slot: int = 0) -> Snapshot:
    """Check and decode the bytes of one snapshot slot.

    Raises:
        UnsupportedFormatError: written by a newer version of the library.
        CorruptSessionError: anything else that is not a snapshot of this session.
    """
    line, _, rest = raw.partition(b"\n")
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable: {exc}") from None
    if not isinstance(head, dict):
        raise CorruptSessionError(path, "not a JSON object")
    version = head.get("format")
    if type(version) is not int or version < 1:
        raise CorruptSessionError(path, f"no valid format number ({version!r})")
    if version > FORMAT:
        raise UnsupportedFormatError(
            path,
            f"written in format {version}; this version of sessionactors reads "
            f"formats 1 to {FORMAT}: upgrade it to read this session",
        )
    if version == 2:
        crc, _, tail = rest.partition(b"\n")
        if crc != b"%08x" % zlib.crc32(line) or tail:
            raise CorruptSessionError(path, "torn: its checksum does not match")
    checks: dict[str, type | tuple[type, ...]] = {
        "id": str,
        "title": str,
        "title_version": int,
        "pinned": bool,
        "metadata_version": int,
        "message_count": int,
        "created_at": str,
        "updated_at": str,
    }
    if version == 2:
        checks.update(seq=int, journal=str, journal_size=int, metadata=dict, runtime_state=dict)
    for key, kind in checks.items():
        if not isinstance(head.get(key), kind):
            raise CorruptSessionError(path, f"{key!r} is missing or of the wrong type")
    if head["id"] != session_id:
        raise CorruptSessionError(path, f"holds session {head['id']!r}, not {session_id!r}")
    if version == 2:
        journal = head["journal"]
        if not is_journal(journal) or "/" in journal or journal.startswith("."):
            raise CorruptSessionError(path, f"names no valid journal ({journal!r})")
        return Snapshot(path, head, slot=slot, size=len(raw))
    if slot != 0:
        raise CorruptSessionError(path, "format 1 in the second slot")
    return Snapshot(path, head, rest, size=len(raw))


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
        with _directory_at(directory) as opened:
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
        with _directory_at(directory) as opened:
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


def encode_snapshot(session: Session, journal: str, journal_size: int, seq: int) -> bytes:
    """The bytes of a format-2 snapshot slot for a checked session."""
    return encode_head(
        {
            "format": FORMAT,
            "seq": seq,
            "id": session.id,
            "title": session.title,
            "title_version": session.title_version,
            "pinned": session.pinned,
            "metadata_version": session.metadata_version,
            "created_at": converter.unstructure(session.created_at, datetime),
            "updated_at": converter.unstructure(session.updated_at, datetime),
            "message_count": len(session.messages),
            "journal": journal,
            "journal_size": journal_size,
            "metadata": session.metadata,
            "runtime_state": session.runtime_state,
        }
    )


def encode_messages(messages: Sequence[Message]) -> bytearray:
    """Journal lines for ``messages``, one compact JSON object each.

    Each line is added to one buffer as soon as it is made: keeping every
    line alive until a join costs several times the encoding itself.
    """
    lines = bytearray()
    for message in messages:
        lines += encode_message(message, newline=True)
    return lines


def _summary(snapshot: Snapshot) -> SessionSummary:
    head = snapshot.head
    try:
        created_at = converter.structure(head["created_at"], datetime)
        updated_at = converter.structure(head["updated_at"], datetime)
    except ValueError as exc:
        raise CorruptSessionError(snapshot.path, f"bad timestamp: {exc}") from None
    return SessionSummary(
        id=head["id"],
        title=head["title"],
        pinned=head["pinned"],
        title_version=head["title_version"],
        metadata_version=head["metadata_version"],
        created_at=created_at,
        updated_at=updated_at,
        message_count=head["message_count"],
    )


def _version(snapshot: Snapshot) -> Version | None:
    """What names a format-2 transcript on disk: its journal, counted size and count."""
    if snapshot.format != FORMAT:
        return None  # format 1 is never appended to: its next write makes it format 2
    return (snapshot.journal, snapshot.journal_size, snapshot.message_count)


def _next_slot(latest: Snapshot | None) -> tuple[int, int]:
    """The slot and ``seq`` of the next snapshot: the older slot, one higher."""
    if latest is None:
        return 0, 1
    return 1 - latest.slot, latest.seq + 1


def read_summary(root: Path, session_id: str) -> SessionSummary | None:
    """The summary of one session from its snapshot, or None if it has none."""
    snapshot = read_snapshot_at(os.path.join(root, session_id), session_id)
    return None if snapshot is None else _summary(snapshot)


def list_summaries(root: Path) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """Every readable session's summary, newest first, and the errors of the others.

    A session that cannot be read (a file or directory the process may not
    read, a slot that is a directory) is one of the errors, as a
    :class:`CorruptSessionError` naming what failed: one such session never
    hides the others. Entries of the root that are not directories (symbolic
    links included) are not sessions and are passed over.
    """
    summaries: list[SessionSummary] = []
    errors: list[CorruptSessionError] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return summaries, errors
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            summary = read_summary(root, entry.name)
        except CorruptSessionError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            where = exc.filename if isinstance(exc.filename, str) else entry.path
            errors.append(CorruptSessionError(where, f"cannot be read: {exc.strerror or exc}"))
            continue
        if summary is not None:
            summaries.append(summary)
    summaries.sort(key=lambda summary: summary.updated_at, reverse=True)
    return summaries, errors


# --- low-level helpers --------------------------------------------------------


def _write_all(fd: int, data: bytes | bytearray, offset: int | None = None) -> None:
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


def _refused(path: str, exc: OSError) -> CorruptSessionError | None:
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
        refused = _refused(path, exc)
        if refused is not None:
            raise refused from None
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
        fd = open_at(dir_fd, directory, name, _READ)
    except FileNotFoundError:
        return None
    try:
        chunks = [os.read(fd, _READ_CHUNK)]
        while len(chunks[-1]) == _READ_CHUNK:
            chunks.append(os.read(fd, _READ_CHUNK))
        return b"".join(chunks)
    except OSError as exc:
        refused = _refused(os.path.join(directory, name), exc)
        if refused is not None:
            raise refused from None
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
def _directory_at(directory: str) -> Iterator[int | None]:
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


# --- one session's files ----------------------------------------------------------


class _Unread:
    pass


_UNREAD = _Unread()


@attrs.frozen
class _Written:
    """A slot this lock hold wrote: decoded only if it is read again."""

    path: str
    data: bytes
    slot: int


def _recorded_id(raw: bytes) -> str | None:
    """The session id a slot's first line records, even in a slot that is torn after it."""
    try:
        head = orjson.loads(raw.partition(b"\n")[0])
    except orjson.JSONDecodeError:
        return None
    recorded = head.get("id") if isinstance(head, dict) else None
    return recorded if isinstance(recorded, str) else None


@attrs.define
class SessionFiles:
    """The files of one session. Used by that session's actor only.

    Methods marked *locked* must be called while :meth:`lock` is held: the
    lock serializes this session's file work across processes. Every file is
    reached through the directory's descriptor, never through a link, and
    every operation checks that the directory's snapshot records this
    session's id (on a case-insensitive filesystem ``<root>/a`` may be
    session ``"A"``'s directory).
    """

    root: Path
    session_id: str
    fsync: bool
    counts: IoCounts = attrs.field(factory=IoCounts)
    _swept: bool = False
    # While the lock is held, nobody else writes: the snapshot is read once,
    # and the bytes and length of each slot (None: absent) are known with it.
    _held: Snapshot | _Written | _Unread | None = attrs.field(factory=lambda: _UNREAD)
    _raws: list[bytes | _Unread | None] = attrs.field(factory=lambda: [_UNREAD, _UNREAD])
    _sizes: list[int | None] = attrs.field(factory=lambda: [None, None])
    _lock_fd: int | None = None  # the locked directory, while the lock is held
    _dir_fd: int | None = None  # the directory files are opened in: the locked one, or a reader's
    # Paths as strings, made once: pathlib costs more than the syscalls here.
    directory: str = attrs.field(init=False)
    session_path: str = attrs.field(init=False)
    log_path: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.directory = os.path.join(self.root, self.session_id)
        self.session_path = os.path.join(self.directory, SESSION_FILE)
        self.log_path = os.path.join(self.directory, LOG_FILE)

    def _fd(self) -> int:
        assert self._dir_fd is not None, "the session's directory is not open"
        return self._dir_fd

    def _forget(self) -> None:
        """Drop what was read of the slots: they are about to change, or the lock is let go."""
        self._held = _UNREAD
        self._raws = [_UNREAD, _UNREAD]

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)
            self.counts.fsyncs += 1

    def _sync_root(self) -> None:
        if self.fsync:
            fsync_dir(self.root)
            self.counts.fsyncs += 1

    def _sync_directory(self) -> None:
        """Make new names in the session's directory durable (locked: its fd is at hand)."""
        assert self._lock_fd is not None
        self._sync(self._lock_fd)

    @contextlib.contextmanager
    def lock(self, *, create: bool, wait: bool = True) -> Iterator[bool]:
        """Hold the session's cross-process lock.

        Yields True with the lock held. Without ``create``, yields False (and
        holds nothing) when the session's directory does not exist. The lock
        is an ``flock`` on the session's directory itself, so it costs no
        file; a delete removes the directory, so after waiting for the lock
        the holder checks the directory it locked was not removed meanwhile
        (a removed directory has no links left). A directory made for a
        session that in the end was not written is removed again. Without
        ``wait``, a lock held elsewhere raises :class:`LockBusy` at once.

        Raises:
            CorruptSessionError: ``<root>/<id>`` is not a directory (a
                symbolic link, dangling or not, or a file): refused at once.
            OSError: the directory was removed under this lock
                ``_LOCK_TRIES`` times in a row (no retry loop is endless).
        """
        made = False
        for _ in range(_LOCK_TRIES):
            fd = open_directory(self.directory)
            if fd is None:
                if not create:
                    yield False
                    return
                try:
                    os.mkdir(self.directory)
                except FileExistsError:
                    continue  # made by another writer just now (what else is there is refused)
                made = True
                self._sync_root()
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockBusy(self.session_id) from None
                if os.fstat(fd).st_nlink == 0:
                    continue  # deleted while we waited: lock the new one
                self._lock_fd = self._dir_fd = fd
                if made:
                    self._swept = True  # nothing to sweep in a directory just made
                written = self.counts.snapshots_written
                try:
                    yield True
                finally:
                    if made and self.counts.snapshots_written == written and not self.exists():
                        self.remove_directory()  # every save failed: leave nothing
                return
            finally:
                self._lock_fd = self._dir_fd = None
                self._forget()
                os.close(fd)  # also releases the flock
        raise OSError(
            errno.EAGAIN,
            f"removed under the lock {_LOCK_TRIES} times in a row: given up",
            self.directory,
        )

    @contextlib.contextmanager
    def _visiting(self) -> Iterator[bool]:
        """The directory open for reading without the lock; yields whether it exists."""
        if self._dir_fd is not None:
            yield True
            return
        fd = open_directory(self.directory)
        if fd is None:
            yield False
            return
        self._dir_fd = fd
        try:
            yield True
        finally:
            self._dir_fd = None
            os.close(fd)

    # -- reads (no lock needed: the snapshot is replaced atomically and the
    #    journal bytes it counts never change) --

    def _raw(self, slot: int) -> bytes | None:
        """The bytes of a slot, read once per hold of the lock (locked)."""
        raw = self._raws[slot]
        if isinstance(raw, _Unread):
            raw = self._raws[slot] = read_at(self._fd(), self.directory, SLOT_FILES[slot])
        return raw

    def read_snapshot(self) -> Snapshot | None:
        held = self._held
        if isinstance(held, _Written):
            held = self._held = decode_snapshot(held.path, held.data, self.session_id, held.slot)
        if not isinstance(held, _Unread):
            return held
        if self._lock_fd is None:
            return read_snapshot_at(self.directory, self.session_id, dir_fd=self._dir_fd)
        # Under the lock no writer can be in the middle of a slot: one read.
        raws = [self._raw(slot) for slot in range(len(SLOT_FILES))]
        self._sizes = [None if raw is None else len(raw) for raw in raws]
        self._held = newest(decode_slots(self.directory, self.session_id, raws))
        return self._held

    def read_head(self) -> Head | None:
        """The authoritative metadata on disk now, and the version of the transcript."""
        snapshot = self.read_snapshot()
        return None if snapshot is None else Head(snapshot.group(), _version(snapshot))

    def exists(self) -> bool:
        """Whether the session has a snapshot, whole or not.

        Raises:
            CorruptSessionError: a slot records another session's id, or is
                a link or a directory.
        """
        if self._dir_fd is None:
            with self._visiting() as present:
                return present and self.exists()
        held = self._held
        if isinstance(held, (Snapshot, _Written)):
            return True
        if held is None:
            return False
        first = self._raw(0)
        if first and _recorded_id(first) == self.session_id:
            return True  # this session's slot: the other one need not be read
        self._check_owner()
        return any(self._raw(slot) for slot in range(len(SLOT_FILES)))

    def _check_owner(self) -> None:
        """Refuse a directory whose snapshot records another session's id.

        On a case- or normalization-insensitive filesystem ``<root>/a`` opens
        session ``"A"``'s directory: nothing of it may be read, written or
        deleted as ``"a"``'s. A slot too damaged to name any id proves nothing
        either way and is left to the reads that decode it.
        """
        for slot, name in enumerate(SLOT_FILES):
            raw = self._raw(slot)
            recorded = _recorded_id(raw) if raw else None
            if recorded is not None and recorded != self.session_id:
                raise CorruptSessionError(
                    os.path.join(self.directory, name),
                    f"holds session {recorded!r}, not {self.session_id!r}: refused "
                    "(a case- or normalization-insensitive filesystem?)",
                )

    def read_session(self) -> Stored | None:
        """The persisted session, as new objects, and the version of its transcript."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_session() if present else None
        snapshot = self.read_snapshot()
        if snapshot is None:
            return None
        return Stored(self._read_session(snapshot), _version(snapshot))

    def _read_session(self, snapshot: Snapshot) -> Session:
        """Decode the session a snapshot (and the journal it names) holds."""
        head = snapshot.head
        if snapshot.format == 1:
            try:
                body = orjson.loads(snapshot.body or b"")
            except orjson.JSONDecodeError as exc:
                raise CorruptSessionError(snapshot.path, f"unreadable body: {exc}") from None
            if not isinstance(body, dict):
                raise CorruptSessionError(snapshot.path, "the body is not a JSON object")
            session = structure_session(snapshot.path, {**head, **body})
            if len(session.messages) != snapshot.message_count:
                raise CorruptSessionError(snapshot.path, "message count does not match")
            return session
        messages = self._read_journal(snapshot)
        return structure_session(snapshot.path, {**head, "messages": messages})

    def _read_journal(self, snapshot: Snapshot) -> list[Any]:
        lines = self._counted_lines(snapshot)
        try:
            return [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError as exc:
            assert snapshot.journal is not None
            path = os.path.join(self.directory, snapshot.journal)
            raise CorruptSessionError(path, f"unreadable message: {exc}") from None

    def read_usage(self) -> list[dict[str, Any]]:
        """Every complete record of the log; a torn last line is left out."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_usage() if present else []
        self.exists()  # refuses another session's directory
        data = read_at(self._fd(), self.directory, LOG_FILE)
        if data is None:
            return []
        lines = data.split(b"\n")
        lines.pop()  # empty after the final newline, or a torn tail
        return [decode_record(line, self.log_path, number) for number, line in enumerate(lines, 1)]

    # -- writes (locked) --

    def write_snapshot(
        self, session: Session, *, append_from: int | None, trusted: bool
    ) -> Version | None:
        """Persist a checked session: new messages appended, then the snapshot (locked).

        With ``append_from`` the journal the snapshot names holds the first
        ``append_from`` messages (the planner checked its version): the rest
        are appended to it. Otherwise a new journal holds them all. A journal
        it replaces whose lines do not decode is kept under a name ending in
        :data:`KEPT_SUFFIX` (and a warning logged), not deleted.

        Returns:
            The version of the transcript now on disk.
        """
        self._sweep()
        snapshot = self.read_snapshot()
        messages = session.messages
        old_journal = snapshot.journal if snapshot is not None else None
        appending = append_from is not None and snapshot is not None
        damage: CorruptSessionError | None = None
        # Encode everything before touching a file: a value the encoder
        # refuses must leave the disk as it was.
        if appending:
            assert append_from is not None and snapshot is not None
            assert snapshot.journal is not None
            journal, start = snapshot.journal, snapshot.journal_size
            lines = encode_messages(messages[append_from:])
        else:
            if snapshot is not None and snapshot.journal is not None and not trusted:
                # Never sweep away a journal that disagrees with its snapshot
                # (its lines are counted), nor one whose lines do not decode:
                # that one is kept aside. (One this actor wrote or read, as
                # the snapshot counts it, agrees.)
                damage = _undecodable(
                    os.path.join(self.directory, snapshot.journal), self._counted_lines(snapshot)
                )
            journal, start = f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:16]}{JOURNAL_SUFFIX}", 0
            lines = encode_messages(messages)
        size = start + len(lines)
        slot, seq = _next_slot(snapshot)
        data = encode_snapshot(session, journal, size, seq)
        kept = None
        if damage is not None:
            assert old_journal is not None
            kept = self._keep(old_journal)  # made durable with the new journal's name
        try:
            if appending:
                self._append_journal(journal, start, lines)
            else:
                self._write_journal(journal, lines)
            try:
                self._write_slot(slot, data)
            except BaseException:
                if not appending:  # the new journal is named by no snapshot: remove it
                    with contextlib.suppress(OSError):
                        os.unlink(journal, dir_fd=self._fd())
                raise
        except BaseException:
            if kept is not None:  # the damaged journal is still named: drop its second name
                with contextlib.suppress(OSError):
                    os.unlink(kept, dir_fd=self._fd())
            raise
        if damage is not None:
            logger.warning(
                "%s; a save replaced this journal, which is kept as %s",
                damage,
                os.path.join(self.directory, str(kept)),
            )
        if old_journal is not None and journal != old_journal:
            # The old journal is no longer named. The directory was swept of
            # other leftovers on this actor's first write: remove just this one.
            if trusted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old_journal, dir_fd=self._fd())
            else:
                self._sweep(force=True)
        return (journal, size, len(messages))

    def _keep(self, name: str) -> str:
        """Give the damaged file ``name`` a second name that says so, and return it (locked).

        A hard link: the file keeps its name (and the snapshot naming it
        stays whole) until the save that replaces it is in place, and a name
        already taken is never overwritten. The new name is made durable by
        the directory fsync of the journal written next.

        Raises:
            OSError: no second name could be made; nothing was changed.
        """
        fd = self._fd()
        for number in range(_KEEP_TRIES):
            kept = f"{name}.{number}{KEPT_SUFFIX}" if number else f"{name}{KEPT_SUFFIX}"
            try:
                os.link(name, kept, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                continue
            return kept
        raise OSError(
            errno.EEXIST,
            f"{_KEEP_TRIES} names taken: no name left to keep the damaged file under",
            os.path.join(self.directory, name),
        )

    def _counted_lines(self, snapshot: Snapshot) -> list[bytes]:
        """The journal lines the snapshot counts (decoded by the caller).

        Raises:
            CorruptSessionError: the journal is missing, shorter than counted,
                holds another count of lines, or is not a file. When the
                snapshot was read beside a damaged newer slot, that slot is
                named instead: the journal was replaced by the snapshot lost in it.
        """
        assert snapshot.journal is not None
        path = os.path.join(self.directory, snapshot.journal)
        size = snapshot.journal_size
        try:
            data = self._read_prefix(snapshot.journal, size)
        except FileNotFoundError:
            named_by = os.path.basename(snapshot.path)
            raise self._cause(snapshot, path, f"journal missing, named by {named_by}") from None
        if len(data) != size or (size and not data.endswith(b"\n")):
            raise self._cause(snapshot, path, f"journal shorter than the {size} bytes counted")
        lines = data.split(b"\n")[:-1]
        if len(lines) != snapshot.message_count:
            count = snapshot.message_count
            raise self._cause(snapshot, path, f"{len(lines)} messages where {count} are counted")
        return lines

    def _read_prefix(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of the file ``name`` (fewer if it is shorter)."""
        path = os.path.join(self.directory, name)
        fd = open_at(self._fd(), self.directory, name, _READ)
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
            refused = _refused(path, exc)
            if refused is not None:
                raise refused from None
            raise
        finally:
            os.close(fd)

    def _cause(self, snapshot: Snapshot, path: str, reason: str) -> CorruptSessionError:
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

    def write_metadata(self, session: Session) -> None:
        """Persist new authoritative metadata of ``session``, read just now (locked).

        The journal is left as it is: only the snapshot changes.
        """
        self._sweep()
        snapshot = self.read_snapshot()
        if snapshot is None or snapshot.format != FORMAT:
            self.write_snapshot(session, append_from=None, trusted=False)  # format 1: upgrade it
            return
        assert snapshot.journal is not None
        slot, seq = _next_slot(snapshot)
        self._write_slot(
            slot, encode_snapshot(session, snapshot.journal, snapshot.journal_size, seq)
        )

    def _write_slot(self, slot: int, data: bytes) -> None:
        """Write the older snapshot slot (locked).

        An existing slot is rewritten in place: the newer slot stays whole
        meanwhile, so a crash at any instant leaves the snapshot before this
        one readable, and this slot reads as torn (its checksum, or bytes
        after it) until the new bytes are complete and the old ones cut off.
        That costs one fsync: no file is made, none renamed. A slot that does
        not exist yet (a session's first snapshot, or a format-1 session's
        upgrade) is made whole under a temporary name and renamed into
        place, so no reader ever meets a torn slot with no whole one beside it.
        """
        name = SLOT_FILES[slot]
        # Bytes of the old slot beyond the new one are cut off; a slot known
        # to be no longer than the new bytes needs no cut.
        old_size = None if isinstance(self._held, _Unread) else self._sizes[slot]
        self._forget()
        try:
            fd = open_at(self._fd(), self.directory, name, os.O_WRONLY)
        except FileNotFoundError:
            self._create_slot(name, data)
        else:
            try:
                try:
                    _write_all(fd, data, offset=0)
                    if old_size is None or old_size > len(data):
                        os.ftruncate(fd, len(data))
                    self._sync(fd)
                except BaseException:
                    # The new bytes may be whole in the page cache though the
                    # call fails: make the slot torn, so readers keep the one before.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)
                    raise
            finally:
                os.close(fd)
        self.counts.snapshots_written += 1
        self.counts.bytes_written += len(data)
        if self._lock_fd is not None:
            self._held = _Written(os.path.join(self.directory, name), data, slot)
            self._sizes[slot] = len(data)

    def _create_slot(self, name: str, data: bytes) -> None:
        dir_fd = self._fd()
        temp = f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = open_at(dir_fd, self.directory, temp, flags)
        try:
            try:
                _write_all(fd, data)
                self._sync(fd)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        # Make the second slot too, empty (it reads as absent), so the next
        # snapshot rewrites it in place: one directory fsync covers both names.
        with contextlib.suppress(FileExistsError):
            os.close(open_at(dir_fd, self.directory, SLOT_FILES[1], _CREATE_EMPTY))
        self._sync_directory()

    def _write_journal(self, name: str, data: bytes | bytearray) -> None:
        dir_fd = self._fd()
        fd = open_at(dir_fd, self.directory, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            try:
                _write_all(fd, data)
                self._sync(fd)
            finally:
                os.close(fd)
            self._sync_directory()  # the new name, before a snapshot uses it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            raise
        self.counts.journal_rewrites += 1
        self.counts.bytes_written += len(data)

    def _append_journal(self, name: str, size: int, data: bytes | bytearray) -> None:
        if not data:
            return
        fd = open_at(self._fd(), self.directory, name, os.O_RDWR | os.O_APPEND)
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                path = os.path.join(self.directory, name)
                raise CorruptSessionError(path, f"journal shorter than the {size} bytes counted")
            if actual > size:
                os.ftruncate(fd, size)  # lines a crash left uncounted
            self._append_synced(fd, data, size)
        finally:
            os.close(fd)
        self.counts.journal_appends += 1
        self.counts.bytes_written += len(data)

    def _append_synced(self, fd: int, data: bytes | bytearray, size: int) -> None:
        """Append ``data`` to a file of ``size`` bytes, durably; on failure, cut it back."""
        try:
            _write_all(fd, data)
            self._sync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    def append_usage(self, data: bytes) -> None:
        """Append whole lines to the token-usage log in one write (locked).

        A torn last line, left by a crash in the middle of an append, is cut
        off first so no record is glued onto it. If the write fails, the log
        is cut back to where it was.
        """
        dir_fd = self._fd()
        flags = os.O_RDWR | os.O_APPEND
        try:
            fd = open_at(dir_fd, self.directory, LOG_FILE, flags)
        except FileNotFoundError:
            fd = open_at(dir_fd, self.directory, LOG_FILE, flags | os.O_CREAT)
            try:
                # Make the new name durable before any record is in it: a
                # failure here leaves no log, so a retry cannot double a record.
                self._sync_directory()
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(LOG_FILE, dir_fd=dir_fd)
                raise
        try:
            size = cut_torn_tail(fd, os.fstat(fd).st_size)
            self._append_synced(fd, data, size)
        finally:
            os.close(fd)
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        """Remove the session, its journal, its log and its directory (locked).

        Kept damaged files (see :data:`KEPT_SUFFIX`) stay, and with them the directory.

        Returns:
            Whether a session file existed.

        Raises:
            CorruptSessionError: the directory holds another session's snapshot.
        """
        self._check_owner()
        self._forget()
        existed = False
        for name in SLOT_FILES:
            try:
                os.unlink(name, dir_fd=self._fd())
                existed = True
            except FileNotFoundError:
                pass
        self.remove_directory()
        return existed

    def remove_directory(self) -> None:
        """Remove what is left once the snapshot is gone (locked)."""
        for name in (LOG_FILE, *SLOT_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._fd())
        self._sweep(force=True)
        try:
            os.rmdir(self.directory)
        except OSError as exc:
            # Someone else's file in the directory, or a kept one: leave them alone.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        else:
            self._sync_root()

    def _sweep(self, *, force: bool = False) -> None:
        """Remove temporary files and journals no snapshot names (locked).

        Such files are left by a writer that crashed; under the lock none is
        in use. Done on an actor's first write, and after a journal rewrite.
        Only names in the locked directory are removed (a link among them is
        removed, never what it points to), and kept damaged files never.
        """
        if self._swept and not force:
            return
        self._swept = True
        dir_fd = self._fd()
        with os.scandir(dir_fd) as entries:
            # A directory named like a leftover is not one of ours: left alone.
            names = [entry.name for entry in entries if not entry.is_dir(follow_symlinks=False)]
        slots = read_slots(self.directory, self.session_id, dir_fd=dir_fd)
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


def _undecodable(path: str, lines: Sequence[bytes]) -> CorruptSessionError | None:
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


@attrs.define
class FileBackend:
    """The default backend: a directory per session under ``root``."""

    root: Path
    fsync: bool

    async def aopen(self, limiter: trio.CapacityLimiter) -> None:
        root = self.root
        await trio.to_thread.run_sync(
            lambda: root.mkdir(parents=True, exist_ok=True), limiter=limiter
        )

    async def aclose(self) -> None:
        pass

    def session(self, session_id: str) -> SessionFiles:
        return SessionFiles(self.root, session_id, self.fsync)

    def list_summaries(self) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        return list_summaries(self.root)
