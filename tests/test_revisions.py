"""Revisions and history (docs/reference.md, "Revisions and history"): every write a revision.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
Forks are in test_forks.py; revisions across processes in
test_revisions_processes.py; what a crash leaves in test_crash.py.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable

import pytest
import trio
import trio.testing
from conftest import Gate, StoreFactory
from support import msg

from sessionactors import (
    Message,
    Revision,
    RevisionNotFoundError,
    Session,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
)


async def history_of(store: SessionStore, session_id: str) -> list[tuple[int, str]]:
    return [(r.revision, r.kind) for r in await store.session_history(session_id)]


# --- every write is a revision ----------------------------------------------------------


async def test_each_kind_of_write_is_one_revision_numbered_from_one(store: SessionStore) -> None:
    session = Session(id="s", messages=[msg("a")])
    assert session.revision == 0
    await store.save_runtime_session(session)
    assert session.revision == 1
    session.messages.append(msg("b"))
    await store.checkpoint_runtime_session(session)
    assert session.revision == 2
    assert (await store.set_title("s", "T")).revision == 3
    assert (await store.set_pinned("s", True)).revision == 4
    assert (await store.rewind_session("s", 1)).revision == 5
    assert await history_of(store, "s") == [
        (5, "rewind"),
        (4, "pinned"),
        (3, "title"),
        (2, "checkpoint"),
        (1, "save"),
    ]
    loaded = await store.load_session("s")
    assert loaded is not None and loaded.revision == 5


async def test_a_call_that_changes_nothing_makes_no_revision(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "T")
    await store.set_pinned("s", True)
    assert (await store.set_title("s", "  T ")).revision == 3
    assert (await store.set_pinned("s", True)).revision == 3
    assert await history_of(store, "s") == [(3, "pinned"), (2, "title"), (1, "save")]


async def test_a_revision_loads_as_the_callers_object_stood_after_its_write(
    store: SessionStore,
) -> None:
    """``load_session(revision=n)`` == the object the call left, whatever came after."""
    seen: dict[int, Session] = {}
    session = Session(id="s", metadata={"step": 0}, runtime_state={"r": []})
    for step in range(1, 6):
        session.messages.append(msg(f"m{step}", {"step": step}))
        session.metadata = {"step": step}
        session.runtime_state = {"r": list(range(step))}
        await store.save_runtime_session(session)
        seen[session.revision] = copy.deepcopy(session)
    renamed = await store.set_title("s", "renamed")
    seen[renamed.revision] = renamed
    session.messages[0].content = "edited"  # an edit of an old message: a rewrite
    session.messages.pop(2)
    await store.save_runtime_session(session)
    seen[session.revision] = copy.deepcopy(session)
    assert sorted(seen) == list(range(1, 8))
    for revision, expected in seen.items():
        assert await store.load_session("s", revision=revision) == expected
    assert await store.load_session("s") == seen[7]


async def test_history_is_newest_first_with_what_each_write_left(store: SessionStore) -> None:
    session = Session(id="s", messages=[msg("a")])
    await store.save_runtime_session(session)
    renamed = await store.set_title("s", "Named")
    session.messages.append(msg("b"))
    await store.save_runtime_session(session)
    history = await store.session_history("s")
    assert all(isinstance(entry, Revision) for entry in history)
    newest, middle, oldest = history
    assert newest == Revision(
        revision=3,
        kind="save",
        updated_at=session.updated_at,
        message_count=2,
        title="Named",
        pinned=False,
        title_version=1,
        metadata_version=1,
    )
    assert (middle.revision, middle.kind, middle.updated_at) == (2, "title", renamed.updated_at)
    assert (middle.title, middle.title_version, middle.message_count) == ("Named", 1, 1)
    assert (oldest.revision, oldest.title, oldest.message_count) == (1, "", 1)
    assert await store.session_history("s", limit=2) == history[:2]
    assert await store.session_history("s", limit=10) == history


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
async def test_a_history_limit_must_be_a_positive_int(store: SessionStore, limit: object) -> None:
    await store.save_runtime_session(Session(id="s"))
    with pytest.raises(ValueError):
        await store.session_history("s", limit=limit)  # type: ignore[arg-type]


async def test_history_of_an_unknown_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.session_history("nobody")
    await store.save_runtime_session(Session(id="s"))
    await store.delete_session("s")
    with pytest.raises(SessionNotFoundError):
        await store.session_history("s")


async def test_a_session_made_again_after_a_delete_starts_at_revision_one(
    store: SessionStore,
) -> None:
    first = Session(id="s", messages=[msg("old")])
    await store.save_runtime_session(first)
    await store.set_title("s", "old")
    assert await store.delete_session("s")
    again = Session(id="s", messages=[msg("new")])
    await store.save_runtime_session(again)
    assert again.revision == 1
    assert await history_of(store, "s") == [(1, "save")]
    assert await store.load_session("s", revision=1) == again
    with pytest.raises(RevisionNotFoundError):
        await store.load_session("s", revision=2)


async def test_a_save_never_sets_the_store_owned_fields(store: SessionStore) -> None:
    """A caller's revision and lineage are corrected in place, like the group."""
    session = Session(id="s", revision=41, forked_from="elsewhere", forked_from_revision=3)
    await store.save_runtime_session(session)
    assert (session.revision, session.forked_from, session.forked_from_revision) == (1, None, None)
    stale = Session(id="s", revision=99, forked_from="x", forked_from_revision=1)
    await store.checkpoint_runtime_session(stale)
    assert (stale.revision, stale.forked_from, stale.forked_from_revision) == (2, None, None)
    assert await store.load_session("s") == stale


