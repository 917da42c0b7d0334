"""save_runtime_session and checkpoint_runtime_session, and the merge rule through the store
(docs/reference.md: "`SessionStore`", "The merge rule").

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
The merge rule as pure functions is in test_merge.py; as a model, in
test_properties.py; what values a save refuses, in test_data_model.py.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import attrs
import pytest
import trio
import trio.testing
from conftest import StoreFactory
from support import (
    IST,
    msg,
)

from sessionactors import (
    Message,
    Session,
    SessionStore,
)

# --- saving -------------------------------------------------------------------------------


async def test_load_equals_the_callers_object_as_it_stood_after_save(store: SessionStore) -> None:
    stale = datetime(2001, 1, 1, tzinfo=timezone.utc)
    session = Session(id="eq", messages=[msg("a", "x")], updated_at=stale)
    before = datetime.now(timezone.utc)
    await store.save_runtime_session(session)
    # The store set updated_at, on the caller's object too.
    assert session.updated_at != stale
    assert session.updated_at >= before - timedelta(seconds=1)
    assert await store.load_session("eq") == session

    session.messages.append(msg("b", "y"))
    session.updated_at = stale
    await store.checkpoint_runtime_session(session)
    assert session.updated_at != stale
    assert await store.load_session("eq") == session


async def test_a_save_writes_the_transcript_as_it_stood_at_the_call(
    store: SessionStore,
) -> None:
    """A runtime's other tasks may go on appending while a save is in flight."""
    session = Session(id="s", messages=[Message(id=f"m{i}", role="user") for i in range(50)])
    await store.save_runtime_session(session)
    for round_ in range(20):
        at_call = len(session.messages) + 1
        session.messages.append(Message(id=f"r{round_}", role="user", content="x" * 1000))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.save_runtime_session, session)
            await trio.testing.wait_all_tasks_blocked()  # the save is in the actor's hands
            for extra in range(30):  # appended while the worker thread writes
                session.messages.append(Message(id=f"x{round_}-{extra}", role="user"))
        loaded = await store.load_session("s")
        assert loaded is not None  # whole: never a count that disagrees with the journal
        assert loaded.messages == session.messages[:at_call]
        del session.messages[at_call:]


async def test_saves_growing_and_editing_a_transcript_read_back_exactly(
    make_store: StoreFactory,
) -> None:
    """Appending saves, an edit by assignment, a removal and a replacement."""
    session = Session(id="grow")
    async with make_store() as store:
        for i in range(5):
            session.messages.append(msg(f"m{i}", i))
            await store.save_runtime_session(session)
            assert await store.load_session("grow") == session
        session.messages[2].content = "edited"  # assignment: noticed
        await store.save_runtime_session(session)
        assert await store.load_session("grow") == session
        del session.messages[0]
        session.messages[1] = msg("new", "replaced")
        await store.save_runtime_session(session)
        session.messages.append(msg("m9", 9))
        await store.save_runtime_session(session)
        loaded = await store.load_session("grow")
    assert loaded == session
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["m1", "new", "m3", "m4", "m9"]


async def test_two_stores_saving_in_turn_each_see_the_others_messages(
    make_store: StoreFactory,
) -> None:
    """What one store remembers of a transcript is checked against the other's writes."""
    async with make_store() as one, make_store() as two:
        a = Session(id="s", messages=[msg("a")])
        await one.save_runtime_session(a)
        b = await two.load_session("s")
        assert b is not None
        b.messages.append(msg("b"))
        await two.save_runtime_session(b)
        a.messages.append(msg("c"))
        await one.checkpoint_runtime_session(a)
        assert [m.id for m in a.messages] == ["a", "b", "c"]
        a.messages.append(msg("d"))
        await one.save_runtime_session(a)
        loaded = await two.load_session("s")
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["a", "b", "c", "d"]


async def test_two_stores_creating_one_session_at_once_both_succeed(
    make_store: StoreFactory,
) -> None:
    """Creating a session is serialized too: the second writer finds the first's row."""
    async with make_store() as one, make_store() as two:
        for i in range(40):
            session_id = f"new-{i}"
            async with trio.open_nursery() as nursery:
                for store, tag in ((one, "a"), (two, "b")):
                    session = Session(id=session_id, messages=[msg(tag)])
                    nursery.start_soon(store.save_runtime_session, session)
            loaded = await one.load_session(session_id)
            assert loaded is not None
            assert [m.id for m in loaded.messages] in (["a"], ["b"])


# --- the merge rule -----------------------------------------------------------------------


