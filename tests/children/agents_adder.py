"""Child of the cross-process AgentsSession test: adds items to one session, then exits.

Usage: agents_adder.py ROOT SESSION_ID NAME ADDS BARRIER_DIR

Opens an aio store on ROOT, touches BARRIER_DIR/ready-NAME, waits for
BARRIER_DIR/go (so that every child's adds overlap), then makes ADDS calls of
``add_items``, each adding two items: a user message NAME-<n>-a, and a function call's
output ``call-<n>`` that every child adds alike.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from sessionactors import aio
from sessionactors.agents import AgentsSession


def wait_for_go(barrier: Path) -> None:
    for _ in range(6000):  # a minute at most
        if (barrier / "go").exists():
            return
        time.sleep(0.01)
    raise TimeoutError("no go from the test")


async def main(root: str, session_id: str, name: str, adds: int, barrier: Path) -> None:
    async with aio.open_store(root) as store:
        session = AgentsSession(store, session_id)
        (barrier / f"ready-{name}").touch()
        await asyncio.to_thread(wait_for_go, barrier)
        for n in range(adds):
            await session.add_items(
                [
                    {"role": "user", "content": f"{name}-{n}-a"},
                    # The same item in every child: equal items are still two items.
                    {"type": "function_call_output", "call_id": f"call-{n}", "output": "same"},
                ]
            )


if __name__ == "__main__":
    root, session_id, name, adds, barrier = sys.argv[1:6]
    asyncio.run(main(root, session_id, name, int(adds), Path(barrier)))
