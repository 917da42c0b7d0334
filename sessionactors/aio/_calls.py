"""One call from asyncio into trio: its answer, and a cancellation both sides agree on.

The asyncio half (``wait``, ``cancel``, ``_answer``) lives on the asyncio
loop; the trio half (``run_in_trio``, ``cancel_in_trio``) in the trio run. They talk only
through the run's two doors (:class:`~sessionactors.aio._runs.TrioRun`'s
``to_trio`` and ``to_asyncio``), so each half's state is touched by one
thread only, whichever way trio runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import outcome
import trio

from .._errors import StoreClosedError

if TYPE_CHECKING:
    from ._runs import TrioRun

__all__ = ["Call", "refuse_another_loop", "wait_through_cancellation"]

T = TypeVar("T")


class _Cancelled:
    """The trio half ended by the cancellation asyncio asked for."""


CANCELLED = _Cancelled()


def refuse_another_loop(run: TrioRun) -> None:
    """Refuse a call made on another loop than ``run``'s, before anything is done.

    Its answer could only come back to ``run``'s loop: the call would take
    effect and its caller get an error.

    Raises:
        RuntimeError: the running loop is not the one the store was opened on.
    """
    if asyncio.get_running_loop() is not run.loop:
        raise RuntimeError(
            "this store was opened on another event loop: call it from that one (nothing was done)"
        )


async def wait_through_cancellation(*futures: asyncio.Future[Any]) -> None:
    """Wait until one of ``futures`` is done even if this task is cancelled meanwhile.

    Used where giving up would leave work behind (a trio call still running
    on the caller's objects, a trio run still open). A cancellation that
    arrives meanwhile is raised once one is done, so it is delayed, never lost.
    """
    cancelled: asyncio.CancelledError | None = None
    while not any(future.done() for future in futures):
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        raise cancelled


class Call(Generic[T]):
    """``await fn(*args)`` run as a trio task, answered to an asyncio awaiter.

    ``wait()`` gives the trio call's value, or raises its exception itself
    (the same object, not wrapped). If the awaiting asyncio task is
    cancelled, the trio task is cancelled too and ``wait()`` raises
    ``CancelledError`` only once the trio task has ended: a store call then
    took full effect or none, as the trio store promises, and nothing runs on
    behind the caller's back.
    """

    __slots__ = ("_args", "_cancel_requested", "_done", "_fn", "_result", "_run", "_scope")

    def __init__(
        self,
        run: TrioRun,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
    ) -> None:
        self._run = run
        self._fn = fn
        self._args = args
        # asyncio half
        self._done: asyncio.Future[None] = run.loop.create_future()
        self._result: outcome.Outcome[T] | _Cancelled | None = None
        run.pending.add(self)  # answered by the run itself should it end first
        # trio half
        self._cancel_requested = False
        self._scope: trio.CancelScope | None = None

    # --- asyncio half ---

    @property
    def finished(self) -> bool:
        """Whether the trio half has ended and its answer is here (asyncio side)."""
        return self._result is not None

    async def wait(self) -> T:
        """The call's value or exception, once the trio task has ended."""
        try:
            # Not shielded: the common path costs one future. A cancellation
            # cancels ``_done`` itself; ``_answer`` then leaves it alone.
            await self._done
        except asyncio.CancelledError:
            if self._result is None:
                self._done = self._run.loop.create_future()
                self._run.to_trio(self.cancel_in_trio)
                await wait_through_cancellation(self._done)
            raise
        return self.unwrap()

    async def cancel(self) -> None:
        """Cancel the trio task and wait until it has ended (waiting through cancellation).

        Raises:
            BaseException: what the trio task raised, if it ended by an error
                of its own rather than by this cancellation.
        """
        if self._result is None:
            self._run.to_trio(self.cancel_in_trio)
            await wait_through_cancellation(self._done)
        if isinstance(self._result, outcome.Error):
            raise self._result.error

    def unwrap(self) -> T:
        """The answer of a finished call (its value, or its exception raised as itself)."""
        result = self._result
        assert isinstance(result, (outcome.Value, outcome.Error))
        value: T = result.unwrap()
        return value

    def _answer(self, result: outcome.Outcome[T] | _Cancelled) -> None:
        if self._result is not None:
            return  # the run ended and answered first; nothing else can come
        self._result = result
        self._run.pending.discard(self)
        if not self._done.done():
            self._done.set_result(None)

    def answer_run_ended(self, error: BaseException) -> None:
        """The trio run ended without answering (asyncio side): fail the call with ``error``."""
        self._answer(outcome.Error(error))

    # --- trio half ---

    def cancel_in_trio(self) -> None:
        """Cancel the trio task, or, if it has not started, let it do nothing at all."""
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def refuse_in_trio(self, error: BaseException) -> None:
        """Answer without running: the store stopped taking calls."""
        self._run.to_asyncio(self._answer, outcome.Error(error))

    async def run_in_trio(self) -> None:
        """The trio task: run the call and hand its outcome to the asyncio half."""
        result: outcome.Outcome[T] | _Cancelled
        if self._cancel_requested:
            result = CANCELLED
        else:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    value = await self._fn(*self._args)
                except BaseException as exc:
                    if not _cancelled(exc):
                        # Every error is the caller's, as itself: a store call's
                        # errors are its answer, not a crash of the trio side.
                        result = outcome.Error(exc)
                    else:
                        # Ours (asyncio asked) or, if not, the run's: answer, then
                        # let the cancellation go on to whichever scope it belongs to.
                        self._run.to_asyncio(
                            self._answer,
                            CANCELLED
                            if self._cancel_requested
                            else outcome.Error(
                                StoreClosedError("the store's trio run was cancelled")
                            ),
                        )
                        raise
                else:
                    result = outcome.Value(value)
            if scope.cancelled_caught:
                return  # answered above
        self._run.to_asyncio(self._answer, result)


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is a cancellation: trio's ``Cancelled``, or a group holding only those.

    A nursery inside the call (the store's ``watch`` keeps one) raises the
    cancellations of its tasks as a group; the cancel scope they belong to
    takes them all the same, so such a group is a cancellation, not an error.
    """
    if isinstance(exc, trio.Cancelled):
        return True
    # A BaseExceptionGroup (Python's, or on 3.10 the backport trio raises) splits.
    split = getattr(exc, "split", None)
    return split is not None and split(trio.Cancelled)[1] is None
