"""The file backend under hostile trees: links, stray entries, damage, other owners.

Issue #11, items 4, 5, 6, 7, 10 (files) and 14. Everything is real: real
symbolic links, stray files, a directory where a file belongs, a real EACCES
seen by a process of the user ``nobody``, and a store whose calls could hang
run in a child process with a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nobody
import pytest
import trio
from support import (
    current_generation,
    generations,
    links,
    log_record,
    write_format_2,
)

import sessionactors
from sessionactors import CorruptSessionError, Message, Session, open_store
from sessionactors.storage.files import KEPT_SUFFIX, list_summaries

# The package's parent directory: what a child process imports it from.
PACKAGE_PARENT = str(Path(sessionactors.__file__).resolve().parent.parent)


async def run_child(code: str, *args: str) -> Any:
    """Run ``code`` in a child process and return the JSON it prints.

    A store whose worker thread never ends cannot be closed: in a child, the
    deadline kills it rather than hang the suite.
    """
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", code, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
        )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def _messages(count: int, tag: str = "m") -> list[Message]:
    return [Message(id=f"{tag}{n}", role="user", content=f"{tag} {n}") for n in range(count)]


def _tree(top: Path) -> dict[str, bytes | str]:
    """Every entry under ``top``: a file's bytes, a link's target, or "dir"."""
    found: dict[str, bytes | str] = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found[path] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[path] = "dir"
            else:
                found[path] = Path(path).read_bytes()
    return found


# --- item 4: a damaged generation is kept, never deleted --------------------------------


def _damage(generation: Path) -> bytes:
    """Overwrite a message record with bytes of the same length (its checksum fails)."""
    lines = generation.read_bytes().split(b"\n")
    lines[1] = b"\x00" * len(lines[1])
    damaged = b"\n".join(lines)
    generation.write_bytes(damaged)
    return damaged


async def _replace_damaged(root: Path, generation: Path, caplog: pytest.LogCaptureFixture) -> None:
    """From a fresh store: the load names the damaged generation; a save replaces it."""
    async with open_store(root, durability="flush", history=1) as store:
        with pytest.raises(CorruptSessionError) as raised:
            await store.load_session("s")
        assert raised.value.path == str(generation)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sessionactors.storage.files.session"):
            fresh = Session(id="s", messages=_messages(2, tag=generation.name))
            await store.save_runtime_session(fresh)
        assert any(str(generation) in record.getMessage() for record in caplog.records)
        assert await store.load_session("s") == fresh


async def test_a_damaged_generation_replaced_by_a_save_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """history=1: the save's new generation makes the damaged one unneeded, yet it stays."""
    directory = tmp_path / "s"
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=_messages(3)))
    first = current_generation(directory)
    first_damaged = _damage(first)
    await _replace_damaged(tmp_path, first, caplog)
    first_kept = first.with_name(first.name + KEPT_SUFFIX)
    assert not first.exists()  # its name went with the generation no revision needs
    assert first_kept.read_bytes() == first_damaged

    # A second damaged generation whose kept name is taken: the file there stays.
    second = current_generation(directory)
    second_damaged = _damage(second)
    taken = second.with_name(second.name + KEPT_SUFFIX)
    taken.write_bytes(b"kept earlier\n")
    await _replace_damaged(tmp_path, second, caplog)
    assert second.with_name(f"{second.name}.1{KEPT_SUFFIX}").read_bytes() == second_damaged
    assert taken.read_bytes() == b"kept earlier\n"

    # More writes (each fresh store sweeps and prunes) and a delete leave every kept file.
    kept = {
        path: path.read_bytes() for path in directory.iterdir() if path.name.endswith(KEPT_SUFFIX)
    }
    assert len(kept) == 3
    for n in range(2):
        async with open_store(tmp_path, durability="flush", history=2) as store:
            await store.save_runtime_session(Session(id="s", messages=_messages(1, tag=f"z{n}")))
            await store.rewind_session("s", await _latest(store) - 1)
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.delete_session("s") is True
        assert await store.load_session("s") is None
    assert {path: path.read_bytes() for path in directory.iterdir()} == kept


