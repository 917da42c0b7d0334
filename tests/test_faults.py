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
from support import EVERY_BAD_ID, EVERY_BAD_RECORD, deep, session_files

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

SLOT = re.compile(r"/session(\.1)?\.json$")
TEMP = re.compile(r"/\.session(\.1)?\.json\.[0-9a-f]+\.tmp$")


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
    injected: int = 0
    _half_written: bool = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = getattr(os, self.function)

        def fake(*args: Any, **kwargs: Any) -> Any:
            by_fd = self.function in ("write", "pwrite", "fsync", "ftruncate")
            path = fd_path(args[0]) if by_fd else os.fspath(args[0])
            if kwargs.get("dir_fd") is not None:  # a name relative to a directory's descriptor
                path = os.path.join(fd_path(kwargs["dir_fd"]), path)
            reading = self.function == "open" and not args[1] & (os.O_WRONLY | os.O_RDWR)
            if self.injected < self.times and self.target(path) and not reading:
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
    """The temporary file a session's first snapshot is made in, then renamed."""
    return lambda path: bool(TEMP.search(path)) and f"/{sid}/" in path


def is_slot_of(sid: str) -> Callable[[str], bool]:
    """A snapshot slot of session ``sid`` (rewritten in place by every snapshot write)."""
    return lambda path: bool(SLOT.search(path)) and f"/{sid}/" in path


def is_log_of(sid: str) -> Callable[[str], bool]:
    return lambda path: path.endswith(f"/{sid}/token-usage.jsonl")


def leftovers(directory: Path) -> list[str]:
    """Temporary files, and journals no snapshot names, left in a session directory."""
    if not directory.exists():
        return []
    snapshot = sessionactors.storage.files.read_snapshot_at(str(directory), directory.name)
    named = snapshot.journal if snapshot is not None else None
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name.endswith(".tmp") or (p.name.startswith("messages.") and p.name != named)
    )


def latest_slot(directory: Path) -> Path:
    """The snapshot slot holding the session's newest snapshot."""
    snapshot = sessionactors.storage.files.read_snapshot_at(str(directory), directory.name)
    assert snapshot is not None
    return Path(snapshot.path)


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

SAVE_FAULTS = {
    "write ENOSPC": ("pwrite", errno.ENOSPC, False),
    "write EACCES": ("pwrite", errno.EACCES, False),
    "write EIO": ("pwrite", errno.EIO, False),
    "half written, then ENOSPC": ("pwrite", errno.ENOSPC, True),
    "fsync EIO": ("fsync", errno.EIO, False),
    "fsync ENOSPC": ("fsync", errno.ENOSPC, False),
    "truncate EIO": ("ftruncate", errno.EIO, False),
    "open EACCES": ("open", errno.EACCES, False),
    "open ENOSPC": ("open", errno.ENOSPC, False),
}


@pytest.mark.parametrize("fault", SAVE_FAULTS.values(), ids=SAVE_FAULTS.keys())
@pytest.mark.parametrize("operation", ["save", "checkpoint", "set_title", "set_pinned"])
async def test_os_error_while_writing_a_snapshot_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: tuple[str, int, bool], operation: str
) -> None:
    function, code, partial = fault
    durability: Literal["fsync", "flush"] = "fsync" if function == "fsync" else "flush"
    async with sessionactors.open_store(tmp_path, durability=durability) as store:
        before = await seed(store)
        newest = latest_slot(tmp_path / "s1")
        snapshot = newest.read_bytes()
        log = (tmp_path / "s1" / "token-usage.jsonl").read_bytes()

        caller = Session(
            id="s1",
            messages=[Message(id="new", role="user", content="hello")],
            metadata={"model": "changed"},
        )
        untouched = copy.deepcopy(caller)
        if function == "ftruncate":
            # A slot is cut only when its old bytes are longer than the new
            # ones: give the older slot a long torn tail, as a crash may leave.
            older = next(p for p in (tmp_path / "s1").glob("session*.json") if p != newest)
            older.write_bytes(older.read_bytes() + b"x" * 4096)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "save": lambda: store.save_runtime_session(caller),
            "checkpoint": lambda: store.checkpoint_runtime_session(caller),
            "set_title": lambda: store.set_title("s1", "renamed"),
            "set_pinned": lambda: store.set_pinned("s1", True),
        }
        injector = Fault(function, code, is_slot_of("s1"), partial=partial)
        injector.install(monkeypatch)

        # The other session keeps being served while s1's write fails.
        other = Session(id="s2", metadata={"v": 1})
        results: dict[str, Any] = {}

        async def run(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            results[name] = await outcome_of(call())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "s1", calls[operation])
            nursery.start_soon(run, "s2 save", lambda: store.save_runtime_session(other))
            nursery.start_soon(
                run, "s2 append", lambda: store.append_token_usage_record("s2", {"ok": 1})
            )

        error = results["s1"]
        assert isinstance(error, OSError), error
        assert error.errno == code
        assert injector.injected == 1
        assert results["s2 save"] is None and results["s2 append"] is None
        # What was persisted before is intact, byte for byte (the write went to
        # the other slot, which now reads as torn), and nothing is left behind.
        assert latest_slot(tmp_path / "s1") == newest
        assert newest.read_bytes() == snapshot
        assert (tmp_path / "s1" / "token-usage.jsonl").read_bytes() == log
        assert leftovers(tmp_path / "s1") == []
        assert caller == untouched  # a failed call does not half-update the caller's object
        assert await store.load_session("s1") == before
        assert await store.load_session("s2") == other

        # The store keeps serving s1: the same call now succeeds, once.
        await calls[operation]()
        after = await store.load_session("s1")
        assert after is not None
        if operation == "save":
            assert after.messages == caller.messages and after.title == "from the ui"
        elif operation == "checkpoint":
            assert [m.id for m in after.messages] == [f"m{i}" for i in range(5)] + ["new"]
        elif operation == "set_title":
            assert (after.title, after.title_version) == ("renamed", before.title_version + 1)
        else:
            assert after.pinned is True
        if operation in ("set_title", "set_pinned"):  # versions move by one, not two
            assert after.metadata_version == before.metadata_version + 1
        assert store.statistics().actor_crashes == 0
    assert leftovers(tmp_path / "s1") == []


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


