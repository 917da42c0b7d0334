"""Unit tests of the pure planner: ops in, the steps asked of a storage and the outcomes out.

No storage at all: each test drives a :class:`SegmentPlan` with a script, the
steps it must ask for in order and what the storage answers to each (an
exception is thrown into the plan, as ``_batch._drive`` does).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import attrs
import outcome
import pytest

import sessionactors._plan
import sessionactors._planned
from sessionactors._errors import (
    RevisionNotFoundError,
    SessionExistsError,
    SessionNotFoundError,
)
from sessionactors._merge import Authoritative
from sessionactors._messages import (
    Append,
    Delete,
    Fork,
    History,
    Load,
    Op,
    Pin,
    ReadUsage,
    Retitle,
    Rewind,
    Save,
    Saved,
)
from sessionactors._model import Message, Session, edit_mark
from sessionactors._plan import SegmentPlan
from sessionactors._steps import (
    AppendUsage,
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
    WriteMetadata,
    WriteSnapshot,
)
from sessionactors._transcript import KnownTranscript, TranscriptMemory
from sessionactors._values import copy_for_save
from sessionactors._written_values import WrittenValues

V1: Version = ("journal", 1)
V2: Version = ("journal", 2)
V3: Version = ("journal", 3)


# --- values in -----------------------------------------------------------------------


def msg(id: str, content: Any = None) -> Message:
    return Message(id=id, role="user", content=id if content is None else content)


def session(
    *messages: Message,
    title: str = "t",
    title_version: int = 0,
    pinned: bool = False,
    metadata_version: int = 0,
) -> Session:
    return Session(
        id="s",
        title=title,
        title_version=title_version,
        pinned=pinned,
        metadata_version=metadata_version,
        messages=list(messages),
    )


def group(
    title: str = "t", title_version: int = 0, pinned: bool = False, metadata_version: int = 0
) -> Authoritative:
    return Authoritative(title, title_version, pinned, metadata_version)


def save(caller: Session) -> Save:
    """A save, built as the store builds it."""
    return Save(caller, False, copy_for_save(caller))


def checkpoint(caller: Session) -> Save:
    return Save(caller, True, copy_for_save(caller))


CREATED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def head(version: Version | None = V1, of: Authoritative | None = None, revision: int = 1) -> Head:
    return Head(group() if of is None else of, version, revision, CREATED, None, None)


# --- the scripted driver -------------------------------------------------------------


@attrs.define
class Asked:
    """One step the plan asked for, and what stood when it did."""

    step: Step
    answered: set[int]  # the ops answered by then
    known: KnownTranscript | None  # what the memory held by then


@attrs.define
class Run:
    plan: SegmentPlan
    asked: list[Asked]
    #: What the plan told listings and watchers at its end (None: nothing).
    published: Publish | None = None

    @property
    def steps(self) -> list[Step]:
        return [a.step for a in self.asked]

    def kinds(self) -> list[type[Step]]:
        return [type(a.step) for a in self.asked]

    def value(self, index: int) -> Any:
        result = self.plan.outcomes[index]
        assert isinstance(result, outcome.Value), result
        return result.value

    def error(self, index: int) -> BaseException:
        result = self.plan.outcomes[index]
        assert isinstance(result, outcome.Error), result
        return result.error

    def only(self, kind: type[Step]) -> Any:
        """The one step of ``kind`` asked for."""
        found = [step for step in self.steps if isinstance(step, kind)]
        assert len(found) == 1, self.steps
        return found[0]


def run(
    ops: list[Op],
    script: list[tuple[type[Step], Any]],
    *,
    present: bool = True,
    memory: TranscriptMemory | None = None,
    history: int = 100,
) -> Run:
    """Drive a plan of ``ops``: it must ask exactly the steps of ``script``, in order.

    Each script entry is the kind of step expected and the storage's answer
    to send back; an exception instance is thrown into the plan instead.
    """
    plan = SegmentPlan(
        "s",
        TranscriptMemory() if memory is None else memory,
        present=present,
        history=history,
    )
    gen = plan.run(list(enumerate(ops)))
    asked: list[Asked] = []
    published: Publish | None = None
    answer: Any = None
    while True:
        try:
            step = gen.throw(answer) if isinstance(answer, Exception) else gen.send(answer)
        except StopIteration:
            break
        if isinstance(step, Publish):  # checked apart: the last step of every hold that wrote
            assert published is None, "one Publish a hold"
            published, answer = step, None
            continue
        asked.append(Asked(step, set(plan.outcomes), plan.memory.known))
        kinds = [type(a.step).__name__ for a in asked]
        assert len(asked) <= len(script), f"unexpected steps: {kinds}"
        expected, answer = script[len(asked) - 1]
        assert isinstance(step, expected), f"steps: {kinds}, expected {expected.__name__}"
    assert len(asked) == len(script), f"missing steps: {script[len(asked) :]}"
    assert set(plan.outcomes) == set(range(len(ops))), "every op has its outcome"
    return Run(plan, asked, published)


def written(memory: TranscriptMemory, *messages: Message, version: Version = V1) -> None:
    """Make ``memory`` what a first plan writing ``messages`` leaves: that write, at ``version``."""
    run([save(session(*messages))], [(ReadHead, None), (WriteSnapshot, version)], memory=memory)


# --- a burst of saves, and the merge rule --------------------------------------------


def test_a_burst_of_saves_is_one_snapshot_write_answered_after_it() -> None:
    first, second, third = session(msg("a")), session(msg("a"), msg("b")), session(msg("c"))
    result = run(
        [save(first), save(second), save(third)],
        [(ReadHead, head()), (WriteSnapshot, V2)],
    )
    write = result.only(WriteSnapshot)
    assert write.session.messages == [msg("c")]  # the last save's transcript
    assert result.asked[-1].answered == set()  # nobody answered before the write
    for index in range(3):
        assert isinstance(result.value(index), Saved)
    assert result.value(2).updated_at == write.session.updated_at


def test_a_new_session_takes_the_callers_group() -> None:
    caller = session(title="mine", title_version=2, pinned=True, metadata_version=5)
    result = run([save(caller)], [(ReadHead, None), (WriteSnapshot, V1)])
    mine = group("mine", 2, True, 5)
    assert Authoritative.of(result.only(WriteSnapshot).session) == mine
    assert result.value(0) == Saved(mine, result.value(0).updated_at, None, revision=1)


def test_on_a_tie_the_persisted_group_wins() -> None:
    disk = group("ui title", 1, True, 3)
    caller = session(title="runtime", title_version=3, pinned=False, metadata_version=3)
    result = run([save(caller)], [(ReadHead, head(of=disk)), (WriteSnapshot, V2)])
    assert Authoritative.of(result.only(WriteSnapshot).session) == disk
    assert result.value(0).group == disk


def test_a_strictly_newer_caller_group_wins() -> None:
    disk = group("ui title", 1, True, 3)
    caller = session(title="carried", title_version=4, pinned=False, metadata_version=4)
    result = run([save(caller)], [(ReadHead, head(of=disk)), (WriteSnapshot, V2)])
    assert Authoritative.of(result.only(WriteSnapshot).session) == group("carried", 4, False, 4)
    assert result.value(0).group == group("carried", 4, False, 4)


def test_each_save_of_a_burst_merges_with_what_the_ones_before_produced() -> None:
    carried = session(title="carried", title_version=4, metadata_version=5)
    stale = session(title="stale", title_version=0, metadata_version=3)
    result = run(
        [save(carried), save(stale)],
        [(ReadHead, head(of=group("disk", 0, False, 3))), (WriteSnapshot, V2)],
    )
    # The second save ties with the disk but not with the first save's group.
    assert result.value(0).group == group("carried", 4, False, 5)
    assert result.value(1).group == group("carried", 4, False, 5)
    assert result.only(WriteSnapshot).session.title == "carried"


def test_a_save_that_cannot_be_stored_fails_alone() -> None:
    bad = session(msg("a"), msg("b", content={1, 2}))  # a set is not JSON
    result = run(
        [save(session(msg("a"))), save(bad)],
        [(ReadHead, head()), (WriteSnapshot, V2)],
    )
    assert isinstance(result.value(0), Saved)
    assert isinstance(result.error(1), TypeError)
    assert result.only(WriteSnapshot).session.messages == [msg("a")]


# --- append or rewrite ---------------------------------------------------------------


def test_the_first_write_rewrites_untrusted() -> None:
    result = run([save(session(msg("a")))], [(ReadHead, head()), (WriteSnapshot, V2)])
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (None, False)


def test_new_messages_on_the_same_objects_are_appended() -> None:
    memory = TranscriptMemory()
    a, b = msg("a"), msg("b")
    written(memory, a, b)
    result = run(
        [save(session(a, b, msg("c")))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (2, True)


def test_appends_follow_each_other_across_batches() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    written(memory, a)
    b = msg("b")
    run([save(session(a, b))], [(ReadHead, head(V1)), (WriteSnapshot, V2)], memory=memory)
    result = run(
        [save(session(a, b, msg("c")))],
        [(ReadHead, head(V2)), (WriteSnapshot, V3)],
        memory=memory,
    )
    assert result.only(WriteSnapshot).append_from == 2


def test_an_old_message_assigned_since_is_replaced_and_the_new_appended() -> None:
    memory = TranscriptMemory()
    a, b, c = msg("a"), msg("b"), msg("c")
    written(memory, a, b, c)
    b.content = "edited"
    result = run(
        [save(session(a, b, c, msg("d")))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.replaced, write.trusted) == (3, (1,), True)


def test_a_copy_holding_another_message_at_a_position_is_replaced_there() -> None:
    memory = TranscriptMemory()
    a, b, c = msg("a"), msg("b"), msg("c")
    written(memory, a, b, c)
    copied = [msg("a"), msg("b"), msg("c", content="another")]
    result = run(
        [save(session(*copied))], [(ReadHead, head(V1)), (WriteSnapshot, V2)], memory=memory
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.replaced) == (3, (2,))


def test_most_old_messages_assigned_since_are_rewritten() -> None:
    memory = TranscriptMemory()
    a, b, c = msg("a"), msg("b"), msg("c")
    written(memory, a, b, c)
    a.content = c.content = "edited"
    result = run(
        [save(session(a, b, c, msg("d")))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.replaced, write.trusted) == (None, (), True)


def test_a_replaced_message_is_checked_and_refused_alone() -> None:
    memory = TranscriptMemory()
    a, b, c = msg("a"), msg("b"), msg("c")
    written(memory, a, b, c)
    b.content = ("a", "tuple")  # would read back as a list
    result = run([save(session(a, b, c))], [], memory=memory)
    assert isinstance(result.error(0), TypeError)


@pytest.mark.parametrize("kept", [["b"], ["a"], ["b", "a"]], ids=["first", "last", "reorder"])
def test_a_removed_or_moved_message_is_rewritten(kept: list[str]) -> None:
    memory = TranscriptMemory()
    by_id = {"a": msg("a"), "b": msg("b")}
    written(memory, by_id["a"], by_id["b"])
    result = run(
        [save(session(*(by_id[i] for i in kept)))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (None, True)


def test_another_process_wrote_a_different_version_rewrite_untrusted() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    written(memory, a)
    result = run(
        [save(session(a, msg("b")))],
        [(ReadHead, head(("journal", 99))), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (None, False)


def test_a_version_of_none_never_appends() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    run([save(session(a))], [(ReadHead, None), (WriteSnapshot, None)], memory=memory)
    assert memory.known is None  # an old format: nothing to trust
    result = run(
        [save(session(a, msg("b")))],
        [(ReadHead, head(None)), (WriteSnapshot, None)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (None, False)


def test_a_known_transcript_is_not_trusted_against_a_version_of_none() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    written(memory, a)
    result = run(
        [save(session(a, msg("b")))],
        [(ReadHead, head(None)), (WriteSnapshot, V2)],
        memory=memory,
    )
    assert result.only(WriteSnapshot).append_from is None


def test_the_memory_is_forgotten_during_a_write_and_remembered_at_its_version() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    written(memory, a)
    b = msg("b")
    result = run(
        [save(session(a, b))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    assert result.asked[0].known is not None  # known while reading the head
    assert result.asked[1].known is None  # not while the write is in flight
    assert memory.known is not None
    assert memory.known.version == V2
    assert memory.known.messages == [a, b]
    assert all(x is y for x, y in zip(memory.known.messages, [a, b], strict=True))


def test_a_failed_write_leaves_the_memory_forgotten() -> None:
    memory = TranscriptMemory()
    a = msg("a")
    written(memory, a)
    run(
        [save(session(a, msg("b")))],
        [(ReadHead, head(V1)), (WriteSnapshot, OSError("disk full"))],
        memory=memory,
    )
    assert memory.known is None
    result = run(
        [save(session(a, msg("b")))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    write = result.only(WriteSnapshot)
    assert (write.append_from, write.trusted) == (None, False)


# --- checkpoint ----------------------------------------------------------------------


def test_a_checkpoint_reads_the_persisted_transcript_and_never_shrinks() -> None:
    stored = session(msg("a", "persisted a"), msg("b", "persisted b"))
    caller = session(msg("b", "callers b"), msg("c"))
    result = run(
        [checkpoint(caller)],
        [(ReadHead, head(V1)), (ReadSession, Stored(stored, V1)), (WriteSnapshot, V2)],
    )
    expected = [msg("a", "persisted a"), msg("b", "persisted b"), msg("c")]
    assert result.only(WriteSnapshot).session.messages == expected
    assert result.value(0).messages == expected
    # What it read is what it knows: the new message is appended after it.
    assert result.only(WriteSnapshot).append_from == 2


def test_a_checkpoint_of_fewer_messages_keeps_every_persisted_one() -> None:
    stored = session(msg("a"), msg("b"))
    result = run(
        [checkpoint(session(msg("b")))],
        [(ReadHead, head(V1)), (ReadSession, Stored(stored, V1)), (WriteSnapshot, V2)],
    )
    assert result.value(0).messages == [msg("a"), msg("b")]
    assert result.only(WriteSnapshot).session.messages == [msg("a"), msg("b")]


def test_a_checkpoint_of_a_new_session_is_the_callers_transcript() -> None:
    caller = session(msg("a"), msg("b"))
    result = run([checkpoint(caller)], [(ReadHead, None), (WriteSnapshot, V1)])
    assert result.value(0).messages == [msg("a"), msg("b")]


def test_a_checkpoint_on_a_known_prefix_reads_nothing_and_keeps_the_callers_objects() -> None:
    memory = TranscriptMemory()
    a, b = msg("a"), msg("b")
    written(memory, a, b)
    # Another caller's copy: equal messages, its own objects.
    mine = [msg("a"), msg("b"), msg("c")]
    result = run(
        [checkpoint(session(*mine))],
        [(ReadHead, head(V1)), (WriteSnapshot, V2)],
        memory=memory,
    )
    merged = result.value(0).messages
    assert merged == mine
    assert all(x is y for x, y in zip(merged, mine, strict=True))
    assert result.only(WriteSnapshot).append_from == 2


def test_a_checkpoint_after_another_save_gets_copies_not_the_other_callers_objects() -> None:
    theirs = [msg("a"), msg("b")]
    mine = [msg("a"), msg("c")]
    result = run(
        [save(session(*theirs)), checkpoint(session(*mine))],
        [(ReadHead, None), (WriteSnapshot, V1)],
    )
    merged = result.value(1).messages
    assert merged == [msg("a"), msg("b"), msg("c")]
    assert not any(x is y for x in merged for y in theirs)
    assert merged[2] is mine[1]


# --- appends -------------------------------------------------------------------------


def test_appends_are_one_usage_write_after_the_snapshot_they_follow() -> None:
    result = run(
        [save(session(msg("a"))), Append(b"{}\n"), Append(b"{'n':2}\n")],
        [(ReadHead, None), (WriteSnapshot, V1), (AppendUsage, None)],
    )
    assert result.only(AppendUsage).data == b"{}\n{'n':2}\n"
    assert result.asked[2].answered == {0}  # the save is answered, not the appends yet
    assert result.value(1) is None
    assert result.value(2) is None


def test_appends_to_a_session_ask_once_whether_it_exists() -> None:
    result = run(
        [Append(b"1\n"), Append(b"2\n")],
        [(SessionExists, True), (AppendUsage, None)],
    )
    assert result.only(AppendUsage).data == b"1\n2\n"
    assert result.value(0) is None and result.value(1) is None


def test_appends_to_a_missing_session_fail_without_writing() -> None:
    result = run([Append(b"1\n"), Append(b"2\n")], [(SessionExists, False)])
    assert isinstance(result.error(0), SessionNotFoundError)
    assert isinstance(result.error(1), SessionNotFoundError)


def test_an_append_where_the_lock_saw_no_session_fails_without_any_step() -> None:
    result = run([Append(b"1\n")], [], present=False)
    assert isinstance(result.error(0), SessionNotFoundError)


# --- UI edits ------------------------------------------------------------------------


def stored_session() -> Session:
    stored = session(msg("a"), title="old", title_version=1, pinned=False, metadata_version=2)
    stored.revision = 1
    return stored


def test_a_retitle_writes_the_metadata_with_both_versions_bumped() -> None:
    before = stored_session()
    result = run([Retitle("  new ")], [(ReadSession, Stored(before, V1)), (WriteMetadata, None)])
    written_session = result.only(WriteMetadata).session
    assert Authoritative.of(written_session) == group("new", 2, False, 3)
    assert written_session.messages == before.messages
    assert written_session.updated_at >= before.updated_at
    assert result.value(0) is written_session
    assert result.asked[-1].answered == set()  # answered once written


def test_a_pin_writes_the_metadata_with_its_version_bumped() -> None:
    result = run([Pin(True)], [(ReadSession, Stored(stored_session(), V1)), (WriteMetadata, None)])
    assert Authoritative.of(result.only(WriteMetadata).session) == group("old", 1, True, 3)
    assert result.value(0).pinned is True


@pytest.mark.parametrize("edit", [Retitle(" old\n"), Pin(False)], ids=["retitle", "pin"])
def test_an_edit_that_changes_nothing_writes_nothing(edit: Op) -> None:
    before = stored_session()
    result = run([edit], [(ReadSession, Stored(before, V1))])
    assert result.value(0) is before


@pytest.mark.parametrize("edit", [Retitle("new"), Pin(True)], ids=["retitle", "pin"])
def test_an_edit_of_a_missing_session_fails(edit: Op) -> None:
    assert isinstance(run([edit], [(ReadSession, None)]).error(0), SessionNotFoundError)
    assert isinstance(run([edit], [], present=False).error(0), SessionNotFoundError)


def test_a_save_after_an_edit_keeps_the_edit_and_is_a_revision_of_its_own() -> None:
    """The edit's caller is given its revision: a save is never folded into it."""
    stale = session(msg("a"), msg("b"), title="runtime", metadata_version=2)
    result = run(
        [Retitle("new"), save(stale)],
        [(ReadSession, Stored(stored_session(), V1)), (WriteMetadata, None), (WriteSnapshot, V2)],
    )
    edit, write = result.only(WriteMetadata), result.only(WriteSnapshot)
    assert (edit.commit.kind, edit.session.revision) == ("title", 2)
    assert (write.commit.kind, write.session.revision) == ("save", 3)
    assert Authoritative.of(write.session) == group("new", 2, False, 3)
    assert write.session.messages == [msg("a"), msg("b")]
    assert result.value(0).title == "new" and result.value(0).revision == 2
    assert result.value(1).group == group("new", 2, False, 3)
    assert result.value(1).revision == 3


