"""Faults, corruption and bad input: every failure is raised to its caller and harms nothing.

OS errors are injected by patching ``os.write``, ``os.fsync``, ``os.replace``
and ``os.open`` as ``sessionactors.storage.files`` calls them; each fake raises only
for the files of the session under test and only a set number of times, so
the rest of the process (and the other sessions) keep working.
"""

from __future__ import annotations

import copy
import errno
import os
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing
from support import (
    EVERY_BAD_ID,
    EVERY_BAD_RECORD,
    deep,
    edit_every_message,
    log_record,
    session_files,
    write_format_2,
)

import sessionactors
import sessionactors._batch
import sessionactors._runner
import sessionactors.storage.files.durable
from sessionactors import (
    CorruptSessionError,
    InvalidSessionIdError,
    Message,
    Session,
    SessionNotFoundError,
    SessionStore,
    SessionStoreError,
)
from sessionactors.storage.files import KEPT_SUFFIX

#: A generation of a session's log, and the temporary name it is made under.
GENERATION = re.compile(r"/log\.[0-9]+\.[0-9a-f]{32}\.jsonl$")
#: Any file of a session's log: its own generations, and generations it links.
LOG_FILE = re.compile(r"/(log\.[0-9]+|link)\.[0-9a-f]{32}\.jsonl$")
TEMP = re.compile(r"/\.log\.[0-9]+\.[0-9a-f]{32}\.jsonl\.[0-9a-f]+\.tmp$")


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@attrs.define
class Fault:
    """Make ``os.<function>`` raise OSError(code) for matching paths, ``times`` times.

    With ``partial``, the first matching ``write`` writes half its bytes and
    returns normally; the next one raises (a disk filling up mid-write).
    """

    function: str
    code: int
    target: Callable[[str], bool]
    times: int = 1
    partial: bool = False
    skip: int = 0  # matching calls let through before the first fault
    injected: int = 0
    _half_written: bool = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = getattr(os, self.function)

        def fake(*args: Any, **kwargs: Any) -> Any:
            by_fd = self.function in ("write", "pwrite", "fsync", "fdatasync", "ftruncate")
            path = fd_path(args[0]) if by_fd else os.fspath(args[0])
            for key in ("dir_fd", "src_dir_fd"):  # a name relative to a directory's descriptor
                if kwargs.get(key) is not None:
                    path = os.path.join(fd_path(kwargs[key]), path)
            reading = self.function == "open" and not args[1] & (os.O_WRONLY | os.O_RDWR)
            if self.injected < self.times and self.target(path) and not reading:
                if self.skip:
                    self.skip -= 1
                    return real(*args, **kwargs)
                if self.partial and not self._half_written:
                    self._half_written = True
                    data = args[1]
                    return real(args[0], data[: max(1, len(data) // 2)], *args[2:])
                self.injected += 1
                raise OSError(self.code, os.strerror(self.code), path)
            return real(*args, **kwargs)

        # The os module itself: the fake filters by path, so nothing else breaks.
        monkeypatch.setattr(sessionactors.storage.files.durable.os, self.function, fake)  # type: ignore[attr-defined]


def is_temp_of(sid: str) -> Callable[[str], bool]:
    """The temporary file a new generation of a session is made in, then renamed."""
    return lambda path: bool(TEMP.search(path)) and f"/{sid}/" in path


def is_generation_of(sid: str) -> Callable[[str], bool]:
    """A generation of session ``sid``'s log (appended to by a save that adds messages)."""
    return lambda path: bool(GENERATION.search(path)) and f"/{sid}/" in path


def is_log_of(sid: str) -> Callable[[str], bool]:
    return lambda path: path.endswith(f"/{sid}/token-usage.jsonl")


def leftovers(directory: Path) -> list[str]:
    """Temporary files left in a session directory, and files of an older format."""
    if not directory.exists():
        return []
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name.endswith(".tmp") or p.name.startswith(("messages.", "session."))
    )


def read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: to prove nothing was touched."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            stat = os.stat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (stat.st_size, stat.st_mtime_ns)
    return found


async def outcome_of(call: Awaitable[Any]) -> Any:
    """The call's result, or the exception it raised (so concurrent calls can be compared)."""
    try:
        return await call
    except Exception as exc:
        return exc


async def seed(store: SessionStore) -> Session:
    """s1 with a UI title, a transcript and a log; s2 beside it."""
    s1 = Session(
        id="s1",
        messages=[Message(id=f"m{i}", role="user", content={"i": i}) for i in range(5)],
        metadata={"model": "m"},
    )
    await store.save_runtime_session(s1)
    await store.set_title("s1", "from the ui")
    for seq in range(3):
        await store.append_token_usage_record("s1", {"seq": seq})
    await store.save_runtime_session(Session(id="s2", metadata={"v": 0}))
    loaded = await store.load_session("s1")
    assert loaded is not None
    return loaded


# --- OS errors while saving ---------------------------------------------------------

APPEND_TO_LOG_FAULTS = {
    "write ENOSPC": ("write", errno.ENOSPC, False),
    "write EACCES": ("write", errno.EACCES, False),
    "write EIO": ("write", errno.EIO, False),
    "half written, then ENOSPC": ("write", errno.ENOSPC, True),
    "fdatasync EIO": ("fdatasync", errno.EIO, False),
    "fdatasync ENOSPC": ("fdatasync", errno.ENOSPC, False),
    "truncate EIO": ("ftruncate", errno.EIO, False),
    "open EACCES": ("open", errno.EACCES, False),
    "open ENOSPC": ("open", errno.ENOSPC, False),
}


async def run_beside_s2(
    store: SessionStore, call: Callable[[], Awaitable[Any]]
) -> tuple[Any, Session]:
    """``call``'s outcome, while s2 is saved and appended to at once (which must succeed)."""
    other = Session(id="s2", metadata={"v": 1})
    results: dict[str, Any] = {}

    async def run(name: str, each: Callable[[], Awaitable[Any]]) -> None:
        results[name] = await outcome_of(each())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "s1", call)
        nursery.start_soon(run, "s2 save", lambda: store.save_runtime_session(other))
        nursery.start_soon(
            run, "s2 append", lambda: store.append_token_usage_record("s2", {"ok": 1})
        )
    assert results["s2 save"] is None and results["s2 append"] is None
    return results["s1"], other


@pytest.mark.parametrize("fault", APPEND_TO_LOG_FAULTS.values(), ids=APPEND_TO_LOG_FAULTS.keys())
@pytest.mark.parametrize(
    "operation", ["save", "save editing an old message", "checkpoint", "set_title", "set_pinned"]
)
async def test_os_error_while_appending_to_the_log_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: tuple[str, int, bool], operation: str
) -> None:
    """A write that appends to the current generation: cut back to where it began."""
    function, code, partial = fault
    durability: Literal["fsync", "flush"] = "fsync" if function == "fdatasync" else "flush"
    async with sessionactors.open_store(tmp_path, durability=durability) as store:
        before = await seed(store)
        # The caller's copy: the transcript on disk and one new message (an append).
        big = Message(id="new", role="user", content="z" * 100_000)  # a half write is real
        caller = Session(id="s1", messages=[*copy.deepcopy(before.messages), big])
        caller.metadata = {"model": "changed"}
        if operation == "save editing an old message":  # its replacement is appended too
            caller.messages[1].content = "edited"
        untouched = copy.deepcopy(caller)
        if function == "ftruncate":
            # The bytes after the last commit are cut before an append: a
            # crash's tail is there to cut, and the cut fails.
            [generation] = [p for p in (tmp_path / "s1").iterdir() if GENERATION.search(str(p))]
            with generation.open("ab") as file:
                file.write(b"m0000 a crash's tail")
        files = session_files(tmp_path, "s1")
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "save": lambda: store.save_runtime_session(caller),
            "save editing an old message": lambda: store.save_runtime_session(caller),
            "checkpoint": lambda: store.checkpoint_runtime_session(caller),
            "set_title": lambda: store.set_title("s1", "renamed"),
            "set_pinned": lambda: store.set_pinned("s1", True),
        }
        injector = Fault(function, code, is_generation_of("s1"), partial=partial)
        injector.install(monkeypatch)
        revisions = store.statistics().snapshots_written

        error, other = await run_beside_s2(store, calls[operation])
        assert isinstance(error, OSError), error
        assert error.errno == code
        assert injector.injected == 1
        # What was persisted before is intact, byte for byte (an append that
        # failed is cut back to where it began), and nothing is left behind.
        assert session_files(tmp_path, "s1") == files
        assert leftovers(tmp_path / "s1") == []
        assert caller == untouched  # a failed call does not half-update the caller's object
        assert await store.load_session("s1") == before
        assert [e.revision for e in await store.session_history("s1")] == [2, 1]
        assert await store.load_session("s2") == other
        assert store.statistics().snapshots_written == revisions + 1  # s2's only

        # The store keeps serving s1: the same call now succeeds, once.
        await calls[operation]()
        after = await store.load_session("s1")
        assert after is not None and after.revision == 3
        if operation.startswith("save") or operation == "checkpoint":
            assert after.messages == caller.messages and after.title == "from the ui"
        elif operation == "set_title":
            assert (after.title, after.title_version) == ("renamed", before.title_version + 1)
        else:
            assert after.pinned is True
        if operation in ("set_title", "set_pinned"):  # versions move by one, not two
            assert after.metadata_version == before.metadata_version + 1
        assert store.statistics().actor_crashes == 0
        assert store.statistics().journal_rewrites == 2  # s1 and s2 made, no other
    assert leftovers(tmp_path / "s1") == []


