"""The trio run beside an asyncio loop: a guest of the loop, or a thread of its own.

One run per loop and mode is shared by every store open on that loop (two
guest runs cannot share a thread: trio keeps one run per thread), started by
the first store and ended by the last, so nothing is left behind once every
store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import outcome
import trio

from .._errors import StoreClosedError
from ._calls import wait_through_cancellation

if TYPE_CHECKING:
    from ._calls import Call

__all__ = ["Mode", "TrioRun", "enter_run", "leave_run"]

Mode = Literal["guest", "thread"]
MODES: tuple[Mode, ...] = ("guest", "thread")

_RUNS: dict[tuple[asyncio.AbstractEventLoop, Mode], TrioRun] = {}


class TrioRun:
    """One trio run serving the stores of one asyncio loop.

    ``to_trio`` and ``to_asyncio`` are the only ways across: each runs a
    plain function on the other side, in order. In guest mode trio runs on
    the loop's own thread, in slices the loop schedules (its I/O waits in a
    helper thread), so ``to_asyncio`` is a plain call; in thread mode trio
    runs in a thread of its own and each crossing wakes the other thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, mode: Mode) -> None:
        self.loop = loop
        self.mode = mode
        self.users = 0
        self.stopping = False
        self.started: asyncio.Future[None] = loop.create_future()
        # The run's outcome, as a value: set_exception would warn when unread.
        self.done: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.Event()
        self._thread: threading.Thread | None = None
        # Calls not answered yet (asyncio side): the run answers them should
        # it end first (a bug in trio code), so no caller waits forever.
        self.pending: set[Call[Any]] = set()

    # --- crossing ---

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` in the trio run soon (from the asyncio side)."""
        assert self._token is not None
        # If the run has ended (unexpectedly: a bug in trio code), _finished
        # answers every pending call, so there is nothing left to hand over.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def to_asyncio(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the asyncio loop (from the trio side)."""
        if self.mode == "guest":
            fn(*args)  # trio is running on the loop's thread, between its callbacks
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, async_fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Start a task in the run's nursery (on the trio side)."""
        assert self._nursery is not None
        self._nursery.start_soon(async_fn, *args)

    # --- life ---

    def start(self) -> None:
        """Start the run; ``started`` resolves once it takes work, ``done`` once it ended."""
        if self.mode == "guest":
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=self.loop.call_soon,
                done_callback=self._finished,
                # asyncio owns signal.set_wakeup_fd (on the main thread).
                host_uses_signal_set_wakeup_fd=True,
                strict_exception_groups=True,
            )
        else:
            self._thread = threading.Thread(
                target=self._run_in_thread, name="sessionactors trio", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Ask the run to end (from the asyncio side, once no store uses it)."""
        self.stopping = True
        self.to_trio(self._stop.set)

    def join(self) -> None:
        """Once ``done``: wait for the thread (thread mode), which is ending anyway."""
        if self._thread is not None:
            self._thread.join()

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self.to_asyncio(_resolve, self.started)
            await self._stop.wait()
            # Every store task has ended by now: leave_run stops the run last.

    def _run_in_thread(self) -> None:
        result: outcome.Outcome[None] = outcome.capture(
            partial(trio.run, self._main, strict_exception_groups=True)
        )
        self.loop.call_soon_threadsafe(self._finished, result)

    def _finished(self, result: outcome.Outcome[None]) -> None:
        # On the loop. Out of the table at once, so a store opening now
        # starts a fresh run instead of waiting on this one again.
        if _RUNS.get((self.loop, self.mode)) is self:
            del _RUNS[(self.loop, self.mode)]
        _resolve(self.started)
        self.done.set_result(result)
        error = (
            result.error
            if isinstance(result, outcome.Error)
            else StoreClosedError("the store's trio run ended")
        )
        for call in list(self.pending):
            call.answer_run_ended(error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def enter_run(mode: Mode) -> TrioRun:
    """The running loop's trio run in ``mode``, started if there is none; count one more user."""
    loop = asyncio.get_running_loop()
    while True:
        run = _RUNS.get((loop, mode))
        if run is None:
            run = TrioRun(loop, mode)
            run.start()  # raises at once if it cannot start (a trio run in this thread)
            _RUNS[(loop, mode)] = run
        elif run.stopping:
            await wait_through_cancellation(run.done)  # then start a fresh one
            continue
        run.users += 1
        try:
            await wait_through_cancellation(run.started)
        except asyncio.CancelledError:
            await leave_run(run)
            raise
        if run.done.done():  # it ended before it took work: say why
            run.users -= 1
            run.join()
            raise_from(run.done.result())
            raise RuntimeError("the trio run ended before it took work")
        return run


async def leave_run(run: TrioRun) -> None:
    """One user fewer; the last one ends the run and waits until it has ended.

    Raises:
        BaseException: whatever ended the trio run, if it did not end cleanly.
    """
    run.users -= 1
    if run.users > 0:
        return
    if not run.done.done():
        run.stop()
    try:
        await wait_through_cancellation(run.done)
    finally:
        run.join()
    raise_from(run.done.result())


def raise_from(result: outcome.Outcome[Any]) -> None:
    """Raise ``result``'s exception itself, if it holds one (any number of times, unlike unwrap)."""
    if isinstance(result, outcome.Error):
        raise result.error
