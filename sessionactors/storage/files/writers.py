"""Who writes a root: a row of the index per store, so a store that died is noticed.

Before its first write a file store adds a row naming its process (host,
boot, pid and the process's start time), and removes it when it closes. A
row whose process is gone (killed, perhaps between a session's write and the
index's update) means the index may be behind: the next listing then
reconciles it with the files and removes the row. A process is judged from
this host's ``/proc``; a row of another host is taken as alive (its store
is seen to be gone only once the index is built anew).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import uuid

__all__ = ["WRITERS_TABLE", "Writer", "dead_writers", "forget_writers"]

WRITERS_TABLE = (
    "CREATE TABLE IF NOT EXISTS writers (id TEXT PRIMARY KEY, host TEXT NOT NULL,"
    " boot TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL)"
)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return ""


def _boot() -> str:
    return _read("/proc/sys/kernel/random/boot_id")


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot); None if there is none.

    Where there is no ``/proc``, "" for a process that exists: its pid alone.
    """
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        # The command name (field 2) may hold spaces: count fields after its ")".
        return stat.rsplit(")", 1)[-1].split()[19]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return "" if not os.path.isdir("/proc/self") else None


class Writer:
    """This store as a writer of the root."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.row = (
            self.id,
            socket.gethostname(),
            _boot(),
            os.getpid(),
            _started(os.getpid()) or "",
        )

    def add(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO writers VALUES (?, ?, ?, ?, ?)", self.row)

    def remove(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DELETE FROM writers WHERE id = ?", (self.id,))


def dead_writers(conn: sqlite3.Connection) -> list[str]:
    """The ids of rows whose store's process is gone."""
    host, boot = socket.gethostname(), _boot()
    dead = []
    for writer_id, their_host, their_boot, pid, started in conn.execute(
        "SELECT id, host, boot, pid, started FROM writers"
    ):
        if their_host != host:
            continue
        if their_boot != boot or _started(pid) != started:
            dead.append(writer_id)
    return dead


def forget_writers(conn: sqlite3.Connection, ids: list[str]) -> None:
    """Remove the rows of dead stores once what they may have missed is reconciled."""
    conn.executemany("DELETE FROM writers WHERE id = ?", [(i,) for i in ids])
