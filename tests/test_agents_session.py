"""``sessionactors.agents.AgentsSession``: the OpenAI Agents SDK's ``Session`` on an aio store
(README, "With the OpenAI Agents SDK").

It is checked against the SDK's own ``SQLiteSession``, call for call, and
under a real ``Runner.run`` with a scripted model (no network); items read
back equal; adds from several processes interleave whole items and lose none.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from agents import Agent, Runner, set_tracing_disabled
from agents.items import ModelResponse
from agents.memory import Session as SdkSession
from agents.memory import SessionSettings, SQLiteSession
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from sessionactors import InvalidSessionIdError, Session, aio
from sessionactors.agents import AgentsSession

T = TypeVar("T")
ADDER = Path(__file__).parent / "children" / "agents_adder.py"

set_tracing_disabled(True)  # no trace is exported anywhere

# One of each kind of item a run produces, with every kind of JSON value.
ITEMS: list[Any] = [
    {"role": "user", "content": "Bonjour, ça va? 🙂"},
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Oui!", "annotations": []}],
    },
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": '{"q": "weather", "days": 3}',
        "id": "fc_1",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "think"}],
        "numbers": [0, -1, 2**62, 1.5, -0.0, 1e300],
        "flags": {"ok": True, "no": False, "none": None},
        "nested": [[[{"deep": ["x"]}]]],
    },
    {"role": "system", "content": "be brief"},
]


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(main())  # type: ignore[arg-type]


async def _same_calls(one: SdkSession, other: SdkSession) -> list[tuple[str, Any, Any]]:
    """The same sequence of calls on both sessions: (call, what one gave, what other gave)."""
    answers: list[tuple[str, Any, Any]] = []

    async def both(name: str, *args: Any) -> None:
        first = await getattr(one, name)(*args)
        second = await getattr(other, name)(*args)
        answers.append((f"{name}{args!r}", first, second))

    await both("get_items")
    await both("pop_item")
    await both("add_items", [])
    await both("add_items", ITEMS[0:3])
    await both("add_items", ITEMS[3:5])
    for limit in (None, 1, 2, 5, 10, 0, -1):
        await both("get_items", limit)
    await both("pop_item")
    await both("get_items")
    await both("add_items", ITEMS[5:6])
    await both("get_items", 3)
    await both("clear_session")
    await both("get_items")
    await both("pop_item")
    await both("add_items", ITEMS[1:3])
    await both("get_items")
    await both("pop_item")
    await both("pop_item")
    await both("pop_item")
    await both("get_items")
    return answers


def test_it_satisfies_the_sdks_session_protocol(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path) as store:
            session = AgentsSession(store, "chat")
            assert isinstance(session, SdkSession)
            assert session.session_id == "chat"
            assert session.session_settings == SessionSettings()

    run(main)


def test_a_bad_session_id_is_refused_when_made(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path) as store:
            with pytest.raises(InvalidSessionIdError):
                AgentsSession(store, "../escape")

    run(main)


def test_every_call_answers_as_the_sdks_sqlite_session_does(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, Any, Any]]:
        sqlite = SQLiteSession("chat", tmp_path / "sdk.db")
        try:
            async with aio.open_store(tmp_path / "store", durability="flush") as store:
                return await _same_calls(sqlite, AgentsSession(store, "chat"))
        finally:
            sqlite.close()

    for call, expected, got in run(main):
        assert got == expected, call


@pytest.mark.parametrize("given", ["settings", "dict"])
def test_the_default_limit_comes_from_session_settings_as_in_the_sdk(
    tmp_path: Path, given: str
) -> None:
    """As the SDK's SessionSettings, or a dict of its fields, as the SDK's sessions take it."""

    async def main() -> None:
        settings: Any = SessionSettings(limit=2) if given == "settings" else {"limit": 2}
        sqlite = SQLiteSession("chat", tmp_path / "sdk.db", session_settings=settings)
        try:
            async with aio.open_store(tmp_path / "store", durability="flush") as store:
                ours = AgentsSession(store, "chat", session_settings=settings)
                assert ours.session_settings == sqlite.session_settings == SessionSettings(limit=2)
                for session in (sqlite, ours):
                    await session.add_items(ITEMS)
                for limit in (None, 1, 4, -1):
                    assert await ours.get_items(limit) == await sqlite.get_items(limit)
                assert await ours.get_items() == ITEMS[-2:]
        finally:
            sqlite.close()

    run(main)


def test_items_read_back_equal_and_are_copied_when_added(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, durability="flush") as store:
            given = [dict(item) for item in ITEMS]
            await AgentsSession(store, "chat").add_items(given)
            given[0]["content"] = "changed afterwards"
            read = await AgentsSession(store, "chat").get_items()
            assert read == ITEMS
            read[0]["content"] = "changed by a reader"
            assert await AgentsSession(store, "chat").get_items() == ITEMS
            # The mapping: one message per item, the item whole in its content.
            loaded = await store.load_session("chat")
            assert loaded is not None
            assert [message.content for message in loaded.messages] == ITEMS
            assert [message.role for message in loaded.messages] == [
                "user",
                "assistant",
                "function_call",
                "function_call_output",
                "reasoning",
                "system",
            ]
            assert len({message.id for message in loaded.messages}) == len(ITEMS)

    run(main)


def test_an_item_that_is_not_plain_json_is_refused_and_nothing_added(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, durability="flush") as store:
            session = AgentsSession(store, "chat")
            await session.add_items(ITEMS[:1])
            with pytest.raises(TypeError):
                await session.add_items([ITEMS[1], {"role": "user", "content": ("a", "tuple")}])
            assert await session.get_items() == ITEMS[:1]

    run(main)


def test_the_uis_title_and_the_sessions_fields_survive_adds_pops_and_clears(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, durability="flush") as store:
            session = AgentsSession(store, "chat")
            await session.add_items(ITEMS[:2])
            first = await store.load_session("chat")
            assert first is not None
            await store.set_title("chat", "Named by the UI")
            await store.save_runtime_session(
                Session(
                    id="chat",
                    created_at=first.created_at,
                    messages=first.messages,
                    runtime_state={"turn": 1},
                )
            )
            later = AgentsSession(store, "chat")
            await later.get_items()
            await later.add_items(ITEMS[2:4])
            await later.pop_item()
            await later.clear_session()
            await later.add_items(ITEMS[4:5])
            loaded = await store.load_session("chat")
            assert loaded is not None
            assert (loaded.title, loaded.title_version) == ("Named by the UI", 1)
            assert loaded.created_at == first.created_at
            assert loaded.runtime_state == {"turn": 1}
            assert [message.content for message in loaded.messages] == ITEMS[4:5]

    run(main)


def test_adds_and_pops_at_once_in_one_process_lose_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path, durability="flush") as store:
            writers = [AgentsSession(store, "chat") for _ in range(3)]
            await writers[0].add_items([{"role": "user", "content": "seed"}])
            adds = [
                writers[n % 3].add_items([{"role": "user", "content": f"item {n}"}])
                for n in range(30)
            ]
            pops = [writers[n % 3].pop_item() for n in range(10)]
            results = await asyncio.gather(*adds, *pops)
            popped = [item["content"] for item in results[30:] if item is not None]
            left = [item["content"] for item in await writers[1].get_items()]
            assert sorted(popped + left) == sorted(["seed", *(f"item {n}" for n in range(30))])

    run(main)


def test_adds_and_pops_from_two_stores_at_once_lose_nothing(tmp_path: Path) -> None:
    # Two stores on one root, as two processes would be: each pop is one
    # update_session, atomic against the other store's adds.
    async def main() -> None:
        async with (
            aio.open_store(tmp_path, durability="flush") as one,
            aio.open_store(tmp_path, durability="flush") as other,
        ):
            adder, popper = AgentsSession(one, "chat"), AgentsSession(other, "chat")
            await adder.add_items([{"role": "user", "content": "seed"}])
            adds = [adder.add_items([{"role": "user", "content": f"item {n}"}]) for n in range(30)]
            pops = [popper.pop_item() for _ in range(10)]
            results = await asyncio.gather(*adds, *pops)
            popped = [item["content"] for item in results[30:] if item is not None]
            left = [item["content"] for item in await adder.get_items()]
            assert sorted(popped + left) == sorted(["seed", *(f"item {n}" for n in range(30))])
            assert await popper.get_items() == await adder.get_items()
            await popper.clear_session()
            assert await adder.get_items() == []
            assert await adder.pop_item() is None

    run(main)


# --- under the SDK's Runner -----------------------------------------------------------------


class ScriptedModel(Model):
    """A model that answers "reply <n>" to its n-th request and keeps what it was given."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        given = kwargs.get("input", args[1] if len(args) > 1 else None)
        self.inputs.append(given)
        number = len(self.inputs)
        reply = ResponseOutputMessage(
            id=f"msg_{number}",
            type="message",
            role="assistant",
            status="completed",
            content=[
                ResponseOutputText(type="output_text", text=f"reply {number}", annotations=[])
            ],
        )
        return ModelResponse(output=[reply], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the tests run without streaming")


async def _two_runs(session: SdkSession) -> tuple[list[Any], list[Any], list[Any]]:
    model = ScriptedModel()
    agent = Agent(name="assistant", model=model, instructions="Be brief.")
    first = await Runner.run(agent, "Hello", session=session)
    second = await Runner.run(agent, "And again", session=session)
    assert (first.final_output, second.final_output) == ("reply 1", "reply 2")
    return model.inputs[0], model.inputs[1], await session.get_items()


def test_two_runs_the_second_sees_the_firsts_items_as_with_sqlite_session(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[Any, Any]:
        sqlite = SQLiteSession("chat", tmp_path / "sdk.db")
        try:
            async with aio.open_store(tmp_path / "store") as store:
                ours = await _two_runs(AgentsSession(store, "chat"))
                assert ours == await _two_runs(sqlite)
                return ours, await AgentsSession(store, "chat").get_items()
        finally:
            sqlite.close()

    (first_input, second_input, items), reread = run(main)
    assert [item.get("content") for item in first_input] == ["Hello"]
    # The second run was given the first run's items, then its own input.
    assert second_input[:2] == items[:2]
    assert second_input[0] == {"role": "user", "content": "Hello"}
    assert second_input[1]["content"][0]["text"] == "reply 1"
    assert second_input[2] == {"role": "user", "content": "And again"}
    assert len(items) == 4 and items[3]["content"][0]["text"] == "reply 2"
    assert reread == items  # durable: a fresh AgentsSession reads the same


# --- across processes -----------------------------------------------------------------------


def test_adds_from_several_processes_interleave_whole_items_and_lose_none(
    tmp_path: Path,
) -> None:
    names, adds = ["p0", "p1", "p2"], 15
    root, barrier = tmp_path / "store", tmp_path / "barrier"
    barrier.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, str(ADDER), str(root), "chat", name, str(adds), str(barrier)],
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    try:
        for _ in range(600):  # bounded: a minute at most, then the test fails
            if len(list(barrier.glob("ready-*"))) == len(names):
                break
            assert all(child.poll() is None for child in children), "a child died"
            time.sleep(0.1)
        (barrier / "go").touch()
        for child in children:
            _, errors = child.communicate(timeout=60)
            assert child.returncode == 0, errors.decode()
    finally:
        for child in children:
            child.kill()

    async def read() -> list[Any]:
        async with aio.open_store(root) as store:
            return await AgentsSession(store, "chat").get_items()

    items = run(read)
    assert len(items) == len(names) * adds * 2
    users = [index for index, item in enumerate(items) if "role" in item]
    assert len(users) == len(names) * adds
    for index in users:  # each add's two items whole and together
        n = items[index]["content"].split("-")[1]
        assert items[index + 1] == {
            "type": "function_call_output",
            "call_id": f"call-{n}",
            "output": "same",
        }
    for name in names:  # each child's adds, in its order
        assert [items[i]["content"] for i in users if items[i]["content"].startswith(name)] == [
            f"{name}-{n}-a" for n in range(adds)
        ]
