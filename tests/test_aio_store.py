"""``sessionactors.aio`` under plain ``asyncio.run`` (README, "From asyncio"): what the trio suite,
run through it by test_aio_conformance.py, cannot show from trio.

Cancellation by asyncio, draining on leaving the block, two stores at once,
errors raised as themselves, a save taking the session as it stood at the
call, and nothing left behind afterwards (no thread, no asyncio task, no trio
run). Each test runs with trio as the loop's guest and in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from aio_support import idle_trio_workers, leftover_threads, no_trio_run_in_this_thread
from support import msg

import sessionactors
import sessionactors._runner
import sessionactors._store
from sessionactors import (
    InvalidSessionIdError,
    Session,
    SessionNotFoundError,
    StoreClosedError,
    StoreStatistics,
    VersionConflictError,
    aio,
)

T = TypeVar("T")
HANG_GUARD = 30  # seconds: a broken test fails instead of hanging; nothing is timed


@pytest.fixture(params=["guest", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    """How trio runs beside the asyncio loop."""
    chosen: str = request.param
    return chosen


def run(main: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(main())``, bounded so that a broken test fails rather than hangs."""

    async def bounded() -> T:
        # In this task, not another: the tests look at the loop's task list.
        guard = asyncio.get_running_loop().call_later(
            HANG_GUARD,
            asyncio.current_task().cancel,  # type: ignore[union-attr]
        )
        try:
            return await main()
        finally:
            guard.cancel()

    return asyncio.run(bounded())


def ids(session: Session | None) -> list[str]:
    assert session is not None
    return [message.id for message in session.messages]