async def _latest(store: sessionactors.SessionStore) -> int:
    loaded = await store.load_session("s")
    assert loaded is not None
    return loaded.revision


# --- item 5: no link inside the root is ever followed ---------------------------------


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Another store's root, outside ours, with a session and bait files a sweep would take."""
    other = tmp_path / "other-store"
    trio.run(_seed_other_store, other)
    victim = other / "victim"
    (victim / ".x.tmp").write_bytes(b"bait: looks like a temporary file")
    (victim / "messages.1.jsonl").write_bytes(b'{"bait": "looks like a leftover journal"}\n')
    (other / "outside.txt").write_bytes(b"not the store's\n")
    yield other


async def _seed_other_store(other: Path) -> None:
    async with open_store(other, durability="flush") as store:
        await store.save_runtime_session(Session(id="victim", messages=_messages(3)))
        await store.append_token_usage_record("victim", {"n": 1})


async def _every_call_refused(root: Path, session_id: str, named: Path) -> None:
    """Each operation on ``session_id`` raises CorruptSessionError naming ``named``."""
    async with open_store(root, durability="flush") as store:
        calls = {
            "load": lambda: store.load_session(session_id),
            "save": lambda: store.save_runtime_session(Session(id=session_id, title="x")),
            "checkpoint": lambda: store.checkpoint_runtime_session(Session(id=session_id)),
            "append": lambda: store.append_token_usage_record(session_id, {"n": 2}),
            "read usage": lambda: store.read_token_usage(session_id),
            "set_title": lambda: store.set_title(session_id, "renamed"),
            "delete": lambda: store.delete_session(session_id),
        }
        for name, call in calls.items():
            with pytest.raises(CorruptSessionError) as raised:
                await call()
            assert raised.value.path == str(named), name
        assert session_id not in {summary.id for summary in await store.list_sessions()}


async def test_a_session_directory_that_is_a_link_is_refused(
    tmp_path: Path, elsewhere: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "s").symlink_to(elsewhere / "victim", target_is_directory=True)
    before = _tree(elsewhere)
    await _every_call_refused(root, "s", root / "s")
    assert _tree(elsewhere) == before  # nothing written, swept or deleted through the link
    async with open_store(elsewhere, durability="flush") as other:
        loaded = await other.load_session("victim")
        assert loaded is not None and len(loaded.messages) == 3


LINKED_FILES = ["token-usage.jsonl", "the current generation", "a previous generation", "a link"]


@pytest.mark.parametrize("name", LINKED_FILES)
async def test_a_file_of_the_session_that_is_a_link_is_refused(
    tmp_path: Path, elsewhere: Path, name: str
) -> None:
    root = tmp_path / "root"
    directory = root / "s"
    async with open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id="base", messages=_messages(2)))
        await store.fork_session("base", "s")  # s: one generation of its own, one linked
        await store.save_runtime_session(Session(id="s", messages=_messages(3, tag="e")))
        await store.append_token_usage_record("s", {"n": 1})
    assert len(generations(directory)) == 2 and len(links(directory)) == 1
    link = {
        "token-usage.jsonl": directory / name,
        "the current generation": generations(directory)[-1],
        "a previous generation": generations(directory)[0],
        "a link": links(directory)[0],
    }[name]
    target = elsewhere / "outside.txt"
    link.unlink()
    link.symlink_to(target)
    before = _tree(elsewhere)
    # Which calls meet the link (the others need not open it and succeed).
    meets = {
        "token-usage.jsonl": {"append", "read usage"},
        "the current generation": {"load", "history", "save", "append", "set_title", "delete"},
        "a previous generation": {"history", "load revision 1"},
        "a link": {"load revision 1"},  # the transcript of the fork, revision 1
    }[name]
    async with open_store(root, durability="flush") as store:
        calls = {
            "load": lambda: store.load_session("s"),
            "history": lambda: store.session_history("s"),
            "load revision 1": lambda: store.load_session("s", revision=1),
            "save": lambda: store.save_runtime_session(Session(id="s", messages=_messages(4))),
            "append": lambda: store.append_token_usage_record("s", {"n": 2}),
            "read usage": lambda: store.read_token_usage("s"),
            "set_title": lambda: store.set_title("s", "renamed"),
            "delete": lambda: store.delete_session("s"),
        }
        refused = set()
        for call_name, call in calls.items():
            if call_name not in meets:
                continue
            with pytest.raises(CorruptSessionError) as raised:
                await call()
            assert raised.value.path == str(link), call_name
            assert "symbolic link" in raised.value.reason
            refused.add(call_name)
        assert refused == meets
    assert _tree(elsewhere) == before
    assert target.read_bytes() == b"not the store's\n"
    assert link.is_symlink()


