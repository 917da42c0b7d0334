"""Actor lifecycle: idle retirement, draining on close, cancellation, crashed actors.

Every test runs once for each backend (the file store and PostgreSQL; see
conftest.py). The actor runs its batches through ``sessionactors._runner.run_batch``
whichever backend stores them, so the tests that hold or break a batch there
(``Gate``, the crashing actor) are backend-generic too.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import outcome
import pytest
import trio
import trio.testing
from conftest import Gate, StoreFactory
from support import msg

import sessionactors
import sessionactors._batch
import sessionactors._messages
import sessionactors._runner
from sessionactors import (
    ActorCrashedError,
    Session,
    SessionStore,
    SessionStoreError,
    StoreClosedError,
)

IDLE = 5.0
HANG_GUARD = 60.0  # seconds: a test that would wait forever for an answer fails instead


@asynccontextmanager
async def guarded_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery (real clock only) that fails, instead of hanging, if an answer never comes."""
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            yield nursery


def ids(session: Session | None) -> list[str]:
    assert session is not None
    return [m.id for m in session.messages]


# --- idle retirement ----------------------------------------------------------------------


async def test_idle_actors_retire_and_respawn(
    autojump_clock: trio.testing.MockClock, make_store: StoreFactory
) -> None:
    async with make_store(idle_timeout=IDLE) as store:
        assert store.statistics().live_actors == 0
        session = Session(id="a", messages=[msg("1")])
        await store.save_runtime_session(session)
        assert store.statistics().live_actors == 1

        await trio.sleep(IDLE - 0.5)
        assert store.statistics().live_actors == 1  # not idle long enough yet
        await trio.sleep(1.0)
        assert store.statistics().live_actors == 0

        # The next call gets a fresh actor, which sees everything.
        assert await store.load_session("a") == session
        assert store.statistics().live_actors == 1
        session.messages.append(msg("2"))
        await store.checkpoint_runtime_session(session)
        await trio.sleep(IDLE + 1)
        assert store.statistics().live_actors == 0
        assert ids(await store.load_session("a")) == ["1", "2"]


async def test_live_actors_return_to_zero_after_many_sessions(
    autojump_clock: trio.testing.MockClock, make_store: StoreFactory
) -> None:
    async with make_store(idle_timeout=IDLE) as store:
        for i in range(30):
            await store.save_runtime_session(Session(id=f"s{i}"))
            await store.append_token_usage_record(f"s{i}", {"i": i})
        assert store.statistics().live_actors >= 1
        await trio.sleep(IDLE + 1)
        assert store.statistics().live_actors == 0
        assert len(await store.list_sessions()) == 30
        for i in range(30):
            assert await store.read_token_usage(f"s{i}") == [{"i": i}]
        await trio.sleep(IDLE + 1)
        assert store.statistics().live_actors == 0


@pytest.mark.parametrize("offset", [0.0, -1e-6, 1e-6])
async def test_messages_sent_at_the_idle_deadline_are_not_lost(
    autojump_clock: trio.testing.MockClock, make_store: StoreFactory, offset: float
) -> None:
    async with make_store(idle_timeout=IDLE) as store:
        runtime = Session(id="s")
        await store.save_runtime_session(runtime)
        expected_messages: list[str] = []
        expected_records: list[int] = []

        for round_ in range(12):
            # The actor started waiting for its next message just now (no
            # virtual time passes between its answer and this line), so this
            # wakes at its idle deadline, plus the offset.
            await trio.sleep(IDLE + offset)

            async def append(n: int) -> None:
                await store.append_token_usage_record("s", {"n": n})

            async with trio.open_nursery() as nursery:
                for j in range(3):
                    nursery.start_soon(append, round_ * 10 + j)
                runtime.messages.append(msg(f"r{round_}"))
                await store.checkpoint_runtime_session(runtime)
            expected_messages.append(f"r{round_}")
            expected_records.extend(round_ * 10 + j for j in range(3))

        assert ids(await store.load_session("s")) == expected_messages
        records = [r["n"] for r in await store.read_token_usage("s")]
        assert sorted(records) == expected_records


# --- leaving open_store ----------------------------------------------------------------------


