"""Crash safety: a child SIGKILLed at random instants, torn log tails, stray temp files.

The kill test is the contract's "a process killed at any instant" promise,
checked the way a storage engineer would: every call the child saw return
(it printed an acknowledgement) must be found by a fresh store afterwards,
whole and exactly once, and reading must never fail.

Set SESSIONACTORS_KILL_TRIALS (default 20) to run more kills, and
SESSIONACTORS_KILL_SEED to replay one run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import sessionactors
import sessionactors.storage.files
from sessionactors import Message, Session

CHILD = Path(__file__).parent / "children" / "kill_child.py"
KILL_TRIALS = int(os.environ.get("SESSIONACTORS_KILL_TRIALS", "20"))
KILL_SEED = int(os.environ.get("SESSIONACTORS_KILL_SEED", random.randrange(2**32)))
CHAIN = 10  # trials that share one root (and each other's debris) before a fresh one
S1_APPENDERS = 6  # as in the child: tasks 0..5 append to s1, the others to s2


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as file:
        file.write(data)


def temps(directory: Path) -> list[str]:
    """The stray temporary snapshot files of a session directory."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@attrs.define
class Acks:
    """What one child acknowledged before it died."""

    save: int = -1  # highest acknowledged s1 message count
    ckpt: int = -1  # highest acknowledged s2 transcript length
    appends: dict[tuple[str, int], int] = attrs.field(factory=dict)  # (sid, task) -> seq
    lines: int = 0
    saves: int = 0
    ckpts: int = 0
    append_count: int = 0
    started: bool = False  # the child printed "ready": its bursts had begun
    ready: trio.Event = attrs.field(factory=trio.Event)
    target: int = 0  # set ``reached`` once this many lines came in
    reached: trio.Event = attrs.field(factory=trio.Event)

    def add(self, line: str) -> None:
        self.lines += 1
        if self.lines >= self.target:
            self.reached.set()
        kind, *rest = line.split()
        if kind == "save":
            count = int(rest[1])
            assert count >= self.save, f"acks out of order: {line}"
            self.save = count
            self.saves += 1
        elif kind == "ckpt":
            count = int(rest[1])
            assert count >= self.ckpt, f"acks out of order: {line}"
            self.ckpt = count
            self.ckpts += 1
        elif kind == "append":
            sid, task, seq = rest[0], int(rest[1]), int(rest[2])
            assert self.appends.get((sid, task), -1) == seq - 1, f"acks out of order: {line}"
            self.appends[(sid, task)] = seq
            self.append_count += 1
        elif kind == "ready":
            self.started = True
            self.ready.set()
        else:  # pragma: no cover - the child prints nothing else
            raise AssertionError(f"unexpected line from the child: {line!r}")


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


@attrs.define
class Figures:
    trials: int = 0
    kills_before_ready: int = 0
    acked_saves: int = 0
    acked_checkpoints: int = 0
    acked_appends: int = 0
    append_checks: int = 0  # acknowledged records found again, counted at every check
    torn_tails_seen: int = 0
    stray_temps_seen: int = 0


async def kill_once(root: Path, trial: int, rng: random.Random, stderr: Path) -> Acks:
    """Run the child, SIGKILL it at a random instant, and return what it acknowledged."""
    durability = "fsync" if trial % 4 == 3 else "flush"
    seed = rng.randrange(2**31)
    command = [sys.executable, str(CHILD), str(root), durability, str(trial), str(seed)]
    mode = rng.choice(["early", "ready", "acks"])
    acks = Acks(target=rng.randint(1, 800))
    with stderr.open("wb") as err:  # a local file: opening it does not block
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=err)
    assert process.stdout is not None
    stdout = process.stdout

    async def read_acks() -> None:
        pending = b""
        while data := await stdout.receive_some(65536):
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                acks.add(line.decode())
        # A line without its newline was cut by the kill: not an acknowledgement.
        # The child is gone: wake the waits below (a child that died by itself
        # is reported with its stderr, not as a timeout).
        acks.ready.set()
        acks.reached.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_acks)
            with trio.fail_after(30):
                if mode == "early":  # anywhere from interpreter start-up onwards
                    await trio.sleep(rng.uniform(0, 0.3))
                elif mode == "ready":
                    await acks.ready.wait()
                    await trio.sleep(rng.uniform(0, 0.3))
                else:  # mid-burst, right after the n-th acknowledgement
                    await acks.reached.wait()
                process.kill()
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await stdout.aclose()
    if process.returncode != -signal.SIGKILL:  # it must have died of our kill, not by itself
        raise AssertionError(
            f"the child ended by itself with {process.returncode}:\n" + read_text(stderr)
        )
    return acks


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


