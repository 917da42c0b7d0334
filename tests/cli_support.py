"""What the command line's tests share: running it as a user does, and damaging a log by hand.

The commands run as ``python -m sessionactors ...`` in a child process; a
store is read back through a fresh store. A log (format 3) is changed by
hand either byte for byte (a checksum that no longer matches) or record by
record, each record written whole again (a log whose records are sound and
whose history is not).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio
from support import log_record, log_records

from sessionactors import Revision, Session, SessionStore, open_store

__all__ = [
    "aged",
    "flip",
    "history",
    "in_store",
    "load",
    "record_start",
    "rewrite_record",
    "run",
    "run_bytes",
]

T = TypeVar("T")


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """``python -m sessionactors ARGS``; an expected condition never prints a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "sessionactors", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_bytes(*args: object, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``python -m sessionactors ARGS`` with bytes in and out (an archive on stdin or stdout)."""
    result = subprocess.run(
        [sys.executable, "-m", "sessionactors", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=60,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


def in_store(location: Path | str, work: Callable[[SessionStore], Awaitable[T]]) -> T:
    """``work`` run in a store of this (the test's) process on ``location``, closed after."""

    async def go() -> T:
        async with open_store(location, durability="flush") as store:
            return await work(store)

    return trio.run(go)


def aged(archive: bytes, updated_at: datetime) -> bytes:
    """``archive`` with its session's ``updated_at`` set to ``updated_at``, and still whole.

    The end line's digest (of every byte before it) is made again, as an
    export would have written it (README, "The session archive").
    """
    lines = archive.splitlines(keepends=True)
    session = orjson.loads(lines[1])
    session["session"]["updated_at"] = updated_at.isoformat()
    lines[1] = orjson.dumps(session, option=orjson.OPT_APPEND_NEWLINE)
    body = b"".join(lines[:-1])
    end = {"end": {"lines": len(lines), "sha256": hashlib.sha256(body).hexdigest()}}
    return body + orjson.dumps(end, option=orjson.OPT_APPEND_NEWLINE)


def load(root: Path | str, session_id: str, revision: int | None = None) -> Session:
    """The session (at ``revision``) as a fresh store reads it."""

    async def read() -> Session | None:
        async with open_store(root, durability="flush") as store:
            return await store.load_session(session_id, revision=revision)

    session = trio.run(read)
    assert session is not None
    return session


def history(root: Path, session_id: str) -> list[Revision]:
    """The session's history as a fresh store (keeping 100 revisions) lists it."""

    async def read() -> list[Revision]:
        async with open_store(root, durability="flush") as store:
            return await store.session_history(session_id)

    return trio.run(read)


def record_start(path: Path, text: bytes) -> int:
    """Where the log record holding ``text`` starts in ``path``."""
    data = path.read_bytes()
    return data.rfind(b"\n", 0, data.index(text)) + 1


def flip(path: Path, old: bytes, new: bytes) -> int:
    """Change the first ``old`` in ``path`` to ``new`` (as long: offsets stay); where its
    record starts, whose checksum no longer matches."""
    assert len(old) == len(new)
    start = record_start(path, old)
    data = path.read_bytes()
    at = data.index(old)
    path.write_bytes(data[:at] + new + data[at + len(old) :])
    return start


def rewrite_record(path: Path, index: int, change: Callable[[Any], Any]) -> int:
    """Write record ``index`` of a generation again as ``change(json)``, whole (its
    checksum right); returns where it starts. Only the last record may change length:
    a commit or a base counts the bytes of those before it."""
    records = log_records(path)
    kind, body, start, end = records[index]
    new = log_record(kind, change(body))
    assert len(new) == end - start or index in (-1, len(records) - 1), "offsets would move"
    data = path.read_bytes()
    path.write_bytes(data[:start] + new + data[end:])
    return start
