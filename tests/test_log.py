"""Format 3: a session's log (README "On disk"), what each write costs, and formats 1 and 2.

A session is a log of checksummed records in generations: a save that adds
messages appends their records and a commit (one write, one fsync), anything
else starts a new generation, a fork hard-links the source's generations.
These tests read the files by hand (``support.log_records``) and hold the
store to what the README promises of them: what each write costs, that no
write to a source changes a fork, that a changed byte is damage and never
data, what the history keeps, and how sessions of formats 1 and 2 are read
and moved into a log.
"""

from __future__ import annotations

import copy
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
from support import (
    current_generation,
    edit_every_message,
    format_2_head,
    format_2_slot,
    generations,
    links,
    log_record,
    log_records,
    msg,
    session_files,
    write_format_1,
    write_format_2,
)

from sessionactors import (
    CorruptSessionError,
    Message,
    RevisionNotFoundError,
    Session,
    UnsupportedFormatError,
    open_store,
)
from sessionactors._model import encode_message
from sessionactors.storage.files import SessionFiles
from sessionactors.storage.files import session as session_module


def _message(number: int, size: int = 100) -> Message:
    return Message(id=f"m{number}", role="user", content="x" * size)


def _message_record(message: Message) -> bytes:
    return log_record(b"m", encode_message(message))


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def _seqs(directory: Path) -> list[int]:
    """The ``seq`` of each own generation, in order."""
    return [int(path.name.split(".")[1]) for path in generations(directory)]


def _transcript(path: Path) -> list[Any]:
    """The message records of one generation, as JSON."""
    return [body for kind, body, _, _ in log_records(path) if kind == b"m"]


def _commits(path: Path) -> list[dict[str, Any]]:
    return [body for kind, body, _, _ in log_records(path) if kind == b"c"]


def _header(path: Path) -> dict[str, Any]:
    kind, body, _, _ = log_records(path)[0]
    assert kind == b"h"
    header: dict[str, Any] = body
    return header


# --- what a write costs -------------------------------------------------------------------


