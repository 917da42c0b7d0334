"""A seeded random walk through sessions' lives, against a model of every revision.

Each step is one write the contract names (a save adding, editing or
removing messages, a checkpoint from a stale copy, a rewind, an update, a
rename, a fork from a kept revision, a delete); the model is each written
session as its caller's object stood after the write returned. After every
step each kept revision of each session loads ``==`` its model, and
``session_history`` lists them. The orders that single tests do not think
of (a rewind to a revision that itself grew a rewound transcript, a fork of
it, edits between) are found here. Every backend (conftest.py).
"""

from __future__ import annotations

import copy
import random

import pytest
from conftest import StoreFactory

from sessionactors import Message, Session, SessionStore

STEPS = 80
Models = dict[str, dict[int, Session]]


def _message(rng: random.Random, number: int) -> Message:
    content = rng.choice([f"text {number}", {"k": number, "l": [1, 2]}, [number, None], None])
    return Message(id=f"m{number}", role=rng.choice(["user", "assistant"]), content=content)


class _Walk:
    def __init__(self, store: SessionStore, seed: int, history: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.history = history
        self.models: Models = {}
        self.made = 0

    def message(self) -> Message:
        self.made += 1
        return _message(self.rng, self.made)

    def kept(self, session_id: str) -> list[int]:
        return sorted(self.models[session_id])[-self.history :]

    def wrote(self, session: Session) -> None:
        self.models.setdefault(session.id, {})[session.revision] = copy.deepcopy(session)

    async def step(self, number: int) -> None:
        rng, store = self.rng, self.store
        session_id = rng.choice(sorted(self.models))
        current = await store.load_session(session_id)
        assert current is not None
        # Adds and rewinds weigh most: their orders are where transcripts are shared.
        kinds = ["add", "rewind"] * 3 + ["edit", "remove", "stale", "update", "title"]
        kind = rng.choice([*kinds, "fork", "fork", "delete"])
        if kind == "add":
            current.messages.append(self.message())
        elif kind == "edit" and current.messages:
            rng.choice(current.messages).content = {"edited": number}
        elif kind == "remove" and current.messages:
            del current.messages[rng.randrange(len(current.messages))]
        if kind in ("add", "edit", "remove"):
            await store.save_runtime_session(current)
            self.wrote(current)
        elif kind == "stale":
            stale = copy.deepcopy(self.models[session_id][rng.choice(self.kept(session_id))])
            stale.messages.append(self.message())
            await store.checkpoint_runtime_session(stale)
            self.wrote(stale)
        elif kind == "rewind":
            target = rng.choice(self.kept(session_id))
            rewound = await store.rewind_session(session_id, target)
            assert rewound.messages == self.models[session_id][target].messages
            self.wrote(rewound)
        elif kind == "update":

            def change(session: Session) -> None:
                if session.messages:
                    session.messages[-1].content = f"updated {number}"
                session.runtime_state["step"] = number

            self.wrote(await store.update_session(session_id, change))
        elif kind == "title":
            self.wrote(await store.set_title(session_id, f"title {number}"))
        elif kind == "fork":
            target = rng.choice(self.kept(session_id))
            fork = await store.fork_session(session_id, f"fork-{number}", revision=target)
            assert fork.messages == self.models[session_id][target].messages
            self.wrote(fork)
        elif kind == "delete" and session_id != "s":
            assert await store.delete_session(session_id)
            del self.models[session_id]

    async def check(self, number: int) -> None:
        for session_id in sorted(self.models):
            kept = self.kept(session_id)
            for revision in kept:
                loaded = await self.store.load_session(session_id, revision=revision)
                assert loaded == self.models[session_id][revision], (number, session_id, revision)
            listed = await self.store.session_history(session_id)
            assert [entry.revision for entry in listed[: len(kept)]] == kept[::-1]


@pytest.mark.parametrize("history", [3, 100])
@pytest.mark.parametrize("seed", [7, 10])
async def test_every_kept_revision_loads_as_written_along_a_random_life(
    make_store: StoreFactory, seed: int, history: int
) -> None:
    async with make_store(history=history) as store:
        walk = _Walk(store, seed * 1000 + history, history)
        first = Session(id="s", messages=[walk.message() for _ in range(3)])
        await store.save_runtime_session(first)
        walk.wrote(first)
        for number in range(STEPS):
            await walk.step(number)
            await walk.check(number)
