"""The messages an actor serves, one kind per store operation, and their one-shot replies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
import outcome
import trio

from ._merge import Authoritative
from ._model import Message, Session
from ._planned import set_written

__all__ = [
    "Append",
    "Delete",
    "Export",
    "Fork",
    "History",
    "Import",
    "Load",
    "Op",
    "Pin",
    "ReadUsage",
    "Reply",
    "Retitle",
    "Rewind",
    "Save",
    "Saved",
    "Update",
]


@attrs.define(eq=False)
class Reply:
    """A one-shot answer from the actor to the caller that sent a message.

    ``taken`` is set (on the event loop) when the actor starts the message's
    batch; a caller cancelled before that withdraws the message instead, so a
    cancelled call takes full effect or none.

    The caller parks its own task and :meth:`set` reschedules it: every call
    waits on one reply, and a :class:`trio.Event` (its parking lot, its
    lists) cost a tenth of a token-usage append's time.
    """

    _result: outcome.Outcome[Any] | None = None
    _waiter: trio.lowlevel.Task | None = None
    # A cancel that came while the actor was doing the call: raised once answered.
    _cancel_pending: bool = False
    taken: bool = False
    abandoned: bool = False

    def set(self, result: outcome.Outcome[Any]) -> None:
        self._result = result
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter, result)  # wait() returns or raises it

    @property
    def answered(self) -> bool:
        return self._result is not None

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        if not self.taken:
            self._waiter = None
            self.abandoned = True  # the actor will skip it: no effect at all
            return trio.lowlevel.Abort.SUCCEEDED
        # The actor is doing it already: wait so it takes full effect,
        # including on the caller's objects, then let the cancel land.
        self._cancel_pending = True
        return trio.lowlevel.Abort.FAILED

    async def wait(self) -> Any:
        if self._result is None:
            self._waiter = trio.lowlevel.current_task()
            try:
                value = await trio.lowlevel.wait_task_rescheduled(self._abort)
            finally:
                if self._cancel_pending:
                    await trio.lowlevel.checkpoint()  # raises the cancel, still pending
            return value
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            if not self.taken:
                self.abandoned = True
            raise
        return self._result.unwrap()


@attrs.define(eq=False)
class Op:
    """A message to an actor; each kind below is one operation of the store."""

    reply: Reply = attrs.field(factory=Reply, kw_only=True)

    def finish(self, result: outcome.Outcome[Any]) -> None:
        """Answer the caller (on the event loop)."""
        self.reply.set(result)


@attrs.define
class Saved:
    """What a save's caller is told: the merged group, and what the write made."""

    group: Authoritative
    updated_at: datetime
    messages: list[Message] | None  # the merged transcript of a checkpoint
    # Set once the write is done (saves folded into one write share them).
    revision: int = 0
    forked_from: str | None = None
    forked_from_revision: int | None = None

    def written_as(self, snapshot: Session) -> None:
        self.revision = snapshot.revision
        self.forked_from = snapshot.forked_from
        self.forked_from_revision = snapshot.forked_from_revision


@attrs.define(eq=False)
class Save(Op):
    session: Session  # the caller's object, updated in place when answered
    checkpoint: bool
    # What is saved, as it stood at the call, checked (copy_for_save): the
    # caller's tasks may go on changing ``session`` (appending messages,
    # setting metadata) while the worker thread writes this.
    snapshot: Session
    #: A checkpoint's caller is given the merged transcript (False: it does
    #: not want it, so the persisted messages need not be its own objects).
    transcript_back: bool = True

    @property
    def messages(self) -> list[Message]:
        return self.snapshot.messages

    def finish(self, result: outcome.Outcome[Any]) -> None:
        # Update the caller's object here, on the event loop, not in the
        # worker thread: the caller's other tasks may be looking at it.
        if isinstance(result, outcome.Value):
            saved: Saved = result.value
            session = self.session
            # The store's own values, each checked when it was made: set
            # without the validator an assignment runs (this runs for every save).
            set_written(session, saved.group, saved.updated_at, saved.revision, saved)
            if saved.messages is not None:
                session.messages[:] = saved.messages
            result = outcome.Value(None)
        self.reply.set(result)


@attrs.define(eq=False)
class Append(Op):
    line: bytes


@attrs.define(eq=False)
class Retitle(Op):
    title: str
    #: The UI's If-Match: the edit is made only while this is the persisted one.
    if_metadata_version: int | None = None


@attrs.define(eq=False)
class Pin(Op):
    pinned: bool
    if_metadata_version: int | None = None


@attrs.define(eq=False)
class Update(Op):
    """Read, change with ``fn`` (in the batch's worker thread), write: one revision."""

    fn: Callable[[Session], object]


@attrs.define(eq=False)
class Load(Op):
    revision: int | None = None
    #: Only the transcript's last ``tail`` messages (None: all of them).
    tail: int | None = None


@attrs.define(eq=False)
class History(Op):
    limit: int | None


@attrs.define(eq=False)
class Rewind(Op):
    revision: int


@attrs.define(eq=False)
class Fork(Op):
    """Sent to the new session's actor: it makes that session from the source."""

    source_id: str
    revision: int | None
    title: str | None


@attrs.define(eq=False)
class ReadUsage(Op):
    pass


@attrs.define(eq=False)
class Delete(Op):
    """``if_revision``: delete only a session at that latest revision (else a conflict)."""

    if_revision: int | None = None


@attrs.define(eq=False)
class Export(Op):
    """Answer: the session as persisted and its token-usage records, read in one hold."""


@attrs.define(eq=False)
class Import(Op):
    """Make this session, revision 1 of kind ``"import"``, with its token-usage lines."""

    session: Session
    usage: bytes
