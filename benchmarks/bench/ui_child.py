"""The watch workload's other process (``bench/ui.py``, 3): it writes, and says when each returned.

Run by the parent as ``python -m bench.ui_child MODE TARGET SESSION WRITES INTERVAL``
from ``benchmarks/``. ``MODE`` is:

* ``store``: open a store on ``TARGET`` (a root or a ``postgresql://`` URL),
  load session ``SESSION`` (the parent made it) and make ``WRITES``
  durable saves of it, one new message before each, ``INTERVAL`` seconds
  apart;
* ``floor``: append ``WRITES`` lines (``<n>\\n``, n from 1) to the file
  ``TARGET``, ``INTERVAL`` seconds apart: the signal alone, no store.

It prints one JSON object: ``writes``, a list of ``[revision, returned, seconds]``,
``returned`` being ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every
process of the machine) right after the write returned, and ``seconds`` how
long the write took (for ``floor`` the revision is n).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import trio

from sessionactors import open_store

from .data import make_message

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


async def write_store(target: str, session_id: str, writes: int, interval: float) -> list[Any]:
    """``writes`` one-message durable saves of ``session_id``; each one's revision and return."""
    done: list[Any] = []
    async with open_store(target, durability="fsync") as store:
        session = await store.load_session(session_id)
        if session is None:
            raise SystemExit(f"no session {session_id!r} at {target}")
        for _ in range(writes):
            session.messages.append(make_message(len(session.messages)))
            started = time.monotonic()
            await store.save_runtime_session(session)
            returned = time.monotonic()
            done.append([session.revision, returned, returned - started])
            await trio.sleep(interval)
    return done


def write_floor(path: str, writes: int, interval: float) -> list[Any]:
    """``writes`` appends of one line to ``path``; each one's number and return."""
    done: list[Any] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_CLOEXEC, 0o644)
    try:
        for number in range(1, writes + 1):
            started = time.monotonic()
            os.write(fd, b"%d\n" % number)
            returned = time.monotonic()
            done.append([number, returned, returned - started])
            time.sleep(interval)
    finally:
        os.close(fd)
    return done


def main(argv: list[str]) -> int:
    mode, target, session_id, writes, interval = argv
    if mode == "store":
        done = trio.run(write_store, target, session_id, int(writes), float(interval))
    elif mode == "floor":
        done = write_floor(target, int(writes), float(interval))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump({"writes": done}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
