"""Crash safety: children SIGKILLed at random instants, torn tails, leftovers, fsync order.

The kill test is the contract's "a process killed at any instant" promise,
checked the way a storage engineer would. A child saves, checkpoints,
appends, rewrites, rewinds and forks (``children/kill_child.py``) and
acknowledges each call once it returned, with the revision it made and a
digest of what the caller's object held then. After each SIGKILL a fresh
store must find, with ``history`` revisions kept:

- every session loadable, and every revision ``session_history`` lists
  loadable, as it listed it;
- every acknowledged revision within the newest ``history`` listed, and
  loading exactly as acknowledged; every revision once read reading the same
  ever after (a revision is never changed, by a crash or by a later write);
- every token-usage record whose append returned, once;
- every fork whole (its transcript, metadata and state those of the
  revision it names) or absent, never damaged; a fork's source as it was
  acknowledged, whatever was forked from it and deleted since.

Children are forked from a server that has imported everything, so a kill
costs milliseconds, not an interpreter's start: hundreds fit in the suite.
Set SESSIONACTORS_KILL_TRIALS (default 200) to run more kills, and
SESSIONACTORS_KILL_SEED to replay one run; the figures of a run are printed
and written to ``kill-figures.json`` in the test's directory.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from support import current_generation, generations, links, log_record, log_records

import sessionactors
from sessionactors import Message, Session
from sessionactors._model import converter

CHILD = Path(__file__).parent / "children" / "kill_child.py"
KILL_TRIALS = int(os.environ.get("SESSIONACTORS_KILL_TRIALS", "200"))
KILL_SEED = int(os.environ.get("SESSIONACTORS_KILL_SEED", random.randrange(2**32)))
CHAIN = 5  # trials that share one root (and each other's debris) before a fresh one
S1_APPENDERS = 6  # as in the child: tasks 0..5 append to s1, the others to s2
HISTORY = 4  # as in the child: revisions kept per session


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def temps(directory: Path) -> list[str]:
    """The stray temporary files of a session directory."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def digest(value: Any) -> str:  # as the child makes it
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def whole(session: Session) -> str:
    return digest(converter.unstructure(session))


def content(session: Session) -> str:
    data = converter.unstructure(session)
    return digest([data["messages"], data["metadata"], data["runtime_state"]])


def has_a_tail(generation: Path) -> bool:
    """Whether bytes follow the generation's last whole commit (what a kill left of a write)."""
    data = generation.read_bytes()
    end = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        line = data[start : end - 1]
        if line[:1] == b"c" and log_record(b"c", line[10:])[:-1] == line:
            return end != len(data)
        end = start
    return True


def needed_links(directory: Path) -> set[str]:
    """The links a session's own generations reach through their bases."""
    needed: set[str] = set()
    bases = [log_records(path)[0][1]["base"] for path in generations(directory)]
    while bases:
        base = bases.pop()
        if base is None:
            continue
        link = directory / f"link.{base[0]}.jsonl"
        if link.exists() and link.name not in needed:
            needed.add(link.name)
            bases.append(log_records(link)[0][1]["base"])
    return needed


@attrs.define
class Acks:
    """What one child acknowledged before it died, in the order it did."""

    lines: list[dict[str, Any]] = attrs.field(factory=list)
    target: int = 0  # the kill comes once this many lines came in
    reached: trio.Event = attrs.field(factory=trio.Event)

    def add(self, line: bytes) -> None:
        self.lines.append(json.loads(line))
        if len(self.lines) >= self.target:
            self.reached.set()

    def count(self, kind: str) -> int:
        return sum(1 for ack in self.lines if ack["k"] == kind)


