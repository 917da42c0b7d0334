"""Child of the shared-root test: one role among several processes on one session.

Usage: shared_child.py ROLE NAME ROOT SESSION_ID BARRIER_DIR

Roles:
    runtime-fresh   saves a new stale copy (metadata_version 0) each time
    runtime-reuse   saves one Session object over and over; the store updates
                    it in place, then the runtime scribbles its own title
    ui              renames the session "t1" .. "t40", in order
    appender        appends 300 records carrying its name and a sequence number

Every child opens its store, touches BARRIER_DIR/ready-NAME, waits for
BARRIER_DIR/go so that all of them really overlap, does its part (runtimes
loop until BARRIER_DIR/stop exists) and prints one JSON line: its name, the
wall-clock times its calls returned, and what it checked.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import trio

import sessionactors
from sessionactors import Message, Session

RENAMES = 40
APPENDS = 300


def runtime_copy(name: str, i: int, session: Session | None = None) -> Session:
    messages = [Message(id=f"{name}-{j}", role="assistant", content=i) for j in range(i % 17)]
    if session is None:
        session = Session(id=SESSION_ID)
    session.title = f"runtime {name} {i}"  # a runtime scribble that must never win
    session.messages = messages
    session.metadata = {"writer": name, "i": i}
    session.runtime_state = {"writer": name, "i": i, "count": len(messages)}
    return session


async def role_runtime(store: sessionactors.SessionStore, name: str, reuse: bool) -> list[float]:
    done: list[float] = []
    reused: Session | None = None
    i = 0
    while not (BARRIER / "stop").exists():
        i += 1
        session = runtime_copy(name, i, reused if reuse else None)
        await store.save_runtime_session(session)
        done.append(time.time())
        if reuse:
            reused = session  # now carries the merged (disk's) group, then a scribble
        elif session.title.startswith("runtime"):
            # The caller's object takes the merged group: never our own title,
            # since the parent gave the session a title before we started.
            raise AssertionError(f"stale save won the title: {session.title!r}")
    return done


async def role_ui(store: sessionactors.SessionStore) -> list[float]:
    rng = random.Random()
    done: list[float] = []
    for i in range(1, RENAMES + 1):
        session = await store.set_title(SESSION_ID, f"t{i}")
        done.append(time.time())
        got = (session.title, session.title_version, session.metadata_version)
        if got != (f"t{i}", i, i):
            raise AssertionError(f"rename {i} returned {got}")
        await trio.sleep(rng.uniform(0, 0.01))  # spread the renames over the runtime saves
    return done


async def role_appender(store: sessionactors.SessionStore, name: str) -> list[float]:
    done: list[float] = []
    for seq in range(APPENDS):
        record = {"proc": name, "seq": seq, "pad": "p" * (seq % 97)}
        if seq % 3:
            await store.append_token_usage_record(SESSION_ID, record)
        else:
            await store.append_token_usage_record(SESSION_ID, json.dumps(record) + "\n")
        done.append(time.time())
    return done


async def main(role: str, name: str, root: str) -> None:
    with trio.fail_after(60):  # never outlive a parent that failed
        async with sessionactors.open_store(root, durability="flush") as store:
            (BARRIER / f"ready-{name}").touch()
            # A barrier across processes: a file is all they share, so poll it.
            while not (BARRIER / "go").exists():  # noqa: ASYNC110
                await trio.sleep(0.001)
            if role.startswith("runtime"):
                done = await role_runtime(store, name, reuse=role == "runtime-reuse")
            elif role == "ui":
                done = await role_ui(store)
            elif role == "appender":
                done = await role_appender(store, name)
            else:
                raise SystemExit(f"unknown role {role!r}")
    print(json.dumps({"name": name, "role": role, "done": done}), flush=True)


if __name__ == "__main__":
    ROLE, NAME, ROOT, SESSION_ID, BARRIER_DIR = sys.argv[1:]
    BARRIER = Path(BARRIER_DIR)
    trio.run(main, ROLE, NAME, ROOT)