def _check_closed_calls() -> list[Callable[[SessionStore], Awaitable[object]]]:
    return [
        lambda s: s.save_runtime_session(Session(id="s0")),
        lambda s: s.checkpoint_runtime_session(Session(id="brand-new")),
        lambda s: s.append_token_usage_record("s0", {"late": True}),
        lambda s: s.read_token_usage("s0"),
        lambda s: s.load_session("s0"),
        lambda s: s.load_session("never-routed"),
        lambda s: s.list_sessions(),
        lambda s: s.delete_session("s0"),
        lambda s: s.set_title("s0", "late"),
        lambda s: s.set_pinned("s0", True),
    ]


@attrs.define
class Workload:
    """Many calls on three sessions, each recording what it got back."""

    results: dict[int, object] = attrs.field(factory=dict)
    count: int = 60

    async def call(self, store: SessionStore, i: int) -> None:
        sid = f"s{i % 3}"
        try:
            kind = i % 4
            if kind == 0:
                await store.append_token_usage_record(sid, {"i": i})
            elif kind == 1:
                await store.checkpoint_runtime_session(Session(id=sid, messages=[msg(f"m{i}")]))
            elif kind == 2:
                await store.set_title(sid, f"title {i}")
            else:
                await store.load_session(sid)
        except BaseException as exc:
            self.results[i] = exc
            raise
        self.results[i] = "ok"

    def start(self, nursery: trio.Nursery, store: SessionStore) -> None:
        for i in range(self.count):
            nursery.start_soon(self.call, store, i)

    async def check(self, make_store: StoreFactory) -> None:
        assert self.results == dict.fromkeys(range(self.count), "ok")
        async with make_store() as store:
            for n in range(3):
                sid = f"s{n}"
                mine = [i for i in range(self.count) if i % 3 == n]
                records = await store.read_token_usage(sid)
                assert sorted(r["i"] for r in records if "i" in r) == [
                    i for i in mine if i % 4 == 0
                ]
                loaded = await store.load_session(sid)
                assert loaded is not None
                assert sorted(ids(loaded)) == sorted(
                    ["base"] + [f"m{i}" for i in mine if i % 4 == 1]
                )
                assert loaded.title_version == len([i for i in mine if i % 4 == 2])


async def _prepare(store: SessionStore) -> None:
    for n in range(3):
        await store.save_runtime_session(Session(id=f"s{n}", messages=[msg("base")]))


