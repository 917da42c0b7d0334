"""One actor's batch of storage work, run synchronously in a worker thread.

The batch is split into segments, each under one hold of the session's lock;
the planner (``_plan.py``) decides what each segment does, and this module
only carries its steps to the storage and its answers back.
"""

from __future__ import annotations

from typing import Any

import attrs
import outcome

from ._errors import LockBusy
from ._messages import Delete, Fork, Import, Op, Save
from ._options import DEFAULT_HISTORY
from ._plan import Plan, SegmentPlan
from ._steps import (
    AppendUsage,
    DeleteSession,
    Publish,
    ReadHead,
    ReadHistory,
    ReadRevision,
    ReadSession,
    ReadSource,
    ReadUsageLog,
    SessionExists,
    Step,
    WriteFork,
    WriteImport,
    WriteMetadata,
    WriteSnapshot,
)
from ._transcript import TranscriptMemory
from .storage.protocol import IoCounts, SegmentRolledBack, SessionStorage

__all__ = ["BatchTarget", "run_batch"]


@attrs.define(eq=False)
class BatchTarget:
    """A session's storage and what its actor remembers of it, across batches.

    ``history``: how many revisions the session keeps loadable.
    """

    storage: SessionStorage
    history: int = DEFAULT_HISTORY
    memory: TranscriptMemory = attrs.Factory(TranscriptMemory)

    @property
    def session_id(self) -> str:
        return self.storage.session_id


def run_batch(
    target: BatchTarget, ops: list[Op], *, wait: bool = True
) -> tuple[list[outcome.Outcome[Any]], IoCounts]:
    """Apply ``ops`` in order; the outcome of each, and what the storage work was.

    Runs in a worker thread. The ops are split into segments ending at each
    delete, since a delete removes the directory the lock is taken on; each
    segment holds the lock once (one transaction, for a database). Without
    ``wait``, a lock held elsewhere raises :class:`LockBusy` before anything
    is done.
    """
    storage = target.storage
    storage.counts = IoCounts()
    outcomes: dict[int, outcome.Outcome[Any]] = {}
    start = 0
    while start < len(ops):
        end = start
        while end < len(ops) - 1 and not isinstance(ops[end], Delete):
            end += 1
        outcomes.update(_run_segment(target, ops, start, end, wait=wait or start > 0))
        start = end + 1
    return [outcomes[index] for index in range(len(ops))], storage.counts


def _run_segment(
    target: BatchTarget, ops: list[Op], start: int, end: int, *, wait: bool
) -> dict[int, outcome.Outcome[Any]]:
    storage, memory = target.storage, target.memory
    creates = any(isinstance(op, (Save, Fork, Import)) for op in ops[start : end + 1])
    indexed = [(index, ops[index]) for index in range(start, end + 1)]
    while True:
        plan: SegmentPlan | None = None
        outcomes: dict[int, outcome.Outcome[Any]] = {}
        error: Exception
        try:
            with storage.lock(create=creates, wait=wait) as present:
                plan = SegmentPlan(
                    storage.session_id, memory, present=present, history=target.history
                )
                _drive(plan.run(indexed), storage)
            return plan.outcomes
        except LockBusy:
            raise  # nothing done: the batch goes back to the queue
        except SegmentRolledBack as exc:
            # Nothing of the segment took effect (or, its COMMIT's outcome
            # unknown, maybe all of it did): drop what it computed.
            memory.forget()
            if exc.retry:
                continue
            error = exc.error  # the public error; never the private wrapper
        except Exception as exc:  # the lock or the directory failed (e.g. EACCES)
            memory.forget()
            if plan is not None:
                outcomes.update(plan.outcomes)
            error = exc
        for index in range(start, end + 1):
            outcomes.setdefault(index, outcome.Error(error))
        return outcomes


def _drive(plan: Plan, storage: SessionStorage) -> None:
    """Carry each step of ``plan`` to ``storage``, and its answer or error back."""
    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration:
            return
        try:
            answer, error = _execute(storage, step), None
        except Exception as exc:
            answer, error = None, exc


def _execute(storage: SessionStorage, step: Step) -> Any:
    if isinstance(step, SessionExists):
        return storage.exists()
    if isinstance(step, ReadHead):
        return storage.read_head()
    if isinstance(step, ReadSession):
        return storage.read_session(step.tail)
    if isinstance(step, WriteSnapshot):
        return storage.write_snapshot(
            step.session,
            step.commit,
            append_from=step.append_from,
            trusted=step.trusted,
            transcript_of=step.transcript_of,
            replaced=step.replaced,
        )
    if isinstance(step, WriteMetadata):
        return storage.write_metadata(step.session, step.commit)
    if isinstance(step, ReadRevision):
        return storage.read_revision(step.revision)
    if isinstance(step, ReadHistory):
        return storage.read_history(step.oldest)
    if isinstance(step, ReadSource):
        return storage.read_source(step.source_id, step.revision)
    if isinstance(step, WriteFork):
        return storage.write_fork(step.session, step.source_id, step.transcript_of)
    if isinstance(step, WriteImport):
        return storage.write_import(step.session, step.commit, step.usage)
    if isinstance(step, AppendUsage):
        return storage.append_usage(step.data)
    if isinstance(step, ReadUsageLog):
        return storage.read_usage()
    if isinstance(step, DeleteSession):
        return storage.delete()
    if isinstance(step, Publish):
        return storage.publish(step.summary, step.kind, usage=step.usage)
    raise TypeError(f"unknown step {step!r}")  # pragma: no cover