# --- failures ------------------------------------------------------------------------


def test_a_failed_snapshot_fails_its_saves_and_appends_only() -> None:
    error = OSError("disk full")
    ops: list[Op] = [
        Load(),
        save(session(msg("a"))),
        Append(b"1\n"),
        save(session(msg("a"), msg("b"))),
        Append(b"2\n"),
        ReadUsage(),
        Append(b"3\n"),
    ]
    stored = session(msg("a"))
    result = run(
        ops,
        [
            (ReadSession, Stored(stored, V1)),
            (WriteSnapshot, error),
            (SessionExists, True),  # what the failed write left is asked again
            (ReadUsageLog, [{"n": 0}]),
            (AppendUsage, None),
        ],
    )
    assert result.value(0) is stored
    for index in (1, 2, 3, 4):
        assert result.error(index) is error
    assert result.value(5) == [{"n": 0}]
    assert result.value(6) is None
    assert result.only(AppendUsage).data == b"3\n"


def test_a_failed_usage_write_fails_the_appends_only() -> None:
    error = OSError("disk full")
    result = run(
        [save(session(msg("a"))), Append(b"1\n"), Append(b"2\n")],
        [(ReadHead, head()), (WriteSnapshot, V2), (AppendUsage, error)],
    )
    assert isinstance(result.value(0), Saved)
    assert result.error(1) is error
    assert result.error(2) is error


