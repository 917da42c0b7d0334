"""sessionactors for asyncio programs: the same store, its actors still on trio.

``async with sessionactors.aio.open_store(root) as store:`` gives a store
whose methods are asyncio awaitables with the trio store's behaviour and
errors. Trio runs beside the asyncio loop, by default in a thread of its
own (``mode="guest"``: as the loop's guest, ``trio.lowlevel.start_guest_run``),
one trio run per loop shared by every store open on it. README's "From asyncio" says
why, and what each costs.
"""

from ._runs import Mode as Mode
from ._store import SessionStore as SessionStore
from ._store import open_store as open_store

__all__ = ["Mode", "SessionStore", "open_store"]