async def check_after_kill(chain: Chain, figures: Figures) -> None:
    """Open a fresh store on the root and hold it to every acknowledgement so far."""
    for sid in ("s1", "s2"):
        figures.stray_temps_seen += len(temps(chain.root / sid))
        log = chain.root / sid / "token-usage.jsonl"
        if log.exists() and log.stat().st_size and not log.read_bytes().endswith(b"\n"):
            figures.torn_tails_seen += 1
    async with sessionactors.open_store(chain.root, durability="flush") as store:
        s1 = await store.load_session("s1")
        s2 = await store.load_session("s2")
        summaries = {summary.id: summary for summary in await store.list_sessions()}
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

        # A UI edit between kills: the next child's stale saves must keep it.
        # Being this actor's first write, it also sweeps crash-left temp files.
        if s1 is not None:
            chain.renames += 1
            chain.title = f"after kill {chain.renames}"
            await store.set_title("s1", chain.title)
            assert temps(chain.root / "s1") == []
        if s2 is not None:
            chain.s2_pinned = not chain.s2_pinned
            chain.s2_toggles += 1
            await store.set_pinned("s2", chain.s2_pinned)
            assert temps(chain.root / "s2") == []


async def test_kill_at_random_instants_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    figures = Figures()
    chain = Chain(tmp_path / "root-0")
    for trial in range(KILL_TRIALS):
        if trial and trial % CHAIN == 0:
            chain = Chain(tmp_path / f"root-{trial // CHAIN}")
        acks = await kill_once(chain.root, trial, rng, tmp_path / "child-stderr.txt")
        figures.trials += 1
        figures.kills_before_ready += not acks.started
        figures.acked_saves += acks.saves
        figures.acked_checkpoints += acks.ckpts
        figures.acked_appends += acks.append_count
        chain.s1_floor = max(chain.s1_floor, acks.save)
        chain.s2_floor = max(chain.s2_floor, acks.ckpt)
        for (sid, task), seq in acks.appends.items():
            chain.acked[(sid, trial, task)] = seq
        try:
            await check_after_kill(chain, figures)
        except AssertionError as exc:
            raise AssertionError(f"trial {trial}, SESSIONACTORS_KILL_SEED={KILL_SEED}") from exc
    print(f"kill test figures (seed {KILL_SEED}): {figures}")
    assert figures.trials == KILL_TRIALS >= 1
    # The run really exercised the store, not just interpreter start-up.
    assert figures.acked_saves > 0
    assert figures.acked_appends > 0


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


# --- stray temporary files ----------------------------------------------------------


def leave_temps(directory: Path, content: bytes) -> list[Path]:
    """Temp files as a writer killed between creating and renaming them leaves them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        directory / ".session.json.0123456789abcdef0123456789abcdef.tmp",
        directory / f".session.json.{os.urandom(16).hex()}.tmp",
    ]
    paths[0].write_bytes(content)
    paths[1].write_bytes(content[: len(content) // 2])  # killed mid-write
    return paths


@pytest.mark.parametrize("next_write", ["save", "checkpoint", "set_title", "set_pinned"])
async def test_stray_temp_files_are_ignored_then_swept(tmp_path: Path, next_write: str) -> None:
    root = tmp_path / "root"
    session = Session(id="s", title="kept", messages=[Message(id="a", role="user", content=1)])
    async with sessionactors.open_store(root, durability="flush") as store:
        await store.save_runtime_session(session)
        await store.save_runtime_session(Session(id="other"))
    snapshot = (root / "s" / "session.json").read_bytes()
    # A newer, whole snapshot that never got renamed into place; half of it; garbage.
    newer = attrs.evolve(session, messages=[], title="never renamed")
    async with sessionactors.open_store(tmp_path / "scratch", durability="flush") as scratch:
        await scratch.save_runtime_session(newer)
    left = leave_temps(root / "s", (tmp_path / "scratch" / "s" / "session.json").read_bytes())
    (root / "s" / ".session.json.ffff.tmp").write_bytes(b"\x00garbage")
    # A session whose very first save was killed before its rename.
    orphans = leave_temps(root / "never-saved", snapshot.replace(b'"s"', b'"never-saved"'))

    async with sessionactors.open_store(root, durability="flush") as store:
        assert await store.load_session("s") == session
        assert await store.load_session("never-saved") is None
        assert sorted(summary.id for summary in await store.list_sessions()) == ["other", "s"]
        assert all(path.exists() for path in left)  # a read never deletes anything

        if next_write == "save":
            await store.save_runtime_session(Session(id="s", messages=session.messages))
        elif next_write == "checkpoint":
            await store.checkpoint_runtime_session(Session(id="s"))
        elif next_write == "set_title":
            await store.set_title("s", "renamed")
        else:
            await store.set_pinned("s", True)
        assert temps(root / "s") == []
        loaded = await store.load_session("s")
        assert loaded is not None
        assert loaded.messages == session.messages
        assert loaded.title in ("kept", "renamed")  # never the temp file's title

        # The first save of the never-saved session sweeps its debris too.
        await store.save_runtime_session(Session(id="never-saved"))
        assert temps(root / "never-saved") == []
    assert all(not path.exists() for path in orphans)


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


def spy_on_file_work(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (operation, path) of every write, pwrite, truncate, fsync, rename and mkdir.

    A kill cannot tell "fsync" from "flush" (the page cache survives the
    process), so the order of the system calls is what proves a power loss
    would find every returned call on disk.
    """
    events: list[tuple[str, str]] = []
    by_fd_names = ("write", "pwrite", "ftruncate", "fsync")
    real = {name: getattr(os, name) for name in (*by_fd_names, "replace", "mkdir")}

    def by_fd(name: str) -> Any:
        def spy(fd: int, *args: Any) -> Any:
            events.append((name, os.readlink(f"/proc/self/fd/{fd}")))
            return real[name](fd, *args)

        return spy

    def by_path(name: str) -> Any:
        def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
            def full(item: Any, dir_fd: int | None) -> str:  # a name relative to a descriptor
                return os.fspath(item) if dir_fd is None else _at(dir_fd, item)

            target = full(args[0], kwargs.get("dst_dir_fd")) if name == "replace" else ""
            path_name = full(path, kwargs.get("src_dir_fd", kwargs.get("dir_fd")))
            events.append((name, path_name + (f" -> {target}" if target else "")))
            return real[name](path, *args, **kwargs)

        return spy

    for name in by_fd_names:
        monkeypatch.setattr(os, name, by_fd(name))
    for name in ("replace", "mkdir"):
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


