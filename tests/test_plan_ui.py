"""The planner's decisions for the UI's side: If-Match edits, updates, and what a hold publishes.

Driven like ``test_plan.py``: each test scripts the storage's answers and
checks the steps the plan asks for, with plain values.
"""

from __future__ import annotations

import pytest
from test_plan import V1, V2, head, msg, run, save, session, stored_session

from sessionactors import Message, Session, SessionNotFoundError, VersionConflictError
from sessionactors._messages import Append, Delete, Pin, Retitle, Update
from sessionactors._steps import (
    AppendUsage,
    DeleteSession,
    ReadHead,
    ReadSession,
    Stored,
    WriteMetadata,
    WriteSnapshot,
)


def test_an_edit_whose_if_match_fails_writes_nothing_and_names_both_versions() -> None:
    result = run(
        [Retitle("new", if_metadata_version=1)], [(ReadSession, Stored(stored_session(), V1))]
    )
    error = result.error(0)
    assert isinstance(error, VersionConflictError)
    assert (error.expected, error.current) == (1, 2)
    assert result.published is None


@pytest.mark.parametrize("edit", [Retitle("old", 1), Pin(False, 1)], ids=["retitle", "pin"])
def test_if_match_is_checked_before_the_edit_is_found_to_change_nothing(
    edit: Retitle | Pin,
) -> None:
    result = run([edit], [(ReadSession, Stored(stored_session(), V1))])
    assert isinstance(result.error(0), VersionConflictError)


def test_an_edit_whose_if_match_holds_is_written() -> None:
    result = run(
        [Pin(True, if_metadata_version=2)],
        [(ReadSession, Stored(stored_session(), V1)), (WriteMetadata, None)],
    )
    assert result.value(0).metadata_version == 3
    assert result.published is not None and result.published.kind == "pinned"


def increment(session: Session) -> None:
    session.runtime_state["n"] = session.runtime_state.get("n", 0) + 1


def test_updates_queued_together_read_once_and_are_a_revision_each() -> None:
    before = stored_session()
    result = run(
        [Update(increment), Update(increment), Update(increment)],
        [
            (ReadSession, Stored(before, V1)),
            (WriteSnapshot, V1),
            (WriteSnapshot, V1),
            (WriteSnapshot, V1),
        ],
    )
    written = [step.session for step in result.steps if isinstance(step, WriteSnapshot)]
    assert [s.runtime_state["n"] for s in written] == [1, 2, 3]
    assert [s.revision for s in written] == [2, 3, 4]
    assert [step.commit.kind for step in result.steps if isinstance(step, WriteSnapshot)] == [
        "update"
    ] * 3
    assert [result.value(i).runtime_state["n"] for i in range(3)] == [1, 2, 3]
    assert before.runtime_state == {}  # what was read is not changed by the functions
    # Only the new message-less commit is appended: the transcript is a known prefix.
    assert all(step.append_from == 1 for step in result.steps if isinstance(step, WriteSnapshot))


def test_an_update_after_a_save_in_the_same_batch_starts_from_that_save() -> None:
    caller = session(msg("a"), msg("b"))
    result = run(
        [save(caller), Update(increment)],
        [(ReadHead, head()), (WriteSnapshot, V2), (WriteSnapshot, V2)],
    )
    last = [step.session for step in result.steps if isinstance(step, WriteSnapshot)][-1]
    assert [m.id for m in last.messages] == ["a", "b"]
    assert last.runtime_state == {"n": 1}
    assert last.messages[0] is not caller.messages[0]  # the function got copies


def test_an_update_changing_nothing_writes_nothing_and_publishes_nothing() -> None:
    result = run([Update(lambda s: None)], [(ReadSession, Stored(stored_session(), V1))])
    assert result.value(0).revision == 1
    assert result.published is None


@pytest.mark.parametrize(
    "change",
    [
        lambda s: setattr(s, "title", "x"),
        lambda s: setattr(s, "pinned", True),
        lambda s: setattr(s, "metadata_version", 9),
        lambda s: setattr(s, "title_version", 0),
        lambda s: setattr(s, "revision", 7),
        lambda s: setattr(s, "forked_from", "other"),
        lambda s: setattr(s, "forked_from_revision", 1),
        lambda s: setattr(s, "id", "t"),
    ],
)
def test_an_update_changing_what_is_not_its_own_is_refused(change: object) -> None:
    result = run([Update(change)], [(ReadSession, Stored(stored_session(), V1))])  # type: ignore[arg-type]
    assert isinstance(result.error(0), ValueError)


def test_an_update_that_raises_fails_alone_and_the_next_still_applies() -> None:
    def boom(session: Session) -> None:
        session.runtime_state["n"] = 100
        raise KeyError("boom")

    result = run(
        [Update(boom), Update(increment)],
        [(ReadSession, Stored(stored_session(), V1)), (WriteSnapshot, V1)],
    )
    assert isinstance(result.error(0), KeyError)
    assert result.value(1).runtime_state == {"n": 1}


def test_an_update_of_no_session_is_not_found() -> None:
    result = run([Update(increment)], [(ReadSession, None)])
    assert isinstance(result.error(0), SessionNotFoundError)


def test_a_message_the_update_edits_makes_the_transcript_written_whole() -> None:
    def edit(session: Session) -> None:
        session.messages[0].content = "edited"
        session.messages.append(Message(id="z", role="user"))

    result = run([Update(edit)], [(ReadSession, Stored(stored_session(), V1)), (WriteSnapshot, V2)])
    write = result.only(WriteSnapshot)
    assert write.append_from is None
    assert [m.content for m in write.session.messages] == ["edited", None]


def test_a_hold_publishes_its_last_revision_and_its_usage() -> None:
    result = run(
        [save(session(msg("a"))), Append(b"1\n"), Retitle("new")],
        [
            (ReadHead, None),
            (WriteSnapshot, V1),
            (AppendUsage, None),
            (ReadSession, Stored(stored_session(), V1)),
            (WriteMetadata, None),
        ],
    )
    published = result.published
    assert published is not None
    assert (published.kind, published.usage) == ("title", True)
    assert published.summary is not None and published.summary.revision == 2
    assert published.summary.title == "new"


def test_a_hold_that_deletes_publishes_the_delete_only() -> None:
    result = run(
        [save(session(msg("a"))), Delete()],
        [(ReadHead, None), (DeleteSession, True)],
    )
    assert result.published is not None
    assert (result.published.kind, result.published.summary) == ("delete", None)


def test_a_failed_write_publishes_nothing() -> None:
    result = run([save(session(msg("a")))], [(ReadHead, None), (WriteSnapshot, OSError(5, "EIO"))])
    assert isinstance(result.error(0), OSError)
    assert result.published is None
