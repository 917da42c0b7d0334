"""fork_session (docs/reference.md, "Revisions and history"): a new session from any kept revision.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
What a fork costs on disk and what a crash leaves of one are file-store
tests (test_log.py, test_crash.py).
"""

from __future__ import annotations

import copy

import pytest
import trio
from conftest import StoreFactory
from support import EMPTY_TITLES, msg

from sessionactors import (
    RevisionNotFoundError,
    Session,
    SessionExistsError,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
)


async def source_session(store: SessionStore) -> Session:
    """A source with three revisions, a UI title and pin, and a usage log."""
    source = Session(
        id="src", messages=[msg("a")], metadata={"agent": "coder"}, runtime_state={"turn": 1}
    )
    await store.save_runtime_session(source)
    await store.set_title("src", "The source")
    await store.set_pinned("src", True)
    source.messages.append(msg("b", {"long": "x" * 100}))
    source.runtime_state = {"turn": 2}
    await store.save_runtime_session(source)
    await store.append_token_usage_record("src", {"model": "m", "input_tokens": 1})
    return source


async def test_a_fork_is_revision_one_of_a_new_session_naming_its_source(
    store: SessionStore,
) -> None:
    source = await source_session(store)
    fork = await store.fork_session("src", "fork")
    assert fork.id == "fork"
    assert (fork.revision, fork.forked_from, fork.forked_from_revision) == (1, "src", 4)
    assert fork.messages == source.messages
    assert (fork.metadata, fork.runtime_state) == (source.metadata, source.runtime_state)
    assert (fork.title, fork.title_version, fork.pinned, fork.metadata_version) == (
        "The source",
        0,
        False,
        0,
    )
    assert fork.created_at > source.created_at
    assert fork.updated_at == fork.created_at
    assert await store.load_session("fork") == fork
    assert await store.load_session("fork", revision=1) == fork
    (entry,) = await store.session_history("fork")
    assert (entry.revision, entry.kind, entry.message_count) == (1, "fork", 2)
    assert await store.read_token_usage("fork") == []  # the log is not copied
    summaries = {summary.id: summary for summary in await store.list_sessions()}
    assert (summaries["fork"].revision, summaries["fork"].forked_from) == (1, "src")
    assert (summaries["src"].revision, summaries["src"].forked_from) == (4, None)


async def test_a_fork_of_an_earlier_revision_with_a_title(store: SessionStore) -> None:
    await source_session(store)
    first = await store.load_session("src", revision=1)
    assert first is not None
    fork = await store.fork_session("src", "fork", revision=1, title="  Another path  ")
    assert fork.title == "Another path"
    assert fork.messages == first.messages
    assert fork.forked_from_revision == 1
    assert await store.load_session("fork") == fork


@pytest.mark.parametrize("title", EMPTY_TITLES)
async def test_a_fork_title_empty_once_stripped_is_refused(store: SessionStore, title: str) -> None:
    await source_session(store)
    with pytest.raises(ValueError):
        await store.fork_session("src", "fork", title=title)
    assert await store.load_session("fork") is None


async def test_a_taken_id_is_refused_and_nothing_changes(store: SessionStore) -> None:
    await source_session(store)
    taken = Session(id="taken", messages=[msg("mine")])
    await store.save_runtime_session(taken)
    for new_id in ("taken", "src"):
        with pytest.raises(SessionExistsError) as caught:
            await store.fork_session("src", new_id)
        assert isinstance(caught.value, FileExistsError)
        assert isinstance(caught.value, SessionStoreError)
    assert await store.load_session("taken") == taken
    assert [r.revision for r in await store.session_history("taken")] == [1]
    assert [r.revision for r in await store.session_history("src")] == [4, 3, 2, 1]


async def test_an_unknown_source_or_revision_makes_nothing(make_store: StoreFactory) -> None:
    async with make_store(history=2) as store:
        with pytest.raises(SessionNotFoundError):
            await store.fork_session("nobody", "fork")
        await source_session(store)
        for missing in (0, 1, 2, 5):
            with pytest.raises(RevisionNotFoundError):
                await store.fork_session("src", "fork", revision=missing)
        assert await store.load_session("fork") is None
        assert [summary.id for summary in await store.list_sessions()] == ["src"]