async def test_a_durable_save_that_appends_is_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ``write`` and one ``fdatasync`` of the current generation; no file made."""
    directory = tmp_path / "s"
    async with open_store(tmp_path, durability="fsync") as store:
        session = Session(id="s", messages=[_message(0)])
        await store.save_runtime_session(session)
        calls: list[tuple[str, str]] = []
        for name in ("write", "pwrite", "fsync", "fdatasync", "rename", "replace", "link"):
            real = getattr(os, name)

            def spy(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
                if isinstance(args[0], int):  # a descriptor
                    calls.append((_name, os.readlink(f"/proc/self/fd/{args[0]}")))
                else:
                    calls.append((_name, os.fspath(args[0])))
                return _real(*args, **kwargs)

            monkeypatch.setattr(os, name, spy)

        writes: list[tuple[str, Any]] = [
            ("save adding a message", lambda: store.save_runtime_session(session)),
            ("save adding three", lambda: store.save_runtime_session(session)),
            ("checkpoint adding one", lambda: store.checkpoint_runtime_session(session)),
            ("save of new state alone", lambda: store.save_runtime_session(session)),
            ("rename", lambda: store.set_title("s", "renamed")),
            ("pin", lambda: store.set_pinned("s", True)),
        ]
        for step, (what, write) in enumerate(writes):
            if what == "save adding three":
                session.messages += [_message(100 + n) for n in range(3)]
            elif what == "save of new state alone":
                session.runtime_state = {"step": step}
            elif what != "rename" and what != "pin":
                session.messages.append(_message(step + 1))
            log = current_generation(directory)
            names, size = _names(directory), log.stat().st_size
            before = store.statistics()
            calls.clear()
            await write()
            after = store.statistics()
            assert after.fsyncs - before.fsyncs == 1, what
            assert after.journal_appends - before.journal_appends == 1, what
            assert after.journal_rewrites == before.journal_rewrites, what
            assert _names(directory) == names, f"{what} made or removed a file"
            grown = log.stat().st_size - size
            assert after.bytes_written - before.bytes_written == grown, what
            # The system calls themselves: one write and one fdatasync of the log.
            assert calls == [("write", str(log)), ("fdatasync", str(log))], what
        loaded = await store.load_session("s")
        assert loaded is not None and loaded.messages == session.messages
        assert (loaded.title, loaded.pinned, loaded.revision) == ("renamed", True, 7)


async def test_a_save_appends_only_the_new_messages_and_its_commit(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s")
        await store.save_runtime_session(session)
        [log] = generations(tmp_path / "s")
        for number in range(20):
            session.messages.append(_message(number))
            counted = log.read_bytes()
            before = store.statistics()
            await store.save_runtime_session(session)
            after = store.statistics()
            assert after.journal_rewrites == before.journal_rewrites
            assert after.journal_appends == before.journal_appends + 1
            # Exactly the new message's record, then one commit record.
            data = log.read_bytes()
            assert data.startswith(counted + _message_record(session.messages[-1]))
            kind, commit, start, end = log_records(log)[-1]
            assert kind == b"c" and start == len(counted) + len(_message_record(_message(number)))
            assert (commit["revision"], commit["count"]) == (number + 2, number + 1)
            assert after.bytes_written - before.bytes_written == end - len(counted)
        assert await store.load_session("s") == session
    assert [generation.name for generation in generations(tmp_path / "s")] == [log.name]
    assert _transcript(log) == [orjson.loads(encode_message(m)) for m in session.messages]


@pytest.mark.parametrize(
    "change",
    ["edit most fields", "replace most objects", "remove", "insert", "compact", "clear"],
)
async def test_any_other_change_makes_a_new_generation(tmp_path: Path, change: str) -> None:
    """Other than appending, or changing at most half the messages (test_edited_messages.py)."""
    directory = tmp_path / "s"
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(10)])
        await store.save_runtime_session(session)
        first = copy.deepcopy(session)
        [old] = generations(directory)
        old_bytes = old.read_bytes()
        if change == "edit most fields":
            for message in session.messages[2:8]:
                message.content = "edited in the middle"
        elif change == "replace most objects":
            session.messages[2:8] = [Message(id=f"n{n}", role="user") for n in range(6)]
        elif change == "remove":
            del session.messages[3]
        elif change == "insert":
            session.messages.insert(2, _message(99))
        elif change == "compact":
            summary = Message(id="summary", role="system", content="the first 8, summarized")
            session.messages[:8] = [summary]
        else:
            session.messages.clear()
        before = store.statistics()
        await store.save_runtime_session(session)
        assert store.statistics().journal_rewrites == before.journal_rewrites + 1
        assert store.statistics().journal_appends == before.journal_appends
        assert await store.load_session("s") == session
        # The generation before is never changed, and still holds revision 1.
        assert old.read_bytes() == old_bytes
        loaded = await store.load_session("s", revision=1)
        assert loaded is not None and loaded.messages == first.messages
    # The new generation holds the live transcript whole, after a header naming the old one.
    new = current_generation(directory)
    assert _seqs(directory) == [1, 2]
    assert _transcript(new) == [orjson.loads(encode_message(m)) for m in session.messages]
    header = _header(new)
    assert (header["previous"], header["base"], header["first"]) == (_header(old)["gen"], None, 2)
    assert [commit["revision"] for commit in _commits(new)] == [2]


async def test_a_ui_edit_appends_one_commit_alone(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(5)])
        await store.save_runtime_session(session)
        [log] = generations(tmp_path / "s")
        content = log.read_bytes()
        before = store.statistics()
        await store.set_title("s", "renamed")
        assert (await store.load_session("s")) is not None  # a UI reading it
        [(kind, commit, start, _)] = log_records(log)[-1:]
        assert (kind, start, commit["kind"], commit["count"]) == (b"c", len(content), "title", 5)
        session.messages.append(_message(5))
        await store.save_runtime_session(session)
        after = store.statistics()
        assert session.title == "renamed"
        # Neither the edit nor the UI's read made the runtime's save start a generation.
        assert after.journal_rewrites == before.journal_rewrites
        assert log.read_bytes().startswith(content)
        assert await store.load_session("s") == session
    assert generations(tmp_path / "s") == [log]


async def test_checkpoint_appends_to_the_log(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        runtime = Session(id="s", messages=[_message(n) for n in range(5)])
        await store.checkpoint_runtime_session(runtime)
        stale = Session(id="s", messages=[_message(0), _message(7)])
        before = store.statistics()
        await store.checkpoint_runtime_session(stale)
        after = store.statistics()
        assert after.journal_rewrites == before.journal_rewrites
        assert [m.id for m in stale.messages] == ["m0", "m1", "m2", "m3", "m4", "m7"]
        # The runtime's own copy, one message further, appends again.
        runtime.messages.append(_message(8))
        await store.checkpoint_runtime_session(runtime)
        assert [m.id for m in runtime.messages] == ["m0", "m1", "m2", "m3", "m4", "m7", "m8"]
        assert store.statistics().journal_rewrites == before.journal_rewrites
        assert await store.load_session("s") == runtime


async def test_an_equal_copy_of_the_transcript_appends(tmp_path: Path) -> None:
    """Another caller's copy (equal values, other objects) needs no new generation."""
    async with open_store(tmp_path, durability="flush") as store:
        runtime = Session(id="s", messages=[_message(n) for n in range(5)])
        await store.save_runtime_session(runtime)
        copy = Session(id="s", messages=[_message(n) for n in range(6)])
        before = store.statistics()
        await store.save_runtime_session(copy)
        assert store.statistics().journal_rewrites == before.journal_rewrites
        assert await store.load_session("s") == copy
        # A checkpoint from yet another copy keeps its own objects.
        other = Session(id="s", messages=[_message(n) for n in range(7)])
        mine = list(other.messages)
        await store.checkpoint_runtime_session(other)
        assert all(a is b for a, b in zip(other.messages, mine, strict=True))
        assert store.statistics().journal_rewrites == before.journal_rewrites
        # A copy whose message differs in value is a change: that message is replaced.
        edited = Session(id="s", messages=[_message(n) for n in range(7)])
        edited.messages[3] = Message(id="m3", role="user", content="changed")
        appends = store.statistics().journal_appends
        await store.save_runtime_session(edited)
        assert store.statistics().journal_rewrites == before.journal_rewrites
        assert store.statistics().journal_appends == appends + 1
        assert log_records(current_generation(tmp_path / "s"))[-2][1][0] == 3
        assert await store.load_session("s") == edited