def corruptions(good: bytes) -> dict[str, bytes]:
    head = good.rstrip(b"\n")
    return {
        "random bytes": bytes(range(256)) * 4,
        "empty": b"",
        "not json": b"this is not a session\n",
        "a json array": b"[1, 2, 3]\n[]\n",
        "cut in the head": good[: len(head) // 2],
        "cut in the middle": good[: len(good) // 2],
        "cut before the last byte": good[:-2],
        "a second line": good + b"\x00" * len(head),
        "a value of the wrong type": good.replace(b'"pinned":false', b'"pinned":"no"', 1),
        "a newer format": good.replace(b'"format":2', b'"format":99', 1),
        "another session's file": good.replace(b'"id":"b"', b'"id":"z"', 1),
    }


CORRUPTION_KINDS = list(corruptions(b'{"format":2,"id":"b"}\n'))


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
async def test_corrupt_session_file_is_reported_and_kept(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "b" / "session.json"
    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        for sid in ("a", "b", "c"):
            messages = [Message(id=f"{sid}{i}", role="user", content=i) for i in range(30)]
            await store.save_runtime_session(Session(id=sid, title=sid, messages=messages))
        await store.append_token_usage_record("b", {"n": 1})
    garbage = corruptions(path.read_bytes())[kind]
    path.write_bytes(garbage)

    async with sessionactors.open_store(tmp_path, durability="flush") as store:
        with pytest.raises(CorruptSessionError) as raised:
            await store.load_session("b")
        assert isinstance(raised.value, SessionStoreError)
        assert raised.value.path == str(path)
        assert str(path) in str(raised.value)
        assert path.read_bytes() == garbage

        # Writes that would replace the file fail the same way and keep it.
        attempts: dict[str, Callable[[], Awaitable[Any]]] = {
            "save_runtime_session": lambda: store.save_runtime_session(
                Session(id="b", title="over it")
            ),
            "checkpoint_runtime_session": lambda: store.checkpoint_runtime_session(Session(id="b")),
            "set_title": lambda: store.set_title("b", "renamed"),
            "set_pinned": lambda: store.set_pinned("b", True),
        }
        failures = []
        for name, attempt in attempts.items():
            try:
                await attempt()
            except CorruptSessionError as exc:
                assert exc.path == str(path)
            else:
                failures.append(f"{name} succeeded")
            if path.read_bytes() != garbage:
                failures.append(f"{name} replaced the file")
                path.write_bytes(garbage)  # to see what the other calls do
        assert not failures, f"over a corrupt file ({kind}): {failures}"
        with pytest.raises(CorruptSessionError):
            await store.load_session("b")  # still reported, not "fixed"

        # The sessions beside it are listed and load as ever.
        listed = {summary.id for summary in await store.list_sessions()}
        assert {"a", "c"} <= listed
        for sid in ("a", "c"):
            loaded = await store.load_session(sid)
            assert loaded is not None and len(loaded.messages) == 30
        assert store.statistics().actor_crashes == 0
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
        injector = Fault("unlink", errno.EIO, lambda path: path.endswith("/s1/session.json"))
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