NEW_GENERATION_FAULTS = {
    "open EACCES": ("open", errno.EACCES, False),
    "open ENOSPC": ("open", errno.ENOSPC, False),
    "write ENOSPC": ("write", errno.ENOSPC, False),
    "write EIO": ("write", errno.EIO, False),
    "half written, then ENOSPC": ("write", errno.ENOSPC, True),
    "fsync EIO": ("fsync", errno.EIO, False),
    "rename EIO": ("rename", errno.EIO, False),
    "rename ENOSPC": ("rename", errno.ENOSPC, False),
}
#: The writes that make a new generation, and the session they make it in.
NEW_GENERATION_WRITES = {
    "edit most old messages": "s1",
    "rewind": "s1",
    "fork": "s3",
    "move a format-2 session": "s4",
}


@pytest.mark.parametrize("fault", NEW_GENERATION_FAULTS.values(), ids=NEW_GENERATION_FAULTS.keys())
@pytest.mark.parametrize("operation", NEW_GENERATION_WRITES)
async def test_os_error_while_making_a_generation_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: tuple[str, int, bool], operation: str
) -> None:
    """A write that starts a generation: its file is removed before it is renamed into place."""
    function, code, partial = fault
    durability: Literal["fsync", "flush"] = "fsync" if function == "fsync" else "flush"
    old = Session(id="s4", messages=[Message(id="o", role="user", content="old")])
    write_format_2(tmp_path / "s4", old)
    async with sessionactors.open_store(tmp_path, durability=durability) as store:
        before = await seed(store)
        caller = copy.deepcopy(before)
        caller.messages[1].content = "edited " + "z" * 100_000
        for message in caller.messages[2:4]:  # most of them: written whole, not replaced
            message.content = "edited"
        old_caller = Session(id="s4", messages=[*old.messages, Message(id="n", role="user")])
        untouched = (copy.deepcopy(caller), copy.deepcopy(old_caller))
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "edit most old messages": lambda: store.save_runtime_session(caller),
            "rewind": lambda: store.rewind_session("s1", 1),
            "fork": lambda: store.fork_session("s1", "s3"),
            "move a format-2 session": lambda: store.save_runtime_session(old_caller),
        }
        files = {sid: session_files(tmp_path, sid) for sid in ("s1", "s3", "s4")}
        sid = NEW_GENERATION_WRITES[operation]
        injector = Fault(function, code, is_temp_of(sid), partial=partial)
        injector.install(monkeypatch)

        error, _ = await run_beside_s2(store, calls[operation])
        assert isinstance(error, OSError), error
        assert error.errno == code
        assert injector.injected == 1
        assert {sid: session_files(tmp_path, sid) for sid in ("s1", "s3", "s4")} == files
        assert files["s3"] is None  # no fork, not even its directory
        assert (caller, old_caller) == untouched
        assert await store.load_session("s1") == before
        assert await store.load_session("s3") is None
        assert await store.load_session("s4") == attrs.evolve(old, revision=1)

        # The same call now succeeds.
        result = await calls[operation]()
        if operation == "edit most old messages":
            assert await store.load_session("s1") == caller
        elif operation == "rewind":
            assert result.revision == 3 and result.messages == before.messages
        elif operation == "fork":
            assert await store.load_session("s3") == result
        else:
            assert await store.load_session("s4") == old_caller
            assert old_caller.revision == 2
        assert store.statistics().actor_crashes == 0
    for sid in ("s1", "s3", "s4") if operation == "move a format-2 session" else ("s1", "s3"):
        assert leftovers(tmp_path / sid) == []