def test_a_delete_answers_what_is_pending_and_writes_none_of_it() -> None:
    memory = TranscriptMemory()
    written(memory, msg("a"))
    result = run(
        [save(session(msg("a"))), Append(b"1\n"), Delete()],
        [(ReadHead, head(V1)), (DeleteSession, True)],
        memory=memory,
    )
    assert list(result.plan.outcomes) == [0, 1, 2]  # the pending ones first
    assert isinstance(result.value(0), Saved)
    assert result.value(1) is None
    assert result.value(2) is True
    assert memory.known is None


def test_a_failed_delete_fails_what_is_pending_with_it() -> None:
    error = OSError("busy")
    result = run(
        [save(session(msg("a"))), Append(b"1\n"), Delete()],
        [(ReadHead, head(V1)), (DeleteSession, error)],
    )
    assert [result.error(i) for i in range(3)] == [error] * 3


def test_a_delete_says_whether_a_session_existed() -> None:
    assert run([Delete()], [(SessionExists, True), (DeleteSession, True)]).value(0) is True
    assert run([Delete()], [], present=False).value(0) is False


# `present` is what the lock saw; once the plan writes the session itself, it
# is there, whatever the lock saw (unreachable through _batch today, where a
# segment holding a Save locks with create=True: the planner need not rely on it).


