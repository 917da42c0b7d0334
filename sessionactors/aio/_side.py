"""The trio half of one asyncio store: the trio store, and the nursery its calls run in.

A task of the trio run opens :func:`sessionactors.open_store` and keeps it
open until asyncio leaves its block; each asyncio call becomes a task of the
calls nursery, which is *outside* the store's block, so the trio store's own
close (drain what was accepted, ``drain_timeout``, ``StoreClosedError`` for
the rest) applies to asyncio calls exactly as to trio ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import outcome
import trio

from .._errors import StoreClosedError
from .._store import SessionStore as TrioSessionStore
from .._store import open_store as trio_open_store
from ._calls import Call, wait_through_cancellation
from ._runs import TrioRun, raise_from

__all__ = ["StoreSide"]


class StoreSide:
    """One trio store served to asyncio: opened, fed calls, closed."""

    def __init__(self, run: TrioRun, root: Any, options: dict[str, Any]) -> None:
        self._run = run
        self._root = root
        self._options = options
        # asyncio half: ``opened`` resolves once the store is open (or its
        # opening failed: then ``ended`` holds why); ``ended`` with how its
        # block ended. Outcomes as values: set_exception would warn when unread.
        self.opened: asyncio.Future[None] = run.loop.create_future()
        self.ended: asyncio.Future[outcome.Outcome[None]] = run.loop.create_future()
        self.store: TrioSessionStore | None = None
        # trio half
        self._calls: trio.Nursery | None = None
        self._leaving = False
        self._leave = trio.Event()

    # --- asyncio half ---

    async def open(self) -> TrioSessionStore:
        """Open the trio store; its opening errors are raised here as they are."""
        self._run.to_trio(self._run.spawn, self._serve)
        try:
            await wait_through_cancellation(self.opened, self._run.done)
        except asyncio.CancelledError:
            if self.store is not None:
                await self.close()
            raise
        if self.store is None:
            raise_from(self._outcome())
            raise RuntimeError("the trio store ended before it opened")
        return self.store

    async def close(self) -> None:
        """Leave the trio store's block: every accepted call is answered first.

        Waits through cancellation (raised afterwards): the trio side always
        ends before this returns. Raises what closing the trio store raised.
        """
        if not self._run.done.done():
            self._run.to_trio(self._leave_in_trio)
        await wait_through_cancellation(self.ended, self._run.done)
        raise_from(self._outcome())

    def _outcome(self) -> outcome.Outcome[None]:
        """How the store's block ended; or, if the whole trio run ended first, how that did."""
        if self.ended.done():
            return self.ended.result()
        return self._run.done.result()

    def submit(self, call: Call[Any]) -> None:
        """Hand ``call`` to the trio side, which starts it or refuses it if closing."""
        self._run.to_trio(self._accept_in_trio, call)

    def _opened(self, store: TrioSessionStore) -> None:
        self.store = store
        self.opened.set_result(None)

    def _ended(self, result: outcome.Outcome[None]) -> None:
        if not self.opened.done():
            self.opened.set_result(None)
        self.ended.set_result(result)

    # --- trio half ---

    def _accept_in_trio(self, call: Call[Any]) -> None:
        if self._leaving or self._calls is None:
            call.refuse_in_trio(StoreClosedError("the store is closed"))
        else:
            self._calls.start_soon(call.run_in_trio)

    def _leave_in_trio(self) -> None:
        self._leaving = True
        self._leave.set()

    async def _serve(self) -> None:
        result: outcome.Outcome[None] = outcome.Value(None)
        # The calls' nursery encloses the store's block (see the module's
        # docstring). What opening or closing the store raises (a bad
        # option, an unreachable server) is kept and reported as it is, not
        # wrapped in the nursery's ExceptionGroup: the call tasks never raise.
        async with trio.open_nursery() as calls:
            try:
                async with trio_open_store(self._root, **self._options) as store:
                    self._calls = calls
                    self._run.to_asyncio(self._opened, store)
                    await self._leave.wait()
                    # The calls asyncio made before it left were started before
                    # this task woke; one more checkpoint lets each take its
                    # first step (hand its message to an actor) before the
                    # store stops taking messages, so each is drained, not refused.
                    await trio.lowlevel.cancel_shielded_checkpoint()
            except BaseException as exc:
                result = outcome.Error(exc)
        self._run.to_asyncio(self._ended, result)
