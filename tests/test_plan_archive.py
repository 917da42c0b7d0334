"""The planner's decisions for moving sessions: import, export, a delete naming a revision.

Driven like ``test_plan.py``: each test scripts the storage's answers and
checks the steps the plan asks for, with plain values.
"""

from __future__ import annotations

from test_plan import V1, V2, head, msg, run, save, session

from sessionactors import SessionExistsError, SessionNotFoundError, VersionConflictError
from sessionactors._messages import Delete, Export, Import, ReadUsage
from sessionactors._steps import (
    DeleteSession,
    ReadHead,
    ReadSession,
    ReadUsageLog,
    SessionExists,
    Stored,
    WriteImport,
    WriteSnapshot,
)


def test_an_import_makes_revision_one_with_its_records_in_one_step() -> None:
    made = session(msg("a"), msg("b"))
    result = run([Import(made, b'{"n":1}\n')], [(WriteImport, V1)], present=False)
    step = result.only(WriteImport)
    assert step.session is made and step.usage == b'{"n":1}\n'
    assert (step.commit.kind, step.commit.keep_from) == ("import", 1)
    assert result.value(0) is made and made.revision == 1
    assert result.published is not None
    assert (result.published.kind, result.published.usage) == ("import", False)
    # What this actor knows is what it wrote: a save after it appends.
    assert result.plan.memory.current(V1) is not None


def test_an_import_onto_a_session_is_refused_before_anything_is_written() -> None:
    result = run([Import(session(msg("a")), b"")], [(SessionExists, True)])
    assert isinstance(result.error(0), SessionExistsError)
    assert result.published is None


def test_a_save_queued_after_an_import_is_a_second_revision() -> None:
    made = session(msg("a"))
    again = session(msg("a"), msg("b"))
    result = run(
        [Import(made, b""), save(again)],
        [(WriteImport, V1), (WriteSnapshot, V2)],
        present=False,
    )
    assert made.revision == 1
    assert result.value(1).revision == 2
    # The import's transcript is known: the save appends the one new message.
    assert result.only(WriteSnapshot).append_from == 1


def test_an_export_reads_the_session_and_its_records_in_one_hold() -> None:
    stored = session(msg("a"))
    result = run([Export()], [(ReadSession, Stored(stored, V1)), (ReadUsageLog, [{"n": 1}])])
    assert result.value(0) == (stored, [{"n": 1}])


def test_an_export_of_no_session_is_not_found() -> None:
    assert isinstance(run([Export()], [(ReadSession, None)]).error(0), SessionNotFoundError)


def test_records_where_there_is_no_session_are_not_read() -> None:
    assert run([ReadUsage()], [], present=False).value(0) == []
    assert run([ReadUsage()], [(SessionExists, False)]).value(0) == []


def test_a_delete_naming_another_revision_deletes_nothing() -> None:
    result = run([Delete(if_revision=2)], [(ReadHead, head(revision=3))])
    error = result.error(0)
    assert isinstance(error, VersionConflictError)
    assert (error.expected, error.current) == (2, 3)
    assert result.published is None


def test_a_delete_naming_the_latest_revision_deletes() -> None:
    result = run([Delete(if_revision=3)], [(ReadHead, head(revision=3)), (DeleteSession, True)])
    assert result.value(0) is True
    assert result.published is not None and result.published.kind == "delete"


def test_a_delete_naming_a_revision_of_no_session_finds_none() -> None:
    result = run([Delete(if_revision=1)], [(ReadHead, None), (DeleteSession, False)])
    assert result.value(0) is False