def test_a_delete_removes_a_session_this_segment_wrote() -> None:
    result = run(
        [save(session(msg("a"))), Load(), Delete()],
        [(WriteSnapshot, V1), (ReadSession, Stored(session(msg("a")), V1)), (DeleteSession, True)],
        present=False,
    )
    assert result.value(2) is True


def test_a_session_written_earlier_in_the_segment_exists_after_a_failed_write() -> None:
    result = run(
        [save(session(msg("a"))), Load(), save(session(msg("a"), msg("b"))), Load()],
        [
            (WriteSnapshot, V1),
            (ReadSession, Stored(session(msg("a")), V1)),
            (WriteSnapshot, OSError("disk full")),
            (ReadSession, Stored(session(msg("a")), V1)),
        ],
        present=False,
    )
    assert result.value(3) is not None


# --- reads flush first ---------------------------------------------------------------


def test_a_load_writes_what_is_pending_before_reading() -> None:
    stored = session(msg("a"))
    result = run(
        [save(session(msg("a"))), Load()],
        [(ReadHead, None), (WriteSnapshot, V1), (ReadSession, Stored(stored, V1))],
    )
    assert result.asked[2].answered == {0}
    assert result.value(1) is stored


def test_a_usage_read_writes_the_snapshot_and_the_lines_before_reading() -> None:
    result = run(
        [save(session(msg("a"))), Append(b"1\n"), ReadUsage()],
        [
            (ReadHead, None),
            (WriteSnapshot, V1),
            (AppendUsage, None),
            (ReadUsageLog, [{"n": 1}]),
        ],
    )
    assert result.asked[3].answered == {0, 1}
    assert result.value(2) == [{"n": 1}]


