"""One session's actor: its message types, its mailbox loop, its batch of file work.

The actor is the only code that touches its session's storage. It wakes on
a message, takes everything else already in its mailbox, and does the whole
batch in a worker thread under the session's cross-process lock:
consecutive saves are folded into one snapshot write, consecutive appends
into one ``write`` and one fsync. Every caller is answered after the bytes
its call depends on are durable. The store's :class:`BatchRunner` bounds the
worker threads; under load one trip to a thread runs several sessions'
batches.
"""

from __future__ import annotations

import collections
import logging
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import attrs
import outcome
import trio

from ._backend import SegmentRolledBack, SessionStorage
from ._errors import ActorCrashedError, LockBusy, SessionNotFoundError, StoreClosedError
from ._files import IoCounts
from ._merge import Authoritative, merge_authoritative, merge_transcript, pin, retitle
from ._model import Message, Session, check_messages, converter, utc_now

logger = logging.getLogger(__name__)


# --- messages -------------------------------------------------------------------


@attrs.define(eq=False)
class Reply:
    """A one-shot answer from the actor to the caller that sent a message.

    ``taken`` is set (on the event loop) when the actor starts the message's
    batch; a caller cancelled before that withdraws the message instead, so a
    cancelled call takes full effect or none.
    """

    _done: trio.Event = attrs.field(factory=trio.Event)
    _result: outcome.Outcome[Any] | None = None
    taken: bool = False
    abandoned: bool = False

    def set(self, result: outcome.Outcome[Any]) -> None:
        self._result = result
        self._done.set()

    async def wait(self) -> Any:
        try:
            await self._done.wait()
        except trio.Cancelled:
            if not self.taken:
                self.abandoned = True  # the actor will skip it: no effect at all
                raise
            # The actor is doing it already: wait so it takes full effect,
            # including on the caller's objects, then let the cancel land.
            with trio.CancelScope(shield=True):
                await self._done.wait()
            raise
        assert self._result is not None
        return self._result.unwrap()


@attrs.define(eq=False)
class Op:
    """A message to an actor; each kind below is one operation of the store."""

    reply: Reply = attrs.field(factory=Reply, kw_only=True)

    def finish(self, result: outcome.Outcome[Any]) -> None:
        """Answer the caller (on the event loop)."""
        self.reply.set(result)


@attrs.frozen
class _Saved:
    group: Authoritative
    updated_at: datetime
    messages: list[Message] | None  # the merged transcript of a checkpoint


@attrs.define(eq=False)
class Save(Op):
    session: Session  # the caller's object, updated in place when answered
    checkpoint: bool
    # What is saved, as it stood at the call, checked (copy_for_save): the
    # caller's tasks may go on changing ``session`` (appending messages,
    # setting metadata) while the worker thread writes this.
    snapshot: Session

    @property
    def messages(self) -> list[Message]:
        return self.snapshot.messages

    def finish(self, result: outcome.Outcome[Any]) -> None:
        # Update the caller's object here, on the event loop, not in the
        # worker thread: the caller's other tasks may be looking at it.
        if isinstance(result, outcome.Value):
            saved: _Saved = result.value
            saved.group.assign(self.session)
            self.session.updated_at = saved.updated_at
            if saved.messages is not None:
                self.session.messages[:] = saved.messages
            result = outcome.Value(None)
        self.reply.set(result)


@attrs.define(eq=False)
class Append(Op):
    line: bytes


@attrs.define(eq=False)
class Retitle(Op):
    title: str


@attrs.define(eq=False)
class Pin(Op):
    pinned: bool


@attrs.define(eq=False)
class Load(Op):
    pass


@attrs.define(eq=False)
class ReadUsage(Op):
    pass


@attrs.define(eq=False)
class Delete(Op):
    pass


# --- the batch: synchronous, in a worker thread --------------------------------------


def _with_group(session: Session, group: Authoritative, updated_at: datetime) -> Session:
    return attrs.evolve(session, updated_at=updated_at, **attrs.asdict(group))


def _own_messages(prior: list[Message], incoming: list[Message]) -> list[Message]:
    """``prior`` if ``incoming`` starts with its very objects, else copies of it.

    Two callers never share a Message object: a checkpoint following another
    caller's save in one batch gets the persisted messages as new objects.
    """
    if len(incoming) >= len(prior) and all(map(operator.is_, incoming, prior)):
        return prior
    return converter.structure(converter.unstructure(prior, list[Message]), list[Message])