async def test_a_copy_found_equal_before_is_still_a_change_once_a_field_is_assigned(
    tmp_path: Path,
) -> None:
    """Tasks saving their own equal copies in turn: each change of one is still written."""
    async with open_store(tmp_path, durability="flush") as store:
        first = Session(id="s", messages=[_message(n) for n in range(5)])
        second = Session(id="s", messages=[_message(n) for n in range(5)])
        for _ in range(3):  # each copy is found equal to what the other wrote
            await store.save_runtime_session(first)
            await store.save_runtime_session(second)
        await store.save_runtime_session(first)  # what is written: first's objects
        before = store.statistics()
        second.messages[2].content = "assigned"
        await store.save_runtime_session(second)
        assert store.statistics().journal_appends == before.journal_appends + 1  # replaced
        assert await store.load_session("s") == second
        await store.save_runtime_session(first)  # first still holds the old value: a change
        assert store.statistics().journal_appends == before.journal_appends + 2
        assert await store.load_session("s") == first
        first.messages[4] = Message(id="m4", role="user", content="replaced")
        await store.save_runtime_session(first)
        assert await store.load_session("s") == first


async def test_another_writer_invalidates_what_the_actor_knows(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path, durability="flush") as first,
        open_store(tmp_path, durability="flush") as second,
    ):
        mine = Session(id="s", messages=[_message(n) for n in range(5)])
        await first.save_runtime_session(mine)
        theirs = Session(id="s", messages=[_message(n) for n in range(3)])
        theirs.messages.append(Message(id="theirs", role="user", content="other process"))
        await second.save_runtime_session(theirs)
        # The first store's actor must not append to a transcript it no longer knows.
        mine.messages.append(_message(5))
        await first.save_runtime_session(mine)
        assert await second.load_session("s") == mine
        # A checkpoint after another writer appends only what is new to disk.
        theirs.messages.append(Message(id="late", role="user", content="late"))
        await second.checkpoint_runtime_session(theirs)
        ids = [m.id for m in theirs.messages]
        assert ids == ["m0", "m1", "m2", "m3", "m4", "m5", "theirs", "late"]
        assert await first.load_session("s") == theirs


async def test_a_rewrite_checks_every_message_again(tmp_path: Path) -> None:
    """A value changed in place is refused when the whole transcript is written."""
    async with (
        open_store(tmp_path, durability="flush") as first,
        open_store(tmp_path, durability="flush") as second,
    ):
        mine = Session(id="s", messages=[Message(id="m0", role="user", content={"k": [1]})])
        await first.save_runtime_session(mine)
        await second.save_runtime_session(Session(id="s", messages=[_message(9)]))
        mine.messages[0].content["k"] = (1, 2)  # in place: no field assigned
        mine.messages.append(_message(1))
        with pytest.raises(TypeError):  # refused, not silently stored as a list
            await first.save_runtime_session(mine)
        loaded = await first.load_session("s")
        assert loaded is not None and [m.id for m in loaded.messages] == ["m9"]


async def test_a_rewind_writes_a_header_and_a_commit_not_the_messages(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n, size=1000) for n in range(50)])
        await store.save_runtime_session(session)
        session.messages.append(_message(50))
        await store.save_runtime_session(session)
        before = store.statistics()
        rewound = await store.rewind_session("s", 1)
        assert rewound.revision == 3 and len(rewound.messages) == 50
        assert store.statistics().bytes_written - before.bytes_written < 2048
        [first, new] = generations(directory)
        assert [kind for kind, _, _, _ in log_records(new)] == [b"h", b"c"]
        commit_1 = _commits(first)[0]
        assert _header(new)["base"] == [_header(first)["gen"], commit_1["msg_end"]]
        # And the rewound session appends to its new generation.
        rewound.messages.append(_message(60))
        await store.save_runtime_session(rewound)
        assert await store.load_session("s") == rewound
        assert generations(directory) == [first, new]
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("s") == rewound


# --- bytes after the last whole commit: a crash's tail -------------------------------------

TAILS: dict[str, Any] = {
    "message records without their commit": lambda commit: (
        _message_record(_message(50)) + _message_record(_message(51))
    ),
    "a commit cut short": lambda commit: _message_record(_message(50)) + commit[:-20],
    "zeros (a power loss)": lambda commit: b"\x00" * 4096,
    "a torn header-like line": lambda commit: b'h00000000 {"format":3',
}


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
async def test_bytes_after_the_last_commit_are_ignored_then_cut(tmp_path: Path, tail: Any) -> None:
    """A crash in the middle of an append leaves them; the revision before stands."""
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(session)
        session.runtime_state = {"step": 2}
        await store.save_runtime_session(session)
    [log] = generations(tmp_path / "s")
    counted = log.read_bytes()
    last_commit = counted[counted.rindex(b"\nc") + 1 :]
    with log.open("ab") as file:
        file.write(tail(last_commit))
    torn = log.read_bytes()
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("s") == session
        assert [entry.revision for entry in await store.session_history("s")] == [2, 1]
        [summary] = await store.list_sessions()
        assert (summary.revision, summary.message_count) == (2, 3)
        assert log.read_bytes() == torn  # reading repairs nothing behind anyone's back
        session.messages.append(_message(3))
        await store.save_runtime_session(session)
        assert session.revision == 3
        assert await store.load_session("s") == session
    # The tail is gone: the new records follow the counted bytes directly.
    assert log.read_bytes().startswith(counted + _message_record(session.messages[-1]))
    log_records(log)  # every line whole


async def test_a_whole_line_after_the_last_commit_that_fails_its_checksum_is_damage(
    tmp_path: Path,
) -> None:
    """No crash leaves a whole line that is no record: it may be the latest commit, damaged."""
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(session)
    [log] = generations(tmp_path / "s")
    counted = log.read_bytes()
    last_commit = counted[counted.rindex(b"\nc") + 1 :]
    with log.open("ab") as file:
        file.write(last_commit[:30] + b"X" + last_commit[31:])
    damaged = log.read_bytes()
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(CorruptSessionError) as caught:
            await store.load_session("s")
        assert caught.value.path == str(log)
        with pytest.raises(CorruptSessionError):
            await store.save_runtime_session(Session(id="s", messages=[_message(9)]))
    assert log.read_bytes() == damaged  # never cut, never written over