def test_a_load_of_a_missing_session_asks_nothing() -> None:
    assert run([Load()], [], present=False).value(0) is None
    assert run([Load()], [(ReadSession, None)]).value(0) is None


def test_a_snapshot_with_a_new_group_has_every_field_of_the_session() -> None:
    """The planner's unchecked copy sets what attrs.evolve would, field for field."""
    original = Session(
        id="s",
        title="t",
        title_version=1,
        metadata_version=2,
        messages=[msg("a")],
        metadata={"k": [1]},
        runtime_state={"r": 2},
    )
    group = Authoritative(title="new", title_version=2, pinned=True, metadata_version=3)
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    lineage = Session(id="x", forked_from="src", forked_from_revision=4)
    made = sessionactors._planned.with_group(original, group, when, lineage)
    expected = attrs.evolve(
        original,
        updated_at=when,
        revision=0,
        forked_from="src",
        forked_from_revision=4,
        **attrs.asdict(group),
    )
    for field in attrs.fields(Session):
        assert getattr(made, field.name) == getattr(expected, field.name), field.name
    assert made == expected and made is not original


# --- revisions, history, rewind, fork ----------------------------------------------------


def test_each_write_is_one_more_than_the_latest_and_keeps_the_newest_history() -> None:
    caller = session(msg("a"))
    result = run([save(caller)], [(ReadHead, head(revision=7)), (WriteSnapshot, V2)], history=3)
    write = result.only(WriteSnapshot)
    assert write.session.revision == 8
    assert (write.commit.kind, write.commit.keep_from) == ("save", 6)
    assert result.value(0).revision == 8


