"""The two private calls ``sessionactors.agents`` makes each turn, on every backend.

``_load_tail(id, count)`` gives the session with its last ``count`` messages
only, and ``_checkpoint_new(session)`` appends ``session``'s new messages
without giving the transcript back. Both must agree with the public calls:
a tail is the end of what ``load_session`` gives, with the same fields, also
when it reaches into a fork's or a rewind's base; an add is what
``checkpoint_runtime_session`` persists, whoever else wrote meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from conftest import StoreFactory
from support import current_generation, log_records, msg

from sessionactors import CorruptSessionError, Session, SessionStore


def without_messages(session: Session | None) -> Session:
    assert session is not None
    return attrs.evolve(session, messages=[])


async def a_session_of_revisions(store: SessionStore, session_id: str = "s") -> Session:
    """Four revisions: a save, a UI title, a checkpoint adding messages, a runtime state change."""
    session = Session(id=session_id, messages=[msg(f"m{n}", {"n": n}) for n in range(5)])
    await store.save_runtime_session(session)
    await store.set_title(session_id, "Named by the UI")
    session.messages.extend(msg(f"m{n}", "x" * n) for n in range(5, 9))
    await store.checkpoint_runtime_session(session)
    session.runtime_state = {"turn": 3}
    await store.save_runtime_session(session)
    return session


@pytest.mark.parametrize("count", [0, 1, 3, 9, 50])
async def test_a_tail_is_the_end_of_the_session_with_every_field(
    store: SessionStore, count: int
) -> None:
    await a_session_of_revisions(store)
    whole = await store.load_session("s")
    tail = await store._load_tail("s", count)
    assert whole is not None and tail is not None
    assert tail.messages == whole.messages[max(0, 9 - count) :]
    assert without_messages(tail) == without_messages(whole)
    assert (tail.title, tail.revision, tail.runtime_state) == ("Named by the UI", 4, {"turn": 3})


async def test_a_tail_reaching_into_a_fork_or_a_rewind_base_is_whole(store: SessionStore) -> None:
    await a_session_of_revisions(store)
    fork = await store.fork_session("s", "f")
    fork.messages.append(msg("own"))
    await store.save_runtime_session(fork)
    rewound = await store.rewind_session("s", 1)
    rewound.messages.append(msg("after-rewind"))
    await store.save_runtime_session(rewound)
    for session_id in ("f", "s"):
        whole = await store.load_session(session_id)
        assert whole is not None
        for count in (1, 2, 5, len(whole.messages), len(whole.messages) + 1):
            tail = await store._load_tail(session_id, count)
            assert tail is not None
            assert tail.messages == whole.messages[-count:]
            assert without_messages(tail) == without_messages(whole)


async def test_a_tail_of_no_session_is_none_and_a_bad_count_is_refused(
    store: SessionStore,
) -> None:
    assert await store._load_tail("nobody", 5) is None
    for count in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="count"):
            await store._load_tail("s", count)  # type: ignore[arg-type]


async def test_new_messages_are_appended_and_not_given_back(store: SessionStore) -> None:
    await a_session_of_revisions(store)
    fields = without_messages(await store._load_tail("s", 0))
    new = [msg("n1"), msg("n2")]
    adding = attrs.evolve(fields, messages=list(new))
    await store._checkpoint_new(adding)
    assert adding.messages == new  # its own messages, not the transcript
    assert adding.revision == 5
    persisted = await store.load_session("s")
    assert persisted is not None
    assert [m.id for m in persisted.messages] == [f"m{n}" for n in range(9)] + ["n1", "n2"]
    assert persisted.title == "Named by the UI"  # the UI's edit is kept
    assert adding.updated_at == persisted.updated_at


async def test_a_message_already_persisted_is_not_appended_twice(store: SessionStore) -> None:
    await a_session_of_revisions(store)
    fields = without_messages(await store._load_tail("s", 0))
    await store._checkpoint_new(attrs.evolve(fields, messages=[msg("m3"), msg("n1")]))
    await store._checkpoint_new(attrs.evolve(fields, messages=[msg("n1"), msg("n2")]))
    persisted = await store.load_session("s")
    assert persisted is not None
    assert [m.id for m in persisted.messages] == [f"m{n}" for n in range(9)] + ["n1", "n2"]


@pytest.mark.parametrize("backend", ["file", "postgres"])  # a memory store is not shared
async def test_adds_keep_what_another_store_wrote_in_between(make_store: StoreFactory) -> None:
    async with make_store() as first, make_store() as second:
        await first.save_runtime_session(Session(id="s", messages=[msg("a")]))
        fields = without_messages(await first._load_tail("s", 0))
        await first._checkpoint_new(attrs.evolve(fields, messages=[msg("b")]))
        await second._checkpoint_new(attrs.evolve(fields, messages=[msg("c")]))
        await first._checkpoint_new(attrs.evolve(fields, messages=[msg("d")]))
        await second._checkpoint_new(attrs.evolve(fields, messages=[msg("e")]))
        for store in (first, second):
            persisted = await store.load_session("s")
            assert persisted is not None
            assert [m.id for m in persisted.messages] == ["a", "b", "c", "d", "e"]
            tail = await store._load_tail("s", 2)
            assert tail is not None and [m.id for m in tail.messages] == ["d", "e"]


# --- the file store reads a tail from the end of its log -----------------------------------


@pytest.mark.parametrize("backend", ["file"])
async def test_a_long_tail_is_read_across_windows(
    make_store: StoreFactory, disk: Path | None
) -> None:
    assert disk is not None
    async with make_store() as store:
        session = Session(id="s")
        for n in range(150):  # ~1 KB a message, a commit after each: far beyond one window
            session.messages.append(msg(f"m{n}", "y" * 1000))
            await store.save_runtime_session(session)
        whole = await store.load_session("s")
        assert whole is not None
        for count in (100, 149, 150, 151):
            tail = await store._load_tail("s", count)
            assert tail is not None and tail.messages == whole.messages[-count:]


@pytest.mark.parametrize("backend", ["file"])
async def test_a_damaged_record_in_the_tail_is_corruption(
    make_store: StoreFactory, disk: Path | None
) -> None:
    assert disk is not None
    async with make_store() as store:
        session = Session(id="s", messages=[msg(f"m{n}") for n in range(4)])
        await store.save_runtime_session(session)
    path = current_generation(disk / "s")
    *_, end = [r for r in log_records(path) if r[0] == b"m"][-1]
    data = bytearray(path.read_bytes())
    data[end - 3] ^= 1  # a byte of the last message's JSON: its checksum no longer matches
    path.write_bytes(bytes(data))
    async with make_store() as store:
        with pytest.raises(CorruptSessionError, match="checksum"):
            await store._load_tail("s", 1)
        with pytest.raises(CorruptSessionError):
            await store.load_session("s")
