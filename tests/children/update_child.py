"""Child of the update test: many concurrent ``update_session`` increments of one session.

Usage: update_child.py NAME LOCATION SESSION_ID TASKS BARRIER_DIR

Opens a store on LOCATION (a directory or a postgresql:// URL), touches
BARRIER_DIR/ready-NAME, waits for BARRIER_DIR/go, then runs TASKS tasks at
once, each calling ``update_session`` once to add 1 to ``metadata["n"]`` and
to append a message naming this child and the task. Prints one JSON line:
``[[revision, n], ...]``, what each call returned.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import trio

import sessionactors
from sessionactors import Message, Session


def wait_for(path: Path) -> None:
    """Block until ``path`` exists: every child starts its updates at once."""
    while not path.exists():
        time.sleep(0.005)


async def main(name: str, location: str, session_id: str, tasks: int, barrier: Path) -> None:
    got: list[list[int]] = []

    async def increment(store: sessionactors.SessionStore, task: int) -> None:
        def fn(session: Session) -> None:
            session.metadata["n"] = session.metadata.get("n", 0) + 1
            session.messages.append(Message(id=f"{name}-{task}", role="tool", content=task))

        result = await store.update_session(session_id, fn)
        got.append([result.revision, result.metadata["n"]])

    async with sessionactors.open_store(location, durability="flush", history=1000) as store:
        (barrier / f"ready-{name}").touch()
        wait_for(barrier / "go")
        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(increment, store, task)
    print(json.dumps(got))


if __name__ == "__main__":
    name, location, session_id, tasks, barrier = sys.argv[1:]
    trio.run(main, name, location, session_id, int(tasks), Path(barrier))