async def test_leaving_the_store_drains_accepted_calls_then_refuses(
    make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    work = Workload()
    async with guarded_nursery() as nursery:
        async with make_store() as store:
            await _prepare(store)
            # One session's actor is busy in its worker thread as the block is left.
            gate = gates("s1")
            held = trio.Event()

            async def held_call() -> None:
                await store.append_token_usage_record("s1", {"held": True})
                held.set()

            nursery.start_soon(held_call)
            await gate.wait_entered()
            work.start(nursery, store)
            # Every caller has sent its message and waits for the answer.
            await trio.testing.wait_all_tasks_blocked()

            async def open_gate_when_close_waits() -> None:
                await trio.testing.wait_all_tasks_blocked()
                gate.open()

            nursery.start_soon(open_gate_when_close_waits)
        # The block is left: every accepted call was answered, every actor retired.
        assert store.statistics().live_actors == 0
        for call in _check_closed_calls():
            with pytest.raises(StoreClosedError) as info:
                await call(store)
            assert isinstance(info.value, SessionStoreError)
    assert held.is_set()
    await work.check(make_store)


async def test_leaving_the_store_under_autojump_clock_drains_accepted_calls(
    autojump_clock: trio.testing.MockClock, make_store: StoreFactory, gates: Callable[[str], Gate]
) -> None:
    # Users test their runtimes with autojump_clock. Virtual time then runs
    # ahead whenever every task waits, a worker thread's file work included:
    # a drain bounded by a deadline on trio's clock would drop accepted calls.
    results: dict[int, object] = {}

    async def append(store: SessionStore, i: int) -> None:
        try:
            await store.append_token_usage_record("s", {"i": i})
        except Exception as exc:
            results[i] = exc
        else:
            results[i] = "ok"

    # A batch with real work in its thread (a few MB, fsynced): what a runtime's
    # save costs, and long enough in real time for virtual time to run ahead.
    big = Session(id="s", messages=[msg("a")], runtime_state={"blob": "x" * 4_000_000})

    async def finish_the_batch_soon() -> None:
        await trio.sleep(0.001)
        gate.open()

    async with trio.open_nursery() as nursery, make_store(durability="fsync") as store:
        await store.save_runtime_session(Session(id="s"))
        gate = gates("s")
        nursery.start_soon(store.save_runtime_session, big)
        await gate.wait_entered()  # that save's batch is in its worker thread
        for i in range(20):
            nursery.start_soon(append, store, i)
        await trio.testing.wait_all_tasks_blocked()  # all 20 accepted, queued
        nursery.start_soon(finish_the_batch_soon)
    assert results == dict.fromkeys(range(20), "ok")
    async with make_store() as store:
        assert sorted(r["i"] for r in await store.read_token_usage("s")) == list(range(20))
        assert ids(await store.load_session("s")) == ["a"]


async def test_an_exception_in_the_body_still_lets_accepted_calls_finish(
    make_store: StoreFactory,
) -> None:
    class Boom(Exception):
        pass

    work = Workload()
    async with guarded_nursery() as nursery:
        with pytest.raises(Boom):
            async with make_store() as store:
                await _prepare(store)
                work.start(nursery, store)
                await trio.testing.wait_all_tasks_blocked()
                raise Boom
        # The body's exception comes out as it is (not in a group, though the
        # store owns a nursery), so `except Boom:` around the block catches it.
        for call in _check_closed_calls():
            with pytest.raises(StoreClosedError):
                await call(store)
    await work.check(make_store)


async def test_a_cancelled_body_still_lets_accepted_calls_finish(
    make_store: StoreFactory,
) -> None:
    work = Workload()
    async with guarded_nursery() as nursery:
        with trio.CancelScope() as scope:
            async with make_store() as store:
                await _prepare(store)
                work.start(nursery, store)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
    await work.check(make_store)


# --- cancellation ------------------------------------------------------------------------------


async def _assert_whole(store: SessionStore, session_id: str) -> Session:
    """The session loads, and the store still serves it: a fresh save lands."""
    loaded = await store.load_session(session_id)
    assert loaded is not None
    probe = f"probe-{len(loaded.messages)}"
    copy = attrs.evolve(loaded, messages=[*loaded.messages, msg(probe)])
    await store.checkpoint_runtime_session(copy)
    again = await store.load_session(session_id)
    assert again is not None
    assert ids(again) == [*ids(loaded), probe]
    return loaded


def _all_or_none(before: list[str], after: list[str], added: list[str]) -> bool:
    return after in (before, before + added)


async def test_cancelled_before_sending_takes_full_effect_or_none(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    runtime = Session(id="s", messages=[msg("a"), msg("b"), msg("c")])
    original = list(runtime.messages)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.checkpoint_runtime_session(runtime)
    assert scope.cancelled_caught  # every method is a checkpoint
    loaded = await _assert_whole(store, "s")
    assert _all_or_none(["a"], ids(loaded), ["b", "c"])
    if ids(loaded) == ["a"]:
        assert runtime.messages == original

    # A pre-cancelled first save of a session: all of it or nothing at all.
    fresh = Session(id="fresh", messages=[msg("x")])
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save_runtime_session(fresh)
    loaded_fresh = await store.load_session("fresh")
    assert loaded_fresh is None or ids(loaded_fresh) == ["x"]
    await store.save_runtime_session(fresh)
    assert await store.load_session("fresh") == fresh


async def test_cancelled_while_queued_takes_full_effect_or_none(
    store: SessionStore, gates: Callable[[str], Gate]
) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    await store.append_token_usage_record("s", {"n": 0})
    gate = gates("s")
    first = Session(id="s", messages=[msg("b")])
    queued = Session(id="s", messages=[msg("c"), msg("d"), msg("e")])
    scopes = [trio.CancelScope(), trio.CancelScope()]
    ended: dict[str, list[str]] = {}  # what each cancelled call had left when it ended

    async def queued_checkpoint() -> None:
        with scopes[0]:
            await store.checkpoint_runtime_session(queued)
        ended["checkpoint"] = ids(queued)

    async def queued_append() -> None:
        with scopes[1]:
            await store.append_token_usage_record("s", {"n": 1})
        ended["append"] = []

    async with guarded_nursery() as nursery:
        nursery.start_soon(store.checkpoint_runtime_session, first)
        await gate.wait_entered()  # the first checkpoint's batch is running
        nursery.start_soon(queued_checkpoint)
        nursery.start_soon(queued_append)
        await trio.testing.wait_all_tasks_blocked()  # both queued behind it
        for scope in scopes:
            scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        ended_before_the_batch = dict(ended)
        gate.open()

    loaded = await _assert_whole(store, "s")
    records = await store.read_token_usage("s")
    assert _all_or_none(["a", "b"], ids(loaded), ["c", "d", "e"])
    assert records in ([{"n": 0}], [{"n": 0}, {"n": 1}])
    # A call that ended while nothing of it had run yet took no effect: it must
    # not take one later behind its caller's back (a retry would double it).
    if "checkpoint" in ended_before_the_batch:
        assert ids(loaded) == ["a", "b"]
        assert ids(queued) == ["c", "d", "e"]
    else:
        assert ids(queued) == ended["checkpoint"]
        assert ids(queued) in (["c", "d", "e"], ids(loaded))
    if "append" in ended_before_the_batch:
        assert records == [{"n": 0}]


async def test_cancelled_while_its_batch_runs_takes_full_effect_or_none(
    store: SessionStore, gates: Callable[[str], Gate]
) -> None:
    await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
    await store.append_token_usage_record("s", {"n": 0})
    gate = gates("s")
    runtime = Session(id="s", messages=[msg("b"), msg("c")])
    scopes = [trio.CancelScope(), trio.CancelScope()]
    ended: dict[str, list[str]] = {}

    async def checkpoint() -> None:
        with scopes[0]:
            await store.checkpoint_runtime_session(runtime)
        ended["checkpoint"] = ids(runtime)

    async def append() -> None:
        with scopes[1]:
            await store.append_token_usage_record("s", {"n": 1})
        ended["append"] = []

    async with guarded_nursery() as nursery:
        nursery.start_soon(checkpoint)
        await gate.wait_entered()  # its batch is running (held in the worker thread)
        nursery.start_soon(append)
        await trio.testing.wait_all_tasks_blocked()
        for scope in scopes:
            scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        ended_before_the_batch = dict(ended)
        gate.open()

    # The checkpoint's batch was running: the call waited for it (full effect,
    # on the caller's object too), then the cancel landed.
    assert "checkpoint" not in ended_before_the_batch
    assert scopes[0].cancelled_caught
    loaded = await _assert_whole(store, "s")
    records = await store.read_token_usage("s")
    assert _all_or_none(["a"], ids(loaded), ["b", "c"])
    assert records in ([{"n": 0}], [{"n": 0}, {"n": 1}])
    assert ids(runtime) == ended["checkpoint"]
    assert ids(runtime) in (["b", "c"], ids(loaded))
    if "append" in ended_before_the_batch:
        assert records == [{"n": 0}]


@attrs.define
class CancelProbe:
    """One operation whose effect is checked to be all or nothing."""

    name: str

    async def run(self, store: SessionStore, k: int, base: Session) -> None:
        if self.name == "checkpoint":
            runtime = attrs.evolve(
                base, messages=[*base.messages, msg(f"{k}a"), msg(f"{k}b"), msg(f"{k}c")]
            )
            await store.checkpoint_runtime_session(runtime)
        elif self.name == "save":
            runtime = attrs.evolve(
                base, messages=[msg(f"{k}x"), msg(f"{k}y")], runtime_state={"k": k}
            )
            await store.save_runtime_session(runtime)
        elif self.name == "set_title":
            await store.set_title("s", f"title {k}")
        elif self.name == "append":
            await store.append_token_usage_record("s", {"k": k})
        else:  # pragma: no cover
            raise AssertionError(self.name)

    async def check(self, store: SessionStore, k: int, base: Session, usage: int) -> None:
        after = await store.load_session("s")
        assert after is not None
        if self.name == "checkpoint":
            assert _all_or_none(ids(base), ids(after), [f"{k}a", f"{k}b", f"{k}c"])
        elif self.name == "save":
            transcripts = [(ids(base), base.runtime_state), ([f"{k}x", f"{k}y"], {"k": k})]
            assert (ids(after), after.runtime_state) in transcripts
        elif self.name == "set_title":
            groups = [
                (base.title, base.title_version, base.metadata_version),
                (f"title {k}", base.title_version + 1, base.metadata_version + 1),
            ]
            assert (after.title, after.title_version, after.metadata_version) in groups
        else:
            records = await store.read_token_usage("s")
            assert len(records) in (usage, usage + 1)
            if len(records) == usage + 1:
                assert records[-1] == {"k": k}


@pytest.mark.parametrize("operation", ["checkpoint", "save", "set_title", "append"])
async def test_cancellation_at_many_points_is_all_or_nothing(
    store: SessionStore, operation: str
) -> None:
    probe = CancelProbe(operation)
    await store.save_runtime_session(Session(id="s", messages=[msg("start")]))
    for k in range(24):
        base = await store.load_session("s")
        assert base is not None
        usage = len(await store.read_token_usage("s"))
        scope = trio.CancelScope()

        async def call(k: int = k, base: Session = base, scope: trio.CancelScope = scope) -> None:
            with scope:
                await probe.run(store, k, base)

        async with guarded_nursery() as nursery:
            nursery.start_soon(call)
            for _ in range(k // 2):
                await trio.lowlevel.checkpoint()
            if k % 2:
                await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        await probe.check(store, k, base, usage)
    await _assert_whole(store, "s")


# --- a crashing actor ----------------------------------------------------------------------------


async def record(
    outcomes: dict[str, BaseException | str],
    name: str,
    operation: Callable[[], Awaitable[object]],
) -> None:
    """Run ``operation``; ``outcomes[name]`` is then "returned" or the exception it raised."""
    try:
        await operation()
    except Exception as exc:
        outcomes[name] = exc
    else:
        outcomes[name] = "returned"


async def test_a_crashing_actor_fails_its_waiters_and_is_replaced(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Session(id="victim", messages=[msg("a")])
    await store.save_runtime_session(before)
    await store.append_token_usage_record("victim", {"n": 0})

    entered = threading.Event()
    release = threading.Event()
    crashed = False
    original = sessionactors._runner.run_batch

    def buggy(files: Any, ops: Any, **options: Any) -> Any:
        nonlocal crashed
        if files.session_id == "victim" and not crashed:
            crashed = True
            entered.set()
            release.wait(30)
            raise RuntimeError("a bug in the actor")
        return original(files, ops, **options)

    monkeypatch.setattr(sessionactors._runner, "run_batch", buggy)

    outcomes: dict[str, BaseException | str] = {}
    call = partial(record, outcomes)

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "checkpoint": lambda: store.checkpoint_runtime_session(
            Session(id="victim", messages=[msg("b")])
        ),
        "save": lambda: store.save_runtime_session(Session(id="victim", messages=[msg("z")])),
        "append": lambda: store.append_token_usage_record("victim", {"n": 1}),
        "load": lambda: store.load_session("victim"),
        "set_title": lambda: store.set_title("victim", "renamed"),
        "set_pinned": lambda: store.set_pinned("victim", True),
        "read_token_usage": lambda: store.read_token_usage("victim"),
        "delete": lambda: store.delete_session("victim"),
    }
    try:
        async with guarded_nursery() as nursery:
            nursery.start_soon(call, "checkpoint", calls.pop("checkpoint"))
            assert await trio.to_thread.run_sync(entered.wait, 30)
            for name, operation in calls.items():
                nursery.start_soon(call, name, operation)
            await trio.testing.wait_all_tasks_blocked()
            # Other sessions are served meanwhile.
            await store.save_runtime_session(Session(id="bystander", messages=[msg("q")]))
            release.set()
    finally:
        release.set()

    assert set(outcomes) == {"checkpoint", *calls}
    for name, result in outcomes.items():
        assert isinstance(result, ActorCrashedError), (name, result)
        assert isinstance(result, SessionStoreError)
        assert isinstance(result.__cause__, RuntimeError)

    # The store keeps serving; the session's next call gets a fresh actor.
    assert await store.load_session("victim") == before
    assert await store.read_token_usage("victim") == [{"n": 0}]
    before.messages.append(msg("after"))
    await store.checkpoint_runtime_session(before)
    await store.append_token_usage_record("victim", {"n": 2})
    assert ids(await store.load_session("victim")) == ["a", "after"]
    assert await store.read_token_usage("victim") == [{"n": 0}, {"n": 2}]
    assert ids(await store.load_session("bystander")) == ["q"]
    assert store.statistics().live_actors == 2


async def test_a_caller_whose_object_cannot_be_updated_is_told_and_the_batch_answered(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch, gates: Callable[[str], Gate]
) -> None:
    """Answering a save updates its caller's object first; should that fail, nobody waits."""
    original = sessionactors._messages.Save.finish
    broken = Session(id="s", messages=[msg("a")], metadata={"who": "broken"})

    refused: list[Any] = []

    def finish(op: Any, result: Any) -> None:
        if op.session is broken:
            refused.append(op)
            raise RuntimeError("the caller's object refused the update")
        original(op, result)

    monkeypatch.setattr(sessionactors._messages.Save, "finish", finish)
    gate = gates("s")
    outcomes: dict[str, BaseException | str] = {}
    all_answered = trio.Event()

    async def call(name: str, operation: Callable[[], Awaitable[object]]) -> None:
        await record(outcomes, name, operation)
        if len(outcomes) == 3:
            all_answered.set()

    fine = Session(id="s", messages=[msg("a")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "first", partial(store.save_runtime_session, fine))
        await gate.wait_entered()
        # Queued behind the first, in this order: one batch, answered together
        # (the refused caller last, so that without the guard only it would wait).
        nursery.start_soon(call, "append", partial(store.append_token_usage_record, "s", {}))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "broken", partial(store.save_runtime_session, broken))
        await trio.testing.wait_all_tasks_blocked()
        gate.open()
        with trio.move_on_after(30):
            await all_answered.wait()
        if "broken" not in outcomes:  # never answered (the bug this guards): end its wait
            for op in refused:
                op.reply.set(outcome.Error(AssertionError("the caller was never answered")))
    assert outcomes["first"] == "returned" and outcomes["append"] == "returned"
    assert isinstance(outcomes["broken"], RuntimeError)
    # The write took effect: only the caller's object was not updated.
    loaded = await store.load_session("s")
    assert loaded is not None and loaded.metadata == {"who": "broken"}
    assert store.statistics().actor_crashes == 0


@pytest.mark.parametrize("where", ["mailbox", "thread"])
async def test_a_drain_timeout_fails_what_is_still_queued(
    autojump_clock: trio.testing.MockClock,
    make_store: StoreFactory,
    gates: Callable[[str], Gate],
    where: str,
) -> None:
    """With ``drain_timeout``, leaving the block waits that long, then gives up.

    What is still queued fails and is not written: a call in its actor's
    mailbox, or a batch its actor took that still waits for a worker thread.
    """
    gate = gates("s")
    results: dict[str, Any] = {}

    async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results[name] = await call()
        except Exception as exc:
            results[name] = exc

    async def open_gate_later() -> None:
        await trio.sleep(10)  # after the 5 s deadline, while the actor waits on its thread
        gate.open()

    # Behind the held batch of "s": another save of "s" (in the mailbox), or
    # saves of other sessions, whose actors wait for the store's one thread.
    queued = ["s"] if where == "mailbox" else ["t", "u"]
    async with trio.open_nursery() as nursery:
        async with make_store(drain_timeout=5, max_threads=1) as store:
            nursery.start_soon(run, "taken", lambda: store.save_runtime_session(Session(id="s")))
            await gate.wait_entered()
            for name in queued:
                session = Session(id=name, title="queued")
                nursery.start_soon(run, name, partial(store.save_runtime_session, session))
            await trio.testing.wait_all_tasks_blocked()
            assert len(store._runner._waiting) == (2 if where == "thread" else 0)
            nursery.start_soon(open_gate_later)
            started = trio.current_time()
        assert trio.current_time() - started >= 5
    assert results["taken"] is None  # its batch was running: it took full effect
    for name in queued:
        assert isinstance(results[name], StoreClosedError)  # it never ran
    async with make_store() as store:
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.title == ""
        assert await store.load_session("t") is None and await store.load_session("u") is None


async def test_a_worker_thread_that_cannot_start_fails_its_batches_alone(
    make_store: StoreFactory, gates: Callable[[str], Gate], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch of a trip that never ran fails (no caller waits forever); the store goes on."""
    async with make_store(max_threads=1) as store:
        gate = gates("g")
        original = trio.to_thread.run_sync
        trips = 0

        async def run_sync(function: Any, *args: Any, **options: Any) -> Any:
            nonlocal trips
            if function is sessionactors._runner._run_jobs:
                trips += 1
                if trips == 2:
                    raise RuntimeError("can't start new thread")
            return await original(function, *args, **options)

        monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
        results: dict[str, Any] = {}

        async def save(name: str) -> None:
            try:
                results[name] = await store.save_runtime_session(Session(id=name))
            except Exception as exc:
                results[name] = exc

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(save, "g")
                await gate.wait_entered()
                for name in ("a", "b", "c"):
                    nursery.start_soon(save, name)
                await trio.testing.wait_all_tasks_blocked()
                gate.open()
        assert results["g"] is None
        for name in ("a", "b", "c"):  # one trip took all three along, and never ran
            assert isinstance(results[name], sessionactors.ActorCrashedError)
            assert "can't start new thread" in str(results[name].__cause__)
        await store.save_runtime_session(Session(id="a"))  # a fresh actor, a thread this time
        assert (await store.load_session("a")) is not None
