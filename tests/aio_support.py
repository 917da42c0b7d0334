"""Helpers for the asyncio tests: a loop in a thread of its own, a trio face on an aio store,
and what a store may leave behind once it is closed.

The conformance tests (``test_aio_conformance.py``) are the trio suite's own
tests, run against :class:`TrioFacingStore`: trio-awaitable methods that
forward each call to a ``sessionactors.aio`` store running on an asyncio
loop in another thread (:class:`AsyncioThread`). A trio cancellation of a
forwarded call cancels the asyncio task making it, and waits for that task
to end, so the suite's cancellation tests see the aio store's cancellation.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from sessionactors import aio

T = TypeVar("T")

# A thread of trio's cache waiting for work carries this name; one running a
# job carries the job's name (trio renames it for ``to_thread.run_sync``).
_IDLE_TRIO_WORKER = re.compile(r"Trio thread \d+")


class AsyncioThread:
    """An asyncio event loop running in a thread of its own, until ``stop``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="test asyncio loop", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the test's asyncio loop did not stop"
        self.loop.close()


async def run_in_asyncio(
    loop: asyncio.AbstractEventLoop,
    make: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
    **kwargs: Any,
) -> T:
    """``await make(*args, **kwargs)`` as an asyncio task on ``loop``, awaited from trio.

    Its value or exception (the same object) comes back. A trio cancellation
    cancels the asyncio task and waits for it to end before ``Cancelled``
    goes on, as a cancelled trio store call does.
    """
    token = trio.lowlevel.current_trio_token()
    ended = trio.Event()
    made: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(make(*args, **kwargs))
        task.add_done_callback(lambda _: token.run_sync_soon(ended.set))
        made.append(task)

    loop.call_soon_threadsafe(start)
    try:
        await ended.wait()
    except trio.Cancelled:
        # ``start`` ran before this (the loop runs its callbacks in order).
        loop.call_soon_threadsafe(lambda: made[0].cancel())
        with trio.CancelScope(shield=True):
            await ended.wait()
        if not made[0].cancelled():
            made[0].exception()  # read, so asyncio does not log it as never retrieved
        raise
    return made[0].result()


class TrioFacingStore:
    """An aio store as a trio test sees a store: each coroutine method forwarded to its loop.

    ``statistics()`` and ``root`` are read directly: they are not async.
    """

    def __init__(self, store: aio.SessionStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(attribute):
            return attribute

        async def forward(*args: Any, **kwargs: Any) -> Any:
            return await run_in_asyncio(self._loop, attribute, *args, **kwargs)

        return forward


@asynccontextmanager
async def open_store_through_asyncio(
    loop: asyncio.AbstractEventLoop, root: Any, **options: Any
) -> AsyncIterator[TrioFacingStore]:
    """``sessionactors.open_store`` for trio tests, made of ``aio.open_store`` on ``loop``.

    The aio block is held open by an asyncio task. An exception leaving the
    trio block is raised inside the aio block (a trio cancellation cancels
    that task instead), so the aio store's exit is what the test sees.
    """
    token = trio.lowlevel.current_trio_token()
    opened = trio.Event()
    ended = trio.Event()
    held: dict[str, Any] = {}

    async def hold() -> None:
        leave: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        held["leave"] = leave
        try:
            async with aio.open_store(root, **options) as store:
                held["store"] = store
                token.run_sync_soon(opened.set)
                error = await leave
                if error is not None:
                    raise error
        finally:
            token.run_sync_soon(opened.set)  # opening failed: say so too

    def start() -> None:
        task = loop.create_task(hold())
        task.add_done_callback(lambda _: token.run_sync_soon(ended.set))
        held["task"] = task

    loop.call_soon_threadsafe(start)
    with trio.CancelScope(shield=True):
        await opened.wait()
    if "store" not in held:
        with trio.CancelScope(shield=True):
            await ended.wait()
        held["task"].result()  # raises why opening failed
        raise AssertionError("aio.open_store neither opened nor failed")

    def leave_with(error: BaseException | None) -> None:
        if isinstance(error, trio.Cancelled):
            held["task"].cancel()  # asyncio's own way of leaving by cancellation
        elif not held["leave"].done():
            held["leave"].set_result(error)

    try:
        yield TrioFacingStore(held["store"], loop)
    except BaseException as exc:
        loop.call_soon_threadsafe(leave_with, exc)
        with trio.CancelScope(shield=True):
            await ended.wait()
        task: asyncio.Task[None] = held["task"]
        if not task.cancelled() and task.exception() is not exc:
            raise task.exception() from exc  # closing the store failed: show it
        raise
    loop.call_soon_threadsafe(leave_with, None)
    with trio.CancelScope(shield=True):
        await ended.wait()
    held["task"].result()


def leftover_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` that are more than an idle worker of trio's cache.

    Trio keeps the threads it ran blocking work in (and, in guest mode, its
    I/O waits in) for ten seconds, for reuse by any trio code of the
    process, as asyncio's default executor does; one waiting for work
    carries trio's default name. Anything else still alive was left behind.
    """
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and not _IDLE_TRIO_WORKER.fullmatch(thread.name)
    ]


def idle_trio_workers(before: set[threading.Thread]) -> int:
    """How many idle trio cache workers were started since ``before``."""
    return sum(
        1
        for thread in threading.enumerate()
        if thread not in before and _IDLE_TRIO_WORKER.fullmatch(thread.name)
    )


def no_trio_run_in_this_thread() -> bool:
    """True when no trio run (a guest run included) is active in the calling thread."""
    try:
        trio.lowlevel.current_root_task()
    except RuntimeError:
        return True
    return False