def test_the_first_write_is_revision_one_and_keeps_from_one() -> None:
    result = run([checkpoint(session(msg("a")))], [(ReadHead, None), (WriteSnapshot, V1)])
    write = result.only(WriteSnapshot)
    assert (write.session.revision, write.commit.kind, write.commit.keep_from) == (
        1,
        "checkpoint",
        1,
    )


def test_a_history_asks_for_the_kept_window_and_cuts_to_the_limit() -> None:
    entries = [object(), object(), object()]
    result = run([History(2)], [(ReadHead, head(revision=9)), (ReadHistory, entries)], history=4)
    assert result.only(ReadHistory) == ReadHistory(6)
    assert result.value(0) == entries[:2]


def test_a_history_of_no_session_is_not_found() -> None:
    result = run([History(None)], [], present=False)
    assert isinstance(result.error(0), SessionNotFoundError)


@pytest.mark.parametrize("revision", [0, -3, 10, 5])
def test_a_revision_outside_the_window_is_refused_without_asking(revision: int) -> None:
    result = run([Load(revision=revision)], [(ReadHead, head(revision=9))], history=4)
    assert isinstance(result.error(0), RevisionNotFoundError)


def test_a_kept_revision_is_read_and_one_the_storage_lost_is_not_found() -> None:
    old = stored_session()
    result = run(
        [Load(revision=7), Load(revision=8)],
        [(ReadHead, head(revision=9)), (ReadRevision, Stored(old, V1)), (ReadRevision, None)],
        history=4,
    )
    assert result.value(0) is old
    assert isinstance(result.error(1), RevisionNotFoundError)
    assert [step.revision for step in result.steps if isinstance(step, ReadRevision)] == [7, 8]


