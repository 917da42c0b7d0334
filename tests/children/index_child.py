"""Child of the listing-index kill test: writes many sessions of a file store until killed.

Usage: index_child.py ROOT SEED MODE

Opens a file store on ROOT and, from several tasks, creates sessions, saves
them again, renames and pins them, updates them and deletes some, forever.
It touches ROOT/../ready once its first write returned.

MODE ``random``: the parent SIGKILLs it at a moment of its choosing.
MODE ``victim``: it SIGKILLs itself once the session ``victim-SEED`` is
written, just before the listing index is told (the window a kill can hit:
the session's files are there, the index knows nothing of it).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import trio

import sessionactors
from sessionactors import Message, Session
from sessionactors.storage.files.index import ListingIndex


def die_before_publishing(victim: str) -> None:
    original = ListingIndex.publish

    def publish(self: ListingIndex, session_id: str, *args: Any, **kwargs: Any) -> None:
        if session_id == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, session_id, *args, **kwargs)

    ListingIndex.publish = publish  # type: ignore[method-assign]


async def writer(store: sessionactors.SessionStore, rng: random.Random, prefix: str) -> None:
    made: list[str] = []
    step = 0
    while True:
        step += 1
        op = rng.choices(["new", "save", "title", "pin", "update", "delete"], [4, 3, 2, 1, 2, 1])[0]
        if op == "new" or not made:
            session_id = f"{prefix}-{step}"
            messages = [
                Message(id=f"m{i}", role="user", content=i) for i in range(rng.randint(0, 3))
            ]
            await store.save_runtime_session(Session(id=session_id, messages=messages))
            made.append(session_id)
            continue
        session_id = rng.choice(made)
        try:
            if op == "save":
                await store.save_runtime_session(Session(id=session_id, metadata={"step": step}))
            elif op == "title":
                await store.set_title(
                    session_id, rng.choice(["Straße", "Plan", "ideas"]) + str(step)
                )
            elif op == "pin":
                await store.set_pinned(session_id, rng.random() < 0.5)
            elif op == "update":
                await store.update_session(
                    session_id,
                    lambda s, n=step: s.messages.append(
                        Message(id=f"u{n}", role="tool", content=n)
                    ),
                )
            else:
                await store.delete_session(session_id)
                made.remove(session_id)
        except sessionactors.SessionNotFoundError:
            made.remove(session_id)


async def main(root: Path, seed: int, mode: str) -> None:
    rng = random.Random(seed)
    async with sessionactors.open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id=f"first-{seed}"))
        (root.parent / "ready").touch()
        async with trio.open_nursery() as nursery:
            for task in range(6):
                nursery.start_soon(writer, store, random.Random(rng.random()), f"c{seed}t{task}")
            if mode == "victim":
                await trio.sleep(rng.random() * 0.05)
                die_before_publishing(f"victim-{seed}")
                await store.save_runtime_session(Session(id=f"victim-{seed}", title="Victim"))
            await trio.sleep(30)  # never outlive a parent that failed to kill us
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    root, seed, mode = sys.argv[1:]
    trio.run(main, Path(root), int(seed), mode)