async def test_a_fork_whose_link_fails_makes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        before = await seed(store)
        source = session_files(tmp_path, "s1")
        injector = Fault("link", errno.EMLINK, is_generation_of("s1"))
        injector.install(monkeypatch)
        with pytest.raises(OSError) as raised:
            await store.fork_session("s1", "s3")
        assert raised.value.errno == errno.EMLINK
        assert not (tmp_path / "s3").exists()
        assert session_files(tmp_path, "s1") == source
        fork = await store.fork_session("s1", "s3")
        assert fork.messages == before.messages
        assert await store.load_session("s3") == fork


async def test_a_generation_that_cannot_be_removed_after_a_write_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write is done once its revision is in place: a prune that fails after it is no
    error of the caller's (who would write it again), and a later write prunes."""
    async with sessionactors.open_store(tmp_path, durability="flush", history=1) as store:
        before = await seed(store)
        [first] = [p for p in (tmp_path / "s1").iterdir() if GENERATION.search(str(p))]
        injector = Fault("unlink", errno.EIO, lambda path: path == str(first))
        injector.install(monkeypatch)
        edited = copy.deepcopy(before)
        edit_every_message(edited)
        await store.save_runtime_session(edited)  # a new generation: the old one is not needed
        assert injector.injected == 1
        assert edited.revision == 3
        assert await store.load_session("s1") == edited
        assert first.exists()
        edited.messages.append(Message(id="later", role="user"))
        await store.save_runtime_session(edited)
        assert not first.exists()
        assert await store.load_session("s1") == edited


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EIO])
async def test_failed_first_save_leaves_no_session_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="kept"))
        injector = Fault("write", code, is_temp_of("fresh"))
        injector.install(monkeypatch)
        with pytest.raises(OSError) as raised:
            await store.save_runtime_session(Session(id="fresh", title="never"))
        assert raised.value.errno == code
        assert injector.injected == 1
        assert await store.load_session("fresh") is None
        assert [s.id for s in await store.list_sessions()] == ["kept"]
        assert not (tmp_path / "fresh").exists()
        with pytest.raises(SessionNotFoundError):
            await store.append_token_usage_record("fresh", {"a": 1})
        await store.save_runtime_session(Session(id="fresh", title="now"))
        loaded = await store.load_session("fresh")
        assert loaded is not None and loaded.title == "now"


