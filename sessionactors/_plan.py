"""The planner: what a batch of messages does to a session, decided without I/O.

A segment of a batch (ops under one hold of the session's lock) is folded,
in order, into :mod:`steps <._steps>` for the storage: consecutive saves
into one snapshot write, consecutive appends into one usage write. The
planner is a generator: it yields each step and is sent what the storage
answered (or thrown what it raised), so every decision is made here, once,
for every storage, and is tested with plain values. It decides:

- the merge rule (``_merge``) and what a checkpoint's transcript is;
- whether a snapshot appends messages after the persisted ones or writes
  them all, from what this actor last wrote or read (:class:`TranscriptMemory`)
  and the version the storage shows now;
- which callers wait on which step: an op's outcome is given once what it
  depends on is written, and a failed write fails exactly those;
- the revision each write makes (one more than the storage's latest; saves
  folded together make one, an edit or a rewind always one of its own) and
  which revisions the storage keeps (the newest ``history``): a revision
  outside them is not found, before the storage is asked.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import outcome

from ._errors import (
    RevisionNotFoundError,
    SessionExistsError,
    SessionNotFoundError,
    VersionConflictError,
)
from ._merge import Authoritative, merge_authoritative, merge_transcript, pin, retitle
from ._messages import (
    Append,
    Delete,
    Export,
    Fork,
    History,
    Import,
    Load,
    Op,
    Pin,
    ReadUsage,
    Retitle,
    Rewind,
    Save,
    Saved,
    Update,
)
from ._model import Message, Session, edit_mark, summary_of, utc_now
from ._planned import group_of, own_messages, with_group
from ._steps import (
    AppendUsage,
    Commit,
    DeleteSession,
    Head,
    Publish,
    ReadHead,
    ReadHistory,
    ReadRevision,
    ReadSession,
    ReadSource,
    ReadUsageLog,
    SessionExists,
    Step,
    Stored,
    Version,
    WriteFork,
    WriteImport,
    WriteMetadata,
    WriteSnapshot,
)
from ._transcript import TranscriptMemory
from ._update import apply_update
from ._values import check_messages
from ._written_values import WrittenValues

__all__ = ["Plan", "SegmentPlan"]

#: What a planner generator yields, is sent, and returns.
Plan = Generator[Step, Any, None]


#: The kinds of write that change the authoritative group only.
_EDITS = ("title", "pinned")
#: The kinds of write a later save may fold into itself (one revision for all).
_SAVES = ("save", "checkpoint")


class _Unread:
    """The head not read yet in this hold of the lock."""


_UNREAD = _Unread()


class _Refused(Exception):
    """A snapshot's transcript holds a value that cannot be stored: nothing of it was written."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _refuse_unstorable(messages: list[Message], start: int, also: Sequence[int] = ()) -> None:
    """:func:`check_messages` for a write: what it refuses raises :class:`_Refused`."""
    try:
        check_messages(messages, start, also)
    except (TypeError, ValueError) as exc:
        raise _Refused(exc) from None