class HeldBatch:
    """Holds the first batch of one session in its worker thread until ``release``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, session_id: str) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        original = sessionactors._runner.run_batch

        def held(files: Any, ops: Any, **options: Any) -> Any:
            if files.session_id == session_id and not self.entered.is_set():
                self.entered.set()
                self.released.wait(HANG_GUARD)
            return original(files, ops, **options)

        monkeypatch.setattr(sessionactors._runner, "run_batch", held)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, HANG_GUARD)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def hold(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], HeldBatch]]:
    made: list[HeldBatch] = []

    def make(session_id: str) -> HeldBatch:
        made.append(HeldBatch(monkeypatch, session_id))
        return made[-1]

    yield make
    for held in made:
        held.release()


async def settle() -> None:
    """Let the loop run every callback that is ready, a few rounds over (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


# --- cancellation: all or nothing ---------------------------------------------------------


def test_a_call_cancelled_before_its_actor_took_it_has_no_effect(
    tmp_path: Path, mode: str, hold: Callable[[str], HeldBatch]
) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
            held = hold("s")
            first = asyncio.create_task(store.checkpoint_runtime_session(Session(id="s")))
            await held.wait_entered()  # s's actor is busy with that batch
            queued = Session(id="s", messages=[msg("b")])
            call = asyncio.create_task(store.checkpoint_runtime_session(queued))
            await settle()  # the call is in the mailbox, behind the held batch
            call.cancel()
            # It ends while the batch it waits behind is still held: it waited for nothing.
            await asyncio.wait({call})
            assert call.cancelled()
            held.release()
            await first
            assert ids(await store.load_session("s")) == ["a"]
            assert ids(queued) == ["b"]  # the caller's object is untouched too

    run(main)


def test_a_call_cancelled_while_its_batch_runs_took_full_effect_when_cancelled_lands(
    tmp_path: Path, mode: str, hold: Callable[[str], HeldBatch]
) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
            held = hold("s")
            runtime = Session(id="s", messages=[msg("b")])
            call = asyncio.create_task(store.checkpoint_runtime_session(runtime))
            await held.wait_entered()
            call.cancel()
            await settle()
            assert not call.done()  # it waits for its batch, which is held
            held.release()
            with pytest.raises(asyncio.CancelledError):
                await call
            # Full effect, on the caller's object too, when CancelledError landed.
            assert ids(runtime) == ["a", "b"]
            assert await store.load_session("s") == runtime

    run(main)


def test_a_call_cancelled_at_once_takes_full_effect_or_none(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            await store.save_runtime_session(Session(id="s", messages=[msg("a")]))
            for round_ in range(30):
                runtime = Session(id="s", messages=[msg(f"n{round_}")])
                before = ids(await store.load_session("s"))
                call = asyncio.create_task(store.checkpoint_runtime_session(runtime))
                for _ in range(round_ % 6):  # cancelled at a different point each round
                    await asyncio.sleep(0)
                call.cancel()
                await asyncio.wait({call})
                after = ids(await store.load_session("s"))
                assert after in (before, [*before, f"n{round_}"])
                if after == before:
                    assert ids(runtime) == [f"n{round_}"]  # no effect at all
                else:
                    assert ids(runtime) == after  # full effect, caller's object included

    run(main)


# --- the block -----------------------------------------------------------------------------


def test_leaving_the_block_drains_every_call_made_in_it_then_refuses(
    tmp_path: Path, mode: str
) -> None:
    async def main() -> list[Any]:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            for n in range(4):
                await store.save_runtime_session(Session(id=f"s{n}", messages=[msg("base")]))
            # Made, never awaited in the block: leaving it answers every one.
            calls = [
                asyncio.create_task(store.append_token_usage_record(f"s{i % 4}", {"i": i}))
                for i in range(80)
            ] + [
                asyncio.create_task(
                    store.checkpoint_runtime_session(
                        Session(id=f"s{i % 4}", messages=[msg(f"m{i}")])
                    )
                )
                for i in range(40)
            ]
            await asyncio.sleep(0)  # each call has started: it is a call made in the block
        results = await asyncio.gather(*calls, return_exceptions=True)
        with pytest.raises(StoreClosedError):
            await store.load_session("s0")
        with pytest.raises(StoreClosedError):
            await store.list_sessions()
        return results

    assert run(main) == [None] * 120

    async def check() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store:
            for n in range(4):
                records = await store.read_token_usage(f"s{n}")
                assert sorted(r["i"] for r in records) == list(range(n, 80, 4))
                assert sorted(ids(await store.load_session(f"s{n}"))) == sorted(
                    ["base", *(f"m{i}" for i in range(n, 40, 4))]
                )

    run(check)


def test_an_exception_in_the_block_comes_out_as_itself(tmp_path: Path, mode: str) -> None:
    class Boom(Exception):
        pass

    boom = Boom()

    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode):
            raise boom

    with pytest.raises(Boom) as info:
        run(main)
    assert info.value is boom


def test_two_stores_at_once_one_root_and_two(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        async with (
            aio.open_store(tmp_path / "one", mode=mode) as one,
            aio.open_store(tmp_path / "one", mode=mode) as same_root,
            aio.open_store(tmp_path / "two", mode=mode) as two,
        ):
            await one.save_runtime_session(Session(id="s", messages=[msg("a")]))
            await two.save_runtime_session(Session(id="s", messages=[msg("b")]))
            renamed = await same_root.set_title("s", "seen by the other store")
            assert ids(renamed) == ["a"]
            assert (await one.load_session("s")) == renamed
            assert ids(await two.load_session("s")) == ["b"]
        # The first store can close while the other is open, and reopen.
        async with aio.open_store(tmp_path / "two", mode=mode) as two:
            async with aio.open_store(tmp_path / "one", mode=mode) as one:
                assert ids(await one.load_session("s")) == ["a"]
            assert ids(await two.load_session("s")) == ["b"]

    run(main)


def test_a_bad_mode_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode="sideways"):  # type: ignore[arg-type]
            pass  # pragma: no cover

    with pytest.raises(ValueError, match="mode"):
        run(main)


@pytest.mark.parametrize(
    "options",
    [{"history": None}, {"history": 0}, {"idle_timeout": -1}, {"mailbox_size": 0}],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_bad_options_are_refused_as_the_trio_store_refuses_them(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    async def in_trio() -> None:
        async with sessionactors.open_store(tmp_path / "trio", **options):
            pass  # pragma: no cover

    async def in_asyncio() -> None:
        async with aio.open_store(tmp_path / "asyncio", **options):
            pass  # pragma: no cover

    with pytest.raises(ValueError) as refused_by_trio:
        trio.run(in_trio)
    with pytest.raises(ValueError) as refused:
        run(in_asyncio)
    assert str(refused.value) == str(refused_by_trio.value)


def test_a_call_from_another_loop_is_refused_and_does_nothing(tmp_path: Path, mode: str) -> None:
    """Its answer could only reach the store's loop: refused before anything is done."""
    opened = threading.Event()
    finish = threading.Event()
    seen: list[Session | None] = []
    stores: list[aio.SessionStore] = []

    async def owner() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store:
            stores.append(store)
            opened.set()
            await asyncio.to_thread(finish.wait)
            seen.append(await store.load_session("s"))

    thread = threading.Thread(target=run, args=(owner,))
    thread.start()
    try:
        assert opened.wait(30)
        store = stores[0]
        session = Session(id="s")

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):
                await store.save_runtime_session(session)
            with pytest.raises(RuntimeError, match="another event loop"):
                async with store.watch():
                    pass  # pragma: no cover

        run(elsewhere)
    finally:
        finish.set()
        thread.join(30)
    assert seen == [None]
    assert session.revision == 0


# --- what a call is given and gives back --------------------------------------------------


def test_a_save_takes_the_session_as_it_stood_at_the_call(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            session = Session(id="s", messages=[msg("a")], metadata={"step": 1})
            save = asyncio.create_task(store.save_runtime_session(session))
            await asyncio.sleep(0)  # the call is made: it has taken its copy
            session.messages.append(msg("later"))
            session.metadata["step"] = 2
            await save
            loaded = await store.load_session("s")
            assert loaded is not None
            assert ids(loaded) == ["a"] and loaded.metadata == {"step": 1}
            # What the store sets is set on the caller's object; the rest is the caller's.
            assert session.updated_at == loaded.updated_at
            assert ids(session) == ["a", "later"] and session.metadata == {"step": 2}

            record = {"tokens": 1}
            append = asyncio.create_task(store.append_token_usage_record("s", record))
            await asyncio.sleep(0)
            record["tokens"] = 2
            await append
            assert await store.read_token_usage("s") == [{"tokens": 1}]

    run(main)


def test_an_archive_moves_through_the_asyncio_door(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            session = Session(id="s", messages=[msg("a")], metadata={"step": 1})
            await store.save_runtime_session(session)
            await store.append_token_usage_record("s", {"tokens": 1})
            data = await store.export_session("s")
            copy = await store.import_session(data, session_id="copy")
            assert copy.revision == 1 and copy.messages == session.messages
            assert await store.read_token_usage("copy") == [{"tokens": 1}]
            with pytest.raises(VersionConflictError):
                await store.delete_session("copy", if_revision=2)
            assert await store.delete_session("copy", if_revision=1)

    run(main)


def test_a_checkpoint_sets_the_merged_transcript_on_the_callers_object(
    tmp_path: Path, mode: str
) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            await store.save_runtime_session(Session(id="s", messages=[msg("a"), msg("b")]))
            await store.set_title("s", "from the UI")
            stale = Session(id="s", messages=[msg("c")])
            await store.checkpoint_runtime_session(stale)
            assert ids(stale) == ["a", "b", "c"]
            assert stale.title == "from the UI" and stale.metadata_version == 1
            assert await store.load_session("s") == stale

    run(main)


def test_errors_reach_the_caller_as_themselves(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = OSError(28, "No space left on device")

    async def failing_read(self: Any, session_id: str) -> Any:
        raise failure

    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store:
            with pytest.raises(SessionNotFoundError) as not_found:
                await store.set_title("nobody", "x")
            assert type(not_found.value) is SessionNotFoundError
            assert not_found.value.session_id == "nobody"
            with pytest.raises(InvalidSessionIdError):
                await store.load_session("a/b")
            with pytest.raises(TypeError):
                await store.save_runtime_session(Session(id="s", metadata={"x": {1, 2}}))
            assert await store.load_session("s") is None
            # The very object the trio side raised, not a copy or a wrapper.
            monkeypatch.setattr(sessionactors._store.SessionStore, "read_token_usage", failing_read)
            with pytest.raises(OSError) as raised:
                await store.read_token_usage("s")
            assert raised.value is failure

    run(main)


def test_statistics_and_root_are_the_trio_stores(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
            assert store.root == tmp_path
            assert store.statistics().live_actors == 0
            await store.save_runtime_session(Session(id="a"))
            await store.load_session("b")
            stats = store.statistics()
            assert isinstance(stats, StoreStatistics)
            assert (stats.live_actors, stats.saves_requested) == (2, 1)
        assert store.statistics().live_actors == 0  # every actor retired on leaving

    run(main)


def test_a_method_the_trio_store_lacks_raises_attribute_error(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forwarded by name: a part-two method the core has not got (yet) says so.
    monkeypatch.delattr(sessionactors._store.SessionStore, "rewind_session", raising=False)

    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store:
            with pytest.raises(AttributeError, match="rewind_session"):
                await store.rewind_session("s", 1)

    run(main)


# --- nothing left behind ------------------------------------------------------------------


def _assert_nothing_left(before: set[threading.Thread]) -> None:
    assert leftover_threads(before) == []
    # Trio's idle cache workers are all the extra threads there are.
    assert threading.active_count() == len(before) + idle_trio_workers(before)
    assert no_trio_run_in_this_thread()


@pytest.mark.parametrize("ending", ["normally", "by an exception", "by a cancellation"])
def test_nothing_is_left_behind_after_the_block(tmp_path: Path, mode: str, ending: str) -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        async def block() -> None:
            async with (
                aio.open_store(tmp_path / "a", mode=mode, durability="flush") as one,
                aio.open_store(tmp_path / "b", mode=mode, durability="flush") as two,
            ):
                await one.save_runtime_session(Session(id="s"))
                await two.save_runtime_session(Session(id="s"))
                if ending == "by an exception":
                    raise LookupError("the body failed")
                if ending == "by a cancellation":
                    asyncio.current_task().cancel()  # type: ignore[union-attr]
                    await asyncio.sleep(0)

        task = asyncio.create_task(block())
        await asyncio.wait({task})
        assert task.cancelled() == (ending == "by a cancellation")
        assert asyncio.all_tasks() == {asyncio.current_task()}
        _assert_nothing_left(before)

    run(main)
    _assert_nothing_left(before)


def test_a_cancelled_exit_still_closes_everything_then_raises(tmp_path: Path, mode: str) -> None:
    before = set(threading.enumerate())

    async def main() -> None:
        opened = asyncio.Event()

        async def block() -> None:
            async with aio.open_store(tmp_path, mode=mode, durability="flush") as store:
                await store.save_runtime_session(Session(id="s"))
                opened.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(block())
        await opened.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()  # again, while it is closing: closing goes on regardless
        await asyncio.wait({task})
        assert task.cancelled()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        _assert_nothing_left(before)

    run(main)
