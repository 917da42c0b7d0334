"""``store.watch`` under load and across processes (docs/reference.md, "Watching changes").

- Other processes' writes reach a watch (file store and PostgreSQL; children
  in ``children/watch_writer.py``): every session's last revision, or its
  delete, arrives, and no revision comes twice or out of order.
- "Never misses the last": 1,000 rapid saves of one session, and 1,000
  spread over 50 sessions (half of them with a token-usage record after each
  save), by several tasks, while the watcher reads slowly; once the writers
  return, each session's final revision arrives, revisions only increasing.
- The bound: an unread watch while 10,000 writes over 20 sessions go on
  holds at most three changes a session (``statistics()`` of the object the
  watch yields), the writers all finish, and what it holds ends with each
  session's final state.

The basics of a watch (kinds, one session, leaving the block): test_watch.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from conftest import StoreFactory
from shared_children import run_together
from test_watch import WAIT, check_order, watching

import sessionactors
from sessionactors import Change, Message, Session, SessionStore

CHILD = Path(__file__).parent / "children" / "watch_writer.py"
CHILDREN = 3
CHILD_SESSIONS = 4
CHILD_WRITES = 40


def final_seen(changes: list[Change], session_id: str, final: int | None) -> bool:
    """Whether ``changes`` hold ``final`` (a revision; None: deleted) or a later one."""
    if final is None:
        return Change(session_id, "delete", None) in changes
    return any(
        c.session_id == session_id and c.revision is not None and c.revision >= final
        for c in changes
    )


async def run_writers(location: str | Path, workdir: Path) -> list[dict[str, int | None]]:
    """Run the children at once; each one's report of its last revisions."""
    names = [f"p{n}" for n in range(CHILDREN)]
    sizes = [str(CHILD_SESSIONS), str(CHILD_WRITES)]
    commands = {name: [str(CHILD), name, str(location), *sizes] for name in names}
    outputs = await run_together(commands, workdir)
    return [json.loads(outputs[name]) for name in names]


@pytest.mark.parametrize("backend", ["file", "postgres"])
async def test_writes_of_other_processes_reach_a_watch(
    location: str | Path, tmp_path: Path
) -> None:
    async with (
        sessionactors.open_store(location, durability="flush") as store,
        watching(store, pause=0.001) as watcher,
        watching(store, "shared") as of_shared,
        watching(store, "p0-1") as of_deleted,
    ):
        reports = await run_writers(location, tmp_path)
        finals: dict[str, int | None] = {}
        for report in reports:
            for session_id, final in report.items():
                if session_id == "shared":
                    assert final is not None
                    final = max(final, finals.get("shared") or 0)
                finals[session_id] = final
        assert len(finals) == CHILDREN * CHILD_SESSIONS + 1
        for session_id, final in finals.items():
            await watcher.wait_for(lambda c, s=session_id, f=final: final_seen(c, s, f))
        await of_shared.wait_for(lambda c: final_seen(c, "shared", finals["shared"]))
        await of_deleted.wait_for(lambda c: final_seen(c, "p0-1", None))
        for seen in (watcher, of_shared, of_deleted):
            await seen.drained()
        history: dict[str, dict[int, str]] = {}
        for session_id, final in finals.items():
            if final is not None:
                entries = await store.session_history(session_id)
                history[session_id] = {entry.revision: entry.kind for entry in entries}
    for seen in (watcher.changes, of_shared.changes, of_deleted.changes):
        check_order(seen)
    assert {c.session_id for c in of_shared.changes} == {"shared"}
    assert {c.session_id for c in of_deleted.changes} == {"p0-1"}
    for change in watcher.changes:  # each revision handed out is that revision, of its kind
        if change.revision is not None and change.session_id in history:
            kept = history[change.session_id]  # the newest 100 of each
            assert kept.get(change.revision, change.kind) == change.kind, change
    assert {c.kind for c in watcher.changes} == {"save", "title", "usage", "delete"}