# --- a changed byte is damage, never data --------------------------------------------------


async def _three_revisions(root: Path) -> list[Session]:
    async with open_store(root, durability="flush") as store:
        session = Session(id="s", messages=[_message(n, size=8) for n in range(3)])
        await store.save_runtime_session(session)
        one = attrs.evolve(session, messages=list(session.messages))
        session.messages.append(_message(3, size=8))
        await store.save_runtime_session(session)
        two = attrs.evolve(session, messages=list(session.messages))
        three = await store.set_title("s", "t")
    return [one, two, three]


async def test_a_changed_byte_anywhere_in_a_log_is_damage_never_data(tmp_path: Path) -> None:
    """Every byte of a generation, changed in turn: a header, messages, commits.

    Anywhere it is CorruptSessionError naming the file, and the file is
    kept: a whole line that fails its checksum is damage even after the last
    whole commit, since no crash leaves one. Only where the change makes the
    last line no longer whole (its newline), so that it is what a crash
    could have left, does a load succeed: with the revision before, exactly
    as it was written.
    """
    revisions = await _three_revisions(tmp_path)
    [log] = generations(tmp_path / "s")
    good = log.read_bytes()
    records = log_records(log)
    commit_ends = {body["revision"]: end for kind, body, _, end in records if kind == b"c"}
    last_start = records[-1][2]
    outcomes: dict[str, list[int]] = {"corrupt": [], "earlier": []}
    for position in range(len(good)):
        damaged = bytearray(good)
        damaged[position] ^= 0x01 if good[position] != ord("\n") else 0x2B  # "\n" -> "!"
        log.write_bytes(damaged)
        async with open_store(tmp_path, durability="flush") as store:
            try:
                loaded = await store.load_session("s")
                history = [entry.revision for entry in await store.session_history("s")]
            except CorruptSessionError as exc:
                assert exc.path == str(log), (position, exc)
                outcomes["corrupt"].append(position)
            else:
                assert loaded is not None, position
                revision = loaded.revision
                # An earlier revision, whole, and the change lies after its commit.
                assert revision < 3 and loaded == revisions[revision - 1], position
                assert position >= commit_ends[revision], position
                assert history == list(range(revision, 0, -1)), position
                outcomes["earlier"].append(position)
        assert log.read_bytes() == damaged, f"the damaged file was changed ({position})"
    assert last_start > 0
    assert outcomes["corrupt"] == list(range(len(good) - 1))
    assert outcomes["earlier"] == [len(good) - 1]


DAMAGED_PLACES = [
    "the current generation",
    "a previous generation",
    "a rewind's base",
    "a fork's link",
]


@pytest.mark.parametrize("place", DAMAGED_PLACES)
async def test_damage_in_any_generation_a_read_needs_is_corrupt_and_kept(
    tmp_path: Path, place: str
) -> None:
    directory = tmp_path / "s"
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n, size=20) for n in range(4)])
        await store.save_runtime_session(session)  # revision 1, generation 1
        edit_every_message(session)
        await store.save_runtime_session(session)  # revision 2, generation 2
        if place == "a rewind's base":
            await store.rewind_session("s", 2)  # revision 3, generation 3, based on 2
        if place == "a fork's link":
            await store.fork_session("s", "f")
    files = generations(directory)
    target = {
        "the current generation": files[-1],
        "a previous generation": files[0],
        "a rewind's base": files[1],
        "a fork's link": files[-1],
    }[place]
    data = bytearray(target.read_bytes())
    _, _, start, _ = next(record for record in log_records(target) if record[0] == b"m")
    data[start + 20] ^= 0x01  # inside the first message record
    target.write_bytes(data)
    everything = {path: path.read_bytes() for path in directory.iterdir()}
    async with open_store(tmp_path, durability="flush") as store:
        reads: list[Any] = [lambda: store.session_history("s")]
        if place != "a previous generation":
            reads.append(lambda: store.load_session("s"))
        else:  # the latest needs only the current generation; revision 1 needs the damaged one
            assert await store.load_session("s") == session
            reads.append(lambda: store.load_session("s", revision=1))
        if place == "a fork's link":
            fork_link = links(tmp_path / "f")[0]
            with pytest.raises(CorruptSessionError) as raised:
                await store.load_session("f")
            assert raised.value.path == str(fork_link)
        for read in reads:
            with pytest.raises(CorruptSessionError) as raised:
                await read()
            assert raised.value.path == str(target)
            assert "checksum" in raised.value.reason
    assert {path: path.read_bytes() for path in directory.iterdir()} == everything


# --- forks share bytes --------------------------------------------------------------------


async def test_a_fork_of_a_long_session_writes_a_few_hundred_bytes_and_links_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    async with open_store(tmp_path, durability="fsync") as store:
        session = Session(id="src", messages=[msg(f"m{n}", f"message {n}") for n in range(10_000)])
        await store.save_runtime_session(session)
        [generation] = generations(source)
        assert generation.stat().st_size > 500_000
        before = store.statistics()
        fork = await store.fork_session("src", "fork")
        after = store.statistics()
        assert after.bytes_written - before.bytes_written <= 64 * 1024
        assert after.journal_rewrites - before.journal_rewrites == 1  # its one generation
        assert fork.messages == session.messages
        # The fork's directory: the source's generation (the same inode), and its own.
        [link] = links(tmp_path / "fork")
        assert link.name == f"link.{_header(generation)['gen']}.jsonl"
        assert link.stat().st_ino == generation.stat().st_ino
        assert generation.stat().st_nlink == 2
        [own] = generations(tmp_path / "fork")
        assert own.stat().st_size <= 64 * 1024
        assert [kind for kind, _, _, _ in log_records(own)] == [b"h", b"c"]
        assert _header(own)["base"][0] == _header(generation)["gen"]
        assert await store.load_session("fork") == fork


