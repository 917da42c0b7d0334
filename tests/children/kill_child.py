"""Child of the kill test: saves, checkpoints, appends, rewinds and forks until SIGKILLed.

Usage:
    kill_child.py serve FD      a fork server (see below) on the SEQPACKET socket FD
    kill_child.py ROOT DURABILITY TRIAL SEED    one child, acknowledging on stdout

A child writes one acknowledgement line, a JSON object, to its ack
descriptor after each call *returns* (one ``write``: the line is in the pipe
before the next call begins, so a kill can only lose what no call returned):

    {"k": "ready"}                                the bursts start now
    {"k": "save", "sid": "s1", "n": N, ...}       s1 persisted with messages m0..m<N-1>
    {"k": "ckpt", "sid": "s2", "n": N, ...}       s2's transcript is k0..k<N-1>
    {"k": "rev", "sid": "s3", "op": OP, ...}      a write of s3: an append, an edit of an
                                                  old message, a compaction, a new state,
                                                  or a rewind (to revision "to")
    {"k": "forking", "sid": F, "src": S}          about to fork S into F
    {"k": "fork", "sid": F, "src": S, "src_rev": R, ...}    F made, revision 1
    {"k": "fork-missed", "sid": F}                the fork raised RevisionNotFoundError
    {"k": "deleting", "sid": F} / {"k": "delete", "sid": F}  around a delete of fork F
    {"k": "append", "sid": S, "task": T, "seq": Q}

Every ack of a write carries the revision it made ("rev"), the digest of
the caller's object after the call returned ("h": everything a load returns)
and of its content ("c": messages, metadata and runtime_state), so the
parent can hold each kept revision to exactly what was acknowledged.

Session s1 is saved as a whole snapshot from a *stale* copy (metadata_version
0), so a title set between kills must survive. Session s2 only ever grows by
checkpoints carrying the new messages alone. s3 is rewritten in every way a
log knows, forked (and forks of forks made and deleted) while it is written.

The fork server: the parent starts it once; it imports everything, then for
each request (a JSON list of arguments, with the write end of a pipe passed
along) forks a child that runs ``main`` acknowledging into that pipe, reports
``pid N``, waits for it and reports ``exit N STATUS``. A fork of a process
that has imported trio and sessionactors starts in milliseconds, where a new
interpreter takes a quarter of a second: hundreds of kills fit in the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
import traceback
from typing import Any, Literal, cast

import orjson
import trio

import sessionactors
from sessionactors import Message, RevisionNotFoundError, Session
from sessionactors._model import converter

S1_APPENDERS = 6
S2_APPENDERS = 2
BIG_PAD = 96 * 1024  # big enough for a kill to tear the write of a batch
HISTORY = 4  # revisions kept per session, by the child's store and the parent's
FORKS = 6  # forks a child makes at most
S3_MAX = 40  # s3 is compacted once it holds more messages than this


class Acks:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, **fields: Any) -> None:
        line = orjson.dumps(fields) + b"\n"
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view) :]


def digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def whole(session: Session) -> str:
    """The digest of everything a load of this revision must return."""
    return digest(converter.unstructure(session))


def content(session: Session) -> str:
    """The digest of what a rewind and a fork take from a revision."""
    data = converter.unstructure(session)
    return digest([data["messages"], data["metadata"], data["runtime_state"]])


def written(session: Session) -> dict[str, Any]:
    return {"rev": session.revision, "h": whole(session), "c": content(session)}


def s1_snapshot(n: int, trial: int) -> Session:
    return Session(
        id="s1",
        messages=[Message(id=f"m{i}", role="user", content=f"c{i}") for i in range(n)],
        metadata={"n": n},
        runtime_state={"n": n, "trial": trial},
    )


async def saver(store: sessionactors.SessionStore, ack: Acks, n: int, trial: int) -> None:
    while True:
        n += 1
        session = s1_snapshot(n, trial)
        await store.save_runtime_session(session)
        ack(k="save", sid="s1", n=n, **written(session))


async def checkpointer(
    store: sessionactors.SessionStore, ack: Acks, n: int, rng: random.Random
) -> None:
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
        ack(k="ckpt", sid="s2", n=n, **written(session))


async def appender(
    store: sessionactors.SessionStore,
    ack: Acks,
    sid: str,
    trial: int,
    task: int,
    rng: random.Random,
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
        ack(k="append", sid=sid, task=task, seq=seq)
        seq += 1


async def reviser(
    store: sessionactors.SessionStore,
    ack: Acks,
    s3: Session,
    trial: int,
    rng: random.Random,
    revisions: trio.MemorySendChannel[int],
) -> None:
    """Writes s3 in every way: appends, edits of old messages, compactions, rewinds."""
    step = 0
    while True:
        step += 1
        op = rng.choices(["append", "edit", "compact", "state", "rewind"], [6, 2, 1, 1, 2])[0]
        if len(s3.messages) > S3_MAX:
            op = "compact"
        target = None
        if op == "rewind":
            target = rng.randint(max(1, s3.revision - HISTORY + 1), s3.revision)
            s3 = await store.rewind_session("s3", target)
        else:
            if op == "append" or not s3.messages:
                s3.messages += [
                    Message(id=f"t{trial}-{step}-{j}", role="user", content={"t": trial, "j": j})
                    for j in range(rng.randint(1, 3))
                ]
            elif op == "edit":  # an old message: its replacement appended
                index = rng.randrange(len(s3.messages))
                s3.messages[index].content = {"edited": [trial, step]}
            elif op == "compact":
                half = max(1, len(s3.messages) // 2)
                summary = Message(id=f"sum{trial}-{step}", role="system", content=f"{half}")
                s3.messages[:half] = [summary]
            else:
                s3.runtime_state = {"trial": trial, "step": step}
            await store.save_runtime_session(s3)
        ack(k="rev", sid="s3", op=op, to=target, **written(s3))
        revisions.send_nowait(s3.revision)


async def forker(
    store: sessionactors.SessionStore,
    ack: Acks,
    trial: int,
    rng: random.Random,
    revisions: trio.MemoryReceiveChannel[int],
) -> None:
    """Forks s3 while it is written (at its latest, or a recent revision), and forks of forks."""
    made: list[str] = []
    for number in range(FORKS):
        latest = 0
        for _ in range(2):  # two writes of s3 between forks, at least
            latest = await revisions.receive()
        fid = f"f{trial}-{number}"
        source, revision = "s3", None
        if made and rng.random() < 0.3:
            source = rng.choice(made)
        elif rng.random() < 0.5:
            revision = rng.randint(max(1, latest - HISTORY + 1), latest)
        ack(k="forking", sid=fid, src=source)
        try:
            fork = await store.fork_session(source, fid, revision=revision)
        except RevisionNotFoundError:  # s3 moved on past it meanwhile: nothing is made
            ack(k="fork-missed", sid=fid)
            continue
        ack(k="fork", sid=fid, src=source, src_rev=fork.forked_from_revision, **written(fork))
        made.append(fid)
        if len(made) >= 3 and rng.random() < 0.4:
            # Delete a fork (a fork of it, if any, must stay whole).
            gone = made.pop(rng.randrange(len(made)))
            ack(k="deleting", sid=gone)
            await store.delete_session(gone)
            ack(k="delete", sid=gone)


async def main(
    root: str, durability: Literal["fsync", "flush"], trial: int, seed: int, ack: Acks
) -> None:
    rng = random.Random(seed)
    # Never outlive a parent that failed to kill us.
    with trio.move_on_after(60):
        async with sessionactors.open_store(root, durability=durability, history=HISTORY) as store:
            s1 = await store.load_session("s1")
            n1 = len(s1.messages) if s1 is not None else 0
            first = s1_snapshot(n1, trial)
            await store.save_runtime_session(first)
            ack(k="save", sid="s1", n=n1, **written(first))
            s2 = await store.load_session("s2")
            n2 = len(s2.messages) if s2 is not None else 0
            if s2 is None:
                s2 = Session(id="s2", metadata={"upto": 0})
                await store.checkpoint_runtime_session(s2)
                ack(k="ckpt", sid="s2", n=n2, **written(s2))
            s3 = await store.load_session("s3")
            if s3 is None:
                s3 = Session(id="s3", messages=[Message(id="t0", role="user", content=0)])
                await store.save_runtime_session(s3)
                ack(k="rev", sid="s3", op="create", to=None, **written(s3))
            ack(k="ready")
            send, receive = trio.open_memory_channel[int](1_000_000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(saver, store, ack, n1, trial)
                nursery.start_soon(checkpointer, store, ack, n2, random.Random(rng.random()))
                nursery.start_soon(
                    reviser, store, ack, s3, trial, random.Random(rng.random()), send
                )
                nursery.start_soon(forker, store, ack, trial, random.Random(rng.random()), receive)
                for task in range(S1_APPENDERS + S2_APPENDERS):
                    sid = "s1" if task < S1_APPENDERS else "s2"
                    task_rng = random.Random(rng.random())
                    nursery.start_soon(appender, store, ack, sid, trial, task, task_rng)


def run_child(args: list[Any], ack_fd: int) -> None:
    root, durability, trial, seed = args
    if durability not in ("fsync", "flush"):
        raise SystemExit(f"bad durability {durability!r}")
    mode = cast(Literal["fsync", "flush"], durability)
    trio.run(main, root, mode, int(trial), int(seed), Acks(ack_fd))


def serve(fd: int) -> None:
    """The fork server: one child per request, until the parent closes its end."""
    sock = socket.socket(fileno=fd)
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 65536, 1)
        if not message:
            return
        pid = os.fork()
        if pid == 0:  # the child: acknowledge into the pipe passed along
            status = 0
            try:
                sock.close()
                run_child(json.loads(message), fds[0])
            except BaseException:
                traceback.print_exc()
                status = 1
            finally:
                sys.stderr.flush()
                os._exit(status)
        os.close(fds[0])
        sock.send(b"pid %d" % pid)
        _, status = os.waitpid(pid, 0)
        sock.send(b"exit %d %d" % (pid, os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        run_child(sys.argv[1:], sys.stdout.fileno())