async def test_fsync_of_the_directory_after_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is done when the directory fsync fails: the caller hears of it.

    The old snapshot cannot be restored at that point; what is promised is
    that the caller gets the error, the file is one whole snapshot (the old
    or the new), nothing is left behind and the store keeps serving.
    """
    async with sessionactors.open_store(tmp_path, durability="fsync") as store:
        before = await seed(store)
        directory = str(tmp_path / "s1")
        injector = Fault("fsync", errno.EIO, lambda path: path == directory)
        injector.install(monkeypatch)
        caller = Session(id="s1", messages=[Message(id="x", role="user", content=None)])
        with pytest.raises(OSError) as raised:
            await store.save_runtime_session(caller)
        assert raised.value.errno == errno.EIO
        assert injector.injected == 1
        loaded = await store.load_session("s1")
        assert loaded is not None
        assert loaded.messages in (before.messages, caller.messages)
        assert loaded.title == "from the ui"
        assert leftovers(tmp_path / "s1") == []
        await store.save_runtime_session(caller)
        assert await store.load_session("s1") == caller


# --- OS errors while appending --------------------------------------------------------

APPEND_FAULTS = {
    "write ENOSPC": ("write", errno.ENOSPC, False),
    "write EACCES": ("write", errno.EACCES, False),
    "write EIO": ("write", errno.EIO, False),
    "half written, then ENOSPC": ("write", errno.ENOSPC, True),
    "fsync EIO": ("fsync", errno.EIO, False),
    "fsync ENOSPC": ("fsync", errno.ENOSPC, False),
    "open EACCES": ("open", errno.EACCES, False),
}


@pytest.mark.parametrize("fault", APPEND_FAULTS.values(), ids=APPEND_FAULTS.keys())
async def test_os_error_while_appending_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: tuple[str, int, bool]
) -> None:
    function, code, partial = fault
    durability: Literal["fsync", "flush"] = "fsync" if function == "fsync" else "flush"
    async with sessionactors.open_store(tmp_path, durability=durability) as store:
        await seed(store)
        await store.append_token_usage_record("s2", {"seq": 0})
        log_path = tmp_path / "s1" / "token-usage.jsonl"
        log = log_path.read_bytes()
        files = session_files(tmp_path, "s1")
        assert files is not None
        injector = Fault(function, code, is_log_of("s1"), partial=partial)
        injector.install(monkeypatch)

        results: dict[str, Any] = {}

        async def run(name: str, call: Awaitable[Any]) -> None:
            results[name] = await outcome_of(call)

        big = {"seq": "big", "pad": "z" * 100_000}  # so a half write is a real torn line
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "s1", store.append_token_usage_record("s1", big))
            nursery.start_soon(run, "s2", store.append_token_usage_record("s2", {"seq": 1}))

        assert isinstance(results["s1"], OSError), results["s1"]
        assert results["s1"].errno == code
        assert injector.injected == 1
        assert results["s2"] is None
        assert log_path.read_bytes() == log  # no partial line, no record of a failed call
        assert session_files(tmp_path, "s1") == files  # the log as it was, and the rest
        assert await store.read_token_usage("s1") == [{"seq": i} for i in range(3)]
        assert await store.read_token_usage("s2") == [{"seq": 0}, {"seq": 1}]

        # The next append lands whole, on its own line.
        await store.append_token_usage_record("s1", {"seq": 3})
        assert await store.read_token_usage("s1") == [{"seq": i} for i in range(4)]
        assert log_path.read_bytes() == log + b'{"seq":3}\n'
        assert store.statistics().actor_crashes == 0


async def test_concurrent_appends_under_a_fault_each_present_iff_it_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends folded into one write share its fate; none is half there."""
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await seed(store)
        injector = Fault("write", errno.ENOSPC, is_log_of("s1"), times=2, partial=True)
        injector.install(monkeypatch)
        results: dict[int, Any] = {}

        async def append(n: int) -> None:
            results[n] = await outcome_of(store.append_token_usage_record("s1", {"n": n}))

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(append, n)
        assert injector.injected >= 1
        failed = {n for n, result in results.items() if isinstance(result, OSError)}
        assert failed, "the fault never reached a caller"
        assert all(result is None for n, result in results.items() if n not in failed)
        records = await store.read_token_usage("s1")
        written = [record["n"] for record in records if "n" in record]
        assert sorted(written) == sorted(set(range(20)) - failed)
        assert len(written) == len(set(written))