SOURCE_WRITES = [
    "append (cutting a torn tail)",
    "set_title",
    "edit an old message",
    "edit most old messages",
    "rewind",
    "compact",
    "delete",
    "delete, then a new session of that id",
]


@pytest.mark.parametrize("write", SOURCE_WRITES)
async def test_no_write_to_the_source_changes_a_fork(tmp_path: Path, write: str) -> None:
    """The fork loads equal before and after, and the bytes it counts are untouched."""
    async with open_store(tmp_path, durability="flush", history=2) as store:
        source = Session(id="src", messages=[_message(n, size=30) for n in range(6)])
        await store.save_runtime_session(source)
        source.messages.append(_message(6))
        await store.save_runtime_session(source)
        [generation] = generations(tmp_path / "src")
        # A tail a crash left, beyond what the fork will count.
        with generation.open("ab") as file:
            file.write(_message_record(_message(99)) + b"c0000 {torn")
        fork = await store.fork_session("src", "fork", revision=1)
        fork_of_fork = await store.fork_session("fork", "fork2")
        assert fork.messages == source.messages[:6]
        [link] = links(tmp_path / "fork")
        [own] = generations(tmp_path / "fork")
        counted = link.read_bytes()[: _header(own)["base"][1]]
        assert len(counted) > 6 * 30
        own_bytes = own.read_bytes()

        if write.startswith("append"):
            source.messages.append(_message(7))
            await store.save_runtime_session(source)
            assert _message_record(_message(99)) not in generation.read_bytes()  # cut
        elif write == "set_title":
            await store.set_title("src", "renamed")
        elif write == "edit an old message":  # its replacement appended, past what forks count
            source.messages[0].content = "edited"
            await store.save_runtime_session(source)
            assert generations(tmp_path / "src") == [generation]
            assert log_records(generation)[-2][0] == b"r"
        elif write == "edit most old messages":  # a new generation
            for message in source.messages[:4]:
                message.content = "edited"
            await store.save_runtime_session(source)
            source.messages.append(_message(8))
            await store.save_runtime_session(source)
            await store.set_title("src", "renamed")  # revision 1's generation is pruned
            assert generation not in generations(tmp_path / "src")
        elif write == "rewind":
            await store.rewind_session("src", 1)
        elif write == "compact":
            source.messages[:5] = [Message(id="summary", role="system", content="...")]
            await store.save_runtime_session(source)
        else:
            assert await store.delete_session("src") is True
            if write.endswith("new session of that id"):
                await store.save_runtime_session(Session(id="src", messages=[_message(0)]))
        assert await store.load_session("fork") == fork
        assert await store.load_session("fork2") == fork_of_fork
        # Its own generation as it was; the linked one (the source's inode,
        # which the source may append to) unchanged in every byte it counts.
        assert generations(tmp_path / "fork") == [own] and own.read_bytes() == own_bytes
        assert links(tmp_path / "fork") == [link]
        assert link.read_bytes().startswith(counted)
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("fork") == fork
        assert await store.load_session("fork2") == fork_of_fork
        # And the fork lives on by itself: it appends to its own generation.
        fork.messages.append(_message(70))
        await store.save_runtime_session(fork)
        assert await store.load_session("fork") == fork
        assert await store.delete_session("fork") is True
        assert await store.load_session("fork2") == fork_of_fork


async def test_a_fork_holds_the_revision_it_names_while_the_source_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork reads its source without the source's lock: another process may commit a
    revision between the fork's reads. The fork must hold the revision it names."""
    async with open_store(tmp_path, durability="flush") as store:
        source = Session(id="src", messages=[_message(0)], runtime_state={"step": 1})
        await store.save_runtime_session(source)
        generation = current_generation(tmp_path / "src")
        real = SessionFiles.read_head
        written: list[int] = []

        def read_head_then_another_write(self: SessionFiles) -> Any:
            head = real(self)
            if self.session_id == "src" and not written:
                # What another process's UI edit and state save would append now.
                [*_, (_, last, start, end)] = log_records(generation)
                later = copy.deepcopy(last)
                later["revision"] = later["session"]["revision"] = 2
                later["session"]["runtime_state"] = {"step": 2}
                later["cb"] = last["cb"] + end - start
                with generation.open("ab") as file:
                    file.write(log_record(b"c", later))
                written.append(2)
            return head

        monkeypatch.setattr(SessionFiles, "read_head", read_head_then_another_write)
        fork = await store.fork_session("src", "fork")
        assert written == [2]
        monkeypatch.undo()
        named = await store.load_session("src", revision=fork.forked_from_revision)
        assert named is not None
        assert (fork.messages, fork.runtime_state) == (named.messages, named.runtime_state)
        assert await store.load_session("fork") == fork