@attrs.define
class Chain:
    """What trials on one root have established so far."""

    root: Path
    s1_floor: int = -1  # s1 must hold at least this many messages (-1: may not exist)
    s2_floor: int = -1
    acked: dict[tuple[str, int, int], int] = attrs.field(factory=dict)  # (sid, trial, task)
    title: str | None = None
    renames: int = 0
    s2_pinned: bool = False
    s2_toggles: int = 0
    s3_renames: int = 0
    #: sid -> revision -> digest of the whole session: acknowledged, or read once.
    revisions: defaultdict[str, dict[int, str]] = attrs.field(factory=lambda: defaultdict(dict))
    #: (sid, revision) -> digest of its messages, metadata and runtime_state.
    contents: dict[tuple[str, int], str] = attrs.field(factory=dict)
    acknowledged: set[tuple[str, int]] = attrs.field(factory=set)
    rewinds: list[tuple[int, int]] = attrs.field(factory=list)  # (s3 revision, its target)
    forks: dict[str, tuple[str, int]] = attrs.field(factory=dict)  # acknowledged: its source
    begun: set[str] = attrs.field(factory=set)  # every fork id a child began to make
    missed: set[str] = attrs.field(factory=set)  # forks that raised: never made
    deleting: set[str] = attrs.field(factory=set)  # a delete began
    deleted: set[str] = attrs.field(factory=set)  # a delete returned

    def know(self, sid: str, revision: int, whole_digest: str, content_digest: str) -> None:
        """Record what ``revision`` of ``sid`` holds; it must agree with what was known."""
        known = self.revisions[sid].setdefault(revision, whole_digest)
        assert known == whole_digest, f"{sid} revision {revision} is not what it was"
        known = self.contents.setdefault((sid, revision), content_digest)
        assert known == content_digest, f"{sid} revision {revision} holds other content"

    def take(self, acks: Acks, trial: int) -> None:
        for ack in acks.lines:
            kind, sid = ack["k"], ack.get("sid")
            if kind in ("save", "ckpt", "rev", "fork"):
                assert (sid, ack["rev"]) not in self.acknowledged, f"two acks of {ack}"
                self.acknowledged.add((sid, ack["rev"]))
                self.know(sid, ack["rev"], ack["h"], ack["c"])
            if kind == "save":
                self.s1_floor = max(self.s1_floor, ack["n"])
            elif kind == "ckpt":
                self.s2_floor = max(self.s2_floor, ack["n"])
            elif kind == "rev" and ack["op"] == "rewind":
                self.rewinds.append((ack["rev"], ack["to"]))
            elif kind == "forking":
                self.begun.add(sid)
            elif kind == "fork":
                self.forks[sid] = (ack["src"], ack["src_rev"])
            elif kind == "fork-missed":
                self.missed.add(sid)
            elif kind == "deleting":
                self.deleting.add(sid)
            elif kind == "delete":
                self.deleted.add(sid)
            elif kind == "append":
                self.acked[(sid, trial, ack["task"])] = ack["seq"]


@attrs.define
class Figures:
    trials: int = 0
    kills_before_ready: int = 0
    acked_saves: int = 0
    acked_checkpoints: int = 0
    acked_appends: int = 0
    acked_s3_writes: dict[str, int] = attrs.field(factory=dict)  # by kind of write
    acked_forks: int = 0
    forks_missed: int = 0  # forks that raised RevisionNotFoundError (s3 had moved on)
    acked_fork_deletes: int = 0
    acked_revisions_checked: int = 0  # acknowledged revisions loaded and compared, all checks
    revisions_loaded: int = 0  # every revision session_history listed, loaded, all checks
    forks_found_unacknowledged: int = 0  # whole forks whose ack the kill cut off
    forks_absent_with_leftovers: int = 0  # killed mid-fork: a directory, no session
    append_checks: int = 0  # acknowledged records found again, counted at every check
    generation_tails_seen: int = 0  # bytes after a generation's last commit (a torn write)
    usage_tails_seen: int = 0
    stray_temps_seen: int = 0


# --- the fork server -------------------------------------------------------------------