async def test_failed_dir_fsync_of_a_new_log_leaves_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first append creates the log; if that cannot be made durable, the call
    fails and its record must not be there, or a caller's retry would write it twice."""
    async with sessionactors.open_store(tmp_path, durability="fsync") as store:
        await store.save_runtime_session(Session(id="s1"))
        directory = str(tmp_path / "s1")
        injector = Fault("fsync", errno.EIO, lambda path: path == directory)
        injector.install(monkeypatch)
        with pytest.raises(OSError) as raised:
            await store.append_token_usage_record("s1", {"try": 1})
        assert raised.value.errno == errno.EIO
        assert injector.injected == 1
        assert await store.read_token_usage("s1") == []
        await store.append_token_usage_record("s1", {"try": 1})  # the caller retries
        assert await store.read_token_usage("s1") == [{"try": 1}]


# --- corruption -----------------------------------------------------------------------


def _rewrite_record(good: bytes, index: int, change: Callable[[bytes], bytes]) -> bytes:
    """``good`` with its record ``index`` changed and given the checksum of its new JSON:
    whole records that say something else than the store wrote."""
    lines = good.split(b"\n")
    kind, body = lines[index][:1], lines[index][10:]
    lines[index] = log_record(kind, change(body))[:-1]
    return b"\n".join(lines)


def _flip(good: bytes, index: int, at: int = 20) -> bytes:
    """``good`` with one byte of its record ``index`` changed: its checksum no longer holds."""
    lines = good.split(b"\n")
    line = bytearray(lines[index])
    line[at] ^= 0x01
    lines[index] = bytes(line)
    return b"\n".join(lines)