async def test_disk_group_wins_on_equal_metadata_version_and_corrects_the_caller(
    store: SessionStore,
) -> None:
    await store.save_runtime_session(Session(id="s", title="first"))
    edited = await store.set_title("s", "From the UI")
    assert (edited.title_version, edited.metadata_version) == (1, 1)

    # A runtime copy that claims the same metadata_version but carries
    # other values: only UI edits move metadata_version, so disk wins.
    runtime = Session(
        id="s", title="runtime title", title_version=1, pinned=True, metadata_version=1
    )
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "From the UI",
        1,
        False,
        1,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime


async def test_disk_group_wins_when_its_versions_are_higher(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "one")
    await store.set_title("s", "two")
    await store.set_pinned("s", True)
    # The runtime's copy has as many title edits but a lower metadata_version.
    # (A title_version above its metadata_version is refused: tests/test_values.py.)
    runtime = Session(id="s", title="stale", title_version=2, pinned=False, metadata_version=2)
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "two",
        2,
        True,
        3,
    )
    assert await store.load_session("s") == runtime


async def test_caller_group_wins_when_its_metadata_version_is_higher(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.set_title("s", "ui one")
    await store.set_title("s", "ui two")  # disk: title_version 2, metadata_version 2
    # The caller carries an edit of its own: a higher metadata_version wins as a
    # whole group, even with a lower title_version.
    runtime = Session(id="s", title="carried", title_version=1, pinned=True, metadata_version=3)
    await store.save_runtime_session(runtime)
    assert (runtime.title, runtime.title_version, runtime.pinned, runtime.metadata_version) == (
        "carried",
        1,
        True,
        3,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime


async def test_first_save_writes_the_callers_group(store: SessionStore) -> None:
    session = Session(id="new", title="given", title_version=4, pinned=True, metadata_version=9)
    await store.save_runtime_session(session)
    loaded = await store.load_session("new")
    assert loaded is not None
    assert (loaded.title, loaded.title_version, loaded.pinned, loaded.metadata_version) == (
        "given",
        4,
        True,
        9,
    )


@pytest.mark.parametrize("caller_metadata_version", [0, 1, 5])
async def test_non_authoritative_fields_always_come_from_the_caller(
    store: SessionStore, caller_metadata_version: int
) -> None:
    await store.save_runtime_session(
        Session(
            id="s",
            messages=[msg("old1"), msg("old2")],
            metadata={"old": True},
            runtime_state={"step": 1},
            created_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
        )
    )
    await store.set_title("s", "ui")  # disk metadata_version 1
    created = datetime(2021, 6, 1, 8, 0, tzinfo=IST)
    runtime = Session(
        id="s",
        metadata_version=caller_metadata_version,
        messages=[msg("new")],
        metadata={"new": [1, 2]},
        runtime_state={"step": 2},
        created_at=created,
    )
    await store.save_runtime_session(runtime)
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == [msg("new")]
    assert loaded.metadata == {"new": [1, 2]}
    assert loaded.runtime_state == {"step": 2}
    assert loaded.created_at == created
    assert loaded.created_at.utcoffset() == timedelta(hours=5, minutes=30)
    expected_title = "ui" if caller_metadata_version <= 1 else ""
    assert loaded.title == expected_title
    assert loaded == runtime


async def test_ui_rename_and_pin_survive_a_stale_runtime_save(store: SessionStore) -> None:
    runtime = Session(id="s", messages=[msg("u0", "hello")])
    await store.save_runtime_session(runtime)
    stale = attrs.evolve(runtime, messages=list(runtime.messages))  # the runtime's old copy

    await store.set_title("s", "Named by the user")
    await store.set_pinned("s", True)

    stale.messages.append(msg("a0", {"text": "hi"}))
    stale.messages.append(msg("u1", "more"))
    stale.runtime_state = {"step": 1}
    await store.save_runtime_session(stale)

    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.title == "Named by the user"
    assert loaded.pinned is True
    assert (loaded.title_version, loaded.metadata_version) == (1, 2)
    assert [m.id for m in loaded.messages] == ["u0", "a0", "u1"]
    assert loaded.runtime_state == {"step": 1}
    # The runtime's object now carries the UI's values, so its next save keeps them too.
    assert loaded == stale
    stale.messages.append(msg("a1"))
    await store.save_runtime_session(stale)
    again = await store.load_session("s")
    assert again is not None
    assert (again.title, again.pinned, again.metadata_version) == ("Named by the user", True, 2)


async def test_ui_edits_through_another_store_survive_a_stale_runtime_save(
    make_store: StoreFactory,
) -> None:
    async with make_store() as runtime_store, make_store() as ui_store:
        runtime = Session(id="shared", messages=[msg("u0")])
        await runtime_store.save_runtime_session(runtime)
        await ui_store.set_title("shared", "From the other store")
        await ui_store.set_pinned("shared", True)
        runtime.messages.append(msg("a0"))
        await runtime_store.save_runtime_session(runtime)
        assert (runtime.title, runtime.pinned, runtime.metadata_version) == (
            "From the other store",
            True,
            2,
        )
        for s in (runtime_store, ui_store):
            loaded = await s.load_session("shared")
            assert loaded == runtime


# --- transcripts: checkpoint vs save ------------------------------------------------------


async def test_checkpoint_never_shrinks_the_transcript(store: SessionStore) -> None:
    await store.save_runtime_session(
        Session(id="s", messages=[msg("a", 1), msg("b", 2), msg("c", 3)])
    )
    runtime = Session(
        id="s",
        messages=[msg("c", "edited"), msg("d", 4), msg("a", "edited"), msg("e", 5)],
        runtime_state={"step": 9},
    )
    their_list = runtime.messages
    await store.checkpoint_runtime_session(runtime)

    expected = [msg("a", 1), msg("b", 2), msg("c", 3), msg("d", 4), msg("e", 5)]
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == expected
    assert loaded.runtime_state == {"step": 9}
    # Updated in place: the same list object, now holding the merged transcript.
    assert runtime.messages is their_list
    assert their_list == expected
    assert loaded == runtime

    # A checkpoint of a shorter (or empty) transcript removes nothing.
    await store.checkpoint_runtime_session(Session(id="s", messages=[msg("f", 6)]))
    await store.checkpoint_runtime_session(Session(id="s", messages=[]))
    loaded = await store.load_session("s")
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["a", "b", "c", "d", "e", "f"]


async def test_checkpoint_of_a_new_session_writes_its_transcript(store: SessionStore) -> None:
    session = Session(id="fresh", messages=[msg("x"), msg("y")])
    await store.checkpoint_runtime_session(session)
    loaded = await store.load_session("fresh")
    assert loaded == session
    assert [m.id for m in session.messages] == ["x", "y"]


async def test_checkpoint_follows_the_merge_rule(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    await store.set_title("s", "ui")
    await store.set_pinned("s", True)
    runtime = Session(id="s", title="stale", messages=[msg("b")])
    await store.checkpoint_runtime_session(runtime)
    assert (runtime.title, runtime.pinned, runtime.title_version, runtime.metadata_version) == (
        "ui",
        True,
        1,
        2,
    )
    loaded = await store.load_session("s")
    assert loaded == runtime
    assert [m.id for m in runtime.messages] == ["a", "b"]


async def test_save_may_replace_and_shrink_the_transcript(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a"), msg("b"), msg("c")]))
    replacement = Session(id="s", messages=[msg("z", "only")])
    await store.save_runtime_session(replacement)
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == [msg("z", "only")]
    assert replacement.messages == [msg("z", "only")]
    await store.save_runtime_session(Session(id="s"))
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages == []


async def test_a_checkpoint_after_another_store_made_the_session_anew_keeps_its_messages(
    make_store: StoreFactory,
) -> None:
    """What one store knows of a transcript never outlives a delete by another."""
    async with make_store() as one, make_store() as two:
        first = Session(id="s", messages=[msg("m1"), msg("m2")])
        await one.checkpoint_runtime_session(first)
        assert await two.delete_session("s") is True
        await two.save_runtime_session(Session(id="s", messages=[msg("x")]))
        first.messages.append(msg("m3"))
        await one.checkpoint_runtime_session(first)
        loaded = await two.load_session("s")
    assert loaded is not None
    assert [m.id for m in loaded.messages] == ["x", "m1", "m2", "m3"]


async def test_a_saved_message_changed_in_place_to_no_json_value_is_refused(
    store: SessionStore,
) -> None:
    """A nested change made in place after a save is checked by the next save, as an edit is."""
    session = Session(id="s", messages=[msg("m1", {"t": 1.5})])
    await store.save_runtime_session(session)
    before = copy.deepcopy(session)
    session.messages[0].content["t"] = float("nan")  # in place
    session.messages.append(msg("m2"))
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\['t'\]"):
        await store.save_runtime_session(session)
    assert await store.load_session("s") == before
    session.messages[0].content["t"] = 2.5
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session