async def test_a_fork_reading_a_source_rewritten_under_it_never_sees_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the fork's listing of its source and its reading of a base, another store
    makes a new generation and removes every one nothing kept needs (history=1).

    The fork is of a revision it read whole (read again from a fresh listing),
    or RevisionNotFoundError; never CorruptSessionError for a sound source.
    """
    async with (
        open_store(tmp_path, durability="flush", history=2) as store,
        open_store(tmp_path, durability="flush", history=1) as other,
    ):
        source = Session(id="src", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(source)
        source.messages.append(_message(3))
        await store.save_runtime_session(source)
        await store.rewind_session("src", 1)  # generation 2: its transcript is in 1
        [first, second] = generations(tmp_path / "src")
        real = session_module.read_generation
        edited = Session(id="src", messages=[_message(9)])
        once: list[str] = []

        def read_then_rewritten(dir_fd: int, directory: str, name: str, *args: Any) -> Any:
            generation = real(dir_fd, directory, name, *args)
            if name == second.name and not once:
                once.append(name)
                trio.from_thread.run(other.save_runtime_session, edited)
                assert not first.exists() and not second.exists()  # removed under the fork
            return generation

        monkeypatch.setattr(session_module, "read_generation", read_then_rewritten)
        try:
            fork = await store.fork_session("src", "fork")
        except RevisionNotFoundError:
            assert await store.load_session("fork") is None
        else:
            monkeypatch.undo()
            named = await store.load_session("src", revision=fork.forked_from_revision)
            assert named is not None and fork.messages == named.messages
            assert await store.load_session("fork") == fork
        assert edited.revision == 4


async def test_a_session_rewritten_while_it_is_listed_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list_sessions reads without locks: a generation removed between its listing of a
    directory and its opening the current one is read again, not taken for damage."""
    async with (
        open_store(tmp_path, durability="flush", history=1) as store,
        open_store(tmp_path, durability="flush", history=1) as other,
    ):
        await store.save_runtime_session(Session(id="s", messages=[_message(0)]))
        [first] = generations(tmp_path / "s")
        real = session_module.read_tip
        edited = Session(id="s", messages=[_message(9)])
        once: list[str] = []

        def rewritten_then_read(dir_fd: int, directory: str, name: str, *args: Any) -> Any:
            if name == first.name and not once:
                once.append(name)
                trio.from_thread.run(other.save_runtime_session, edited)
                assert not first.exists()
            return real(dir_fd, directory, name, *args)

        monkeypatch.setattr(session_module, "read_tip", rewritten_then_read)
        [summary] = await store.list_sessions()
        assert (summary.id, summary.revision, summary.message_count) == ("s", 2, 1)