#: Damage to a generation of session b (a header, 30 message records, one commit).
#: None of these leaves a revision to read: every call on b is refused.
NO_REVISION: dict[str, Callable[[bytes], bytes]] = {
    "random bytes": lambda good: bytes(range(256)) * 4,
    "empty": lambda good: b"",
    "not a log": lambda good: b"this is not a session\n",
    "a json array": lambda good: b"[1, 2, 3]\n[]\n",
    "cut in the header": lambda good: good[:40],
    "cut in the middle": lambda good: good[: len(good) // 2],
    "cut before the last byte": lambda good: good[:-2],
    "nothing but zeros": lambda good: b"\x00" * len(good),
    "a header after the commit": lambda good: good + good.split(b"\n")[0] + b"\n",
    "a byte of the header": lambda good: _flip(good, 0),
    "a byte of the commit's checksum": lambda good: _flip(good, 31, at=3),
    "a value of the wrong type": lambda good: _rewrite_record(
        good, 31, lambda body: body.replace(b'"pinned":false', b'"pinned":"no"')
    ),
    "a time that is no time": lambda good: _rewrite_record(
        good, 31, lambda body: body.replace(b'"created_at":"', b'"created_at":"X', 1)
    ),
    "a newer format": lambda good: _rewrite_record(
        good, 0, lambda body: body.replace(b'"format":4', b'"format":5')
    ),
    "another session's file": lambda good: _rewrite_record(
        good, 0, lambda body: body.replace(b'"session":"b"', b'"session":"z"')
    ),
}
#: Damage in the transcript alone: the revision's head reads, its messages do not.
DAMAGED_TRANSCRIPT: dict[str, Callable[[bytes], bytes]] = {
    "a byte of a message": lambda good: _flip(good, 5),
    "a message with no role": lambda good: _rewrite_record(
        good, 5, lambda body: body.replace(b'"role":"user",', b"")
    ),
    "a count that does not match": lambda good: _rewrite_record(
        good, 31, lambda body: body.replace(b'"count":30', b'"count":29')
    ),
}


@pytest.mark.parametrize("kind", [*NO_REVISION, *DAMAGED_TRANSCRIPT])
async def test_corrupt_session_file_is_reported_and_kept(tmp_path: Path, kind: str) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        for sid in ("a", "b", "c"):
            messages = [Message(id=f"{sid}{i}", role="user", content=i) for i in range(30)]
            await store.save_runtime_session(Session(id=sid, title=sid, messages=messages))
        await store.append_token_usage_record("b", {"n": 1})
    [path] = [p for p in (tmp_path / "b").iterdir() if GENERATION.search(str(p))]
    garbage = {**NO_REVISION, **DAMAGED_TRANSCRIPT}[kind](path.read_bytes())
    path.write_bytes(garbage)
    transcript_only = kind in DAMAGED_TRANSCRIPT

    # history=1: a generation no kept revision needs is removed, but never a damaged one.
    async with sessionactors.open_store(tmp_path, durability="flush", history=1) as store:
        with pytest.raises(CorruptSessionError) as raised:
            await store.load_session("b")
        assert isinstance(raised.value, SessionStoreError)
        assert raised.value.path == str(path)
        assert str(path) in str(raised.value)
        assert path.read_bytes() == garbage
        if kind == "a newer format":
            assert isinstance(raised.value, sessionactors.UnsupportedFormatError)

        # Reads, and writes that need what is damaged, fail the same way and keep it.
        attempts: dict[str, Callable[[], Awaitable[Any]]] = {
            "load revision 1": lambda: store.load_session("b", revision=1),
            "fork_session": lambda: store.fork_session("b", "fork"),
            "rewind_session": lambda: store.rewind_session("b", 1),
            "checkpoint_runtime_session": lambda: store.checkpoint_runtime_session(Session(id="b")),
            "set_title": lambda: store.set_title("b", "renamed"),
            "set_pinned": lambda: store.set_pinned("b", True),
        }
        if not transcript_only:
            attempts["session_history"] = lambda: store.session_history("b")
            attempts["save_runtime_session"] = lambda: store.save_runtime_session(
                Session(id="b", title="over it")
            )
        failures = []
        for name, attempt in attempts.items():
            try:
                await attempt()
            except CorruptSessionError as exc:
                assert exc.path == str(path), name
            else:
                failures.append(f"{name} succeeded")
            if path.read_bytes() != garbage:
                failures.append(f"{name} changed the file")
                path.write_bytes(garbage)  # to see what the other calls do
        assert not failures, f"over a corrupt file ({kind}): {failures}"
        assert not (tmp_path / "fork").exists()
        listed = {summary.id for summary in await store.list_sessions()}
        assert ("b" in listed) == transcript_only  # a summary is its last commit

        if transcript_only:
            # A save reads no transcript: it starts a new generation, and keeps
            # the damaged one under a second name before it could be pruned.
            over = Session(id="b", title="over it", messages=[Message(id="n", role="user")])
            await store.save_runtime_session(over)
            assert await store.load_session("b") == over
            kept = path.with_name(path.name + KEPT_SUFFIX)
            assert kept.read_bytes() == garbage
            assert not path.exists()  # pruned: no kept revision needs it
        else:
            with pytest.raises(CorruptSessionError):
                await store.load_session("b")  # still reported, not "fixed"
            assert path.read_bytes() == garbage

        # The sessions beside it are listed and load as ever.
        assert {"a", "c"} <= listed
        for sid in ("a", "c"):
            loaded = await store.load_session(sid)
            assert loaded is not None and len(loaded.messages) == 30
        assert store.statistics().actor_crashes == 0
        # A delete removes the session, never the damaged bytes.
        if transcript_only:
            assert await store.delete_session("b") is True
            assert [p.read_bytes() for p in (tmp_path / "b").iterdir()] == [garbage]
    if not transcript_only:
        assert path.read_bytes() == garbage


async def test_corrupt_token_usage_line_is_reported_with_the_log_path(tmp_path: Path) -> None:
    """A damaged line in the middle (not a torn tail) is corruption, not silently skipped."""
    log = tmp_path / "s" / "token-usage.jsonl"
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        await store.append_token_usage_record("s", {"n": 1})
        damaged = b'{"n":1}\n{"n": garbage}\n{"n":3}\n'
        log.write_bytes(damaged)
        with pytest.raises(CorruptSessionError) as raised:
            await store.read_token_usage("s")
        assert raised.value.path == str(log)
        assert log.read_bytes() == damaged


# --- bad input ------------------------------------------------------------------------

ID_CALLS: dict[str, Callable[[SessionStore, Any], Awaitable[Any]]] = {
    "save_runtime_session": lambda store, sid: store.save_runtime_session(Session(id=sid)),
    "checkpoint_runtime_session": lambda store, sid: store.checkpoint_runtime_session(
        Session(id=sid)
    ),
    "append_token_usage_record": lambda store, sid: store.append_token_usage_record(sid, {"a": 1}),
    "read_token_usage": lambda store, sid: store.read_token_usage(sid),
    "load_session": lambda store, sid: store.load_session(sid),
    "delete_session": lambda store, sid: store.delete_session(sid),
    "set_title": lambda store, sid: store.set_title(sid, "title"),
    "set_pinned": lambda store, sid: store.set_pinned(sid, True),
}


@pytest.mark.parametrize("method", ID_CALLS)
async def test_invalid_session_ids_are_refused_by_every_method(tmp_path: Path, method: str) -> None:
    root = tmp_path / "root"
    async with sessionactors.open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id="existing"))
        (tmp_path / "x").mkdir()  # "../x"-style ids must not reach it
        before = tree(tmp_path)
        for bad in EVERY_BAD_ID:
            with pytest.raises(InvalidSessionIdError) as raised:
                await ID_CALLS[method](store, bad)
            assert isinstance(raised.value, ValueError)
            assert tree(tmp_path) == before, f"{method}({bad!r}) touched the disk"
        # The limits are exact: 200 characters and any other text are fine.
        for good in ("x" * 200, "日本語 ok", "with space", "-dash_under.dot"):
            await store.save_runtime_session(Session(id=good))
            await ID_CALLS[method](store, good)
        assert store.statistics().actor_crashes == 0


NON_STR_IDS = [5, None, b"bytes"]


@pytest.mark.parametrize(
    "method",
    [m for m in ID_CALLS if m not in ("save_runtime_session", "checkpoint_runtime_session")],
)
async def test_session_ids_that_are_not_str_are_refused(tmp_path: Path, method: str) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        before = tree(tmp_path)
        for bad in NON_STR_IDS:
            with pytest.raises((TypeError, ValueError)):
                await ID_CALLS[method](store, bad)
        assert tree(tmp_path) == before