# --- item 6: a stray entry at <root>/<id> is a clear error, never a hang --------------

STRAY_CHILD = """
import json, sys, trio
from sessionactors import CorruptSessionError, Session, open_store

async def main():
    out = {}
    async with open_store(sys.argv[1], durability="flush") as store:
        for call in ("save", "load", "append", "delete"):
            try:
                if call == "save":
                    await store.save_runtime_session(Session(id="s"))
                elif call == "load":
                    await store.load_session("s")
                elif call == "append":
                    await store.append_token_usage_record("s", {"n": 1})
                else:
                    await store.delete_session("s")
            except CorruptSessionError as exc:
                out[call] = exc.path
            else:
                out[call] = None
    out["closed"] = True
    print(json.dumps(out))

trio.run(main)
"""


@pytest.mark.parametrize("stray", ["a file", "a dangling link", "a link to a file"])
async def test_a_stray_entry_for_a_session_fails_clearly_and_the_store_closes(
    tmp_path: Path, stray: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    entry = root / "s"
    if stray == "a file":
        entry.write_bytes(b"stray\n")
    elif stray == "a dangling link":
        entry.symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "a-file").write_bytes(b"stray\n")
        entry.symlink_to(tmp_path / "a-file")
    result = await run_child(STRAY_CHILD, str(root))
    assert result == {call: str(entry) for call in ("save", "load", "append", "delete")} | {
        "closed": True
    }
    assert entry.is_symlink() or entry.read_bytes() == b"stray\n"  # left as it was


# --- item 7: a session that cannot be read is skipped and reported --------------------

