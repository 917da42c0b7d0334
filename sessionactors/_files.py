"""Durable file work of the file backend: plain synchronous functions.

Everything here blocks; the actor calls it from a worker thread, one hop per
batch of messages. A session directory holds (format 2)::

    <root>/<id>/session.json              the small snapshot: one JSON line
    <root>/<id>/messages.<gen>.jsonl      the transcript journal: one message a line
    <root>/<id>/token-usage.jsonl         one compact JSON object a line
    <root>/<id>/.lock                     flock target: serializes processes

The snapshot holds the format number, the authoritative metadata, the
timestamps, ``metadata``, ``runtime_state``, the message count, and which
journal holds the messages and how many of its bytes count. It is replaced
atomically (temporary file, fsync, rename, directory fsync), so a reader sees
the old snapshot or the new one, never a mix.

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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import orjson

from ._errors import CorruptSessionError, UnsupportedFormatError
from ._merge import Authoritative
from ._model import KnownTranscript, Message, Session, SessionSummary, converter, edit_mark

__all__ = [
    "FORMAT",
    "IoCounts",
    "SessionFiles",
    "list_summaries",
    "read_summary",
]

FORMAT = 2
SESSION_FILE = "session.json"
LOG_FILE = "token-usage.jsonl"
LOCK_FILE = ".lock"
JOURNAL_PREFIX = "messages."
JOURNAL_SUFFIX = ".jsonl"
TEMP_SUFFIX = ".tmp"
_GROUP_KEYS = ("title", "title_version", "pinned", "metadata_version")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@attrs.define
class IoCounts:
    """What one batch of file work did, added to the store's statistics."""

    snapshots_written: int = 0
    journal_appends: int = 0
    journal_rewrites: int = 0
    append_batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file a writer makes (and may leave by crashing)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def is_journal(name: str) -> bool:
    return name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX)


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


def decode_snapshot(path: str, raw: bytes, session_id: str) -> Snapshot:
    """Check and decode the bytes of a ``session.json``.

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
        checks.update(journal=str, journal_size=int, metadata=dict, runtime_state=dict)
    for key, kind in checks.items():
        if not isinstance(head.get(key), kind):
            raise CorruptSessionError(path, f"{key!r} is missing or of the wrong type")
    if head["id"] != session_id:
        raise CorruptSessionError(path, f"holds session {head['id']!r}, not {session_id!r}")
    if version == 2:
        journal = head["journal"]
        if not is_journal(journal) or "/" in journal or journal.startswith("."):
            raise CorruptSessionError(path, f"names no valid journal ({journal!r})")
        if rest.strip():
            raise CorruptSessionError(path, "holds more than one line")
        return Snapshot(path, head)
    return Snapshot(path, head, rest)


def encode_snapshot(session: Session, journal: str, journal_size: int) -> bytes:
    """The bytes of a format-2 ``session.json`` for a checked session."""
    return (
        orjson.dumps(
            {
                "format": FORMAT,
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
        + b"\n"
    )


def encode_messages(messages: Sequence[Message]) -> bytes:
    """Journal lines for ``messages``, one compact JSON object each."""
    if not messages:
        return b""
    unstructure = converter.get_unstructure_hook(Message)
    return b"\n".join([orjson.dumps(unstructure(message)) for message in messages]) + b"\n"


def _structure(path: str, data: dict[str, Any]) -> Session:
    try:
        return converter.structure(data, Session)
    except Exception as exc:  # cattrs groups every field error in its own exception
        raise CorruptSessionError(path, f"not a valid session: {exc!r}") from None


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


def _read_first_line(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.readline()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _version(snapshot: Snapshot) -> tuple[Any, ...]:
    """What names a format-2 transcript on disk: its journal, counted size and count."""
    if snapshot.format != FORMAT:
        return ()  # format 1 is never known: its next write makes it format 2
    return (snapshot.journal, snapshot.journal_size, snapshot.message_count)


def read_summary(root: Path, session_id: str) -> SessionSummary | None:
    """The summary of one session from its snapshot, or None if it has none."""
    path = os.path.join(root, session_id, SESSION_FILE)
    line = _read_first_line(path)
    if line is None:
        return None
    return _summary(decode_snapshot(path, line, session_id))


def list_summaries(root: Path) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """Every readable session's summary, newest first, and the errors of the others."""
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
        if summary is not None:
            summaries.append(summary)
    summaries.sort(key=lambda summary: summary.updated_at, reverse=True)
    return summaries, errors