async def test_bad_token_usage_records_are_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    log = tmp_path / "s" / "token-usage.jsonl"
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        for bad in EVERY_BAD_RECORD:
            with pytest.raises(ValueError):
                await store.append_token_usage_record("s", bad)
            assert not log.exists(), f"{bad!r} created the log"
        await store.append_token_usage_record("s", {"first": True})
        for bad in EVERY_BAD_RECORD:
            with pytest.raises(ValueError):
                await store.append_token_usage_record("s", bad)
            with pytest.raises(ValueError):  # bad input is refused before the session is looked up
                await store.append_token_usage_record("missing", bad)
        assert log.read_bytes() == b'{"first":true}\n'
        assert not (tmp_path / "missing").exists()


GOOD_RECORDS: list[Any] = [
    {"max": 2**64 - 1, "min": -(2**63)},
    {"float": 1.5, "neg": -0.25, "exp": 1e300},
    {"text": 'é\u2028\u2029\x00 "quoted"\n'},
    {"null": None, "bool": False, "nested": {"x": [1, {"y": []}]}},
    {"deep": deep(200)},
    '  {"from": "str", "spaces": [1, 2]}  \n',
]


async def test_records_read_back_equal_to_what_was_given(tmp_path: Path) -> None:
    """The counterpart of the refusals: whatever is plain JSON round-trips exactly."""
    import orjson

    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        for record in GOOD_RECORDS:
            await store.append_token_usage_record("s", record)
        expected = [orjson.loads(r) if isinstance(r, str) else r for r in GOOD_RECORDS]
        assert await store.read_token_usage("s") == expected
    lines = (tmp_path / "s" / "token-usage.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(GOOD_RECORDS) + 1


def bad_sessions() -> dict[str, Callable[[], Session]]:
    """Sessions holding a value that would not read back equal."""

    def with_message(**fields: Any) -> Session:
        return Session(id="s", messages=[Message(id="m", role="user", **fields)])

    def forced(target: Any, name: str, value: Any) -> Any:
        object.__setattr__(target, name, value)  # past the attrs validators
        return target

    def dict_in_messages() -> Session:
        session = Session(id="s")
        session.messages.append({"id": "m", "role": "user"})  # type: ignore[arg-type]
        return session

    naive = datetime(2024, 1, 1)
    return {
        "set in metadata": lambda: Session(id="s", metadata={"a": {1}}),
        "bytes in metadata": lambda: Session(id="s", metadata={"a": b"x"}),
        "tuple in metadata": lambda: Session(id="s", metadata={"a": (1,)}),
        "object in metadata": lambda: Session(id="s", metadata={"a": object()}),
        "datetime in metadata": lambda: Session(id="s", metadata={"a": datetime.now(timezone.utc)}),
        "int key in metadata": lambda: Session(id="s", metadata={1: "a"}),  # type: ignore[dict-item]
        "nan in metadata": lambda: Session(id="s", metadata={"a": float("nan")}),
        "huge int in metadata": lambda: Session(id="s", metadata={"a": 2**64}),
        "too deep metadata": lambda: Session(id="s", metadata={"a": deep(300)}),
        "set in runtime_state": lambda: Session(id="s", runtime_state={"a": {1}}),
        "tuple in runtime_state": lambda: Session(id="s", runtime_state={"a": [(1, 2)]}),
        "set as content": lambda: with_message(content={1, 2}),
        "bytes as content": lambda: with_message(content=b"x"),
        "tuple as content": lambda: with_message(content=(1,)),
        "object as content": lambda: with_message(content=object()),
        "tuple in extra": lambda: with_message(extra={"a": (1,)}),
        "dict in messages": dict_in_messages,
        "naive message time": lambda: Session(
            id="s", messages=[forced(Message(id="m", role="u"), "created_at", naive)]
        ),
        "naive created_at": lambda: forced(Session(id="s"), "created_at", naive),
        "int title": lambda: forced(Session(id="s"), "title", 5),
        "str metadata_version": lambda: forced(Session(id="s"), "metadata_version", "1"),
    }


BAD_SESSIONS = bad_sessions()


@pytest.mark.parametrize("checkpoint", [False, True], ids=["save", "checkpoint"])
async def test_sessions_holding_non_json_values_are_refused(
    tmp_path: Path, checkpoint: bool
) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:

        async def write(session: Session) -> None:
            if checkpoint:
                await store.checkpoint_runtime_session(session)
            else:
                await store.save_runtime_session(session)

        for name, make in BAD_SESSIONS.items():  # nothing persisted yet: nothing created
            with pytest.raises((TypeError, ValueError)):
                await write(make())
            assert not (tmp_path / "s").exists(), name
        good = Session(id="s", messages=[Message(id="ok", role="user", content=[1, "two"])])
        await write(good)
        files = session_files(tmp_path, "s")
        written = store.statistics().snapshots_written
        for name, make in BAD_SESSIONS.items():  # persisted: unchanged
            with pytest.raises((TypeError, ValueError)):
                await write(make())
            assert session_files(tmp_path, "s") == files, name
        assert store.statistics().snapshots_written == written
        assert await store.load_session("s") == good
        with pytest.raises((TypeError, ValueError)):
            await store.save_runtime_session("s")  # type: ignore[arg-type]
        assert store.statistics().actor_crashes == 0


BAD_TITLES: list[tuple[Any, type[Exception]]] = [
    ("", ValueError),
    ("   ", ValueError),
    ("\n\t ", ValueError),
    (5, TypeError),
    (None, TypeError),
    (b"title", TypeError),
]
BAD_PINNED: list[Any] = [1, 0, "yes", None]


async def test_bad_ui_edits_are_refused_and_nothing_moves(tmp_path: Path) -> None:
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", title="kept"))
        files = session_files(tmp_path, "s")
        written = store.statistics().snapshots_written
        for title, error in BAD_TITLES:
            with pytest.raises(error):
                await store.set_title("s", title)
        for pinned in BAD_PINNED:
            with pytest.raises(TypeError):
                await store.set_pinned("s", pinned)
        assert session_files(tmp_path, "s") == files
        # Unchanged values write nothing and move no version.
        same = await store.set_title("s", "  kept  ")
        assert (same.title, same.title_version, same.metadata_version) == ("kept", 0, 0)
        await store.set_pinned("s", False)
        assert session_files(tmp_path, "s") == files
        assert store.statistics().snapshots_written == written
        # Unknown sessions: SessionNotFoundError (a KeyError); nothing created.
        for call in (
            store.set_title("missing", "t"),
            store.set_pinned("missing", True),
            store.append_token_usage_record("missing", {"a": 1}),
        ):
            with pytest.raises(SessionNotFoundError) as raised:
                await call
            assert isinstance(raised.value, KeyError)
        assert not (tmp_path / "missing").exists()


async def test_a_failed_delete_fails_the_save_batched_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save and a delete in one batch: if the delete fails, the save was never written."""
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        before = await seed(store)
        # Hold one batch of s1 in its worker thread, so the save and the delete
        # queue behind it, in this order, and make the next batch together.
        held, release = threading.Event(), threading.Event()
        original = sessionactors._runner.run_batch

        def gated(files: Any, ops: Any, **options: Any) -> Any:
            if not held.is_set():
                held.set()
                release.wait(30)
            return original(files, ops, **options)

        monkeypatch.setattr(sessionactors._runner, "run_batch", gated)
        injector = Fault("unlink", errno.EIO, is_generation_of("s1"))
        injector.install(monkeypatch)
        changed = Session(id="s1", runtime_state={"step": 99})
        results: dict[str, Any] = {}

        async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            results[name] = await outcome_of(call())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "load", lambda: store.load_session("s1"))
            assert await trio.to_thread.run_sync(held.wait, 30)
            nursery.start_soon(run, "save", lambda: store.save_runtime_session(changed))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run, "delete", lambda: store.delete_session("s1"))
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert injector.injected == 1
        assert isinstance(results["delete"], OSError)
        # Not "done" for a write that never reached the disk.
        assert isinstance(results["save"], OSError)
        assert await store.load_session("s1") == before
        assert await store.delete_session("s1") is True


@pytest.mark.parametrize("failing", [1, 2, 3, 4])
@pytest.mark.parametrize("function", ["unlink", "rename"])
async def test_a_delete_that_fails_half_way_leaves_the_session_whole_or_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, failing: int
) -> None:
    """The ``failing``-th removal (or rename) of a generation fails: never an older revision.

    A session of three generations, the newest a rewind based on the first:
    a delete that raises leaves it exactly as it was (every revision), one
    that returns leaves it absent; never an older revision in its place,
    nor a generation whose base is gone.
    """
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        await seed(store)  # revisions 1 and 2, generation 1
        edited = await store.load_session("s1")
        assert edited is not None
        edit_every_message(edited)
        await store.save_runtime_session(edited)  # revision 3, generation 2
        await store.rewind_session("s1", 2)  # revision 4, generation 3, based on 1
        revisions = {r: await store.load_session("s1", revision=r) for r in (1, 2, 3, 4)}
        target = lambda path: bool(LOG_FILE.search(path)) and "/s1/" in path  # noqa: E731
        injector = Fault(function, errno.EIO, target, skip=failing - 1)
        injector.install(monkeypatch)
        outcome = await outcome_of(store.delete_session("s1"))
        if isinstance(outcome, OSError):
            assert outcome.errno == errno.EIO
            for revision, expected in revisions.items():
                assert await store.load_session("s1", revision=revision) == expected
            assert [e.revision for e in await store.session_history("s1")] == [4, 3, 2, 1]
        else:
            assert outcome is True
            assert await store.load_session("s1") is None
        monkeypatch.undo()
        async with sessionactors.open_store(tmp_path, durability="flush") as other:
            if isinstance(outcome, OSError):
                assert await other.load_session("s1") == revisions[4]
            else:
                assert await other.load_session("s1") is None
                assert [s.id for s in await other.list_sessions()] == ["s2"]
        assert await store.delete_session("s1") is isinstance(outcome, OSError)
        assert not (tmp_path / "s1").exists()