# --- loading a revision -------------------------------------------------------------------


async def test_revision_zero_a_future_and_a_dropped_one_are_not_found(
    make_store: StoreFactory,
) -> None:
    async with make_store(history=3) as store:
        session = Session(id="s")
        for n in range(5):
            session.messages.append(msg(f"m{n}"))
            await store.save_runtime_session(session)
        for missing in (0, -1, 6, 100, 1, 2):
            with pytest.raises(RevisionNotFoundError) as caught:
                await store.load_session("s", revision=missing)
            assert isinstance(caught.value, LookupError)
            assert isinstance(caught.value, SessionStoreError)
        for kept in (3, 4, 5):
            loaded = await store.load_session("s", revision=kept)
            assert loaded is not None and len(loaded.messages) == kept
        assert [r.revision for r in await store.session_history("s")] == [5, 4, 3]


async def test_loading_a_revision_of_an_unknown_session_is_none(store: SessionStore) -> None:
    assert await store.load_session("nobody", revision=1) is None


@pytest.mark.parametrize("revision", ["1", 1.0, True, None])
async def test_a_revision_must_be_an_int(store: SessionStore, revision: object) -> None:
    await store.save_runtime_session(Session(id="s"))
    with pytest.raises(TypeError):
        await store.rewind_session("s", revision)  # type: ignore[arg-type]
    if revision is not None:
        with pytest.raises(TypeError):
            await store.load_session("s", revision=revision)  # type: ignore[arg-type]


async def test_history_must_keep_at_least_one_revision(make_store: StoreFactory) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            async with make_store(history=bad):
                pass


async def test_the_newest_revisions_stay_loadable_whatever_came_between(
    make_store: StoreFactory,
) -> None:
    """Edits and removals of old messages and rewinds in turn: the newest ``history`` load."""
    async with make_store(history=4) as store:
        session = Session(id="s", messages=[msg("a"), msg("b")])
        await store.save_runtime_session(session)
        expected: dict[int, Session] = {1: copy.deepcopy(session)}
        for step in range(12):
            if step % 3 == 0:
                session.messages[0].content = step  # an old message edited
            elif step % 3 == 1:
                session.messages.append(msg(f"n{step}"))
                session.messages.pop(1)  # one removed
            else:
                session = await store.rewind_session("s", session.revision - 1)
                expected[session.revision] = copy.deepcopy(session)
                continue
            await store.save_runtime_session(session)
            expected[session.revision] = copy.deepcopy(session)
            latest = session.revision
            oldest = max(1, latest - 3)
            for revision in range(oldest, latest + 1):
                assert await store.load_session("s", revision=revision) == expected[revision]
            listed = [r.revision for r in await store.session_history("s")]
            assert listed == list(range(latest, oldest - 1, -1))
            if oldest > 1:
                with pytest.raises(RevisionNotFoundError):
                    await store.load_session("s", revision=oldest - 1)
        assert session.revision > 8


# --- coalesced saves and revisions in commit order ----------------------------------------