class SegmentPlan:
    """Ops applied in order under one hold of the lock, ending at a delete.

    ``pending`` is the snapshot the ops so far have produced and not yet
    written (None: storage is current), a revision of kind ``pending_kind``.
    Lines to append wait in ``lines``. ``outcomes`` holds each op's result,
    given once what it depends on is written. ``history``: how many
    revisions the session keeps loadable.
    """

    def __init__(
        self, session_id: str, memory: TranscriptMemory, *, present: bool, history: int
    ) -> None:
        self.session_id = session_id
        self.memory = memory
        self.history = history
        # False: the lock says there is certainly no session (until this plan writes one).
        self.present = present
        self.outcomes: dict[int, outcome.Outcome[Any]] = {}
        self.pending: Session | None = None
        self.pending_kind = "save"
        self.pending_checked = 0  # how many leading messages of pending are checked
        self.pending_transcript: Version | None = None  # pending's transcript is this one's
        # What was pending before each save folded into ``pending`` (pending,
        # kind, checked, transcript): written instead should the write refuse
        # that save's transcript.
        self._folded: list[tuple[Session | None, str, int, Version | None]] = []
        self.waiting_snapshot: list[tuple[int, Any]] = []
        self.lines: list[bytes] = []
        self.waiting_lines: list[int] = []
        self._head: Head | _Unread | None = _UNREAD if present else None
        self._exists_now: bool | None = None  # asked without reading the head
        # The whole session this hold wrote last (None: none, or no longer
        # current): an update reads it rather than storage.
        self._written: Session | None = None
        # What this hold changed, told to listings and watchers at its end:
        # the session as its last write left it, that write's kind.
        self._latest: Session | None = None
        self._latest_kind: str | None = None
        self._deleted = False
        self._usage = False

    def run(self, ops: Sequence[tuple[int, Op]]) -> Plan:
        """Apply ``ops`` (each with its index in the batch), write what is pending, publish."""
        for index, op in ops:
            yield from self._apply(index, op)
        yield from self.flush()
        yield from self._publish()

    def _publish(self) -> Plan:
        if self._deleted:
            yield Publish(self.session_id, None, "delete", usage=False)
        elif self._latest_kind is not None or self._usage:
            latest = self._latest
            summary = None if latest is None else summary_of(latest)
            yield Publish(self.session_id, summary, self._latest_kind, usage=self._usage)

    # What the session is now, counting what is pending.

    def _read_head(self) -> Generator[Step, Any, Head | None]:
        head = self._head
        if isinstance(head, _Unread):
            head = self._head = yield ReadHead()  # once per hold of the lock
        return head

    def _exists(self) -> Generator[Step, Any, bool]:
        if self.pending is not None:
            return True
        if not isinstance(self._head, _Unread):
            return self._head is not None
        if self._exists_now is None:
            # Cheaper than the head for a storage (no decoding): an append
            # needs no more.
            self._exists_now = yield SessionExists()
        return self._exists_now

    def _read_session(self, *, fresh: bool = False) -> Generator[Step, Any, Session | None]:
        """The persisted session, after writing what is pending.

        Its messages become what this actor knows if ``fresh``, or if what it
        knew is out of date: a UI reading the session must not make the
        runtime's next save write the whole transcript.
        """
        yield from self.flush()
        if self._head is None:
            return None
        stored: Stored | None = yield ReadSession()
        if stored is None:
            self._head = None
            return None
        session = self._written = stored.session
        self._head = Head.of(session, stored.version)
        if fresh or self.memory.current(stored.version) is None:
            self.memory.remember(stored.version, session.messages, edit_mark())
        return session

    def _read_tail(self, tail: int) -> Generator[Step, Any, Session | None]:
        """The persisted session holding its last ``tail`` messages only (none is remembered)."""
        yield from self.flush()
        if self._head is None:
            return None
        stored: Stored | None = yield ReadSession(tail)
        if stored is None:
            self._head = None
            return None
        self._head = Head.of(stored.session, stored.version)
        return stored.session

    def _kept(self, session_id: str, head: Head, revision: int) -> None:
        """Refuse a revision outside the kept window of a session at ``head``."""
        if not 1 <= revision <= head.revision:
            raise RevisionNotFoundError(
                session_id, revision, f"never written (the latest is {head.revision})"
            )
        if revision <= head.revision - self.history:
            raise RevisionNotFoundError(
                session_id,
                revision,
                f"no longer kept (the latest is {head.revision}; the store keeps"
                f" {self.history} revisions)",
            )

    def _settled_head(self) -> Generator[Step, Any, Head]:
        """The head once what is pending is written; no session is SessionNotFoundError."""
        yield from self.flush()
        head = yield from self._read_head()
        if head is None:
            raise SessionNotFoundError(self.session_id)
        return head

    # The operations.

    def _apply(self, index: int, op: Op) -> Plan:
        try:
            if isinstance(op, Save):
                yield from self._save(index, op)
            elif isinstance(op, Append):
                if not (yield from self._exists()):
                    raise SessionNotFoundError(self.session_id)
                self.lines.append(op.line)
                self.waiting_lines.append(index)
            elif isinstance(op, (Retitle, Pin)):
                yield from self._edit(index, op)
            elif isinstance(op, Update):
                yield from self._update(index, op)
            elif isinstance(op, Load):
                loaded = yield from self._load(op.revision, op.tail)
                self.outcomes[index] = outcome.Value(loaded)
            elif isinstance(op, History):
                head = yield from self._settled_head()
                oldest = max(1, head.revision - self.history + 1)
                revisions = yield ReadHistory(oldest)
                self.outcomes[index] = outcome.Value(revisions[: op.limit])
            elif isinstance(op, Rewind):
                yield from self._rewind(index, op.revision)
            elif isinstance(op, Fork):
                yield from self._fork(index, op)
            elif isinstance(op, ReadUsage):
                yield from self.flush()
                # Records where there is no session are what an import or a
                # delete that stopped left: not the log of any session.
                present = yield from self._exists()
                self.outcomes[index] = outcome.Value((yield ReadUsageLog()) if present else [])
            elif isinstance(op, Export):
                session = yield from self._read_session()
                if session is None:
                    raise SessionNotFoundError(self.session_id)
                self.outcomes[index] = outcome.Value((session, (yield ReadUsageLog())))
            elif isinstance(op, Import):
                yield from self._import(index, op)
            elif isinstance(op, Delete):
                yield from self._delete(index, op.if_revision)
            else:  # pragma: no cover - every Op kind is handled above
                raise TypeError(f"unknown message {op!r}")
        except Exception as exc:
            self.outcomes[index] = outcome.Error(exc)

    def _save(self, index: int, op: Save) -> Plan:
        if self.pending is not None and self.pending_kind not in _SAVES:
            # An edit or a rewind is a revision of its own, which its caller
            # is given: a save is never folded into it.
            yield from self.flush()
        changed, start = self.memory.to_check(op.messages)
        check_messages(op.messages, start, changed)
        current: Session | Head | None = self.pending
        if current is None:
            current = yield from self._read_head()
        persisted = group_of(current)
        group = merge_authoritative(persisted, Authoritative.of(op.snapshot))
        merged: list[Message] | None = None
        if op.checkpoint:
            if self.pending is not None:
                prior = own_messages(self.pending.messages, op.messages)
            elif current is not None:
                prior = yield from self._persisted_messages(op.messages, own=op.transcript_back)
            else:
                prior = []
            merged = merge_transcript(prior, op.messages)
        updated_at = utc_now()
        snapshot = with_group(op.snapshot, group, updated_at, current)
        snapshot.messages = op.messages if merged is None else merged
        self._folded.append(
            (self.pending, self.pending_kind, self.pending_checked, self.pending_transcript)
        )
        self.pending = snapshot
        self.pending_kind = "checkpoint" if op.checkpoint else "save"
        self.pending_transcript = None
        self.pending_checked = len(op.messages) if start == 0 and merged is None else 0
        back = merged if op.transcript_back else None
        self.waiting_snapshot.append((index, Saved(group, updated_at, back)))

    def _persisted_messages(
        self, incoming: list[Message], *, own: bool
    ) -> Generator[Step, Any, list[Message]]:
        """The persisted transcript, for a checkpoint bringing ``incoming``.

        When what this actor knows is persisted and ``incoming`` starts with
        it (the same objects or equal ones), that prefix of ``incoming``;
        otherwise the transcript is read, as fresh objects. Either way no
        caller gets another caller's objects. Unless ``own`` (the caller is
        given no transcript back), the known messages themselves serve, so
        a checkpoint of new messages alone reads nothing.
        """
        head = yield from self._read_head()
        known = None if head is None else self.memory.current(head.version)
        if known is not None:
            mine = known.persisted(incoming)
            if mine is not None:
                return mine
            if not own and known.unchanged() and not known.values.moved(known.messages, []):
                return list(known.messages)
        session = yield from self._read_session(fresh=True)
        return [] if session is None else session.messages

    def _edit(self, index: int, op: Retitle | Pin) -> Plan:
        session = yield from self._read_session()
        if session is None:
            raise SessionNotFoundError(self.session_id)
        expected = op.if_metadata_version
        if expected is not None and expected != session.metadata_version:
            raise VersionConflictError(
                self.session_id, expected=expected, current=session.metadata_version
            )
        group = Authoritative.of(session)
        changed = retitle(group, op.title) if isinstance(op, Retitle) else pin(group, op.pinned)
        if changed is None:
            self.outcomes[index] = outcome.Value(session)
            return
        kind = "title" if isinstance(op, Retitle) else "pinned"
        self._pend(with_group(session, changed, utc_now(), session), kind)
        self.waiting_snapshot.append((index, self.pending))

    def _update(self, index: int, op: Update) -> Plan:
        """``op.fn`` on the session as persisted (or as this hold just wrote it): one revision."""
        yield from self.flush()
        session = self._written
        if session is None:
            session = yield from self._read_session()
        if session is None:
            raise SessionNotFoundError(self.session_id)
        updated, changed = apply_update(session, op.fn)
        if not changed:
            self.outcomes[index] = outcome.Value(updated)
            return
        self._pend(with_group(updated, Authoritative.of(session), utc_now(), session), "update")
        self.waiting_snapshot.append((index, self.pending))
        yield from self.flush()

    def _pend(self, session: Session, kind: str, transcript: Version | None = None) -> None:
        """``session`` is to be written as a revision of ``kind``; its messages are checked."""
        self.pending = session
        self.pending_kind = kind
        self.pending_transcript = transcript
        self.pending_checked = len(session.messages)

    def _load(self, revision: int | None, tail: int | None) -> Generator[Step, Any, Session | None]:
        if revision is None and tail is not None:
            return (yield from self._read_tail(tail))
        if revision is None:
            return (yield from self._read_session())
        yield from self.flush()
        head = yield from self._read_head()
        if head is None:
            return None
        self._kept(self.session_id, head, revision)
        if revision == head.revision:
            return (yield from self._read_session())
        stored: Stored | None = yield ReadRevision(revision)
        if stored is None:
            raise RevisionNotFoundError(self.session_id, revision, "no longer kept")
        return stored.session

    def _rewind(self, index: int, revision: int) -> Plan:
        """A new revision with ``revision``'s transcript, metadata and runtime state."""
        head = yield from self._settled_head()
        self._kept(self.session_id, head, revision)
        stored: Stored | None = yield ReadRevision(revision)
        if stored is None:
            raise RevisionNotFoundError(self.session_id, revision, "no longer kept")
        target = stored.session
        rewound = with_group(target, head.group, utc_now(), head)
        rewound.created_at = head.created_at
        self._pend(rewound, "rewind", stored.version)
        self.waiting_snapshot.append((index, rewound))
        yield from self.flush()

    def _fork(self, index: int, op: Fork) -> Plan:
        """Make this session from ``op.source_id`` at ``op.revision``: revision 1, a fork."""
        yield from self.flush()
        if (yield from self._exists()):
            raise SessionExistsError(self.session_id)
        found: tuple[Head, Stored | None] | None = yield ReadSource(op.source_id, op.revision)
        if found is None:
            raise SessionNotFoundError(op.source_id)
        source_head, stored = found
        revision = source_head.revision if op.revision is None else op.revision
        self._kept(op.source_id, source_head, revision)
        if stored is None:
            raise RevisionNotFoundError(op.source_id, revision, "no longer kept")
        source = stored.session
        now = utc_now()
        made = Session(
            id=self.session_id,
            title=source.title if op.title is None else op.title,
            created_at=now,
            updated_at=now,
            messages=source.messages,
            metadata=source.metadata,
            runtime_state=source.runtime_state,
            revision=1,
            forked_from=op.source_id,
            forked_from_revision=revision,
        )
        mark = edit_mark()
        version: Version | None = yield WriteFork(made, op.source_id, stored.version)
        self._made(index, made, version, "fork", mark)

    def _import(self, index: int, op: Import) -> Plan:
        """Make this session from an archive (checked already): revision 1 with its records."""
        yield from self.flush()
        if (yield from self._exists()):
            raise SessionExistsError(self.session_id)
        made = op.session
        made.revision = 1
        mark = edit_mark()
        version: Version | None = yield WriteImport(made, Commit("import", 1), op.usage)
        self._made(index, made, version, "import", mark)

    def _made(
        self, index: int, made: Session, version: Version | None, kind: str, mark: int
    ) -> None:
        """``made`` is written as revision 1 of a new session, whose caller is given it."""
        self.memory.remember(version, made.messages, mark)
        self._head = Head.of(made, version)
        self.present = True
        self._written = self._latest = made
        self._latest_kind = kind
        self.outcomes[index] = outcome.Value(made)

    def _delete(self, index: int, if_revision: int | None) -> Plan:
        if if_revision is not None:
            yield from self.flush()
            head = yield from self._read_head()
            if head is not None and head.revision != if_revision:
                raise VersionConflictError(
                    self.session_id, expected=if_revision, current=head.revision, of="revision"
                )
        existed = yield from self._exists()
        if self.present:
            try:
                yield DeleteSession()
            except Exception as exc:
                self._abandon(exc)  # nothing pending was written: those calls fail too
                raise
        # What is pending is superseded: it took effect and is deleted now.
        self._succeed(self.waiting_snapshot)
        self._succeed([(i, None) for i in self.waiting_lines])
        self.pending = None
        self._folded.clear()
        self._written = None
        self.lines.clear()
        self._head = None
        self._exists_now = None
        self.memory.forget()
        self._deleted = self._deleted or existed
        self._latest = self._latest_kind = None
        self._usage = False
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
        """Fail every pending op with ``exc``: none of it is written."""
        self._fail([i for i, _ in self.waiting_snapshot], exc)
        self._fail(self.waiting_lines, exc)
        self.waiting_snapshot.clear()
        self.waiting_lines.clear()
        self.pending = None
        self._folded.clear()
        self._written = None
        self.lines.clear()
        self._head = _UNREAD if self.present else None  # what a failed write left: read again
        self._exists_now = None

    def flush(self) -> Plan:
        """Write the pending snapshot as one revision, then the pending lines.

        Should the write refuse the transcript of the last save folded into
        the snapshot (a value changed in place that cannot be stored), that
        save alone fails and what was pending before it is written instead.
        """
        refused: Exception | None = None
        while self.pending is not None:
            snapshot, self.pending = self.pending, None
            try:
                head = yield from self._read_head()
                snapshot.revision = 1 if head is None else head.revision + 1
                commit = Commit(self.pending_kind, max(1, snapshot.revision - self.history + 1))
                if self.pending_kind in _EDITS and head is not None and head.version is not None:
                    yield WriteMetadata(snapshot, commit)
                    self._head = Head.of(snapshot, head.version)
                else:
                    # A save, or an edit of a transcript that cannot be
                    # appended to (an older format): written whole.
                    yield from self._write_snapshot(snapshot, commit)
            except _Refused as exc:
                refused = exc.error
                if not self._folded:  # an edit, an update or a rewind: it fails
                    self._abandon(refused)
                    return
                assert len(self._folded) == len(self.waiting_snapshot)
                index, _ = self.waiting_snapshot.pop()
                self.outcomes[index] = outcome.Error(refused)
                (self.pending, self.pending_kind, self.pending_checked, self.pending_transcript) = (
                    self._folded.pop()
                )
                continue
            except Exception as exc:
                # The appends may have counted on the session this snapshot
                # would have created: they fail with it.
                self._abandon(exc)
                return
            self._folded.clear()
            self._written = self._latest = snapshot
            self._latest_kind = commit.kind
            for _, waiting in self.waiting_snapshot:
                if isinstance(waiting, Saved):
                    waiting.written_as(snapshot)
            self._succeed(self.waiting_snapshot)
        if refused is not None and self._head is None:
            # Every save was refused, and the appends counted on the session
            # the first would have created.
            self._fail(self.waiting_lines, refused)
            self.lines.clear()
            self.waiting_lines.clear()
        if self.lines:
            try:
                yield AppendUsage(b"".join(self.lines))
            except Exception as exc:
                self._fail(self.waiting_lines, exc)
            else:
                self._usage = True
                self._succeed([(i, None) for i in self.waiting_lines])
            self.lines.clear()
            self.waiting_lines.clear()

    def _write_snapshot(self, snapshot: Session, commit: Commit) -> Plan:
        """Write the new and changed messages when the persisted transcript is known, else all."""
        head = yield from self._read_head()
        messages = snapshot.messages
        known = None if head is None else self.memory.current(head.version)
        append_from = None
        replaced: list[int] = []
        if self.pending_transcript is None and known is not None:
            changes = known.changes(messages)
            if changes is not None:
                # A message may also have had a nested value changed in place,
                # which no stamp tells: it is written, and checked, as an edited one.
                moved = known.values.moved(messages, changes)
                if len(changes) + len(moved) <= len(known.messages) // 2:
                    _refuse_unstorable(messages, len(messages), moved)
                    # Only the messages changed or added are written (the
                    # others were checked at their call).
                    append_from, replaced = len(known.messages), sorted([*changes, *moved])
        if append_from is None and self.pending_transcript is None:
            # All of it is written: all of it is checked (but what this batch
            # has just checked), since a message known unchanged may have had
            # a nested value changed in place.
            _refuse_unstorable(messages, self.pending_checked)
        mark = edit_mark()  # an edit from now on is not in what is written
        # What is written, kept to tell a nested change made from now on.
        values = (
            known.values.after(messages, replaced)
            if known is not None and append_from is not None
            else WrittenValues.of(messages)
        )
        self.memory.forget()  # until the write is in place
        version: Version | None = yield WriteSnapshot(
            snapshot,
            commit,
            append_from=append_from,
            trusted=known is not None,
            transcript_of=self.pending_transcript,
            replaced=tuple(replaced),
        )
        # An unchanged transcript (a save of equal copies) keeps the copies known equal to it.
        same = known if append_from == len(messages) and not replaced else None
        self.memory.remember(version, messages, mark, values=values, same_as=same)
        self._head = Head.of(snapshot, version)
        self.present = True  # whatever the lock saw: the session is there now
