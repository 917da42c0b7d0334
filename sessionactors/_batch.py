"""One actor's batch of storage work, run synchronously in a worker thread.

The ops of a batch are applied in order under one hold of the session's
lock: consecutive saves fold into one snapshot write, consecutive appends
into one write; every op's outcome is given only once what it depends on is
durable.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Any

import attrs
import outcome

from ._backend import SegmentRolledBack, SessionStorage
from ._errors import LockBusy, SessionNotFoundError
from ._files import IoCounts
from ._merge import Authoritative, merge_authoritative, merge_transcript, pin, retitle
from ._messages import Append, Delete, Load, Op, Pin, ReadUsage, Retitle, Save, Saved
from ._model import Message, Session, check_messages, converter, utc_now

__all__ = ["run_batch"]


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
        self.waiting_snapshot.append((index, Saved(group, updated_at, merged)))

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
