"""Child of the revision-order test: saves one session over and over, reporting its revisions.

Usage: revision_child.py NAME LOCATION SESSION_ID SAVES BARRIER_DIR

Opens a store on LOCATION (a directory or a postgresql:// URL), touches
BARRIER_DIR/ready-NAME, waits for BARRIER_DIR/go, then saves SAVES times a
session whose metadata names this child and the step, and prints one JSON
line: ``[[revision, step], ...]`` in the order its saves returned.
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
    """Block until ``path`` exists: every child starts its saves at once."""
    while not path.exists():
        time.sleep(0.005)


async def main(name: str, location: str, session_id: str, saves: int, barrier: Path) -> None:
    got: list[list[int]] = []
    async with sessionactors.open_store(location, durability="flush", history=1000) as store:
        (barrier / f"ready-{name}").touch()
        wait_for(barrier / "go")
        for step in range(saves):
            session = Session(
                id=session_id,
                messages=[Message(id=f"{name}-{step}", role="assistant", content=step)],
                metadata={"writer": name, "step": step},
            )
            await store.save_runtime_session(session)
            got.append([session.revision, step])
    print(json.dumps(got))


if __name__ == "__main__":
    name, location, session_id, saves, barrier = sys.argv[1:]
    trio.run(main, name, location, session_id, int(saves), Path(barrier))