class _Segment:
    """Ops applied in order under one hold of the lock, ending at a delete.

    ``pending`` is the snapshot the ops so far have produced and not yet
    written (None: disk is current). Lines to append wait in ``lines``.
    Results are given only once what they depend on is written.
    """

    def __init__(self, files: SessionStorage, present: bool) -> None:
        self.files = files
        self.present = present
        self.outcomes: dict[int, outcome.Outcome[Any]] = {}
        self.pending: Session | None = None
        self.pending_edit = False  # pending changes the metadata only
        self.pending_checked = 0  # how many leading messages of pending are checked
        self.waiting_snapshot: list[tuple[int, Any]] = []
        self.lines: list[bytes] = []
        self.waiting_lines: list[int] = []
        self._disk_exists: bool | None = None

    # What the session is now, counting what is pending.

    def group(self) -> Authoritative | None:
        if self.pending is not None:
            return Authoritative.of(self.pending)
        return self.files.read_group()  # read once per hold of the lock

    def exists(self) -> bool:
        if self.pending is not None:
            return True
        if self._disk_exists is None:
            self._disk_exists = self.present and self.files.exists()
        return self._disk_exists

    def read_session(self) -> Session | None:
        """The session on disk, after writing what is pending."""
        self.flush()
        return self.files.read_session()

    # The operations.

    def apply(self, index: int, op: Op) -> None:
        try:
            if isinstance(op, Save):
                self._save(index, op)
            elif isinstance(op, Append):
                if not self.exists():
                    raise SessionNotFoundError(self.files.session_id)
                self.lines.append(op.line)
                self.waiting_lines.append(index)
            elif isinstance(op, (Retitle, Pin)):
                self._edit(index, op)
            elif isinstance(op, Load):
                self.outcomes[index] = outcome.Value(self.read_session())
            elif isinstance(op, ReadUsage):
                self.flush()
                self.outcomes[index] = outcome.Value(self.files.read_usage())
            elif isinstance(op, Delete):
                self._delete(index)
            else:  # pragma: no cover - every Op kind is handled above
                raise TypeError(f"unknown message {op!r}")
        except Exception as exc:
            self.outcomes[index] = outcome.Error(exc)

    def _save(self, index: int, op: Save) -> None:
        start = self.files.known_prefix(op.messages)
        check_messages(op.messages, start=start)  # the rest was checked at the call
        persisted = self.group()
        group = merge_authoritative(persisted, Authoritative.of(op.snapshot))
        merged: list[Message] | None = None
        if op.checkpoint:
            if self.pending is not None:
                prior = _own_messages(self.pending.messages, op.messages)
            elif persisted is not None:
                prior = self.files.persisted_messages(op.messages)
            else:
                prior = []
            merged = merge_transcript(prior, op.messages)
        updated_at = utc_now()
        snapshot = _with_group(op.snapshot, group, updated_at)
        snapshot.messages = op.messages if merged is None else merged
        self.pending = snapshot
        self.pending_edit = False
        self.pending_checked = len(op.messages) if start == 0 and merged is None else 0
        self.waiting_snapshot.append((index, _Saved(group, updated_at, merged)))

    def _edit(self, index: int, op: Retitle | Pin) -> None:
        session = self.read_session()
        if session is None:
            raise SessionNotFoundError(self.files.session_id)
        group = Authoritative.of(session)
        changed = retitle(group, op.title) if isinstance(op, Retitle) else pin(group, op.pinned)
        if changed is None:
            self.outcomes[index] = outcome.Value(session)
            return
        self.pending = _with_group(session, changed, utc_now())
        self.pending_edit = True
        self.waiting_snapshot.append((index, self.pending))

    def _delete(self, index: int) -> None:
        existed = self.exists()
        if self.present:
            try:
                self.files.delete()
            except Exception as exc:
                self._abandon(exc)  # nothing pending was written: those calls fail too
                raise
        # What is pending is superseded: it took effect and is deleted now.
        self._succeed(self.waiting_snapshot)
        self._succeed([(i, None) for i in self.waiting_lines])
        self.pending = None
        self.lines.clear()
        self._disk_exists = False
        self.outcomes[index] = outcome.Value(existed)

    # Writing.

    def _succeed(self, waiting: list[tuple[int, Any]]) -> None:
        for index, value in waiting:
            self.outcomes[index] = outcome.Value(value)
        waiting.clear()

    def _fail(self, indexes: list[int], exc: Exception) -> None:
        for index in indexes:
            self.outcomes[index] = outcome.Error(exc)

    def _abandon(self, exc: Exception) -> None:
        """Fail every pending op with ``exc``: none of it is on disk."""
        self._fail([i for i, _ in self.waiting_snapshot], exc)
        self._fail(self.waiting_lines, exc)
        self.waiting_snapshot.clear()
        self.waiting_lines.clear()
        self.pending = None
        self.lines.clear()
        self._disk_exists = None

    def flush(self) -> None:
        """Write the pending snapshot, then the pending lines."""
        if self.pending is not None:
            snapshot, self.pending = self.pending, None
            try:
                if self.pending_edit:
                    self.files.write_group(snapshot)
                else:
                    self.files.write_session(snapshot, checked=self.pending_checked)
            except Exception as exc:
                # The appends may have counted on the session this snapshot
                # would have created: they fail with it.
                self._abandon(exc)
                return
            self._disk_exists = True
            self._succeed(self.waiting_snapshot)
        if self.lines:
            try:
                self.files.append(b"".join(self.lines))
            except Exception as exc:
                self._fail(self.waiting_lines, exc)
            else:
                self._succeed([(i, None) for i in self.waiting_lines])
            self.lines.clear()
            self.waiting_lines.clear()


