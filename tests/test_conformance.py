"""Contract tests that test_store.py and test_lifecycle.py do not already hold.

The contract (docs/reference.md) is checked once for both backends in test_store.py and
test_lifecycle.py: their tests take ``store`` or ``make_store`` (see
conftest.py), parametrized over the file store and PostgreSQL. Here are only
the transcript cases they do not cover, on both backends too.
"""

from __future__ import annotations

from typing import Any

import trio
from conftest import StoreFactory

from sessionactors import Message, Session


def msg(message_id: str, content: Any = None) -> Message:
    return Message(id=message_id, role="user", content=content)


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
