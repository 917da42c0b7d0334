"""Durable file work of the file backend: plain synchronous functions.

Everything here blocks; the actor calls it from a worker thread, one hop per
batch of messages. Layout of a session directory::

    <root>/<session_id>/session.json        the snapshot (format below)
    <root>/<session_id>/token-usage.jsonl   one compact JSON object per line
    <root>/<session_id>/.lock               fcntl.flock target, serializes processes

``session.json`` holds two lines. The first, the *head*, is a small JSON
object: the format number, the id, the authoritative metadata, the
timestamps and the message count. The second, the *body*, holds
``messages``, ``metadata`` and ``runtime_state``. A save needs only the head
to merge, and ``list_sessions`` reads only heads, so neither pays for the
transcript. Snapshots are replaced atomically (temporary file, fsync,
rename, directory fsync), so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import orjson

from ._errors import CorruptSessionError
from ._merge import Authoritative
from ._model import Session, SessionSummary, converter

__all__ = [
    "FORMAT",
    "IoCounts",
    "SessionFiles",
    "decode_session",
    "encode_session",
    "read_summary",
]

FORMAT = 1
SESSION_FILE = "session.json"
LOG_FILE = "token-usage.jsonl"
LOCK_FILE = ".lock"
_TEMP_SUFFIX = ".tmp"
_HEAD_KEYS = (
    "id",
    "title",
    "title_version",
    "pinned",
    "metadata_version",
    "created_at",
    "updated_at",
)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@attrs.define
class IoCounts:
    """What one batch of file work did, added to the store's statistics."""

    snapshots_written: int = 0
    append_batches: int = 0
    fsyncs: int = 0


# --- encoding ---------------------------------------------------------------


def encode_session(session: Session) -> bytes:
    """The bytes of ``session.json`` for a checked session (see check_session)."""
    data = converter.unstructure(session)
    body = {
        "messages": data["messages"],
        "metadata": data["metadata"],
        "runtime_state": data["runtime_state"],
    }
    head = {"format": FORMAT, **{key: data[key] for key in _HEAD_KEYS}}
    head["message_count"] = len(session.messages)
    return orjson.dumps(head) + b"\n" + orjson.dumps(body) + b"\n"


