"""One session's actor: the task that owns the session's storage and serves its mailbox.

It wakes on a message, takes everything else already in its mailbox, and has
the whole batch run in a worker thread (:class:`~._runner.BatchRunner`)
under the session's lock; every caller is answered after the storage work
its call depends on is durable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import outcome
import trio

from ._batch import BatchTarget
from ._errors import ActorCrashedError, StoreClosedError
from ._messages import Op
from ._runner import BatchRunner
from ._stats import Counters

__all__ = ["Actor"]

logger = logging.getLogger(__name__)


class Actor:
    """The task that owns one session's storage and serves its mailbox."""

    def __init__(
        self,
        target: BatchTarget,
        receive: trio.MemoryReceiveChannel[Op],
        *,
        idle_timeout: float,
        runner: BatchRunner,
        stats: Counters,
        on_exit: Callable[[Actor], None],
    ) -> None:
        self.target = target
        self.receive = receive
        self.idle_timeout = idle_timeout
        self.runner = runner
        self.stats = stats
        self.on_exit = on_exit
        # Shielded: the store stops an actor by closing its mailbox, so an
        # outside cancel cannot drop accepted messages; cancel_scope.cancel()
        # is the store's last resort when draining overruns its deadline.
        self.cancel_scope = trio.CancelScope(shield=True)
        self._in_flight: list[Op] = []

    async def run(self) -> None:
        try:
            with self.cancel_scope:
                await self._serve()
        except Exception as exc:
            self.stats.actor_crashes += 1
            logger.exception("actor of session %r crashed", self.target.session_id)
            error = ActorCrashedError(f"the actor of session {self.target.session_id!r} crashed")
            error.__cause__ = exc
            self._fail_all(error)
        finally:
            # No checkpoint from here to the close: a sender either got its
            # message in before (and it is answered below) or meets a closed
            # mailbox and routes to a fresh actor.
            self.on_exit(self)
            self._fail_all(StoreClosedError("the store closed before this call was served"))
            self.receive.close()

    def _fail_all(self, error: Exception) -> None:
        ops, self._in_flight = self._in_flight, []
        while True:
            try:
                ops.append(self.receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for op in ops:
            if not op.reply.abandoned:
                _answer(op, outcome.Error(error))

    async def _serve(self) -> None:
        while True:
            first: Op | None = None
            with trio.move_on_after(self.idle_timeout):
                try:
                    first = await self.receive.receive()
                except trio.EndOfChannel:
                    return  # the store closed and everything accepted is done
            if first is None:
                try:
                    first = self.receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    return  # idle: retire (run() closes the mailbox, no checkpoint)
            ops = [first]
            while True:
                try:
                    ops.append(self.receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self._run(ops)

    async def _run(self, ops: list[Op]) -> None:
        stats = self.stats
        stats.max_mailbox_depth = max(stats.max_mailbox_depth, len(ops))
        ops = [op for op in ops if not op.reply.abandoned]
        if not ops:
            return
        for op in ops:
            op.reply.taken = True
        self._in_flight = ops
        outcomes, counts = await self.runner.run(self.target, ops)
        self._in_flight = []
        stats.batches += 1
        stats.io += counts
        for op, result in zip(ops, outcomes, strict=True):
            _answer(op, result)


def _answer(op: Op, result: outcome.Outcome[Any]) -> None:
    """Give ``op`` its result; if that fails, give it the failure, never nothing.

    ``finish`` updates the caller's object (a save's) before it answers: should
    that raise, the caller would wait forever and the batch's later callers
    with it. The write itself took effect; the caller is told why its object
    is not as the write left it.
    """
    try:
        op.finish(result)
    except Exception as exc:
        if not op.reply.answered:
            op.reply.set(outcome.Error(exc))