LIST_CHILD = """
import json, sys, trio
from sessionactors import open_store
from sessionactors.storage.files import list_summaries

async def main():
    async with open_store(sys.argv[1], durability="flush") as store:
        listed = sorted(summary.id for summary in await store.list_sessions())
    _, errors = list_summaries(sys.argv[1])
    print(json.dumps({"listed": listed, "errors": sorted(e.path for e in errors)}))

trio.run(main)
"""


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A root another user can reach (pytest's own directories are private to root)."""
    top = Path(tempfile.mkdtemp(prefix="sessionactors-eacces-"))
    top.chmod(0o755)
    try:
        yield top / "root"
    finally:
        for directory, dirs, _ in os.walk(top):
            for name in dirs:
                os.chmod(os.path.join(directory, name), 0o755)
        shutil.rmtree(top)


async def test_an_unreadable_session_is_skipped_and_reported(open_root: Path) -> None:
    root = open_root
    async with open_store(root, durability="flush") as store:
        for sid in ("fine", "locked-dir", "locked-log", "log-is-a-dir"):
            await store.save_runtime_session(Session(id=sid, messages=_messages(2)))
    (root / "locked-dir").chmod(0o000)
    current_generation(root / "locked-log").chmod(0o000)
    generation = current_generation(root / "log-is-a-dir")
    generation.unlink()
    generation.mkdir()
    # A process of the user nobody meets a real EACCES (root would read through it).
    argv, env = nobody.command(root.parent / "py", "-c", LIST_CHILD, str(root))
    with trio.fail_after(60):
        done = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    assert done.returncode == 0, f"the child of the user nobody failed: {done.stderr.decode()}"
    result = json.loads(done.stdout)
    assert result["listed"] == ["fine"]
    locked = current_generation(root / "locked-log")
    assert result["errors"] == sorted([str(root / "locked-dir"), str(locked), str(generation)])
    # And in this process (root): the generation that is a directory is reported, not raised.
    summaries, errors = list_summaries(root)
    assert [error.path for error in errors] == [str(generation)]
    assert sorted(summary.id for summary in summaries) == ["fine", "locked-dir", "locked-log"]


# --- item 10: error types --------------------------------------------------------------


@pytest.mark.parametrize("which", ["the current generation", "a previous generation"])
async def test_a_generation_replaced_by_a_directory_is_corrupt(tmp_path: Path, which: str) -> None:
    """Refused, never passed over: the session must not read as an older revision, or none."""
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=_messages(2)))
        await store.save_runtime_session(Session(id="s", messages=_messages(2, tag="e")))
    found = generations(tmp_path / "s")
    generation = found[-1] if which == "the current generation" else found[0]
    generation.unlink()
    generation.mkdir()
    async with open_store(tmp_path, durability="flush") as store:
        calls: list[Any] = [
            lambda: store.session_history("s"),
            lambda: store.load_session("s", revision=1),
        ]
        if which == "the current generation":
            calls += [
                lambda: store.load_session("s"),
                lambda: store.save_runtime_session(Session(id="s", messages=_messages(3))),
                lambda: store.set_title("s", "renamed"),
                lambda: store.delete_session("s"),
            ]
        for call in calls:
            with pytest.raises(CorruptSessionError) as raised:
                await call()
            assert raised.value.path == str(generation)
            assert "a directory" in raised.value.reason
        listed = {summary.id for summary in await store.list_sessions()}
        assert ("s" in listed) is (which == "a previous generation")  # its latest reads
    assert generation.is_dir()


async def test_a_damaged_newer_slot_is_named_not_the_journal_it_replaced(tmp_path: Path) -> None:
    """A session still in format 2 (written by an older version): its newer slot damaged."""
    directory = tmp_path / "s"
    older = Session(id="s", messages=_messages(2))
    write_format_2(directory, older)  # slot 0 names this journal
    (directory / "messages.0123456789abcdef.jsonl").unlink()  # replaced by an edit...
    newest_journal = directory / "messages.fedcba9876543210.jsonl"
    newest_journal.write_bytes(
        b'{"id":"e0","role":"user","content":"e","created_at":null,"extra":{}}\n'
    )
    newer = directory / "session.1.json"
    newer.write_bytes(b"\x00" * 40)  # ...whose slot, naming it, is damaged
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(CorruptSessionError) as raised:
            await store.load_session("s")
        assert raised.value.path == str(newer)
        assert "messages." in raised.value.reason  # the journal is in the reason
        # A save cannot go on from there, and must not sweep away the journal
        # the damaged slot names: it holds the newest transcript. Nor is the
        # session moved into a log.
        with pytest.raises(CorruptSessionError):
            await store.save_runtime_session(Session(id="s", messages=_messages(4, tag="n")))
        with pytest.raises(CorruptSessionError):
            await store.set_title("s", "renamed")
    assert newest_journal.exists()
    assert newer.read_bytes() == b"\x00" * 40
    assert generations(directory) == []


async def test_a_message_record_that_is_whole_but_no_message_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Damage a load refuses is damage a save keeps, even where its checksum holds."""
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    messages = [Message(id=f"m{n}", role="user", content=n, created_at=when) for n in range(3)]
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=messages))
    generation = current_generation(tmp_path / "s")
    lines = generation.read_bytes().split(b"\n")
    body = lines[2][10:].replace(b'"2026-01-01T', b'"XXXX-01-01T', 1)
    lines[2] = log_record(b"m", body)[:-1]  # a whole record: its checksum is right
    damaged = b"\n".join(lines)
    generation.write_bytes(damaged)
    async with open_store(tmp_path, durability="flush", history=1) as store:
        with pytest.raises(CorruptSessionError):
            await store.load_session("s")
        with caplog.at_level(logging.WARNING, logger="sessionactors.storage.files.session"):
            await store.save_runtime_session(Session(id="s", messages=_messages(1)))
    assert generation.with_name(generation.name + KEPT_SUFFIX).read_bytes() == damaged
    assert any(generation.name in record.getMessage() for record in caplog.records)


# --- FIFOs and directories where the store's files belong ------------------------------

FIFO_CHILD = """
import json, sys, trio
from sessionactors import Session, open_store

