"""The trio store's ``watch`` as an asyncio async context manager and async iterator.

One trio task holds the trio watch open for the whole asyncio block and
iterates it (a trio async generator must stay in one task); it takes the
next change only when asyncio asks for one, so the trio watch alone decides
what a slow watcher skips. Leaving the block cancels that task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import outcome
import trio

from ._calls import Call, refuse_another_loop, wait_through_cancellation
from ._runs import TrioRun
from ._side import StoreSide

__all__ = ["OpenWatch", "watch_changes"]

OpenWatch = Callable[..., AbstractAsyncContextManager[AsyncIterator[Any]]]


class _Bridge:
    """The asyncio iterator over the changes a trio task hands over, one per request."""

    def __init__(self, run: TrioRun) -> None:
        self._run = run
        # asyncio half
        # True once the trio watch is open; False if opening it failed.
        self.entered: asyncio.Future[bool] = run.loop.create_future()
        self._arrived: deque[outcome.Outcome[Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._asked = False  # a request is out and not yet answered
        self._over = False
        # trio half
        self._send, self._requests = trio.open_memory_channel[None](1)

    # --- asyncio half ---

    def __aiter__(self) -> _Bridge:
        return self

    async def __anext__(self) -> Any:
        if not self._arrived and not self._over:
            if not self._asked:
                self._asked = True
                self._run.to_trio(self._send.send_nowait, None)
            self._waiter = self._run.loop.create_future()
            # A cancellation here leaves the request out: its change is kept
            # in ``_arrived`` for the next call, never lost.
            await self._waiter
        if not self._arrived:
            raise StopAsyncIteration
        result = self._arrived.popleft()
        if isinstance(result, outcome.Error):
            self._over = True
            raise result.error
        return result.unwrap()

    def _hand_over(self, result: outcome.Outcome[Any]) -> None:
        self._asked = False
        self._arrived.append(result)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _resolve_entered(self, opened: bool) -> None:
        if not self.entered.done():
            self.entered.set_result(opened)

    # --- trio half ---

    async def _hand_over_on_request(self, iterator: AsyncIterator[Any]) -> None:
        while True:
            await self._requests.receive()
            try:
                change = await iterator.__anext__()
            except StopAsyncIteration:
                self._run.to_asyncio(self._hand_over, outcome.Error(StopAsyncIteration()))
                return
            except trio.Cancelled:
                raise
            except BaseException as exc:
                # The watcher's error: its next __anext__ raises it as itself.
                self._run.to_asyncio(self._hand_over, outcome.Error(exc))
                return
            self._run.to_asyncio(self._hand_over, outcome.Value(change))

    async def hold(self, open_watch: OpenWatch, session_id: str | None) -> None:
        """The trio task: open the watch, then hand over one change per request."""
        try:
            async with open_watch(session_id) as changes:
                iterator = changes.__aiter__()
                self._run.to_asyncio(self._resolve_entered, True)
                try:
                    await self._hand_over_on_request(iterator)
                finally:
                    # Closed here, in its trio task: left to the garbage
                    # collector, an async generator would be finalized after
                    # the trio run that must do it has ended.
                    aclose = getattr(iterator, "aclose", None)
                    if aclose is not None:
                        with trio.CancelScope(shield=True):
                            await aclose()
        finally:
            self._run.to_asyncio(self._resolve_entered, False)  # if opening failed


@asynccontextmanager
async def watch_changes(
    run: TrioRun, side: StoreSide, open_watch: OpenWatch, session_id: str | None
) -> AsyncIterator[AsyncIterator[Any]]:
    """Hold the trio watch open in one trio task for the block; yield the asyncio iterator."""
    refuse_another_loop(run)
    bridge = _Bridge(run)
    holder: Call[None] = Call(run, bridge.hold, (open_watch, session_id))
    side.submit(holder)
    try:
        await wait_through_cancellation(bridge.entered, run.done)
    except asyncio.CancelledError:
        await holder.cancel()
        raise
    if not (bridge.entered.done() and bridge.entered.result()):
        await holder.cancel()  # raises why opening the trio watch failed, as it is
        raise RuntimeError("the watch ended before it began")
    try:
        yield bridge
    finally:
        await holder.cancel()