def _split(path: Path, raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The decoded head and the raw body of a session file."""
    line, _, body = raw.partition(b"\n")
    head = _decode_head(path, line)
    return head, body


def _decode_head(path: Path, line: bytes) -> dict[str, Any]:
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable head: {exc}") from None
    if not isinstance(head, dict):
        raise CorruptSessionError(path, "the head is not a JSON object")
    version = head.get("format")
    if version != FORMAT:
        if isinstance(version, int) and version > FORMAT:
            raise CorruptSessionError(
                path,
                f"written in format {version}, newer than this library's {FORMAT}: "
                "upgrade sessionactors to read it",
            )
        raise CorruptSessionError(path, f"unknown format {version!r}")
    return head


def decode_session(path: Path, raw: bytes, session_id: str) -> Session:
    """A Session from the bytes of its file.

    Raises:
        CorruptSessionError: the bytes are not a session of this format, or
            not the session ``session_id``.
    """
    head, body_line = _split(path, raw)
    try:
        body = orjson.loads(body_line)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable body: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptSessionError(path, "the body is not a JSON object")
    data = {key: head.get(key) for key in _HEAD_KEYS}
    data.update(body)
    try:
        session = converter.structure(data, Session)
    except Exception as exc:  # cattrs wraps every field error in its own group
        raise CorruptSessionError(path, f"not a valid session: {exc!r}") from None
    if session.id != session_id:
        raise CorruptSessionError(path, f"holds session {session.id!r}, not {session_id!r}")
    return session


def _summary(path: Path, head: dict[str, Any], session_id: str) -> SessionSummary:
    try:
        summary = SessionSummary(
            id=head["id"],
            title=head["title"],
            pinned=head["pinned"],
            title_version=head["title_version"],
            metadata_version=head["metadata_version"],
            created_at=converter.structure(head["created_at"], datetime),
            updated_at=converter.structure(head["updated_at"], datetime),
            message_count=head["message_count"],
        )
    except Exception as exc:
        raise CorruptSessionError(path, f"not a valid session head: {exc!r}") from None
    if summary.id != session_id:
        raise CorruptSessionError(path, f"holds session {summary.id!r}, not {session_id!r}")
    return summary


def _group(head: dict[str, Any]) -> Authoritative:
    return Authoritative(
        title=head["title"],
        title_version=head["title_version"],
        pinned=head["pinned"],
        metadata_version=head["metadata_version"],
    )


def read_summary(root: Path, session_id: str) -> SessionSummary | None:
    """The summary of one session from its head, or None if it has no file."""
    path = root / session_id / SESSION_FILE
    try:
        with open(path, "rb") as file:
            line = file.readline()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _summary(path, _decode_head(path, line), session_id)


# --- low-level helpers --------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TEMP_SUFFIX)


# --- one session's files ----------------------------------------------------------


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
    _temps_swept: bool = False

    @property
    def directory(self) -> Path:
        return self.root / self.session_id

    @property
    def session_path(self) -> Path:
        return self.directory / SESSION_FILE

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)
            self.counts.fsyncs += 1

    def _sync_dir(self, path: Path) -> None:
        if self.fsync:
            _fsync_dir(path)
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
            if create:
                try:
                    self.directory.mkdir()
                except FileExistsError:
                    pass
                else:
                    self._sync_dir(self.root)
            try:
                fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
            except (FileNotFoundError, NotADirectoryError):
                if create:
                    continue  # a concurrent delete removed the directory
                yield False
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    current = os.stat(self.directory / LOCK_FILE).st_ino
                except FileNotFoundError:
                    current = -1
                if current != os.fstat(fd).st_ino:
                    continue  # deleted while we waited: lock the new one
                yield True
                return
            finally:
                os.close(fd)  # also releases the flock

    # -- reads (no lock needed: snapshots are replaced atomically) --

    def read_raw(self) -> bytes | None:
        try:
            return self.session_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_group(self) -> Authoritative | None:
        """The authoritative metadata on disk now, from the head alone."""
        try:
            with open(self.session_path, "rb") as file:
                line = file.readline()
        except (FileNotFoundError, NotADirectoryError):
            return None
        head = _decode_head(self.session_path, line)
        try:
            return _group(head)
        except KeyError as exc:
            raise CorruptSessionError(self.session_path, f"head lacks {exc}") from None

    def read_session(self) -> Session | None:
        raw = self.read_raw()
        if raw is None:
            return None
        return decode_session(self.session_path, raw, self.session_id)

    def exists(self) -> bool:
        return self.session_path.exists()

    def read_usage(self) -> list[dict[str, Any]]:
        """Every complete record of the log; a torn last line is left out."""
        try:
            data = self.log_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
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

    def write_snapshot(self, data: bytes) -> None:
        """Replace ``session.json`` atomically (locked)."""
        self._sweep_temps()
        temp = self.directory / f".{SESSION_FILE}.{uuid.uuid4().hex}{_TEMP_SUFFIX}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            try:
                _write_all(fd, data)
                self._sync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.session_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self.counts.snapshots_written += 1
        self._sync_dir(self.directory)

    def append(self, data: bytes) -> None:
        """Append whole lines to the log in one write (locked).

        A torn last line, left by a crash in the middle of an append, is cut
        off first so no record is glued onto it. If the write fails, the log
        is cut back to where it was.
        """
        flags = os.O_RDWR | os.O_APPEND | _O_CLOEXEC
        try:
            fd = os.open(self.log_path, flags)
            created = False
        except FileNotFoundError:
            fd = os.open(self.log_path, flags | os.O_CREAT, 0o644)
            created = True
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                size = _cut_torn_tail(fd, size)
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
        if created:
            self._sync_dir(self.directory)

    def delete(self) -> bool:
        """Remove the session, its log and its directory (locked).

        Returns:
            Whether a session file existed.
        """
        try:
            self.session_path.unlink()
            existed = True
        except FileNotFoundError:
            existed = False
        self.remove_directory()
        return existed

    def remove_directory(self) -> None:
        """Remove what is left once the session file is gone (locked)."""
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()
        self._sweep_temps(force=True)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / LOCK_FILE).unlink()
        try:
            self.directory.rmdir()
        except OSError as exc:
            # Someone else's file in the directory: leave it and them alone.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        else:
            self._sync_dir(self.root)

    def _sweep_temps(self, *, force: bool = False) -> None:
        """Remove temporary files a crashed writer left (locked, so none is live)."""
        if self._temps_swept and not force:
            return
        self._temps_swept = True
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if _is_temp(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _cut_torn_tail(fd: int, size: int) -> int:
    """Truncate the log after its last newline; return the new size."""
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


def list_summaries(root: Path) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
    """Every readable session's summary, and the errors of the unreadable ones."""
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
