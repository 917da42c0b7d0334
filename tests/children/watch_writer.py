"""Child of the watch tests: writes sessions of its own and one shared session, then reports.

Usage: watch_writer.py NAME LOCATION SESSIONS WRITES BARRIER_DIR

Opens a store on LOCATION (a directory or a postgresql:// URL), touches
BARRIER_DIR/ready-NAME, waits for BARRIER_DIR/go, then makes WRITES saves
spread over its sessions ``NAME-0`` .. ``NAME-<SESSIONS-1>``, each followed by
a save of the session ``shared`` (every child writes it) and, every third
one, a token-usage record. Last it retitles ``NAME-0`` and deletes ``NAME-1``.
Prints one JSON object: each session's last revision as its own calls
returned it (``null``: deleted), ``shared`` included.
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
    """Block until ``path`` exists: every child starts its writes at once."""
    while not path.exists():
        time.sleep(0.005)


async def main(name: str, location: str, sessions: int, writes: int, barrier: Path) -> None:
    last: dict[str, int | None] = {}
    async with sessionactors.open_store(location, durability="flush") as store:
        (barrier / f"ready-{name}").touch()
        wait_for(barrier / "go")
        for step in range(writes):
            session_id = f"{name}-{step % sessions}"
            own = Session(
                id=session_id,
                messages=[Message(id=f"m{step}", role="assistant", content=step)],
                metadata={"writer": name, "step": step},
            )
            await store.save_runtime_session(own)
            last[session_id] = own.revision
            shared = Session(id="shared", metadata={"writer": name, "step": step})
            await store.save_runtime_session(shared)
            last["shared"] = max(last.get("shared") or 0, shared.revision)
            if step % 3 == 0:
                await store.append_token_usage_record(session_id, {"step": step})
        last[f"{name}-0"] = (await store.set_title(f"{name}-0", f"by {name}")).revision
        assert await store.delete_session(f"{name}-1")
        last[f"{name}-1"] = None
    print(json.dumps(last))


if __name__ == "__main__":
    name, location, sessions, writes, barrier = sys.argv[1:]
    trio.run(main, name, location, int(sessions), int(writes), Path(barrier))