async def test_a_chain_of_bases_deeper_than_16_is_written_whole(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        source = Session(id="f0", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(source)
        for depth in range(1, 18):
            fork = await store.fork_session(f"f{depth - 1}", f"f{depth}")
            assert fork.messages == source.messages
            [own] = generations(tmp_path / f"f{depth}")
            header = _header(own)
            if depth <= 16:  # a header and a commit, its transcript in the linked chain
                assert header["depth"] == depth
                assert len(links(tmp_path / f"f{depth}")) == depth
                assert _transcript(own) == []
            else:  # a read never follows more than 16 files: this one is whole
                assert (header["depth"], header["base"]) == (0, None)
                assert links(tmp_path / f"f{depth}") == []
                assert len(_transcript(own)) == 3
    async with open_store(tmp_path, durability="flush") as store:
        for depth in range(18):
            loaded = await store.load_session(f"f{depth}")
            assert loaded is not None and loaded.messages == source.messages


# --- retention ------------------------------------------------------------------------------


def _copy(session: Session) -> Session:
    return copy.deepcopy(session)


async def test_history_keeps_the_newest_revisions_and_removes_what_none_needs(
    tmp_path: Path,
) -> None:
    """history=3 through appends, edits, a rewind and a fork: the exact generations kept.

    A generation stays while it holds one of the newest 3 revisions or is
    the base of one that does; a fork's links keep what it needs alive
    after the source removed its names.
    """
    directory = tmp_path / "s"
    written: dict[int, Session] = {}
    async with open_store(tmp_path, durability="flush", history=3) as store:
        session = Session(id="s", messages=[_message(n, size=10) for n in range(3)])

        async def save() -> None:
            await store.save_runtime_session(session)
            written[session.revision] = _copy(session)

        async def check(seqs: list[int]) -> None:
            latest = max(written)
            history = [entry.revision for entry in await store.session_history("s")]
            assert history == [r for r in (latest, latest - 1, latest - 2) if r >= 1]
            for revision, expected in written.items():
                if revision > latest - 3:
                    assert await store.load_session("s", revision=revision) == expected
                else:
                    with pytest.raises(RevisionNotFoundError):
                        await store.load_session("s", revision=revision)
            assert _seqs(directory) == seqs, f"after revision {latest}"

        await save()  # 1: generation 1
        await check([1])
        session.messages.append(_message(3))
        await save()  # 2: appended
        edit_every_message(session, "edit")
        await save()  # 3: generation 2 (its previous: 1)
        session.messages.append(_message(4))
        await save()  # 4: appended to 2; revision 2 is in generation 1
        await check([1, 2])
        edit_every_message(session, "edit again")
        await save()  # 5: generation 3; nothing kept is in 1 any more
        await check([2, 3])
        session = await store.rewind_session("s", 4)  # 6: generation 4, based on 2
        written[6] = _copy(session)
        await check([2, 3, 4])
        fork = await store.fork_session("s", "fork", revision=6)
        assert len(links(tmp_path / "fork")) == 2  # generations 4 and 2
        session.messages.append(_message(5))
        await save()  # 7: appended to 4
        await check([2, 3, 4])
        session = await store.set_title("s", "t")  # 8
        written[8] = _copy(session)
        await check([2, 4])  # 5 is out of the window: 3 goes; 2 stays, the base of 4
        edit_every_message(session, "another edit")
        await save()  # 9: generation 5, written whole
        session.messages.append(_message(6))
        await save()  # 10: revision 8 still needs 4, and 4 its base 2
        await check([2, 4, 5])
        session.messages.append(_message(7))
        await save()  # 11: everything kept is in 5
        await check([5])
        assert links(directory) == []
        # The fork lost nothing: its links are the only names of 2 and 4 now.
        assert await store.load_session("fork") == fork
        assert all(link.stat().st_nlink == 1 for link in links(tmp_path / "fork"))
    async with open_store(tmp_path, durability="flush", history=3) as store:
        assert await store.load_session("fork") == fork
        assert await store.load_session("s") == written[11]


async def test_a_forks_links_go_once_no_kept_generation_of_it_needs_them(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush", history=1) as store:
        source = Session(id="src", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(source)
        fork = await store.fork_session("src", "fork")
        [link] = links(tmp_path / "fork")
        fork.messages.append(_message(3))
        await store.save_runtime_session(fork)  # an append: the link is still its base
        assert links(tmp_path / "fork") == [link]
        edit_every_message(fork)
        await store.save_runtime_session(fork)  # whole: nothing kept needs the link
        assert links(tmp_path / "fork") == []
        assert _seqs(tmp_path / "fork") == [2]
        assert await store.load_session("fork") == fork
        assert await store.load_session("src") == source


# --- formats 1 and 2 --------------------------------------------------------------------------

PARIS = timezone(timedelta(hours=1))


def _old_session(session_id: str = "old") -> Session:
    """A session as an older version wrote it: revision 0, no lineage."""
    return Session(
        id=session_id,
        title="from an older format",
        title_version=2,
        metadata_version=3,
        pinned=True,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=PARIS),
        updated_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=timezone.utc),
        messages=[
            Message(
                id="a", role="user", content={"q": 1}, created_at=datetime(2025, 1, 2, tzinfo=PARIS)
            ),
            *[_message(n) for n in range(4)],
        ],
        metadata={"model": "m"},
        runtime_state={"step": 4},
    )


def _write_old(directory: Path, old_format: int, session: Session) -> None:
    if old_format == 1:
        write_format_1(directory, session)
    else:
        write_format_2(directory, session)
        # A journal a crash left beside it, named by no snapshot.
        (directory / "messages.feedfacefeedface.jsonl").write_bytes(b'{"id": "stray"}\n')


NEXT_WRITES = ["save", "checkpoint", "set_title", "set_pinned", "rewind", "append usage"]


@pytest.mark.parametrize("next_write", NEXT_WRITES)
@pytest.mark.parametrize("old_format", [1, 2])
async def test_an_older_format_is_read_as_revision_1_then_moved_into_a_log(
    tmp_path: Path, old_format: int, next_write: str
) -> None:
    directory = tmp_path / "old"
    old = _old_session()
    _write_old(directory, old_format, old)
    before = session_files(tmp_path, "old")
    as_revision_1 = attrs.evolve(old, revision=1)
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("old") == as_revision_1
        assert await store.load_session("old", revision=1) == as_revision_1
        [entry] = await store.session_history("old")
        assert (entry.revision, entry.message_count, entry.title) == (1, 5, old.title)
        [summary] = await store.list_sessions()
        assert (summary.revision, summary.message_count, summary.pinned) == (1, 5, True)
        fork = await store.fork_session("old", "fork")  # reads it, writes the fork whole
        assert fork.messages == old.messages and fork.forked_from_revision == 1
        assert session_files(tmp_path, "old") == before  # reads change nothing

        expected: Session
        if next_write == "save":
            stale = Session(id="old", messages=[*old.messages, _message(4)])
            await store.save_runtime_session(stale)
            assert stale.title == old.title  # the merge read the old format's group
            expected = stale
        elif next_write == "checkpoint":
            stale = Session(id="old", messages=[_message(9)])
            await store.checkpoint_runtime_session(stale)
            assert [m.id for m in stale.messages] == [m.id for m in old.messages] + ["m9"]
            expected = stale
        elif next_write == "set_title":
            expected = await store.set_title("old", "renamed")
        elif next_write == "set_pinned":
            expected = await store.set_pinned("old", False)
        elif next_write == "rewind":
            expected = await store.rewind_session("old", 1)
        else:
            await store.append_token_usage_record("old", {"n": 1})
        if next_write == "append usage":  # not a write of the session: nothing moves
            assert session_files(tmp_path, "old") == {**before, "token-usage.jsonl": b'{"n":1}\n'}
            assert await store.load_session("old") == as_revision_1
            return
        assert expected.revision == 2
        assert await store.load_session("old") == expected
        # Revision 1 is the old session, still loadable from the log.
        assert await store.load_session("old", revision=1) == as_revision_1
        assert [e.revision for e in await store.session_history("old")] == [2, 1]
    # Only the log is left: the old files are gone.
    assert _names(directory) == {path.name for path in generations(directory)}
    commits = [c["revision"] for generation in generations(directory) for c in _commits(generation)]
    assert commits == [1, 2]
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("old") == expected
        assert await store.load_session("old", revision=1) == as_revision_1
        # And the log's actor appends from here on.
        expected.messages.append(_message(10))
        before_stats = store.statistics()
        await store.save_runtime_session(expected)
        assert store.statistics().journal_appends == before_stats.journal_appends + 1
        assert await store.load_session("fork") == fork


@pytest.mark.parametrize("old_format", [1, 2])
async def test_old_files_left_beside_a_log_by_a_crash_lose_to_it_then_go(
    tmp_path: Path, old_format: int
) -> None:
    """A migration killed after its generation was in place, before the old files went."""
    directory = tmp_path / "old"
    old = _old_session()
    _write_old(directory, old_format, old)
    left = {path.name: path.read_bytes() for path in directory.iterdir()}
    async with open_store(tmp_path, durability="flush") as store:
        moved = await store.set_title("old", "moved")
    for name, data in left.items():  # as the crash left them
        (directory / name).write_bytes(data)
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("old") == moved
        assert [s.title for s in await store.list_sessions()] == ["moved"]
        assert all((directory / name).exists() for name in left)  # a read removes nothing
        moved.messages.append(_message(9))
        await store.save_runtime_session(moved)
        assert await store.load_session("old") == moved
        assert await store.load_session("old", revision=1) == attrs.evolve(old, revision=1)
    assert _names(directory) == {path.name for path in generations(directory)}


NEWER = ["a snapshot slot of format 99", "a log header of format 5"]


@pytest.mark.parametrize("where", NEWER)
async def test_a_newer_format_is_refused_and_kept(tmp_path: Path, where: str) -> None:
    directory = tmp_path / "s"
    if where.startswith("a snapshot slot"):
        session = _old_session("s")
        path = write_format_2(directory, session)["slot"]
        head = format_2_head(session)
        head["format"] = 99
        path.write_bytes(format_2_slot(head))
        named = "format 99"
    else:
        async with open_store(tmp_path, durability="flush") as store:
            await store.save_runtime_session(Session(id="s", messages=[_message(0)]))
        path = current_generation(directory)
        records = path.read_bytes().split(b"\n")
        header = orjson.loads(records[0][10:])
        header["format"] = 5
        records[0] = log_record(b"h", header)[:-1]  # whole, with its checksum
        path.write_bytes(b"\n".join(records))
        named = "format 5"
    files = session_files(tmp_path, "s")
    async with open_store(tmp_path, durability="flush") as store:
        calls: dict[str, Any] = {
            "load": lambda: store.load_session("s"),
            "history": lambda: store.session_history("s"),
            "save": lambda: store.save_runtime_session(Session(id="s")),
            "checkpoint": lambda: store.checkpoint_runtime_session(Session(id="s")),
            "set_title": lambda: store.set_title("s", "x"),
            "rewind": lambda: store.rewind_session("s", 1),
            "fork": lambda: store.fork_session("s", "fork"),
        }
        for name, call in calls.items():
            with pytest.raises(UnsupportedFormatError, match=named) as caught:
                await call()
            assert isinstance(caught.value, CorruptSessionError)
            assert caught.value.path == str(path), name
        assert await store.list_sessions() == []
        assert await store.load_session("fork") is None
    assert session_files(tmp_path, "s") == files


@pytest.mark.parametrize("damage", ["missing journal", "short journal", "bad count"])
async def test_a_format_2_journal_that_disagrees_with_its_snapshot_is_corrupt(
    tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "s"
    session = _old_session("s")
    paths = write_format_2(directory, session)
    journal = paths["journal"]
    if damage == "missing journal":
        journal.unlink()
    elif damage == "short journal":
        journal.write_bytes(journal.read_bytes()[:-30])
    else:
        head = format_2_head(session)
        head["message_count"] = 2
        paths["slot"].write_bytes(format_2_slot(head))
    kept = session_files(tmp_path, "s")
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(CorruptSessionError):
            await store.load_session("s")
        # Nothing replaces, moves or sweeps away what is damaged.
        for call in (
            lambda: store.save_runtime_session(Session(id="s", messages=[_message(9)])),
            lambda: store.checkpoint_runtime_session(Session(id="s", messages=[_message(9)])),
            lambda: store.set_title("s", "renamed"),
        ):
            with pytest.raises(CorruptSessionError):
                await call()
    assert session_files(tmp_path, "s") == kept
    assert generations(directory) == []


async def test_a_session_of_format_2_written_across_two_slots_reads_the_newer(
    tmp_path: Path,
) -> None:
    """Both slots whole: the higher seq is the session; the next write moves that one."""
    directory = tmp_path / "s"
    older = _old_session("s")
    write_format_2(directory, older)
    newer = attrs.evolve(older, title="newer", messages=older.messages[:2])
    head = format_2_head(newer, seq=2)
    (directory / "session.1.json").write_bytes(format_2_slot(head))
    # The older slot names the same journal: its first two lines are the newer's transcript.
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("s") == attrs.evolve(newer, revision=1)
        renamed = await store.set_title("s", "moved")
        assert renamed.messages == newer.messages and renamed.revision == 2
        assert await store.load_session("s", revision=1) == attrs.evolve(newer, revision=1)
    assert _names(directory) == {path.name for path in generations(directory)}


async def test_many_sessions_of_format_2_move_one_by_one(tmp_path: Path) -> None:
    sessions = [_old_session(f"s{n}") for n in range(5)]
    for session in sessions:
        write_format_2(tmp_path / session.id, session)
    async with open_store(tmp_path, durability="flush") as store:
        async with trio.open_nursery() as nursery:
            for session in sessions[:3]:
                nursery.start_soon(store.set_pinned, session.id, False)
        summaries = {summary.id: summary for summary in await store.list_sessions()}
        assert {sid: s.revision for sid, s in summaries.items()} == {
            "s0": 2,
            "s1": 2,
            "s2": 2,
            "s3": 1,
            "s4": 1,
        }
    for session in sessions:
        moved = bool(generations(tmp_path / session.id))
        assert moved == (session.id in ("s0", "s1", "s2"))
