"""One session's directory while it is open: the lock, the descriptor, the slots read.

:class:`SessionDirectory` holds what one hold of the lock knows (the
directory's descriptor, each snapshot slot's bytes and length, the snapshot
last written) so that a batch reads each slot once and a rewrite needs no
``fstat``; it makes names durable, and removes leftovers and what is left of
a deleted session. :class:`~.session.SessionFiles` executes the steps on it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from ..protocol import IoCounts, SegmentRolledBack
from . import leftovers, slots
from .durable import fsync_dir, open_directory, read_at
from .layout import LOG_FILE, SESSION_FILE, SLOT_FILES
from .lock import locked_directory
from .snapshot import Snapshot, decode_snapshot, recorded_id

__all__ = ["SessionDirectory"]


class _Unread:
    pass


_UNREAD = _Unread()


@attrs.frozen
class _Written:
    """A slot this lock hold wrote: decoded only if it is read again."""

    path: str
    data: bytes
    slot: int


@attrs.define
class SessionDirectory:
    """One session's directory: its lock, its descriptor and, under the lock, its slots.

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
    # The current log generation and its last commit, as this hold read it
    # (None: there is none); see SessionFiles.
    _log: Any = attrs.field(factory=lambda: _UNREAD)
    _lock_fd: int | None = None  # the locked directory, while the lock is held
    # Appended files whose new bytes one fdatasync each makes durable when the
    # lock is let go (a descriptor of each and its size before the hold, by
    # name): every write of one hold shares it, so queued updates cost one
    # fsync, not one each.
    _unsynced: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    # Work done on another thread while the hold's appends are synced (its
    # publish), waited for before the lock is let go.
    _beside_sync: concurrent.futures.Future[None] | None = None
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
        self._log = _UNREAD

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)
            self.counts.fsyncs += 1

    def _datasync(self, fd: int) -> None:
        """Make a file's new bytes durable: an append needs no other metadata than its size."""
        if self.fsync:
            os.fdatasync(fd)
            self.counts.fsyncs += 1

    def _datasync_on_release(self, name: str, size: int) -> Callable[[int], None]:
        """A ``sync`` for an append to ``name`` of ``size`` bytes (locked), done at the release."""

        def later(fd: int) -> None:
            if self.fsync and name not in self._unsynced:
                self._unsynced[name] = (os.dup(fd), size)

        return later

    def _sync_appended(self) -> None:
        """Make every append of this hold durable: before the lock goes, or a file is made.

        If one cannot be, every file appended to is cut back to its size
        before the hold: what was persisted before is unchanged.
        """
        unsynced, self._unsynced = self._unsynced, {}
        try:
            for fd, _ in unsynced.values():
                self._datasync(fd)
        except OSError:
            for fd, size in unsynced.values():
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            raise
        finally:
            for fd, _ in unsynced.values():
                os.close(fd)

    def _await_beside_sync(self) -> None:
        beside, self._beside_sync = self._beside_sync, None
        if beside is not None:
            beside.result()

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
        """Hold the session's cross-process lock (see :mod:`.lock`).

        Yields True with the lock held. Without ``create``, yields False (and
        holds nothing) when the session's directory does not exist. A
        directory made for a session that in the end was not written is
        removed again. Without ``wait``, a lock held elsewhere raises
        :class:`LockBusy` at once.

        Raises:
            CorruptSessionError: ``<root>/<id>`` is not a directory: refused at once.
            OSError: the directory was removed under this lock too many times in a row.
        """
        with locked_directory(
            self.directory, self.session_id, create=create, wait=wait, made=self._sync_root
        ) as locked:
            if locked is None:
                yield False
                return
            fd, made = locked
            try:
                self._lock_fd = self._dir_fd = fd
                if made:
                    self._swept = True  # nothing to sweep in a directory just made
                written = self.counts.snapshots_written
                counted = attrs.evolve(self.counts)
                try:
                    yield True
                except BaseException:
                    # Calls answered before the failure still count on their bytes.
                    with contextlib.suppress(OSError):
                        self._sync_appended()
                    raise
                else:
                    try:
                        self._sync_appended()
                    except OSError as exc:
                        # What the hold appended is cut back: none of its calls succeed,
                        # and none of its writes counts.
                        self.counts = counted
                        raise SegmentRolledBack(exc, retry=False) from exc
                finally:
                    self._await_beside_sync()
                    if made and self.counts.snapshots_written == written and not self.exists():
                        self.remove_directory()  # every save failed: leave nothing
            finally:
                self._lock_fd = self._dir_fd = None
                self._forget()

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
            return slots.read_snapshot_at(self.directory, self.session_id, dir_fd=self._dir_fd)
        # Under the lock no writer can be in the middle of a slot: one read.
        raws = [self._raw(slot) for slot in range(len(SLOT_FILES))]
        self._sizes = [None if raw is None else len(raw) for raw in raws]
        self._held = slots.newest(slots.decode_slots(self.directory, self.session_id, raws))
        return self._held

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
        if first and recorded_id(first) == self.session_id:
            return True  # this session's slot: the other one need not be read
        slots.check_owner(self.directory, self.session_id, self._raw)
        return any(self._raw(slot) for slot in range(len(SLOT_FILES)))

    # -- writes (locked) --

    def _write_slot(self, slot: int, data: bytes) -> None:
        """Write the older snapshot slot (locked; see :func:`.slots.write_slot`)."""
        # A slot known to be no longer than the new bytes needs no cut.
        old_size = None if isinstance(self._held, _Unread) else self._sizes[slot]
        self._forget()
        slots.write_slot(
            self._fd(),
            self.directory,
            slot,
            data,
            old_size,
            sync=self._sync,
            sync_directory=self._sync_directory,
        )
        self.counts.snapshots_written += 1
        self.counts.bytes_written += len(data)
        if self._lock_fd is not None:
            self._held = _Written(os.path.join(self.directory, SLOT_FILES[slot]), data, slot)
            self._sizes[slot] = len(data)

    def remove_directory(self) -> None:
        """Remove what is left once the snapshot is gone (locked)."""
        leftovers.remove_files(self._fd())
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
        """Remove leftovers of crashed writers (locked; see :func:`.leftovers.sweep`).

        Done on an actor's first write, and after a journal rewrite.
        """
        if self._swept and not force:
            return
        self._swept = True
        leftovers.sweep(self._fd(), self.directory, self.session_id)