async def test_a_fork_and_its_source_are_independent(store: SessionStore) -> None:
    source = await source_session(store)
    kept_source = copy.deepcopy(source)
    fork = await store.fork_session("src", "fork")
    kept_fork = copy.deepcopy(fork)

    fork.messages.append(msg("fork only"))
    await store.save_runtime_session(fork)
    fork.messages[0].content = "edited in the fork"
    await store.save_runtime_session(fork)
    await store.set_title("fork", "Fork")
    loaded_source = await store.load_session("src")
    assert loaded_source is not None and loaded_source.messages == kept_source.messages

    source.messages.append(msg("source only"))
    await store.save_runtime_session(source)
    source.messages[0].content = "edited in the source"
    await store.save_runtime_session(source)
    await store.rewind_session("src", 1)
    assert await store.load_session("fork", revision=1) == kept_fork
    loaded_fork = await store.load_session("fork")
    assert loaded_fork is not None
    assert [m.id for m in loaded_fork.messages] == ["a", "b", "fork only"]
    assert loaded_fork.messages[0].content == "edited in the fork"
    assert (loaded_fork.forked_from, loaded_fork.forked_from_revision) == ("src", 4)


async def test_deleting_the_source_leaves_the_fork_whole(store: SessionStore) -> None:
    await source_session(store)
    fork = await store.fork_session("src", "fork")
    assert await store.delete_session("src")
    assert await store.load_session("fork") == fork
    fork.messages.append(msg("c"))
    await store.save_runtime_session(fork)
    loaded = await store.load_session("fork")
    assert loaded is not None and [m.id for m in loaded.messages] == ["a", "b", "c"]
    assert loaded.forked_from == "src"  # the lineage says where it came from, gone or not
    assert await store.load_session("fork", revision=1) is not None


async def test_a_fork_of_a_fork(store: SessionStore) -> None:
    await source_session(store)
    child = await store.fork_session("src", "child")
    child.messages.append(msg("c"))
    await store.save_runtime_session(child)
    grandchild = await store.fork_session("child", "grandchild", title="Third")
    assert [m.id for m in grandchild.messages] == ["a", "b", "c"]
    assert (grandchild.forked_from, grandchild.forked_from_revision) == ("child", 2)
    await store.delete_session("child")
    await store.delete_session("src")
    assert await store.load_session("grandchild") == grandchild


async def test_a_save_never_changes_the_lineage(store: SessionStore) -> None:
    """The runtime's copy of a fork may say nothing of its lineage: the store keeps it."""
    await source_session(store)
    await store.fork_session("src", "fork")
    runtime = Session(id="fork", messages=[msg("fresh")])
    await store.save_runtime_session(runtime)
    assert (runtime.forked_from, runtime.forked_from_revision, runtime.revision) == ("src", 4, 2)
    runtime.forked_from = "someone else"
    await store.checkpoint_runtime_session(runtime)
    assert runtime.forked_from == "src"
    assert await store.load_session("fork") == runtime


async def test_a_rewind_of_a_fork_to_its_first_revision(store: SessionStore) -> None:
    await source_session(store)
    fork = await store.fork_session("src", "fork")
    fork.messages = [msg("replaced")]
    await store.save_runtime_session(fork)
    rewound = await store.rewind_session("fork", 1)
    assert [m.id for m in rewound.messages] == ["a", "b"]
    assert (rewound.revision, rewound.forked_from, rewound.forked_from_revision) == (3, "src", 4)


async def test_many_forks_of_one_source_at_once(store: SessionStore) -> None:
    source = await source_session(store)
    made: dict[str, Session] = {}

    async def fork(n: int) -> None:
        made[f"f{n}"] = await store.fork_session("src", f"f{n}", revision=1 + n % 4)

    async def write_source() -> None:
        for step in range(10):
            source.messages.append(msg(f"s{step}"))
            await store.save_runtime_session(source)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_source)
        for n in range(20):
            nursery.start_soon(fork, n)
    for new_id, fork_made in made.items():
        assert await store.load_session(new_id) == fork_made
        expected = await store.load_session("src", revision=fork_made.forked_from_revision)
        assert expected is not None and fork_made.messages == expected.messages