async def main():
    out = {}
    async with open_store(sys.argv[1], durability="fsync") as store:
        try:
            if sys.argv[2] == "token-usage.jsonl":
                await store.append_token_usage_record("s", {"n": 1})
            elif sys.argv[2] == "load":
                await store.load_session("s")
            else:
                await store.save_runtime_session(Session(id="s", title="again"))
        except Exception as exc:
            out["error"] = type(exc).__name__
    out["closed"] = True
    print(json.dumps(out))

trio.run(main)
"""


@pytest.mark.parametrize("call", ["load", "save"])
@pytest.mark.parametrize("name", ["the current generation", "token-usage.jsonl"])
async def test_a_fifo_in_place_of_a_file_fails_and_never_hangs(
    tmp_path: Path, name: str, call: str
) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
    if name == "token-usage.jsonl":
        path = tmp_path / "s" / name
        call = name
    else:
        path = current_generation(tmp_path / "s")
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    result = await run_child(FIFO_CHILD, str(tmp_path), call)
    assert result["closed"] is True
    assert "error" in result


LEFTOVER_NAMES = [
    "messages.0123456789abcdef.jsonl",
    ".session.json.x.tmp",
    f".log.2.{'0' * 32}.jsonl.x.tmp",
]


@pytest.mark.parametrize("name", LEFTOVER_NAMES)
async def test_a_directory_named_like_a_leftover_is_left_alone(tmp_path: Path, name: str) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=_messages(2)))
    stray = tmp_path / "s" / name
    stray.mkdir()
    (stray / "inside").write_bytes(b"not the store's\n")
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=_messages(3, tag="e"))
        await store.save_runtime_session(session)  # a rewrite: it sweeps
        assert await store.load_session("s") == session
        assert await store.delete_session("s") is True
        assert await store.load_session("s") is None
    assert (stray / "inside").read_bytes() == b"not the store's\n"


# --- item 14: a directory that belongs to another id ----------------------------------


async def test_a_directory_holding_another_sessions_snapshot_is_refused(tmp_path: Path) -> None:
    """What a case-insensitive filesystem does: ``<root>/a`` opens session "A"'s directory.

    (No case-insensitive filesystem can be mounted here: the kernel lacks
    CONFIG_UNICODE and XFS's ascii-ci. So "A"'s directory is planted as "a".)
    """
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="A", messages=_messages(2)))
        await store.save_runtime_session(Session(id="A", messages=_messages(3)))
        await store.append_token_usage_record("A", {"n": 1})
    (tmp_path / "A").rename(tmp_path / "a")
    before = _tree(tmp_path)
    async with open_store(tmp_path, durability="flush") as store:
        calls = {
            "load": lambda: store.load_session("a"),
            "save": lambda: store.save_runtime_session(Session(id="a")),
            "append": lambda: store.append_token_usage_record("a", {"n": 2}),
            "read usage": lambda: store.read_token_usage("a"),
            "set_title": lambda: store.set_title("a", "renamed"),
            "delete": lambda: store.delete_session("a"),
        }
        for name, call in calls.items():
            with pytest.raises(CorruptSessionError) as raised:
                await call()
            assert "holds session 'A', not 'a'" in raised.value.reason, name
            assert Path(raised.value.path).parent == tmp_path / "a", name
    assert _tree(tmp_path) == before
    (tmp_path / "a").rename(tmp_path / "A")
    async with open_store(tmp_path, durability="flush") as store:
        loaded = await store.load_session("A")
        assert loaded is not None and len(loaded.messages) == 3
        assert await store.read_token_usage("A") == [{"n": 1}]