def run_batch(
    files: SessionStorage, ops: list[Op], *, wait: bool = True
) -> tuple[list[outcome.Outcome[Any]], IoCounts]:
    """Apply ``ops`` in order; the outcome of each, and what the storage work was.

    Runs in a worker thread. The ops are split into segments ending at each
    delete, since a delete removes the directory the lock is taken on; each
    segment holds the lock once (one transaction, for a database). Without
    ``wait``, a lock held elsewhere raises :class:`LockBusy` before anything
    is done.
    """
    files.counts = IoCounts()
    outcomes: dict[int, outcome.Outcome[Any]] = {}
    start = 0
    while start < len(ops):
        end = start
        while end < len(ops) - 1 and not isinstance(ops[end], Delete):
            end += 1
        outcomes.update(_run_segment(files, ops, start, end, wait=wait or start > 0))
        start = end + 1
    return [outcomes[index] for index in range(len(ops))], files.counts


def _run_segment(
    files: SessionStorage, ops: list[Op], start: int, end: int, *, wait: bool
) -> dict[int, outcome.Outcome[Any]]:
    creates = any(isinstance(op, Save) for op in ops[start : end + 1])
    while True:
        segment: _Segment | None = None
        outcomes: dict[int, outcome.Outcome[Any]] = {}
        error: Exception
        try:
            with files.lock(create=creates, wait=wait) as present:
                segment = _Segment(files, present)
                for index in range(start, end + 1):
                    segment.apply(index, ops[index])
                segment.flush()
            return segment.outcomes
        except LockBusy:
            raise  # nothing done: the batch goes back to the queue
        except SegmentRolledBack as exc:
            # Nothing of the segment took effect (or, its COMMIT's outcome
            # unknown, maybe all of it did): drop what it computed.
            if exc.retry:
                continue
            error = exc.error  # the public error; never the private wrapper
        except Exception as exc:  # the lock or the directory failed (e.g. EACCES)
            if segment is not None:
                outcomes.update(segment.outcomes)
            error = exc
        for index in range(start, end + 1):
            outcomes.setdefault(index, outcome.Error(error))
        return outcomes


# --- the worker threads ----------------------------------------------------------------


_JobState = Literal["waiting", "taken", "handed", "done"]


@attrs.define(eq=False)
class _Job:
    """One actor's batch on its way through the :class:`BatchRunner`."""

    files: SessionStorage
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
    return [outcome.capture(run_batch, job.files, job.ops, wait=wait) for job in jobs]


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

    def __init__(self, limiter: trio.CapacityLimiter, stats: ActorStats) -> None:
        self.limiter = limiter
        self.stats = stats
        self.lanes = int(limiter.total_tokens)
        self._running = 0  # trips under way, or places handed to a waiting actor
        self._waiting: collections.deque[_Job] = collections.deque()

    async def run(self, files: SessionStorage, ops: list[Op]) -> Any:
        """Run one batch (see :func:`run_batch`) and return what it returns.

        A cancel lands while the batch waits for a place (the batch is
        withdrawn: nothing of it was done); once it runs, it runs to its end.
        """
        job = _Job(files, ops)
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


# --- the actor task -----------------------------------------------------------------------


@attrs.define(eq=False)
class ActorStats:
    """Counters the actors add to; the store reports them in statistics()."""

    live_actors: int = 0
    actors_started: int = 0
    actor_crashes: int = 0
    batches: int = 0
    thread_hops: int = 0
    saves_requested: int = 0
    appends_requested: int = 0
    snapshots_written: int = 0
    journal_appends: int = 0
    journal_rewrites: int = 0
    append_batches: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    max_mailbox_depth: int = 0


class Actor:
    """The task that owns one session's files and serves its mailbox."""

    def __init__(
        self,
        files: SessionStorage,
        receive: trio.MemoryReceiveChannel[Op],
        *,
        idle_timeout: float,
        runner: BatchRunner,
        stats: ActorStats,
        on_exit: Callable[[Actor], None],
    ) -> None:
        self.files = files
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
            logger.exception("actor of session %r crashed", self.files.session_id)
            error = ActorCrashedError(f"the actor of session {self.files.session_id!r} crashed")
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
                op.finish(outcome.Error(error))

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
        outcomes, counts = await self.runner.run(self.files, ops)
        self._in_flight = []
        stats.batches += 1
        for name, value in attrs.asdict(counts).items():
            setattr(stats, name, getattr(stats, name) + value)
        for op, result in zip(ops, outcomes, strict=True):
            op.finish(result)
