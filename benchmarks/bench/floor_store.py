"""The floors of workloads 3 and 4: the durable work alone of a store with a log per session.

:class:`FloorStore` takes its turn in the same rounds as the stores
(``throughput.measure_rates``), as evidence beside their ratio, not a target.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from .designs import Counters
from .harness import fsync_path, write_all

__all__ = ["FloorStore"]

#: The floor's log file in each session's directory.
FLOOR_LOG = "log"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FloorStore:
    """The physical floor of a store with one directory and one log file per session.

    Only the durable work any such store must do, each call in one
    ``trio.to_thread.run_sync`` hop (trio's default limiter: 40 threads, as
    classic's): no lock, no reading back, no index, bytes encoded beforehand
    by the caller.

    - :meth:`create`: ``mkdir root/<id>``, fsync of ``root`` (the new name is
      durable), ``root/<id>/log`` created with the bytes, ``os.fdatasync``,
      fsync of the session's directory: 3 fsyncs. The log stays open.
    - :meth:`append`: one ``write`` to the open log, ``os.fdatasync``: 1 fsync.
    - :meth:`group_append` (workload 4): what any trio store must do to answer
      each of many callers once its record is durable, group-committing them:
      a caller that finds the session's log being written parks its task; the
      one that found it idle writes its record, then everything that came
      meanwhile, each batch in one ``write`` and one ``os.fdatasync`` in one
      hop, rescheduling the callers it wrote for. No task, channel, event or
      actor in between.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._saves = self._fsyncs = self._bytes = self._hops = 0
        self._logs: dict[str, _GroupLog] = {}

    def statistics(self) -> Counters:
        """The counters now, named as the stores' ``statistics()`` name theirs."""
        return {
            "saves_requested": self._saves,
            "fsyncs": self._fsyncs,
            "bytes_written": self._bytes,
            "thread_hops": self._hops,
        }

    def _create_sync(self, session_id: str, data: bytes, name: str = FLOOR_LOG) -> int:
        directory = self.root / session_id
        os.mkdir(directory)
        fsync_path(self.root)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC
        fd = os.open(directory / name, flags, 0o644)
        try:
            write_all(fd, data)
            os.fdatasync(fd)
            fsync_path(directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _append_sync(self, fd: int, data: bytes) -> None:
        write_all(fd, data)
        os.fdatasync(fd)

    async def create(self, session_id: str, data: bytes) -> int:
        """A new session's first save, durably; its log's open file descriptor."""
        fd = await trio.to_thread.run_sync(self._create_sync, session_id, data)
        self._count(data, fsyncs=3)
        return fd

    async def append(self, fd: int, data: bytes) -> None:
        """A later save: ``data`` appended to the open log, durably."""
        await trio.to_thread.run_sync(self._append_sync, fd, data)
        self._count(data, fsyncs=1)

    async def open_log(self, session_id: str, name: str) -> None:
        """A session's directory and its empty log ``name``, made durably (untimed)."""
        fd = await trio.to_thread.run_sync(self._create_sync, session_id, b"", name)
        self._logs[session_id] = _GroupLog(fd)

    async def group_append(self, session_id: str, data: bytes) -> None:
        """``data`` appended to the session's log, durably, group-committed with other callers'."""
        log = self._logs[session_id]
        if log.writing:
            # Parked until the writer reschedules this task: no Event, the least
            # a wait can cost (an abort never comes: nothing cancels a floor).
            log.waiting.append((data, trio.lowlevel.current_task()))
            await trio.lowlevel.wait_task_rescheduled(_never_aborted)
            return
        log.writing = True
        batch: list[tuple[bytes, trio.lowlevel.Task | None]] = [(data, None)]
        try:
            while batch:
                joined = b"".join(data for data, _ in batch)
                await trio.to_thread.run_sync(self._append_sync, log.fd, joined)
                self._saves += len(batch)
                self._fsyncs += 1
                self._bytes += len(joined)
                self._hops += 1
                for _, waiter in batch:
                    if waiter is not None:
                        trio.lowlevel.reschedule(waiter)
                batch, log.waiting = log.waiting, []
        finally:
            log.writing = False

    def close(self) -> None:
        """Close the logs :meth:`open_log` opened."""
        for log in self._logs.values():
            os.close(log.fd)
        self._logs.clear()

    def _count(self, data: bytes, *, fsyncs: int) -> None:
        self._saves += 1
        self._fsyncs += fsyncs
        self._bytes += len(data)
        self._hops += 1


class _GroupLog:
    """One session's open log and the callers parked until their records are written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writing = False
        self.waiting: list[tuple[bytes, trio.lowlevel.Task | None]] = []


def _never_aborted(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