# --- low-level helpers --------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_file(path: str) -> bytes | None:
    """The whole file, or None if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        size = os.fstat(fd).st_size
        chunks = [os.read(fd, size + 1)]
        while chunks[-1]:  # it grew since the fstat
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_tail(fd: int, size: int) -> int:
    """Truncate a log after its last newline; return the new size."""
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


@attrs.define
class SessionFiles:
    """The files of one session. Used by that session's actor only.

    Methods marked *locked* must be called while :meth:`lock` is held: the
    lock serializes this session's file work across processes.
    """

    root: Path
    session_id: str
    fsync: bool
    counts: IoCounts = attrs.field(factory=IoCounts)
    _known: KnownTranscript | None = None  # version: (journal, size, count)
    _swept: bool = False
    # While the lock is held, nobody else writes: the snapshot is read once.
    _held: Snapshot | _Unread | None = attrs.field(factory=lambda: _UNREAD)
    _locked: bool = False
    # Paths as strings, made once: pathlib costs more than the syscalls here.
    directory: str = attrs.field(init=False)
    session_path: str = attrs.field(init=False)
    log_path: str = attrs.field(init=False)
    _lock_path: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.directory = os.path.join(self.root, self.session_id)
        self.session_path = os.path.join(self.directory, SESSION_FILE)
        self.log_path = os.path.join(self.directory, LOG_FILE)
        self._lock_path = os.path.join(self.directory, LOCK_FILE)

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)
            self.counts.fsyncs += 1

    def _sync_dir(self, path: str | Path) -> None:
        if self.fsync:
            fsync_dir(path)
            self.counts.fsyncs += 1

    @contextlib.contextmanager
    def lock(self, *, create: bool) -> Iterator[bool]:
        """Hold the session's cross-process lock.

        Yields True with the lock held. Without ``create``, yields False (and
        holds nothing) when the session's directory does not exist. The lock
        is an ``flock`` on ``.lock``; a delete unlinks that file, so after
        waiting for it the holder checks it locked the file still in place.
        """
        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
            except (FileNotFoundError, NotADirectoryError):
                if not create:
                    yield False
                    return
                try:
                    os.mkdir(self.directory)
                except FileExistsError:
                    pass  # made by another writer just now
                else:
                    self._sync_dir(self.root)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self._lock_path).st_ino
                except FileNotFoundError:
                    current = -1
                if current != os.fstat(fd).st_ino:
                    continue  # deleted while we waited: lock the new one
                self._locked = True
                yield True
                return
            finally:
                self._locked = False
                self._held = _UNREAD
                os.close(fd)  # also releases the flock

    # -- reads (no lock needed: the snapshot is replaced atomically and the
    #    journal bytes it counts never change) --

    def read_snapshot(self) -> Snapshot | None:
        if not isinstance(self._held, _Unread):
            return self._held
        raw = _read_file(self.session_path)
        snapshot = None if raw is None else decode_snapshot(self.session_path, raw, self.session_id)
        if self._locked:
            self._held = snapshot
        return snapshot

    def read_group(self) -> Authoritative | None:
        """The authoritative metadata on disk now."""
        snapshot = self.read_snapshot()
        return None if snapshot is None else snapshot.group()

    def exists(self) -> bool:
        return os.path.exists(self.session_path)

    def read_session(self) -> Session | None:
        """The persisted session, as new objects."""
        snapshot = self.read_snapshot()
        return None if snapshot is None else self._read_session(snapshot)

    def _read_session(self, snapshot: Snapshot, *, fresh: bool = False) -> Session:
        """Decode the session; its messages become the known transcript if
        ``fresh`` or if what was known is out of date (a UI reading the
        session must not make the runtime's next save rewrite the journal).
        """
        head = snapshot.head
        if snapshot.format == 1:
            try:
                body = orjson.loads(snapshot.body or b"")
            except orjson.JSONDecodeError as exc:
                raise CorruptSessionError(snapshot.path, f"unreadable body: {exc}") from None
            if not isinstance(body, dict):
                raise CorruptSessionError(snapshot.path, "the body is not a JSON object")
            session = _structure(snapshot.path, {**head, **body})
            if len(session.messages) != snapshot.message_count:
                raise CorruptSessionError(snapshot.path, "message count does not match")
            self._known = None  # the next write makes it format 2
            return session
        messages = self._read_journal(snapshot)
        session = _structure(snapshot.path, {**head, "messages": messages})
        mark = edit_mark()  # above the stamps of the objects just made
        assert snapshot.journal is not None
        if fresh or not self._known_matches(snapshot):
            self._known = KnownTranscript(_version(snapshot), list(session.messages), mark)
        return session

    def _read_journal(self, snapshot: Snapshot) -> list[Any]:
        lines = self._counted_lines(snapshot)
        try:
            return [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError as exc:
            assert snapshot.journal is not None
            path = os.path.join(self.directory, snapshot.journal)
            raise CorruptSessionError(path, f"unreadable message: {exc}") from None

    def known_prefix(self, messages: Sequence[Message]) -> int:
        """How many leading ``messages`` are checked already (see KnownTranscript.prefix)."""
        return 0 if self._known is None else self._known.prefix(messages)

    def persisted_messages(self, incoming: Sequence[Message]) -> list[Message]:
        """The persisted transcript, for a checkpoint bringing ``incoming`` (locked).

        When the known transcript is what is on disk and ``incoming`` starts
        with it (the same objects or equal ones), that prefix of ``incoming``
        is returned; otherwise the journal is read and fresh objects are
        returned. Either way no caller gets another caller's objects.
        """
        snapshot = self.read_snapshot()
        if snapshot is None:
            return []
        if self._known is not None and self._known_matches(snapshot):
            own = self._known.persisted(incoming)
            if own is not None:
                return own
        return self._read_session(snapshot, fresh=True).messages

    def read_usage(self) -> list[dict[str, Any]]:
        """Every complete record of the log; a torn last line is left out."""
        data = _read_file(self.log_path)
        if data is None:
            return []
        lines = data.split(b"\n")
        lines.pop()  # empty after the final newline, or a torn tail
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise CorruptSessionError(self.log_path, f"line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise CorruptSessionError(self.log_path, f"line {number} is not an object")
            records.append(record)
        return records

    # -- writes (locked) --

    def _known_matches(self, snapshot: Snapshot) -> bool:
        return self._known is not None and self._known.version == _version(snapshot)

    def write_session(self, session: Session) -> None:
        """Persist a checked session: new messages appended, then the snapshot (locked).

        The journal is appended to when the persisted transcript is an
        unchanged prefix of ``session.messages``, and written anew otherwise.
        """
        self._sweep()
        snapshot = self.read_snapshot()
        mark = edit_mark()
        messages = session.messages
        known = self._known
        old_journal = snapshot.journal if snapshot is not None else None
        appending = (
            known is not None
            and snapshot is not None
            and self._known_matches(snapshot)
            and known.prefix(messages) == len(known.messages)
        )
        # Encode everything before touching a file: a value the encoder
        # refuses must leave the disk as it was.
        if appending:
            assert known is not None and snapshot is not None and snapshot.journal is not None
            journal, start = snapshot.journal, snapshot.journal_size
            lines = encode_messages(messages[len(known.messages) :])
        else:
            if snapshot is not None and snapshot.journal is not None:
                self._check_journal(snapshot)  # never sweep away a damaged one
            journal, start = f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:16]}{JOURNAL_SUFFIX}", 0
            lines = encode_messages(messages)
        size = start + len(lines)
        data = encode_snapshot(session, journal, size)
        if appending:
            self._append_journal(journal, start, lines)
        else:
            self._write_journal(journal, lines)
        self._known = None  # until the snapshot naming the journal is in place
        self._replace_snapshot(data)
        self._known = KnownTranscript((journal, size, len(messages)), list(messages), mark)
        if journal != old_journal:
            self._sweep(force=True)  # the old journal is no longer named

    def _check_journal(self, snapshot: Snapshot) -> None:
        """Refuse to replace a journal that disagrees with its snapshot.

        Its lines are counted, not decoded: cheap beside the rewrite to come,
        and enough to keep a damaged journal from being swept away.
        """
        self._counted_lines(snapshot)

    def _counted_lines(self, snapshot: Snapshot) -> list[bytes]:
        """The journal lines the snapshot counts (decoded by the caller)."""
        assert snapshot.journal is not None
        path = os.path.join(self.directory, snapshot.journal)
        size = snapshot.journal_size
        try:
            with open(path, "rb") as file:
                data = file.read(size)
        except FileNotFoundError:
            raise CorruptSessionError(path, f"journal missing, named by {SESSION_FILE}") from None
        if len(data) != size or (size and not data.endswith(b"\n")):
            raise CorruptSessionError(path, f"journal shorter than the {size} bytes counted")
        lines = data.split(b"\n")[:-1]
        if len(lines) != snapshot.message_count:
            raise CorruptSessionError(
                path, f"{len(lines)} messages where {snapshot.message_count} are counted"
            )
        return lines

    def write_group(self, session: Session) -> None:
        """Persist new authoritative metadata of ``session``, read just now (locked).

        The journal is left as it is: only the snapshot changes.
        """
        self._sweep()
        snapshot = self.read_snapshot()
        if snapshot is None or snapshot.format != FORMAT:
            self.write_session(session)  # format 1: upgrade it
            return
        assert snapshot.journal is not None
        self._replace_snapshot(encode_snapshot(session, snapshot.journal, snapshot.journal_size))

    def _replace_snapshot(self, data: bytes) -> None:
        temp = os.path.join(self.directory, f".{SESSION_FILE}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            try:
                _write_all(fd, data)
                self._sync(fd)
            finally:
                os.close(fd)
            self._held = _UNREAD
            os.replace(temp, self.session_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self.counts.snapshots_written += 1
        self.counts.bytes_written += len(data)
        self._sync_dir(self.directory)

    def _write_journal(self, name: str, data: bytes) -> int:
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            try:
                _write_all(fd, data)
                self._sync(fd)
            finally:
                os.close(fd)
            self._sync_dir(self.directory)  # the new name, before a snapshot uses it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self.counts.journal_rewrites += 1
        self.counts.bytes_written += len(data)
        return len(data)

    def _append_journal(self, name: str, size: int, data: bytes) -> int:
        if not data:
            return size
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | _O_CLOEXEC)
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                raise CorruptSessionError(path, f"journal shorter than the {size} bytes counted")
            if actual > size:
                os.ftruncate(fd, size)  # lines a crash left uncounted
            try:
                _write_all(fd, data)
                self._sync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self.counts.journal_appends += 1
        self.counts.bytes_written += len(data)
        return size + len(data)

    def append(self, data: bytes) -> None:
        """Append whole lines to the token-usage log in one write (locked).

        A torn last line, left by a crash in the middle of an append, is cut
        off first so no record is glued onto it. If the write fails, the log
        is cut back to where it was.
        """
        flags = os.O_RDWR | os.O_APPEND | _O_CLOEXEC
        try:
            fd = os.open(self.log_path, flags)
        except FileNotFoundError:
            fd = os.open(self.log_path, flags | os.O_CREAT, 0o644)
            try:
                # Make the new name durable before any record is in it: a
                # failure here leaves no log, so a retry cannot double a record.
                self._sync_dir(self.directory)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.log_path)
                raise
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                size = cut_torn_tail(fd, size)
            try:
                _write_all(fd, data)
                self._sync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self.counts.append_batches += 1
        self.counts.bytes_written += len(data)

    def delete(self) -> bool:
        """Remove the session, its journal, its log and its directory (locked).

        Returns:
            Whether a session file existed.
        """
        self._known = None
        self._held = _UNREAD
        try:
            os.unlink(self.session_path)
            existed = True
        except FileNotFoundError:
            existed = False
        self.remove_directory()
        return existed

    def remove_directory(self) -> None:
        """Remove what is left once the session file is gone (locked)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)
        self._sweep(force=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_path)
        try:
            os.rmdir(self.directory)
        except OSError as exc:
            # Someone else's file in the directory: leave it and them alone.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        else:
            self._sync_dir(self.root)

    def _sweep(self, *, force: bool = False) -> None:
        """Remove temporary files and journals no snapshot names (locked).

        Such files are left by a writer that crashed; under the lock none is
        in use. Done on an actor's first write, and after a journal rewrite.
        """
        if self._swept and not force:
            return
        self._swept = True
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        try:
            snapshot = self.read_snapshot()
        except CorruptSessionError:
            return  # leave everything as it is for whoever looks into it
        keep = snapshot.journal if snapshot is not None else None
        for entry in entries:
            if is_temp(entry.name) or (is_journal(entry.name) and entry.name != keep):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
