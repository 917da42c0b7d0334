"""Coalesced saves, group-committed appends, bounded mailboxes and shared thread
hops, seen through statistics().

A gate holds one batch of a session in its worker thread, so the calls made
meanwhile queue in the actor's mailbox and make the next batch together.
"""

from __future__ import annotations

import copy
import fcntl
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Gate, StoreFactory

import sessionactors
from sessionactors import Message, Session


async def test_concurrent_saves_of_one_session_coalesce(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    async with make_store(durability="fsync") as store:
        await store.save_runtime_session(Session(id="s"))
        await store.set_title("s", "from the ui")
        gate = gates("s")
        callers = [
            Session(
                id="s",
                messages=[Message(id=f"m{n}", role="user", content=n)],
                runtime_state={"caller": n},
            )
            for n in range(64)
        ]
        order: list[int] = []  # the order the saves reach the mailbox

        async def save(n: int) -> None:
            order.append(n)  # no checkpoint between this and the message's send
            await store.save_runtime_session(callers[n])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")  # the batch the gate holds
            await gate.wait_entered()
            before = store.statistics()
            for n in range(64):
                nursery.start_soon(save, n)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        after = store.statistics()
        assert after.saves_requested - before.saves_requested == 64
        # 64 saves, one snapshot write: the last; each earlier one took effect and
        # was superseded, as if they had been written one after the other.
        assert after.snapshots_written - before.snapshots_written == 1
        assert after.max_mailbox_depth >= 64
        for caller in callers:  # every caller's object holds the merged metadata
            assert (caller.title, caller.title_version, caller.metadata_version) == (
                "from the ui",
                1,
                1,
            )
        stamps = [callers[n].updated_at for n in order]
        assert stamps == sorted(stamps)
        assert await store.load_session("s") == callers[order[-1]]


async def test_concurrent_appends_are_group_committed(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    async with make_store(durability="fsync") as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")

        async def appender(task: int) -> None:
            for seq in range(3):
                await store.append_token_usage_record("s", {"task": task, "seq": seq})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")
            await gate.wait_entered()
            before = store.statistics()
            for task in range(100):
                nursery.start_soon(appender, task)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        after = store.statistics()
        assert after.appends_requested - before.appends_requested == 300
        # Each task's n-th record went with the others' in one write: three writes.
        assert after.append_batches - before.append_batches == 3
        records = await store.read_token_usage("s")
        assert len(records) == 300
        for task in range(100):
            assert [r["seq"] for r in records if r["task"] == task] == [0, 1, 2]


async def test_a_full_mailbox_makes_callers_wait(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    async with make_store(mailbox_size=4) as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        results: list[Any] = []

        async def save(n: int) -> None:
            await store.save_runtime_session(Session(id="s", runtime_state={"n": n}))
            results.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "s")
            await gate.wait_entered()
            for n in range(20):
                nursery.start_soon(save, n)
            await trio.testing.wait_all_tasks_blocked()
            # The mailbox holds its 4; the other 16 callers wait in send, holding
            # their own messages: memory does not grow with the flood.
            mailbox = store._routes["s"].send.statistics()
            assert (mailbox.current_buffer_used, mailbox.tasks_waiting_send) == (4, 16)
            gate.open()
        assert sorted(results) == list(range(20))  # and every one was served


async def test_under_load_one_thread_hop_serves_many_sessions(
    make_store: StoreFactory, gates: Callable[[str], Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker thread: while the gate holds it, every other session's batch
    # waits, and the thread's next trip takes them all, each under its own lock.
    async with make_store(max_threads=1) as store:
        await store.save_runtime_session(Session(id="gate"))
        await store.save_runtime_session(Session(id="broken"))
        gate = gates("gate")
        original = sessionactors._runner.run_batch

        def run_batch(files: Any, ops: Any, **options: Any) -> Any:
            if files.session_id == "broken":
                raise RuntimeError("a bug in one batch")
            return original(files, ops, **options)

        monkeypatch.setattr(sessionactors._runner, "run_batch", run_batch)
        sessions = [Session(id=f"s{n}", runtime_state={"n": n}) for n in range(14)]
        results: dict[str, Any] = {}

        async def call(name: str, make: Callable[[], Awaitable[Any]]) -> None:
            try:
                results[name] = await make()
            except Exception as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "gate")
            await gate.wait_entered()
            before = store.statistics()
            for session in sessions:
                nursery.start_soon(call, session.id, partial(store.save_runtime_session, session))
            nursery.start_soon(call, "broken", partial(store.set_title, "broken", "x"))
            await trio.testing.wait_all_tasks_blocked()
            gate.open()
        after = store.statistics()
        assert after.batches - before.batches == 15  # the gate's and 14 saves served
        assert after.thread_hops - before.thread_hops == 2  # the gate's, then all the others
        assert after.actor_crashes - before.actor_crashes == 1
        # A batch that fails fails alone: its caller gets the crash, the others are written.
        assert isinstance(results.pop("broken"), sessionactors.ActorCrashedError)
        assert results == {session.id: None for session in sessions}
        for session in sessions:
            assert await store.load_session(session.id) == session


async def test_a_session_locked_elsewhere_does_not_hold_up_the_others(
    tmp_path: Path, gates: Callable[[str], Gate]
) -> None:
    """A batch taken along whose lock another process holds goes back to the queue."""
    async with sessionactors.open_store(tmp_path, durability="flush", max_threads=1) as store:
        for name in ("gate", "held"):
            await store.save_runtime_session(Session(id=name))
        gate = gates("gate")
        # Another process's lock on "held": flock conflicts between open files.
        holder = os.open(tmp_path / "held", os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(holder, fcntl.LOCK_EX)
        done: list[str] = []
        others = [f"s{n}" for n in range(8)]
        others_done = trio.Event()

        async def save(name: str) -> None:
            await store.save_runtime_session(Session(id=name, runtime_state={"by": "store"}))
            done.append(name)
            if set(others) <= set(done):
                others_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.load_session, "gate")
            await gate.wait_entered()
            # Queued: s0, then "held", then the others. s0's trip takes them
            # all along; "held" goes back to the queue and waits in a trip of
            # its own, while the one thread there is no longer serves anybody.
            for name in [others[0], "held", *others[1:]]:
                nursery.start_soon(save, name)
                await trio.testing.wait_all_tasks_blocked()
            gate.open()
            with trio.fail_after(10):
                await others_done.wait()
            # Every other session is saved while "held" still waits for its lock.
            assert sorted(done) == others
            os.close(holder)  # the other process lets go: "held" is saved too
        assert done[-1] == "held"
        loaded = await store.load_session("held")
        assert loaded is not None and loaded.runtime_state == {"by": "store"}


async def _batch_beside_a_nan_save(
    store: sessionactors.SessionStore,
    gates: Callable[[str], Gate],
    calls: Callable[[Session, Session], list[Callable[[], Awaitable[Any]]]],
) -> tuple[list[ValueError | None], Session, Session]:
    """A session saved, then its message changed in place to NaN (``mine``), and a copy
    taken before with a message added (``other``); ``calls(mine, other)`` made in one
    batch (see :func:`_in_one_batch`; its gate made once "s" is saved, so it holds a later
    batch). What each raised, ``mine`` and ``other``."""
    mine = Session(id="s", messages=[Message(id="m0", role="user", content={"t": 1.5})])
    await store.save_runtime_session(mine)
    other = copy.deepcopy(mine)
    other.messages.append(Message(id="m1", role="user", content="the other task's"))
    mine.messages[0].content["t"] = float("nan")  # in place
    return await _in_one_batch(store, gates("s"), calls(mine, other)), mine, other


async def _in_one_batch(
    store: sessionactors.SessionStore, gate: Gate, calls: list[Callable[[], Awaitable[Any]]]
) -> list[ValueError | None]:
    """Make ``calls``, in order, while the gate holds a batch: they form the next one.
    What each raised (a ValueError), or None."""
    errors: list[ValueError | None] = [None] * len(calls)

    async def call(n: int) -> None:
        try:
            await calls[n]()
        except ValueError as exc:
            errors[n] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.load_session, "s")  # the batch the gate holds
        await gate.wait_entered()
        for n in range(len(calls)):
            nursery.start_soon(call, n)
            await trio.testing.wait_all_tasks_blocked()
        gate.open()
    return errors


async def test_a_value_changed_in_place_to_no_json_is_never_stored_converted(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    """A checkpoint following, in one batch, a save whose message was changed in place
    to NaN takes that message as it is: the write refuses it (NaN is no JSON number),
    and nothing is stored in its place (an encoder would have written null)."""
    async with make_store() as store:
        errors, _, _ = await _batch_beside_a_nan_save(
            store,
            gates,
            lambda mine, theirs: [
                partial(store.save_runtime_session, mine),
                partial(store.checkpoint_runtime_session, theirs),
            ],
        )
        assert all(isinstance(exc, ValueError) for exc in errors)
        assert "not a JSON number" in str(errors[0])
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.messages[0].content == {"t": 1.5}
        assert [m.id for m in loaded.messages] == ["m0"]


async def test_a_save_refused_for_a_value_changed_in_place_fails_alone(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    """Three calls in one batch: another task's valid save, a token-usage append, then a
    save whose message was changed in place to NaN. The last save is refused when its
    write checks it; the write holds what was pending before it."""
    async with make_store() as store:
        errors, mine, valid = await _batch_beside_a_nan_save(
            store,
            gates,
            lambda mine, valid: [
                partial(store.save_runtime_session, valid),
                partial(store.append_token_usage_record, "s", {"tokens": 1}),
                partial(store.save_runtime_session, mine),
            ],
        )
        assert errors[:2] == [None, None]
        assert "not a JSON number" in str(errors[2])
        assert await store.load_session("s") == valid
        assert valid.revision == 2 and mine.revision == 1
        assert await store.read_token_usage("s") == [{"tokens": 1}]