def test_a_rewind_writes_the_targets_transcript_by_reference_under_the_current_group() -> None:
    target = session(msg("a"))
    target.metadata, target.runtime_state = {"old": 1}, {"r": 1}
    now = head(revision=5, of=group("ui", 3, True, 4))
    result = run(
        [Rewind(2)],
        [(ReadHead, now), (ReadRevision, Stored(target, V1)), (WriteSnapshot, V3)],
    )
    write = result.only(WriteSnapshot)
    assert write.transcript_of == V1 and write.append_from is None
    assert (write.commit.kind, write.session.revision) == ("rewind", 6)
    assert Authoritative.of(write.session) == group("ui", 3, True, 4)
    assert write.session.messages == [msg("a")]
    assert (write.session.metadata, write.session.runtime_state) == ({"old": 1}, {"r": 1})
    assert write.session.created_at == CREATED
    assert result.value(0) is write.session


def test_a_rewind_after_a_save_in_the_same_batch_writes_both() -> None:
    result = run(
        [save(session(msg("a"))), Rewind(1)],
        [
            (ReadHead, head(revision=1)),
            (WriteSnapshot, V2),
            (ReadRevision, Stored(stored_session(), V1)),
            (WriteSnapshot, V3),
        ],
    )
    assert result.value(0).revision == 2
    assert result.value(1).revision == 3