@attrs.define
class ForkServer:
    """``children/kill_child.py serve``: forks a child per trial, acknowledging into a pipe."""

    sock: trio.socket.SocketType

    async def start(self, args: list[Any]) -> tuple[int, trio.lowlevel.FdStream]:
        read_end, write_end = os.pipe()
        try:
            fds = array.array("i", [write_end])
            await self.sock.sendmsg(
                [json.dumps(args).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
            )
        finally:
            os.close(write_end)  # the child holds the only write end: EOF when it dies
        word, pid = (await self.sock.recv(64)).split()
        assert word == b"pid", (word, pid)
        return int(pid), trio.lowlevel.FdStream(read_end)

    async def wait(self, pid: int) -> int:
        """The child's exit status (a signal's negative number), once it is gone."""
        word, got, status = (await self.sock.recv(64)).split()
        assert (word, int(got)) == (b"exit", pid)
        return int(status)


@asynccontextmanager
async def fork_server(stderr: Path) -> AsyncIterator[ForkServer]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with stderr.open("wb") as err, theirs:  # a local file: opening it does not block
        process = await trio.lowlevel.open_process(
            [sys.executable, str(CHILD), "serve", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stderr=err,
        )
    sock = trio.socket.from_stdlib_socket(ours)
    try:
        yield ForkServer(sock)
    finally:
        sock.close()  # the server's next receive sees the end, and it exits
        with trio.CancelScope(shield=True):
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def kill_once(
    server: ForkServer, root: Path, trial: int, rng: random.Random, stderr: Path
) -> Acks:
    """Fork a child, SIGKILL it at a random instant, and return what it acknowledged."""
    durability = "fsync" if trial % 4 == 3 else "flush"
    seed = rng.randrange(2**31)
    # Right away (anywhere in its start), or right after its n-th acknowledgement.
    acks = Acks(target=0 if rng.random() < 0.15 else rng.randint(1, 250))
    pid, stream = await server.start([str(root), durability, trial, seed])
    pending = b""

    async def read(until_end: bool) -> None:
        nonlocal pending
        while until_end or not acks.reached.is_set():
            data = await stream.receive_some(65536)
            if not data:  # the child is gone (a line without its newline is no ack)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                acks.add(line)

    async with stream:
        with trio.fail_after(30):
            if acks.target:
                await read(until_end=False)
            with contextlib.suppress(ProcessLookupError):  # ended by itself: its status says
                os.kill(pid, signal.SIGKILL)
            status = await server.wait(pid)
            await read(until_end=True)  # what it acknowledged before it died
    if status != -signal.SIGKILL:  # it must have died of our kill, not by itself
        raise AssertionError(f"the child ended by itself with {status}:\n" + read_text(stderr))
    return acks


# --- what a fresh store must find after a kill ------------------------------------------


def check_log(sid: str, records: list[dict[str, Any]], chain: Chain, figures: Figures) -> None:
    """Every acknowledged record once, each task's records in order, nothing else odd."""
    seqs: defaultdict[tuple[str, int, int], list[int]] = defaultdict(list)
    for record in records:
        assert set(record) == {"trial", "task", "seq", "pad"}, record
        assert record["pad"] == "x" * len(record["pad"])
        assert (record["task"] < S1_APPENDERS) == (sid == "s1"), record
        seqs[(sid, record["trial"], record["task"])].append(record["seq"])
    for key, found in seqs.items():
        # Each task appends its next record only after the previous returned,
        # so its records are 0, 1, 2, ... in the log: no gap, no duplicate.
        assert found == list(range(len(found))), f"{key}: records {found[:20]}..."
    for key, seq in chain.acked.items():
        if key[0] != sid:
            continue
        found = seqs.get(key, [])
        assert len(found) > seq, f"{key}: record {seq} was acknowledged, log has {len(found)}"
        figures.append_checks += seq + 1


async def check_history(
    store: sessionactors.SessionStore, sid: str, latest: int, chain: Chain, figures: Figures
) -> None:
    """Every revision listed loads as listed; every acknowledged one kept is there, as it was."""
    history = await store.session_history(sid)
    assert [entry.revision for entry in history] == list(
        range(latest, max(0, latest - HISTORY), -1)
    ), f"{sid}: history {[entry.revision for entry in history]}, latest {latest}"
    newest_acked = max((r for (s, r) in chain.acknowledged if s == sid), default=0)
    assert latest >= newest_acked, f"{sid}: revision {newest_acked} was acknowledged, {latest}"
    for entry in history:
        loaded = await store.load_session(sid, revision=entry.revision)
        assert loaded is not None and loaded.revision == entry.revision, (sid, entry)
        listed = (entry.message_count, entry.title, entry.pinned, entry.updated_at)
        assert listed == (len(loaded.messages), loaded.title, loaded.pinned, loaded.updated_at)
        figures.revisions_loaded += 1
        if (sid, entry.revision) in chain.acknowledged:
            figures.acked_revisions_checked += 1
        # As acknowledged, or as read before: a revision never changes.
        chain.know(sid, entry.revision, whole(loaded), content(loaded))


async def check_after_kill(chain: Chain, figures: Figures) -> None:
    """Open a fresh store on the root and hold it to every acknowledgement so far."""
    root = chain.root
    for directory in root.iterdir() if root.exists() else []:
        figures.stray_temps_seen += len(temps(directory))
        figures.generation_tails_seen += sum(has_a_tail(g) for g in generations(directory))
        log = directory / "token-usage.jsonl"
        if log.exists() and log.stat().st_size and not log.read_bytes().endswith(b"\n"):
            figures.usage_tails_seen += 1
    async with sessionactors.open_store(root, durability="flush", history=HISTORY) as store:
        summaries = {summary.id: summary for summary in await store.list_sessions()}
        s1 = await store.load_session("s1")
        s2 = await store.load_session("s2")
        logs = {sid: await store.read_token_usage(sid) for sid in ("s1", "s2")}

        if chain.s1_floor >= 0:
            assert s1 is not None, "an acknowledged save of s1 is lost"
        if s1 is not None:
            n = len(s1.messages)
            assert n >= chain.s1_floor, f"s1 has {n} messages, a save of {chain.s1_floor} returned"
            # One whole snapshot: the transcript, the metadata and the head agree.
            expected = [Message(id=f"m{i}", role="user", content=f"c{i}") for i in range(n)]
            assert s1.messages == expected
            assert s1.metadata == {"n": n}
            assert s1.runtime_state["n"] == n
            assert summaries["s1"].message_count == n
            if chain.title is not None:  # stale runtime saves never clobber the UI's title
                assert (s1.title, s1.title_version) == (chain.title, chain.renames)
                assert s1.metadata_version == chain.renames
        if chain.s2_floor >= 0:
            assert s2 is not None, "an acknowledged checkpoint of s2 is lost"
        if s2 is not None:
            n = len(s2.messages)
            assert n >= chain.s2_floor, f"s2 has {n} messages, a checkpoint of {chain.s2_floor}"
            expected = [Message(id=f"k{i}", role="assistant", content={"i": i}) for i in range(n)]
            assert s2.messages == expected
            assert s2.metadata == {"upto": n}
            assert summaries["s2"].message_count == n
            assert (s2.pinned, s2.metadata_version) == (chain.s2_pinned, chain.s2_toggles)
        for sid, records in logs.items():
            check_log(sid, records, chain, figures)

        # Every session: whole, and every revision its history lists.
        for sid, summary in summaries.items():
            loaded = await store.load_session(sid)
            assert loaded is not None and loaded.revision == summary.revision, sid
            await check_history(store, sid, summary.revision, chain, figures)
        # Nothing acknowledged is lost; a fork is whole or absent.
        for sid in {sid for sid, _ in chain.acknowledged} - chain.deleting:
            assert sid in summaries, f"{sid} was acknowledged and is gone"
        for sid in chain.deleted | chain.missed:
            assert sid not in summaries and await store.load_session(sid) is None, sid
        for fid in chain.begun - set(summaries):
            assert await store.load_session(fid) is None  # absent, never damaged
            figures.forks_absent_with_leftovers += (root / fid).exists()
        for fid in chain.begun & set(summaries):
            fork = await store.load_session(fid, revision=1)
            assert fork is not None and fork.forked_from is not None, fid
            source = (fork.forked_from, fork.forked_from_revision)
            if fid in chain.forks:
                assert chain.forks[fid] == source, fid
            else:
                figures.forks_found_unacknowledged += 1
            # The fork holds what the revision it names held: the source's, as
            # acknowledged or read, and that source revision is unchanged by it.
            source_content = chain.contents.get(source)  # type: ignore[arg-type]
            if source_content is not None:
                assert content(fork) == source_content, f"{fid} is not {source}"
        for revision, target in chain.rewinds:
            if ("s3", target) in chain.contents:
                assert chain.contents[("s3", revision)] == chain.contents[("s3", target)]

        # A fork into what a killed fork left: it must succeed and link exactly its chain.
        for fid in sorted(chain.begun - set(summaries)):
            if not (root / fid).exists() or fid in chain.deleting:
                continue
            fork = await store.fork_session("s3", fid)
            chain.forks[fid] = ("s3", fork.forked_from_revision or 0)
            chain.acknowledged.add((fid, 1))
            chain.know(fid, 1, whole(fork), content(fork))
            assert {link.name for link in links(root / fid)} == needed_links(root / fid), fid
            break  # one a check is enough

        # UI edits between kills: the next child's stale saves must keep them.
        # Being this actor's first write, each also sweeps crash-left temp files.
        for sid, edit in (
            ("s1", "title"),
            ("s2", "pinned"),
            ("s3", "title"),
        ):
            if sid not in summaries:
                continue
            if sid == "s1":
                chain.renames += 1
                chain.title = f"after kill {chain.renames}"
                edited = await store.set_title("s1", chain.title)
            elif sid == "s2":
                chain.s2_pinned = not chain.s2_pinned
                chain.s2_toggles += 1
                edited = await store.set_pinned("s2", chain.s2_pinned)
            else:
                chain.s3_renames += 1
                edited = await store.set_title("s3", f"ui edit {chain.s3_renames}")
            chain.acknowledged.add((sid, edited.revision))
            chain.know(sid, edited.revision, whole(edited), content(edited))
            assert temps(root / sid) == [], edit
            assert not has_a_tail(current_generation(root / sid)), edit


async def test_kill_at_random_instants_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    figures = Figures()
    chain = Chain(tmp_path / "root-0")
    stderr = tmp_path / "child-stderr.txt"
    async with fork_server(stderr) as server:
        for trial in range(KILL_TRIALS):
            if trial and trial % CHAIN == 0:
                chain = Chain(tmp_path / f"root-{trial // CHAIN}")
            acks = await kill_once(server, chain.root, trial, rng, stderr)
            figures.trials += 1
            figures.kills_before_ready += not acks.count("ready")
            figures.acked_saves += acks.count("save")
            figures.acked_checkpoints += acks.count("ckpt")
            figures.acked_appends += acks.count("append")
            figures.acked_forks += acks.count("fork")
            figures.forks_missed += acks.count("fork-missed")
            figures.acked_fork_deletes += acks.count("delete")
            for ack in acks.lines:
                if ack["k"] == "rev":
                    figures.acked_s3_writes[ack["op"]] = (
                        figures.acked_s3_writes.get(ack["op"], 0) + 1
                    )
            try:
                chain.take(acks, trial)
                await check_after_kill(chain, figures)
            except AssertionError as exc:
                raise AssertionError(f"trial {trial}, SESSIONACTORS_KILL_SEED={KILL_SEED}") from exc
    report = {"seed": KILL_SEED, **attrs.asdict(figures)}
    (tmp_path / "kill-figures.json").write_text(json.dumps(report, indent=1))
    print(f"kill test figures: {json.dumps(report)}")
    assert figures.trials == KILL_TRIALS >= 1
    if KILL_TRIALS >= 20:  # the run really exercised the store, not just the child's start
        assert figures.acked_saves > 0
        assert figures.acked_appends > 0
    if KILL_TRIALS >= 100:  # every kind of write was acknowledged, and checked after kills
        assert set(figures.acked_s3_writes) >= {"append", "edit", "compact", "state", "rewind"}
        assert figures.acked_forks > 0 and figures.acked_fork_deletes > 0
        assert figures.acked_revisions_checked > KILL_TRIALS


# --- torn tails ---------------------------------------------------------------------


TORN_TAILS = {
    "half a record": b'{"task": 9, "se',
    "a whole object without its newline": b'{"task": 9, "seq": 0}',
    "a cut multi-byte character": '{"pad": "\u00e9'.encode()[:-1],
    "a tail longer than 64 KiB": b'{"pad": "' + b"y" * 200_000,
    "a lone space": b" ",
}


@pytest.mark.parametrize("tail", TORN_TAILS.values(), ids=TORN_TAILS.keys())
@pytest.mark.parametrize("whole_lines", [0, 3])
async def test_torn_tail_is_skipped_then_cut_before_the_next_append(
    tmp_path: Path, tail: bytes, whole_lines: int
) -> None:
    log = tmp_path / "s" / "token-usage.jsonl"
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        for seq in range(whole_lines):
            await store.append_token_usage_record("s", {"seq": seq})
    intact = log.read_bytes() if whole_lines else b""
    # What a process killed in the middle of an append leaves behind.
    append_bytes(log, tail)
    torn = log.read_bytes()

    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        expected = [{"seq": seq} for seq in range(whole_lines)]
        assert await store.read_token_usage("s") == expected
        assert log.read_bytes() == torn  # reading repairs nothing behind anyone's back
        await store.append_token_usage_record("s", {"seq": "next"})
        assert await store.read_token_usage("s") == [*expected, {"seq": "next"}]
    # The torn bytes are gone; the new record has a line of its own.
    assert log.read_bytes() == intact + b'{"seq":"next"}\n'


async def test_torn_tail_is_cut_by_another_process_store(tmp_path: Path) -> None:
    """The repair happens in whichever store appends next, not only the one that tore it."""
    log = tmp_path / "s" / "token-usage.jsonl"
    async with sessionactors.open_store(tmp_path, durability="flush") as first:
        await first.save_runtime_session(Session(id="s"))
        await first.append_token_usage_record("s", {"seq": 0})
        async with sessionactors.open_store(tmp_path, durability="flush") as second:
            append_bytes(log, b'{"seq": 1, "pad": "')
            await second.append_token_usage_record("s", {"seq": 2})
            await first.append_token_usage_record("s", {"seq": 3})
            assert await first.read_token_usage("s") == [{"seq": 0}, {"seq": 2}, {"seq": 3}]
    assert log.read_bytes() == b'{"seq":0}\n{"seq":2}\n{"seq":3}\n'


# --- what a killed writer leaves: temporary files, links -------------------------------


def leave_temps(directory: Path, content: bytes, seq: int = 2) -> list[Path]:
    """Temp files as a writer killed between creating a generation and renaming it leaves."""
    directory.mkdir(parents=True, exist_ok=True)
    gen = "0123456789abcdef0123456789abcdef"
    paths = [
        directory / f".log.{seq}.{gen}.jsonl.{os.urandom(16).hex()}.tmp",
        directory / f".log.{seq}.{gen}.jsonl.{os.urandom(16).hex()}.tmp",
    ]
    paths[0].write_bytes(content)
    paths[1].write_bytes(content[: len(content) // 2])  # killed mid-write
    return paths


@pytest.mark.parametrize(
    "next_write", ["save", "checkpoint", "set_title", "set_pinned", "rewind", "fork"]
)
async def test_stray_temp_files_are_ignored_then_swept(tmp_path: Path, next_write: str) -> None:
    root = tmp_path / "root"
    session = Session(id="s", title="kept", messages=[Message(id="a", role="user", content=1)])
    async with sessionactors.open_store(root, durability="flush") as store:
        await store.save_runtime_session(session)
        await store.save_runtime_session(Session(id="other"))
    generation = current_generation(root / "s").read_bytes()
    # A newer generation, whole, that never got renamed into place; half of it; garbage.
    newer = attrs.evolve(session, messages=[], title="never renamed")
    async with sessionactors.open_store(tmp_path / "scratch", durability="flush") as scratch:
        await scratch.save_runtime_session(newer)
    left = leave_temps(root / "s", current_generation(tmp_path / "scratch" / "s").read_bytes())
    (root / "s" / ".log.3.x.jsonl.ffff.tmp").write_bytes(b"\x00garbage")
    # A session whose very first save, and one whose fork, was killed before its rename.
    orphans = leave_temps(root / "never-saved", generation, seq=1)
    fork_orphans = leave_temps(root / "never-forked", generation, seq=1)

    async with sessionactors.open_store(root, durability="flush") as store:
        assert await store.load_session("s") == session
        assert await store.load_session("never-saved") is None
        assert await store.load_session("never-forked") is None
        assert sorted(summary.id for summary in await store.list_sessions()) == ["other", "s"]
        assert all(path.exists() for path in left)  # a read never deletes anything

        if next_write == "save":
            await store.save_runtime_session(Session(id="s", messages=session.messages))
        elif next_write == "checkpoint":
            await store.checkpoint_runtime_session(Session(id="s"))
        elif next_write == "set_title":
            await store.set_title("s", "renamed")
        elif next_write == "set_pinned":
            await store.set_pinned("s", True)
        elif next_write == "rewind":
            await store.rewind_session("s", 1)
        else:
            await store.set_title("s", "renamed")
            await store.fork_session("s", "never-forked")
        assert temps(root / "s") == []
        loaded = await store.load_session("s")
        assert loaded is not None
        assert loaded.messages == session.messages
        assert loaded.title in ("kept", "renamed")  # never the temp file's title

        # The first write of the never-saved session sweeps its debris too.
        await store.save_runtime_session(Session(id="never-saved"))
        assert temps(root / "never-saved") == []
        if next_write == "fork":
            assert temps(root / "never-forked") == []
            fork = await store.load_session("never-forked")
            assert fork is not None and fork.title == "renamed"
    assert not any(path.exists() for path in orphans)
    # A fork into the other's directory swept it; untouched otherwise.
    assert all(path.exists() for path in fork_orphans) is (next_write != "fork")


@pytest.mark.parametrize("next_write", ["fork", "save"])
async def test_links_a_killed_fork_left_are_swept_by_the_next_write(
    tmp_path: Path, next_write: str
) -> None:
    """A fork links the source's generations, then makes its own: killed in between, the
    links are all it left. Not a session; the next write to that id removes them."""
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        old = Session(id="old", messages=[Message(id="o", role="user", content=0)])
        await store.save_runtime_session(old)
        await store.fork_session("old", "f")
        [own] = generations(tmp_path / "f")
        own.unlink()  # as if killed before its rename: the link is left
        [stale] = links(tmp_path / "f")
        assert await store.load_session("f") is None
        assert [s.id for s in await store.list_sessions()] == ["old"]
        # The source moves on: what a fork into "f" links now is another generation.
        edited = Session(id="old", messages=[Message(id="n", role="user", content=1)])
        await store.save_runtime_session(edited)
        assert await store.delete_session("old") is True
        assert stale.exists()  # the link kept the deleted source's first generation
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="src", messages=edited.messages))
        if next_write == "fork":
            fork = await store.fork_session("src", "f")
            assert fork.messages == edited.messages
            [link] = links(tmp_path / "f")
            assert link != stale and link.stat().st_nlink == 2
        else:
            await store.save_runtime_session(Session(id="f"))
            assert links(tmp_path / "f") == []
        assert not stale.exists()  # removed: nothing needs it, and its bytes are gone


async def test_delete_removes_stray_temp_files_with_the_session(tmp_path: Path) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        leave_temps(tmp_path / "s", b"{}")
        assert await store.delete_session("s") is True
        assert not (tmp_path / "s").exists()
        assert await store.list_sessions() == []


# --- what "fsync" durability does before a call returns --------------------------------


def _at(dir_fd: int, name: Any) -> str:
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(name))


BY_FD = ("write", "pwrite", "ftruncate", "fsync", "fdatasync")
BY_PATH = ("rename", "replace", "link", "mkdir", "unlink")


def spy_on_file_work(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (operation, path) of every write, cut, sync, rename, link, mkdir and unlink.

    A kill cannot tell "fsync" from "flush" (the page cache survives the
    process), so the order of the system calls is what proves a power loss
    would find every returned call on disk.
    """
    events: list[tuple[str, str]] = []
    real = {name: getattr(os, name) for name in (*BY_FD, *BY_PATH)}

    def by_fd(name: str) -> Any:
        def spy(fd: int, *args: Any) -> Any:
            events.append((name, os.readlink(f"/proc/self/fd/{fd}")))
            return real[name](fd, *args)

        return spy

    def by_path(name: str) -> Any:
        def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
            def full(item: Any, dir_fd: int | None) -> str:  # a name relative to a descriptor
                return os.fspath(item) if dir_fd is None else _at(dir_fd, item)

            two = name in ("rename", "replace", "link")
            target = full(args[0], kwargs.get("dst_dir_fd")) if two else ""
            path_name = full(path, kwargs.get("src_dir_fd", kwargs.get("dir_fd")))
            events.append((name, path_name + (f" -> {target}" if target else "")))
            return real[name](path, *args, **kwargs)

        return spy

    for name in BY_FD:
        monkeypatch.setattr(os, name, by_fd(name))
    for name in BY_PATH:
        monkeypatch.setattr(os, name, by_path(name))
    return events


def position(events: list[tuple[str, str]], name: str, path: str) -> int:
    matches = [
        i
        for i, (n, p) in enumerate(events)
        if n == name and (p == path or p.startswith(f"{path} -> "))
    ]
    assert matches, f"no {name} of {path} in {events}"
    return matches[-1]


def made_whole(events: list[tuple[str, str]], directory: Path) -> str:
    """Check a generation was made whole in ``directory``: written, synced, renamed, the
    directory synced, in that order. Returns the generation's path."""
    [temp] = [p for n, p in events if n == "write" and p.endswith(".tmp")]
    rename = position(events, "rename", temp)
    name = events[rename][1].split(" -> ")[1]
    assert os.path.dirname(temp) == os.path.dirname(name) == str(directory)
    assert position(events, "write", temp) < position(events, "fsync", temp) < rename
    assert position(events, "fsync", str(directory)) > rename
    return name


async def test_fsync_durability_syncs_before_a_call_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    directory = root / "s"
    async with sessionactors.open_store(root, durability="fsync") as store:
        events = spy_on_file_work(monkeypatch)
        session = Session(id="s", messages=[Message(id="m0", role="u")])
        await store.save_runtime_session(session)
        # A session's first generation: made whole under a temporary name, synced,
        # renamed into place, and the rename made durable before returning; the
        # new directory's entry, in the root, before anything counts on it.
        name = made_whole(events, directory)
        assert name == str(current_generation(directory))
        mkdir = position(events, "mkdir", str(directory))
        first_write = next(i for i, (n, p) in enumerate(events) if n == "write")
        assert mkdir < position(events, "fsync", str(root)) < first_write
        log = name
        for count in (2, 3):
            events.clear()
            session.messages.append(Message(id=f"m{count}", role="u"))
            session.metadata = {"count": count}
            await store.save_runtime_session(session)
            # An append: one write of its records and commit, one fdatasync; no
            # file made or renamed, so the directory needs no fsync.
            assert events == [("write", log), ("fdatasync", log)]
        for title in ("a much longer title than any before", "short"):
            events.clear()
            await store.set_title("s", title)
            assert events == [("write", log), ("fdatasync", log)]  # a commit alone
        for first in (True, False):
            events.clear()
            await store.append_token_usage_record("s", {"first": first})
            usage = str(directory / "token-usage.jsonl")
            assert position(events, "write", usage) < position(events, "fsync", usage)
            if first:  # the new log's directory entry, durable before a record is in it
                assert position(events, "fsync", str(directory)) < position(events, "write", usage)
            else:
                assert ("fsync", str(directory)) not in events
        # An edit of one old message: its replacement appended, as a new message is.
        events.clear()
        session.messages[0].content = "edited"
        await store.save_runtime_session(session)
        assert events == [("write", log), ("fdatasync", log)]
        # An edit of most old messages, and a rewind: each a new generation, made whole.
        events.clear()
        for message in session.messages[1:]:
            message.content = "edited"
        await store.save_runtime_session(session)
        edit = made_whole(events, directory)
        assert not [n for n, p in events if p == log and n in BY_FD]  # the old one untouched
        events.clear()
        await store.rewind_session("s", 1)
        assert made_whole(events, directory) != edit
        # A fork: the new directory made durable, the source's generation linked,
        # its own generation made whole, before it returns.
        events.clear()
        await store.fork_session("s", "f")
        fork_dir = root / "f"
        fork = made_whole(events, fork_dir)
        mkdir = position(events, "mkdir", str(fork_dir))
        assert mkdir < position(events, "fsync", str(root))
        links_made = [i for i, (n, _) in enumerate(events) if n == "link"]
        [rename] = [i for i, (n, _) in enumerate(events) if n == "rename"]
        assert events[rename][1].endswith(f" -> {fork}")
        # The links, then the generation naming them; one directory fsync makes both durable.
        assert position(events, "fsync", str(root)) < min(links_made)
        assert links_made and max(links_made) < rename < position(events, "fsync", str(fork_dir))
        loaded = await store.load_session("f")
        assert loaded is not None and loaded.messages == [Message(id="m0", role="u")]


async def test_flush_durability_hands_bytes_to_the_os_without_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        events = spy_on_file_work(monkeypatch)
        session = Session(id="s", messages=[Message(id="m0", role="u")])
        await store.save_runtime_session(session)
        await store.append_token_usage_record("s", {"a": 1})
        session.messages.append(Message(id="m1", role="u"))
        await store.save_runtime_session(session)
        await store.set_title("s", "t")
        await store.set_pinned("s", True)
        await store.rewind_session("s", 1)
        await store.fork_session("s", "f")
        assert [n for n, _ in events if n in ("fsync", "fdatasync")] == []
        assert sum(1 for n, _ in events if n == "rename") == 3  # first, rewind, fork
        log = str(generations(tmp_path / "s")[0])
        assert [n for n, p in events if p == log] == ["write"] * 3  # the appends
        assert any(n == "write" and p.endswith("token-usage.jsonl") for n, p in events)
