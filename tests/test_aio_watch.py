"""The bridge that gives asyncio the trio store's ``watch`` (contract v2; README, "From asyncio").

Most tests give the trio store's class a stand-in watch of the same shape (an
async context manager yielding an async iterator, here an async generator fed
by a queue), so each can drive the bridge exactly: changes arrive in order,
leaving the block closes the trio watch, errors come out as themselves, a
cancelled ``__anext__`` loses no change, and nothing is left. The last test
runs the bridge on the trio store's own watch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from aio_support import leftover_threads

import sessionactors._store
from sessionactors import aio

END = object()


class StandInWatch:
    """A trio ``watch``: yields what the test puts in ``changes``; records how it ended."""

    def __init__(self) -> None:
        self.changes: queue.Queue[Any] = queue.Queue()
        self.opened_for: list[str | None] = []
        self.closed = threading.Event()
        self.fail_on_open: BaseException | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        stand_in = self

        @asynccontextmanager
        async def watch(store: Any, session_id: str | None = None) -> AsyncIterator[Any]:
            if stand_in.fail_on_open is not None:
                raise stand_in.fail_on_open
            stand_in.opened_for.append(session_id)
            try:
                yield stand_in._iterate()
            finally:
                stand_in.closed.set()

        monkeypatch.setattr(sessionactors._store.SessionStore, "watch", watch, raising=False)

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            change = await trio.to_thread.run_sync(self.changes.get, abandon_on_cancel=True)
            if change is END:
                return
            if isinstance(change, BaseException):
                raise change
            yield change


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInWatch]:
    watch = StandInWatch()
    watch.install(monkeypatch)
    yield watch
    watch.changes.put(END)


@pytest.fixture(params=["guest", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    chosen: str = request.param
    return chosen


def run(main: Callable[[], Any]) -> Any:
    return asyncio.run(main())


def test_changes_arrive_in_order_and_leaving_closes_the_trio_watch(
    tmp_path: Path, mode: str, stand_in: StandInWatch
) -> None:
    before = set(threading.enumerate())

    async def main() -> list[Any]:
        got = []
        async with aio.open_store(tmp_path, mode=mode) as store:
            for n in range(3):
                stand_in.changes.put(("s", "save", n + 1))
            async with store.watch("s") as changes:
                async for change in changes:
                    got.append(change)
                    if len(got) == 3:
                        break
                assert not stand_in.closed.is_set()
            assert stand_in.closed.is_set()  # leaving the block closed it
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return got

    assert run(main) == [("s", "save", 1), ("s", "save", 2), ("s", "save", 3)]
    assert stand_in.opened_for == ["s"]
    assert leftover_threads(before) == []


def test_a_watch_that_ends_ends_the_async_for(
    tmp_path: Path, mode: str, stand_in: StandInWatch
) -> None:
    async def main() -> list[Any]:
        async with aio.open_store(tmp_path, mode=mode) as store:
            stand_in.changes.put("one")
            stand_in.changes.put(END)
            async with store.watch() as changes:
                got = [change async for change in changes]
                with pytest.raises(StopAsyncIteration):
                    await changes.__anext__()
                return got

    assert run(main) == ["one"]
    assert stand_in.opened_for == [None]


def test_errors_come_out_as_themselves(tmp_path: Path, mode: str, stand_in: StandInWatch) -> None:
    on_open, midway = LookupError("cannot watch"), OSError(5, "lost the feed")

    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store:
            stand_in.fail_on_open = on_open
            with pytest.raises(LookupError) as opening:
                async with store.watch("s"):
                    pass  # pragma: no cover
            assert opening.value is on_open
            stand_in.fail_on_open = None
            stand_in.changes.put("first")
            stand_in.changes.put(midway)
            async with store.watch("s") as changes:
                assert await changes.__anext__() == "first"
                with pytest.raises(OSError) as iterating:
                    await changes.__anext__()
                assert iterating.value is midway

    run(main)


def test_a_cancelled_anext_loses_no_change(
    tmp_path: Path, mode: str, stand_in: StandInWatch
) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, mode=mode) as store, store.watch("s") as changes:
            waiting = asyncio.create_task(changes.__anext__())  # type: ignore[arg-type]
            for _ in range(20):
                await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.wait({waiting})
            assert waiting.cancelled()
            stand_in.changes.put("kept")
            assert await changes.__anext__() == "kept"

    run(main)


def test_watch_is_refused_once_the_store_is_closed(tmp_path: Path, stand_in: StandInWatch) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path) as store:
            pass
        with pytest.raises(sessionactors.StoreClosedError):
            store.watch("s")

    run(main)


def test_a_real_watch_another_task_holds_open_ends_when_the_store_closes(
    tmp_path: Path, mode: str
) -> None:
    """The block is left (no task of the store's remains); the reader gets StoreClosedError."""

    async def main() -> None:
        async with asyncio.timeout(30):
            async with aio.open_store(tmp_path, mode=mode) as store:
                watching = asyncio.Event()

                async def reader() -> None:
                    async with store.watch() as changes:
                        watching.set()
                        async for _ in changes:
                            pass

                task = asyncio.create_task(reader())
                await watching.wait()
                await store.save_runtime_session(sessionactors.Session(id="s"))
            with pytest.raises(sessionactors.StoreClosedError):
                await task

    # In a thread of its own: a close that waits through its cancellation
    # would hang this test, not fail it.
    outcome: list[BaseException | None] = []

    def in_thread() -> None:
        try:
            run(main)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    thread.join(60)
    assert outcome, "the store's block was never left"
    if outcome[0] is not None:
        raise outcome[0]


def test_the_real_watch_hears_saves_and_edits_from_asyncio(tmp_path: Path, mode: str) -> None:
    """The bridge on the trio store's own watch: what asyncio writes, asyncio hears, in order.

    The contract lets a watcher be handed a later revision without the ones
    before it, never without the last: here the title's revision 2 and the
    usage, after the save's revision 1 or without it.
    """
    before = set(threading.enumerate())

    async def main() -> list[tuple[str, str, int | None]]:
        heard: list[tuple[str, str, int | None]] = []
        async with aio.open_store(tmp_path, mode=mode) as store, store.watch("s") as changes:
            await store.save_runtime_session(sessionactors.Session(id="s"))
            await store.set_title("s", "Named")
            await store.append_token_usage_record("s", {"input_tokens": 1})
            async with asyncio.timeout(30):  # a change never heard fails, not hangs
                async for change in changes:
                    heard.append((change.session_id, change.kind, change.revision))
                    if change.kind == "usage":
                        break
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return heard

    heard = run(main)
    assert heard[-2:] == [("s", "title", 2), ("s", "usage", None)]
    assert heard[:-2] in ([], [("s", "save", 1)])
    assert leftover_threads(before) == []