async def test_fsync_durability_syncs_before_a_call_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    async with sessionactors.open_store(root, durability="fsync") as store:
        events = spy_on_file_work(monkeypatch)
        for count in (1, 2, 3):
            events.clear()
            session = Session(
                id="s",
                metadata={"count": count},
                messages=[Message(id=f"m{i}", role="u") for i in range(count)],
            )
            await store.save_runtime_session(session)
            snapshot = sessionactors.storage.files.read_snapshot_at(str(root / "s"), "s")
            assert snapshot is not None and snapshot.journal is not None
            slot, journal = snapshot.path, str(root / "s" / snapshot.journal)
            directory = str(root / "s")
            dir_syncs = [i for i, event in enumerate(events) if event == ("fsync", directory)]
            # The journal's bytes are on disk before the snapshot counting them.
            assert position(events, "write", journal) < position(events, "fsync", journal)
            if count == 1:
                # A session's first snapshot: made whole under a temporary name, synced,
                # renamed into place, and the rename made durable before returning.
                temp = next(p for n, p in events if n == "write" and p.endswith(".tmp"))
                rename = position(events, "replace", temp)
                assert events[rename][1] == f"{temp} -> {slot}"
                assert position(events, "fsync", journal) < position(events, "write", temp)
                assert position(events, "write", temp) < position(events, "fsync", temp) < rename
                assert max(dir_syncs) > rename
            else:
                # Both slots exist (the first snapshot made the other, empty): the
                # older is rewritten in place (cut only if it was longer) and
                # synced; no file is made or renamed, so the directory needs no fsync.
                assert position(events, "fsync", journal) < position(events, "pwrite", slot)
                assert position(events, "pwrite", slot) < position(events, "fsync", slot)
                if ("ftruncate", slot) in events:
                    assert position(events, "pwrite", slot) < position(events, "ftruncate", slot)
                    assert position(events, "ftruncate", slot) < position(events, "fsync", slot)
                assert not [n for n, _ in events if n == "replace"]
                assert not dir_syncs
            if count == 1:  # the new directory's entry, in the root, and the journal's
                assert position(events, "fsync", str(root)) > position(
                    events, "mkdir", str(root / "s")
                )
                assert min(dir_syncs) > position(events, "fsync", journal)
        for first in (True, False):
            events.clear()
            await store.append_token_usage_record("s", {"first": first})
            log = str(root / "s" / "token-usage.jsonl")
            assert position(events, "write", log) < position(events, "fsync", log)
            if first:  # the new log's directory entry
                assert ("fsync", str(root / "s")) in events
        cuts = []
        for title in ("a much longer title than any before", "short", "tiny"):
            older = {path: path.stat().st_size for path in (root / "s").glob("session*.json")}
            events.clear()
            await store.set_title("s", title)
            snapshot = sessionactors.storage.files.read_snapshot_at(str(root / "s"), "s")
            assert snapshot is not None
            # Both slots exist by now: a UI edit is one slot rewritten and
            # synced, and cut only if its old bytes were longer.
            cut = older[Path(snapshot.path)] > snapshot.size
            expected = ["pwrite", "ftruncate", "fsync"] if cut else ["pwrite", "fsync"]
            assert [n for n, p in events if p == snapshot.path] == expected
            cuts.append(cut)
        assert cuts[0] is False and cuts[2] is True  # a longer slot, then a shorter one
        assert (await store.load_session("s")).title == "tiny"  # type: ignore[union-attr]
        assert ("fsync", str(root / "s")) not in events


async def test_flush_durability_hands_bytes_to_the_os_without_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        events = spy_on_file_work(monkeypatch)
        await store.save_runtime_session(Session(id="s"))
        await store.append_token_usage_record("s", {"a": 1})
        await store.set_title("s", "t")
        await store.set_pinned("s", True)
        assert [n for n, _ in events if n == "fsync"] == []
        assert sum(1 for n, _ in events if n == "replace") == 1  # the first snapshot
        assert sum(1 for n, _ in events if n == "pwrite") == 2  # then slots rewritten in place
        assert any(n == "write" and p.endswith("token-usage.jsonl") for n, p in events)
