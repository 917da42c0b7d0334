"""One asyncio lock per (aio store, session id), held while a pop or a clear reads then writes.

Adds take it too, so that within one process no add lands between a pop's
read and its write. A lock lives only while somebody holds or waits for it,
so nothing is kept per session ever seen.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..aio import SessionStore

__all__ = ["session_lock"]

# The locks in use, per store: {session id: (lock, holders and waiters)}.
_LOCKS: weakref.WeakKeyDictionary[SessionStore, dict[str, tuple[asyncio.Lock, int]]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def session_lock(store: SessionStore, session_id: str) -> AsyncIterator[None]:
    """Hold the lock of ``session_id`` on ``store`` for the block."""
    locks = _LOCKS.setdefault(store, {})
    lock, users = locks.get(session_id) or (asyncio.Lock(), 0)
    locks[session_id] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = locks[session_id]
        if users == 1:
            del locks[session_id]
        else:
            locks[session_id] = (lock, users - 1)
