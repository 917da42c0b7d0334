"""Child of the kill test: saves, checkpoints and appends until it is SIGKILLed.

Usage: kill_child.py ROOT DURABILITY TRIAL SEED

It prints one acknowledgement line (flushed) after each call *returns*:

    save s1 <n>            s1 persisted with messages m0..m<n-1>
    ckpt s2 <n>            s2's transcript is k0..k<n-1>
    append <sid> <task> <seq>
    ready                  the bursts start now

Session s1 is saved as a whole snapshot from a *stale* copy
(metadata_version 0), so a title set between kills must survive. Session s2
only ever grows by checkpoints carrying the new messages alone.
"""

from __future__ import annotations

import random
import sys
from typing import Literal, cast

import trio

import sessionactors
from sessionactors import Message, Session

S1_APPENDERS = 6
S2_APPENDERS = 2
BIG_PAD = 96 * 1024  # big enough for a kill to tear the write of a batch


def ack(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def s1_snapshot(n: int, trial: int) -> Session:
    return Session(
        id="s1",
        messages=[Message(id=f"m{i}", role="user", content=f"c{i}") for i in range(n)],
        metadata={"n": n},
        runtime_state={"n": n, "trial": trial},
    )


async def saver(store: sessionactors.SessionStore, n: int, trial: int) -> None:
    while True:
        n += 1
        await store.save_runtime_session(s1_snapshot(n, trial))
        ack(f"save s1 {n}")


async def checkpointer(store: sessionactors.SessionStore, n: int, rng: random.Random) -> None:
    while True:
        step = rng.randint(1, 3)
        new = [Message(id=f"k{i}", role="assistant", content={"i": i}) for i in range(n, n + step)]
        session = Session(id="s2", messages=new, metadata={"upto": n + step})
        await store.checkpoint_runtime_session(session)
        n += step
        # The caller's list is updated in place to the whole transcript.
        ids = [message.id for message in session.messages]
        if ids != [f"k{i}" for i in range(n)]:
            raise AssertionError(f"checkpoint returned transcript {ids[:5]}... of {len(ids)}")
        ack(f"ckpt s2 {n}")


async def appender(
    store: sessionactors.SessionStore, sid: str, trial: int, task: int, rng: random.Random
) -> None:
    seq = 0
    while True:
        size = BIG_PAD if rng.random() < 0.005 else rng.randrange(200)
        record = {"trial": trial, "task": task, "seq": seq, "pad": "x" * size}
        if seq % 2:
            await store.append_token_usage_record(sid, record)
        else:  # the str form, trailing newline allowed
            text = '{"trial": %d, "task": %d, "seq": %d, "pad": "%s"}\n'
            await store.append_token_usage_record(sid, text % (trial, task, seq, "x" * size))
        ack(f"append {sid} {task} {seq}")
        seq += 1


async def main(root: str, durability: Literal["fsync", "flush"], trial: int, seed: int) -> None:
    rng = random.Random(seed)
    # Never outlive a parent that failed to kill us.
    with trio.move_on_after(60):
        async with sessionactors.open_store(root, durability=durability) as store:
            s1 = await store.load_session("s1")
            n1 = len(s1.messages) if s1 is not None else 0
            await store.save_runtime_session(s1_snapshot(n1, trial))
            ack(f"save s1 {n1}")
            s2 = await store.load_session("s2")
            n2 = len(s2.messages) if s2 is not None else 0
            if s2 is None:
                await store.checkpoint_runtime_session(Session(id="s2", metadata={"upto": 0}))
            ack(f"ckpt s2 {n2}")
            ack("ready")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(saver, store, n1, trial)
                nursery.start_soon(checkpointer, store, n2, random.Random(rng.random()))
                for task in range(S1_APPENDERS + S2_APPENDERS):
                    sid = "s1" if task < S1_APPENDERS else "s2"
                    task_rng = random.Random(rng.random())
                    nursery.start_soon(appender, store, sid, trial, task, task_rng)


if __name__ == "__main__":
    root, durability, trial, seed = sys.argv[1:]
    if durability not in ("fsync", "flush"):
        raise SystemExit(f"bad durability {durability!r}")
    trio.run(main, root, cast(Literal["fsync", "flush"], durability), int(trial), int(seed))