async def saves_of_one_session(store: SessionStore, tasks: int, saves: int) -> int:
    """``saves`` saves of ``s``, by ``tasks`` tasks at once; the last revision written."""
    written: list[int] = []

    async def writer(n: int) -> None:
        for step in range(saves // tasks):
            session = Session(id="s", messages=[Message(id=f"{n}-{step}", role="user", content=0)])
            await store.save_runtime_session(session)
            written.append(session.revision)

    async with trio.open_nursery() as nursery:
        for n in range(tasks):
            nursery.start_soon(writer, n)
    return max(written)


async def test_a_slow_watcher_never_misses_the_last_save_of_a_session(
    store: SessionStore,
) -> None:
    async with watching(store, pause=0.01) as watcher, watching(store, "s", pause=0.01) as of_s:
        with trio.fail_after(60):
            final = await saves_of_one_session(store, tasks=4, saves=1000)
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.revision == final
        for seen in (watcher, of_s):
            await seen.wait_for(lambda c: Change("s", "save", final) in c)
            await seen.drained()
    for seen in (watcher, of_s):
        check_order(seen.changes)
        assert seen.changes[-1] == Change("s", "save", final)
        assert {c.kind for c in seen.changes} == {"save"}
        assert len(seen.changes) < 1000  # it did fall behind: later revisions came instead


async def test_a_slow_watcher_never_misses_the_last_save_of_each_of_many_sessions(
    store: SessionStore,
) -> None:
    sessions = [f"s{n:02}" for n in range(50)]
    finals: dict[str, int] = {}

    async def writer(n: int) -> None:
        for step in range(100):  # 10 tasks: 1,000 saves, 20 a session
            session_id = sessions[(n * 7 + step) % 50]
            session = Session(id=session_id, metadata={"writer": n, "step": step})
            await store.save_runtime_session(session)
            finals[session_id] = max(finals.get(session_id, 0), session.revision)
            if session_id.endswith(("0", "2", "4", "6", "8")):  # and usage after the save
                await store.append_token_usage_record(session_id, {"writer": n})

    async with watching(store, pause=0.005) as watcher:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(writer, n)
        for session_id, final in finals.items():
            await watcher.wait_for(lambda c, s=session_id, f=final: Change(s, "save", f) in c)
        await watcher.drained()
    check_order(watcher.changes)
    assert {c.session_id for c in watcher.changes} == set(sessions)
    assert {c.kind for c in watcher.changes} == {"save", "usage"}


async def test_an_unread_watch_holds_at_most_three_changes_a_session(
    make_store: StoreFactory,
) -> None:
    sessions = [f"s{n:02}" for n in range(20)]
    async with make_store() as store:
        for session_id in sessions:
            await store.save_runtime_session(Session(id=session_id))
        async with store.watch() as changes:
            most = 0
            writing = True

            async def sample() -> None:
                nonlocal most
                while writing:
                    most = max(most, changes.statistics())  # type: ignore[attr-defined]
                    await trio.sleep(0.001)

            async def writer(session_id: str, n: int) -> None:
                for step in range(20):  # 20 sessions x 25 tasks x 20: 10,000 writes
                    if step % 2:
                        await store.append_token_usage_record(session_id, {"n": n})
                    else:
                        await store.save_runtime_session(Session(id=session_id))

            with trio.fail_after(60):
                async with trio.open_nursery() as sampler:
                    sampler.start_soon(sample)
                    async with trio.open_nursery() as nursery:
                        for session_id in sessions:
                            for n in range(25):
                                nursery.start_soon(writer, session_id, n)
                    # Then a delete, or a delete, a save and usage: all three kinds pending.
                    for session_id in sessions[0::4]:
                        await store.delete_session(session_id)
                    for session_id in sessions[1::4]:
                        await store.delete_session(session_id)
                        await store.save_runtime_session(Session(id=session_id))
                        await store.append_token_usage_record(session_id, {"n": -1})
                    await trio.sleep(
                        1.5
                    )  # the feed catches up (a file index is re-read each second)
                    writing = False
            finals: dict[str, int | None] = {}
            for session_id in sessions:
                loaded = await store.load_session(session_id)
                finals[session_id] = None if loaded is None else loaded.revision
            assert sorted(f for f in finals.values() if f is not None)[-1] > 10
            held = changes.statistics()  # type: ignore[attr-defined]
            assert most <= 3 * len(sessions), most
            assert len(sessions) <= held <= 3 * len(sessions), held
            # What it held ends with each session's final state.
            got: list[Change] = []
            with trio.fail_after(WAIT):
                async for change in changes:
                    got.append(change)
                    if changes.statistics() == 0 and all(  # type: ignore[attr-defined]
                        final_seen(got, s, f) for s, f in finals.items()
                    ):
                        break
    check_order(got)
    for session_id in sessions[1::4]:
        assert [c for c in got if c.session_id == session_id][-2:] == [
            Change(session_id, "save", 1),
            Change(session_id, "usage", None),
        ]
