"""The classic design, ported to trio: the baseline ``run.py`` measures sessionactors against.

One ``trio.Lock`` per session id, kept in a dict. Every call on a session
takes that session's lock and does all its file work in ONE worker-thread
hop:

- a save reads the session file (if any), merges the authoritative metadata
  (title, title_version, pinned, metadata_version, decided as one group by
  ``metadata_version``, as in the reference's merge rule), then rewrites the whole
  session JSON: temporary file, fsync, ``os.replace``, directory fsync;
- an append opens the log with ``O_APPEND``, writes one line, fsyncs and
  closes it: one write and one fsync per record.

The model and the encoding are sessionactors' own (its cattrs converter and
orjson), so both designs turn the same objects into the same kind of bytes.
The port is meant to be faithful, not handicapped: it skips the JSON
validation sessionactors does on every save, reads the file with one
``read_bytes`` and decodes it with orjson alone (no cattrs structuring on
the save path), and like the original it never forgets a lock: the dict
holds one ``trio.Lock`` per session id ever used.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

from sessionactors import Session, SessionNotFoundError
from sessionactors._model import converter

__all__ = ["ClassicStatistics", "ClassicStore"]

SESSION_FILE = "session.json"
LOG_FILE = "token-usage.jsonl"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_GROUP = ("title", "title_version", "pinned", "metadata_version")


@attrs.frozen(kw_only=True)
class ClassicStatistics:
    """The same counters as sessionactors' ``StoreStatistics``, where they apply."""

    saves_requested: int
    snapshots_written: int
    appends_requested: int
    append_batches: int
    fsyncs: int
    bytes_written: int
    locks: int


@attrs.define
class _Counters:
    saves_requested: int = 0
    snapshots_written: int = 0
    appends_requested: int = 0
    append_batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0


class ClassicStore:
    """Per-session ``trio.Lock``; under it, one thread hop of read-merge-rewrite or append.

    Args:
        root: the directory holding one sub-directory per session.
        durability: ``"fsync"`` (file and directory fsyncs, as sessionactors
            does) or ``"flush"`` (none).
        lock_appends: take the session's lock for appends too (the classic
            design serializes every write of a session). With False, appends
            go to the thread pool unserialized and rely on ``O_APPEND``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durability: str = "fsync",
        lock_appends: bool = True,
    ) -> None:
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be 'fsync' or 'flush', got {durability!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = durability == "fsync"
        self._lock_appends = lock_appends
        self._locks: dict[str, trio.Lock] = {}
        self._counters = _Counters()

    def _lock(self, session_id: str) -> trio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = trio.Lock()
        return lock

    def statistics(self) -> ClassicStatistics:
        """The counters now (fsyncs counts file and directory fsyncs)."""
        return ClassicStatistics(locks=len(self._locks), **attrs.asdict(self._counters))

    # --- the methods the workloads use ---

    async def save_runtime_session(self, session: Session) -> None:
        """Read, merge the authoritative group, rewrite durably; update ``session`` in place."""
        self._counters.saves_requested += 1
        async with self._lock(session.id):
            group, updated_at, fsyncs, written = await trio.to_thread.run_sync(
                self._save_sync, session
            )
        self._counters.snapshots_written += 1
        self._counters.fsyncs += fsyncs
        self._counters.bytes_written += written
        session.title, session.title_version, session.pinned, session.metadata_version = group
        session.updated_at = updated_at

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None:
        """Append one compact JSON line: open, write, fsync, close."""
        value = orjson.loads(record) if isinstance(record, str) else dict(record)
        if not isinstance(value, dict):
            raise ValueError("a token-usage record must be one JSON object")
        line = orjson.dumps(value) + b"\n"
        self._counters.appends_requested += 1
        if self._lock_appends:
            async with self._lock(session_id):
                fsyncs = await trio.to_thread.run_sync(self._append_sync, session_id, line)
        else:
            fsyncs = await trio.to_thread.run_sync(self._append_sync, session_id, line)
        self._counters.append_batches += 1
        self._counters.fsyncs += fsyncs
        self._counters.bytes_written += len(line)

    async def load_session(self, session_id: str) -> Session | None:
        """The persisted session, or None."""
        async with self._lock(session_id):
            return await trio.to_thread.run_sync(self._load_sync, session_id)

    # --- file work, in a worker thread ---

    # Each returns how many fsyncs it made; the counters are added to on the
    # event loop, since several worker threads run these at once.

    def _sync(self, fd: int) -> int:
        if not self._fsync:
            return 0
        os.fsync(fd)
        return 1

    def _sync_dir(self, path: Path) -> int:
        if not self._fsync:
            return 0
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 1

    def _save_sync(self, session: Session) -> tuple[tuple[str, int, bool, int], datetime, int, int]:
        directory = self.root / session.id
        path = directory / SESSION_FILE
        caller = (session.title, session.title_version, session.pinned, session.metadata_version)
        try:
            persisted: dict[str, Any] | None = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            persisted = None
        if persisted is None or caller[3] > persisted["metadata_version"]:
            group = caller
        else:
            group = (
                persisted["title"],
                persisted["title_version"],
                persisted["pinned"],
                persisted["metadata_version"],
            )
        updated_at = datetime.now(timezone.utc)
        data = converter.unstructure(session)
        data.update(zip(_GROUP, group, strict=True))
        data["updated_at"] = converter.unstructure(updated_at)
        encoded = orjson.dumps(data)
        fsyncs = 0
        if persisted is None:
            try:
                directory.mkdir()
            except FileExistsError:
                pass
            else:
                fsyncs += self._sync_dir(self.root)
        temp = directory / f".{SESSION_FILE}.{uuid.uuid4().hex}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(encoded)
                while view:
                    view = view[os.write(fd, view) :]
                fsyncs += self._sync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        fsyncs += self._sync_dir(directory)
        return group, updated_at, fsyncs, len(encoded)

    def _append_sync(self, session_id: str, line: bytes) -> int:
        directory = self.root / session_id
        path = directory / LOG_FILE
        flags = os.O_WRONLY | os.O_APPEND | _O_CLOEXEC
        created = False
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(path, flags | os.O_CREAT, 0o644)
            except FileNotFoundError:
                raise SessionNotFoundError(session_id) from None
            created = True
        try:
            os.write(fd, line)
            fsyncs = self._sync(fd)
        finally:
            os.close(fd)
        if created:
            fsyncs += self._sync_dir(directory)
        return fsyncs

    def _load_sync(self, session_id: str) -> Session | None:
        try:
            raw = (self.root / session_id / SESSION_FILE).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return converter.structure(orjson.loads(raw), Session)