def test_a_fork_reads_its_source_and_writes_revision_one_naming_it() -> None:
    source = stored_session()
    source.metadata = {"m": 1}
    result = run(
        [Fork("src", None, None)],
        [
            (SessionExists, False),
            (ReadSource, (head(revision=4), Stored(source, V2))),
            (WriteFork, V3),
        ],
    )
    assert result.only(ReadSource) == ReadSource("src", None)
    write = result.only(WriteFork)
    made = write.session
    assert (write.source_id, write.transcript_of) == ("src", V2)
    assert (made.id, made.revision, made.forked_from, made.forked_from_revision) == (
        "s",
        1,
        "src",
        4,
    )
    assert (made.title, made.title_version, made.pinned, made.metadata_version) == (
        "old",
        0,
        False,
        0,
    )
    assert made.messages == source.messages and made.metadata == {"m": 1}
    assert result.value(0) is made


def test_a_fork_onto_a_taken_id_reads_no_source() -> None:
    result = run([Fork("src", None, "t")], [(SessionExists, True)])
    assert isinstance(result.error(0), SessionExistsError)


@pytest.mark.parametrize(
    ("found", "error"),
    [
        (None, SessionNotFoundError),
        ((head(revision=4), None), RevisionNotFoundError),
    ],
)
def test_a_fork_of_no_source_or_no_kept_revision_writes_nothing(
    found: Any, error: type[Exception]
) -> None:
    result = run([Fork("src", 2, None)], [(SessionExists, False), (ReadSource, found)])
    assert isinstance(result.error(0), error)


def test_copies_found_equal_are_remembered_within_a_bound_of_messages() -> None:
    """Each copy keeps its caller's objects alive: a long transcript keeps few of them."""
    count = 10_000
    messages = [msg(f"m{n}") for n in range(count)]
    known = KnownTranscript(V1, messages, edit_mark(), WrittenValues.of(messages))
    for _ in range(8):
        copy = [msg(f"m{n}") for n in range(count)]
        assert known.prefix(copy) == count
        assert known.prefix(copy) == count  # found again, among the copies
    assert len(known.copies) >= 1 and len(known.copies) * count <= 32_768