async def test_saves_folded_into_one_write_share_one_revision(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        callers = [Session(id="s", messages=[msg(f"m{n}")]) for n in range(8)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")  # the batch the gate holds
            await gate.wait_entered()
            for caller in callers:
                nursery.start_soon(store.save_runtime_session, caller)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        assert {caller.revision for caller in callers} == {2}
        assert await history_of(store, "s") == [(2, "save"), (1, "save")]
        assert await store.load_session("s", revision=2) in callers


async def test_an_edit_queued_between_saves_is_a_revision_of_its_own(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    """A UI edit's caller gets the revision that holds exactly what it returned."""
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        before = Session(id="s", messages=[msg("a")])
        after = Session(id="s", messages=[msg("a"), msg("b")])
        edits: list[Session] = []

        async def rename() -> None:
            edits.append(await store.set_title("s", "UI"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")
            await gate.wait_entered()
            nursery.start_soon(store.save_runtime_session, before)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(rename)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.save_runtime_session, after)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        (edit,) = edits
        assert (before.revision, edit.revision, after.revision) == (2, 3, 4)
        assert await store.load_session("s", revision=3) == edit
        assert await store.load_session("s", revision=2) == before
        assert after.title == "UI"


async def test_revisions_follow_commit_order_across_stores_and_tasks(
    make_store: StoreFactory,
) -> None:
    """Two stores on one location, many tasks each: revisions with no gap, each as written.

    Saves one store folds into one write share its revision (and only those).
    """
    written: dict[int, list[dict[str, int]]] = {}

    async def writer(store: SessionStore, name: str, task: int) -> None:
        for step in range(6):
            session = Session(id="s", metadata={"store": int(name), "task": task, "step": step})
            await store.save_runtime_session(session)
            written.setdefault(session.revision, []).append(session.metadata)

    async with make_store(history=1000) as first, make_store(history=1000) as second:
        await first.save_runtime_session(Session(id="s"))
        async with trio.open_nursery() as nursery:
            for task in range(8):
                nursery.start_soon(writer, first, "1", task)
                nursery.start_soon(writer, second, "2", task)
        latest = await first.load_session("s")
        assert latest is not None
        assert sorted(written) == list(range(2, latest.revision + 1))
        assert [r.revision for r in await second.session_history("s")] == list(
            range(latest.revision, 0, -1)
        )
        for revision, folded in written.items():
            assert len({metadata["store"] for metadata in folded}) == 1, folded
            loaded = await second.load_session("s", revision=revision)
            assert loaded is not None and loaded.metadata in folded


# --- rewind -------------------------------------------------------------------------------


async def test_a_rewind_takes_the_transcript_and_state_and_keeps_the_ui_group(
    store: SessionStore,
) -> None:
    session = Session(id="s", messages=[msg("a")], metadata={"v": 1}, runtime_state={"r": 1})
    await store.save_runtime_session(session)
    target = copy.deepcopy(session)
    session.messages.append(msg("bad turn"))
    session.metadata = {"v": 2}
    session.runtime_state = {"r": 2}
    await store.save_runtime_session(session)
    renamed = await store.set_title("s", "renamed after the target")
    await store.set_pinned("s", True)

    rewound = await store.rewind_session("s", 1)
    assert rewound.revision == 5
    assert rewound.messages == target.messages
    assert (rewound.metadata, rewound.runtime_state) == (target.metadata, target.runtime_state)
    assert (rewound.title, rewound.title_version, rewound.pinned) == (renamed.title, 1, True)
    assert rewound.metadata_version == 2
    assert rewound.created_at == target.created_at
    assert rewound.updated_at > renamed.updated_at
    assert await store.load_session("s") == rewound
    assert await store.load_session("s", revision=5) == rewound
    assert (await store.session_history("s"))[0].kind == "rewind"


async def test_a_rewind_can_be_undone_by_another(store: SessionStore) -> None:
    session = Session(id="s", messages=[msg("a")])
    await store.save_runtime_session(session)
    session.messages.append(msg("b"))
    session.metadata = {"later": True}
    await store.save_runtime_session(session)
    full = copy.deepcopy(session)
    await store.rewind_session("s", 1)
    undone = await store.rewind_session("s", 2)
    assert undone.revision == 4
    assert (undone.messages, undone.metadata) == (full.messages, full.metadata)
    # The runtime goes on from the undone rewind: its next save appends.
    undone.messages.append(msg("c"))
    await store.save_runtime_session(undone)
    loaded = await store.load_session("s")
    assert loaded is not None and [m.id for m in loaded.messages] == ["a", "b", "c"]
    assert await history_of(store, "s") == [
        (5, "save"),
        (4, "rewind"),
        (3, "rewind"),
        (2, "save"),
        (1, "save"),
    ]


async def test_a_runtime_saving_a_stale_copy_after_a_rewind_is_a_later_revision(
    store: SessionStore,
) -> None:
    """A rewind is a write like any other: a later save (last writer wins) replaces it."""
    runtime = Session(id="s", messages=[msg("a")])
    await store.save_runtime_session(runtime)
    runtime.messages.append(msg("b"))
    await store.save_runtime_session(runtime)
    await store.rewind_session("s", 1)
    runtime.messages.append(msg("c"))
    await store.save_runtime_session(runtime)
    assert runtime.revision == 4
    loaded = await store.load_session("s")
    assert loaded is not None and [m.id for m in loaded.messages] == ["a", "b", "c"]
    rewound = await store.load_session("s", revision=3)
    assert rewound is not None and [m.id for m in rewound.messages] == ["a"]


async def test_a_rewind_of_an_unknown_session_or_revision_fails_and_writes_nothing(
    make_store: StoreFactory,
) -> None:
    async with make_store(history=2) as store:
        with pytest.raises(SessionNotFoundError):
            await store.rewind_session("nobody", 1)
        session = Session(id="s")
        for _ in range(3):
            await store.save_runtime_session(session)
        for missing in (0, 1, 4):
            with pytest.raises(RevisionNotFoundError):
                await store.rewind_session("s", missing)
        assert await history_of(store, "s") == [(3, "save"), (2, "save")]


async def test_a_checkpoint_after_a_rewind_keeps_the_rewound_transcript(
    store: SessionStore,
) -> None:
    session = Session(id="s", messages=[msg("a"), msg("b")])
    await store.save_runtime_session(session)
    await store.checkpoint_runtime_session(Session(id="s", messages=[msg("c")]))
    await store.rewind_session("s", 1)
    late = Session(id="s", messages=[msg("d")])
    await store.checkpoint_runtime_session(late)
    assert [m.id for m in late.messages] == ["a", "b", "d"]
    assert late.revision == 4


@pytest.mark.parametrize("append", ["save", "checkpoint"])
async def test_a_revision_that_grew_a_rewound_transcript_is_itself_what_a_rewind_and_a_fork_take(
    store: SessionStore, append: str
) -> None:
    """Revision 2 went on from revision 1's messages one way; revision 4, after a rewind to 1,
    another. Each stays its own: rewinding to 4 and forking 4 take [a, c], never [a, b]."""
    session = Session(id="s", messages=[msg("a")])
    await store.save_runtime_session(session)
    session.messages.append(msg("b"))
    await store.save_runtime_session(session)
    rewound = await store.rewind_session("s", 1)
    rewound.messages.append(msg("c"))
    if append == "save":
        await store.save_runtime_session(rewound)
    else:
        await store.checkpoint_runtime_session(rewound)
    assert rewound.revision == 4

    back = await store.rewind_session("s", 4)
    fork = await store.fork_session("s", "f", revision=4)

    for got in (back, await store.load_session("s"), await store.load_session("s", revision=5)):
        assert got is not None
        assert [m.id for m in got.messages] == ["a", "c"]
    loaded_fork = await store.load_session("f")
    assert loaded_fork == fork
    assert [m.id for m in fork.messages] == ["a", "c"]
    second = await store.load_session("s", revision=2)
    assert second is not None
    assert [m.id for m in second.messages] == ["a", "b"]


class _Role(str, enum.Enum):
    USER = "user"


async def test_a_checkpoint_behind_a_save_in_one_batch_gets_copies_of_its_messages(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    """The save's messages, as the checkpoint's caller is given them: copies, each field kept
    (a role of a str subclass too, stored as its value)."""
    async with make_store() as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        saved = Session(id="s", messages=[Message(id="m1", role=_Role.USER, content={"a": [1]})])
        late = Session(id="s", messages=[msg("m2")])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")  # the batch the gate holds
            await gate.wait_entered()
            nursery.start_soon(store.save_runtime_session, saved)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store.checkpoint_runtime_session, late)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        assert [m.id for m in late.messages] == ["m1", "m2"]
        assert late.messages[0] == saved.messages[0]
        assert late.messages[0] is not saved.messages[0]
        assert late.messages[0].content is not saved.messages[0].content
        loaded = await store.load_session("s")
        assert loaded == late
        assert loaded is not None
        assert [(m.id, type(m.role), m.role) for m in loaded.messages] == [
            ("m1", str, "user"),
            ("m2", str, "user"),
        ]
