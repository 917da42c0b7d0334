"""The worker threads shared by a store's actors: batches of several sessions in one trip.

A batch (a :class:`_Job`) moves through these states::

    waiting ──(a finished trip hands it its place)──> handed ──(its trip ends)──> done
       │  ^                                              (its actor runs the trip)
       │  └──(taken along, its lock busy elsewhere)──┐
       └──(taken along into another's trip)──> taken ┴──(that trip ends)──> done

A cancel while ``waiting`` withdraws the batch (nothing of it was done); a
``handed`` place that will not be used is passed on; once a batch runs in a
thread it runs to its end.
"""

from __future__ import annotations

import collections
from typing import Any, Literal

import attrs
import outcome
import trio

from ._batch import BatchTarget, run_batch
from ._errors import LockBusy
from ._messages import Op
from ._stats import Counters
from .storage.protocol import IoCounts

__all__ = ["BatchRunner"]

_JobState = Literal["waiting", "taken", "handed", "done"]


@attrs.define(eq=False)
class _Job:
    """One actor's batch on its way through the :class:`BatchRunner`."""

    target: BatchTarget
    ops: list[Op]
    # "waiting" in the queue, "taken" into a trip, "handed" a place to run a
    # trip itself, or "done"; ``changed`` is set (and replaced) on each change.
    state: _JobState = "waiting"
    changed: trio.Event = attrs.field(factory=trio.Event)
    result: outcome.Outcome[tuple[list[outcome.Outcome[Any]], IoCounts]] | None = None

    def move(self, state: _JobState) -> None:
        self.state = state
        self.changed.set()
        self.changed = trio.Event()


def _run_jobs(jobs: list[_Job], wait: bool) -> list[outcome.Outcome[Any]]:
    return [outcome.capture(run_batch, job.target, job.ops, wait=wait) for job in jobs]


class BatchRunner:
    """Runs the actors' batches in worker threads, at most ``limiter``'s tokens at once.

    An actor with a batch runs it in a worker thread itself when fewer trips
    than that are under way. Otherwise its batch waits; whoever finishes a
    trip hands its place to the first waiting batch's actor, which takes
    along its fair share of the batches waiting behind it (up to ``GROUP``),
    to run one after the other in one trip. Under load the cost of a trip,
    and the contention of many threads for the interpreter, is thus shared
    by several sessions. Each batch still holds its own session's lock; one
    taken along whose lock is held elsewhere goes back to the head of the
    queue; a batch that fails fails alone.
    """

    GROUP = 16

    def __init__(self, limiter: trio.CapacityLimiter, stats: Counters) -> None:
        self.limiter = limiter
        self.stats = stats
        self.lanes = int(limiter.total_tokens)
        self._running = 0  # trips under way, or places handed to a waiting actor
        self._waiting: collections.deque[_Job] = collections.deque()

    async def run(self, target: BatchTarget, ops: list[Op]) -> Any:
        """Run one batch (see :func:`run_batch`) and return what it returns.

        A cancel lands while the batch waits for a place (the batch is
        withdrawn: nothing of it was done); once it runs, it runs to its end.
        """
        job = _Job(target, ops)
        if self._running < self.lanes:
            self._running += 1
            job.state = "handed"
        else:
            self._waiting.append(job)
            await self._wait(job)
        if job.state == "handed":  # this actor's turn: run a trip
            try:
                with trio.CancelScope(shield=True):
                    await self._trip(job)
            finally:
                self._pass_on()
        assert job.result is not None
        return job.result.unwrap()

    async def _wait(self, job: _Job) -> None:
        """Wait until the job is done or handed a place; if cancelled first, withdraw it."""
        cancelled: trio.Cancelled | None = None
        while True:
            if cancelled is not None and job.state == "waiting":
                self._waiting.remove(job)  # nothing of it was done
                raise cancelled
            if cancelled is not None and job.state == "handed":
                self._pass_on()  # a place it will not use
                raise cancelled
            if job.state in ("handed", "done"):
                return
            changed = job.changed
            try:
                # Once cancelled, only a batch running in a thread is waited for.
                with trio.CancelScope(shield=cancelled is not None):
                    await changed.wait()
            except trio.Cancelled as exc:
                cancelled = exc

    def _pass_on(self) -> None:
        """Give a finished trip's place to the first waiting batch, or free it."""
        if self._waiting:
            self._waiting.popleft().move("handed")
        else:
            self._running -= 1

    async def _trip(self, job: _Job) -> None:
        jobs = [job]
        share = min(self.GROUP, 1 + len(self._waiting) // self.lanes)
        while len(jobs) < share and self._waiting:
            taken = self._waiting.popleft()
            taken.move("taken")
            jobs.append(taken)
        # A batch alone waits for its session's lock. Batches together do not
        # wait for a lock another process holds: the ones taken along go back
        # to the head of the queue, and this actor's own waits in a trip of
        # its own, once the others are answered.
        results = await self._hop(jobs, wait=len(jobs) == 1)
        busy = []
        for done, result in zip(jobs, results, strict=True):
            if isinstance(result, outcome.Error) and isinstance(result.error, LockBusy):
                busy.append(done)
            else:
                done.result = result
                done.move("done")
        again = [other for other in busy if other is not job]
        self._waiting.extendleft(reversed(again))
        for other in again:
            other.move("waiting")
        if job.result is None:
            [job.result] = await self._hop([job], wait=True)

    async def _hop(self, jobs: list[_Job], *, wait: bool) -> list[outcome.Outcome[Any]]:
        try:
            results = await trio.to_thread.run_sync(_run_jobs, jobs, wait, limiter=self.limiter)
        except BaseException as exc:  # e.g. no thread could be started: each batch fails
            return [outcome.Error(exc) for _ in jobs]
        self.stats.thread_hops += 1
        return results
