"""Format 2: the transcript journal, its prefix detection, crash ordering and migration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

import sessionactors
from sessionactors import Message, Session, open_store
from sessionactors.storage.files import SessionFiles, encode_head, encode_messages, read_snapshot_at


def _message(number: int, size: int = 100) -> Message:
    return Message(id=f"m{number}", role="user", content="x" * size)


def _journals(directory: Path) -> list[Path]:
    return sorted(directory.glob("messages.*.jsonl"))


def _slot(directory: Path) -> Path:
    """The snapshot slot holding the newest snapshot."""
    snapshot = read_snapshot_at(str(directory), directory.name)
    assert snapshot is not None
    return Path(snapshot.path)


def _snapshot(directory: Path) -> dict[str, Any]:
    snapshot = read_snapshot_at(str(directory), directory.name)
    assert snapshot is not None
    return snapshot.head


def _append_raw(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def _live_journal_bytes(session: Session) -> bytes:
    return encode_messages(session.messages)


async def test_growing_session_appends_only_the_new_messages(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s")
        await store.save_runtime_session(session)
        for number in range(20):
            session.messages.append(_message(number))
            before = store.statistics()
            await store.save_runtime_session(session)
            after = store.statistics()
            assert after.journal_rewrites == before.journal_rewrites
            assert after.journal_appends == before.journal_appends + 1
            # What a save costs: the new message's line plus the small snapshot.
            line = len(encode_messages(session.messages[-1:]))
            snapshot = _slot(tmp_path / "s").stat().st_size
            assert after.bytes_written - before.bytes_written == line + snapshot
        assert await store.load_session("s") == session
    [journal] = _journals(tmp_path / "s")
    assert journal.read_bytes() == _live_journal_bytes(session)
    assert _snapshot(tmp_path / "s")["message_count"] == 20


async def test_a_save_with_no_new_message_writes_only_the_snapshot(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(5)])
        await store.save_runtime_session(session)
        before = store.statistics()
        session.runtime_state["step"] = 6
        await store.save_runtime_session(session)
        after = store.statistics()
        assert after.journal_appends == before.journal_appends
        assert after.journal_rewrites == before.journal_rewrites
        assert after.snapshots_written == before.snapshots_written + 1
        assert await store.load_session("s") == session


@pytest.mark.parametrize(
    "change",
    ["edit field", "replace object", "remove", "insert", "compact", "clear"],
)
async def test_any_other_change_rewrites_the_journal(tmp_path: Path, change: str) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(10)])
        await store.save_runtime_session(session)
        [old] = _journals(tmp_path / "s")
        if change == "edit field":
            session.messages[4].content = "edited in the middle"
        elif change == "replace object":
            session.messages[4] = Message(id="m4", role="user", content="another object")
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
        assert await store.load_session("s") == session
    # The new journal holds the live transcript only; the old one is gone.
    [journal] = _journals(tmp_path / "s")
    assert journal != old
    assert journal.read_bytes() == _live_journal_bytes(session)


async def test_checkpoint_appends_to_the_journal(tmp_path: Path) -> None:
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
    """Another caller's copy (equal values, other objects) needs no rewrite."""
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
        # An equal copy whose message differs in value is a change: rewrite.
        edited = Session(id="s", messages=[_message(n) for n in range(7)])
        edited.messages[3] = Message(id="m3", role="user", content="changed")
        await store.save_runtime_session(edited)
        assert store.statistics().journal_rewrites == before.journal_rewrites + 1
        assert await store.load_session("s") == edited


async def test_a_ui_edit_leaves_the_journal_alone(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(5)])
        await store.save_runtime_session(session)
        [journal] = _journals(tmp_path / "s")
        content = journal.read_bytes()
        before = store.statistics()
        await store.set_title("s", "renamed")
        assert (await store.load_session("s")) is not None  # a UI reading it
        session.messages.append(_message(5))
        await store.save_runtime_session(session)
        after = store.statistics()
        assert session.title == "renamed"
        # Neither the edit nor the UI's read made the runtime's save rewrite.
        assert after.journal_rewrites == before.journal_rewrites
        assert journal.read_bytes().startswith(content)
        assert await store.load_session("s") == session


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
        # The first store's actor must not append to a journal it no longer knows.
        mine.messages.append(_message(5))
        await first.save_runtime_session(mine)
        assert await second.load_session("s") == mine
        # A checkpoint after another writer appends only what is new to disk.
        theirs.messages.append(Message(id="late", role="user", content="late"))
        await second.checkpoint_runtime_session(theirs)
        ids = [m.id for m in theirs.messages]
        assert ids == ["m0", "m1", "m2", "m3", "m4", "m5", "theirs", "late"]
        assert await first.load_session("s") == theirs


async def test_uncounted_journal_lines_are_ignored_then_cut(tmp_path: Path) -> None:
    """A crash between the journal append and the snapshot leaves uncounted lines."""
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(session)
    [journal] = _journals(tmp_path / "s")
    counted = journal.read_bytes()
    _append_raw(journal, encode_messages([_message(50), _message(51)]) + b'{"id": "torn')
    async with open_store(tmp_path, durability="flush") as store:
        loaded = await store.load_session("s")
        assert loaded == session
        assert loaded is not None
        loaded.messages.append(_message(3))
        await store.save_runtime_session(loaded)
        assert await store.load_session("s") == loaded
    assert journal.read_bytes() == counted + encode_messages([_message(3)])


async def test_snapshot_failure_after_journal_append_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(session)
        session.messages.append(_message(3))

        def fail(self: SessionFiles, slot: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(SessionFiles, "_write_slot", fail)
            with pytest.raises(OSError):
                await store.save_runtime_session(session)
        loaded = await store.load_session("s")
        assert loaded is not None
        assert [m.id for m in loaded.messages] == ["m0", "m1", "m2"]
        await store.save_runtime_session(session)
        assert await store.load_session("s") == session
    [journal] = _journals(tmp_path / "s")
    assert journal.read_bytes() == _live_journal_bytes(session)


async def test_orphan_journal_of_a_crashed_rewrite_is_removed(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(n) for n in range(3)])
        await store.save_runtime_session(session)
    orphan = tmp_path / "s" / "messages.0123456789abcdef.jsonl"
    orphan.write_bytes(encode_messages([_message(9)]))
    temp = tmp_path / "s" / ".session.json.feedface.tmp"
    temp.write_bytes(b'{"format": 2')
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("s") == session
        assert [s.id for s in await store.list_sessions()] == ["s"]
        session.messages.append(_message(3))
        await store.save_runtime_session(session)
    assert not orphan.exists()
    assert not temp.exists()
    assert len(_journals(tmp_path / "s")) == 1


def _write_format_1(directory: Path, session: Session) -> None:
    data = sessionactors._model.converter.unstructure(session)
    head = {key: data[key] for key in data if key not in ("messages", "metadata", "runtime_state")}
    head.update(format=1, message_count=len(session.messages))
    body = {key: data[key] for key in ("messages", "metadata", "runtime_state")}
    directory.mkdir(parents=True)
    (directory / "session.json").write_bytes(
        orjson.dumps(head) + b"\n" + orjson.dumps(body) + b"\n"
    )


async def test_format_1_is_read_and_upgraded_on_the_next_write(tmp_path: Path) -> None:
    paris = timezone(timedelta(hours=1))
    old = Session(
        id="old",
        title="from format 1",
        title_version=2,
        metadata_version=3,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=paris),
        updated_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=timezone.utc),
        messages=[_message(n) for n in range(4)],
        metadata={"model": "m"},
        runtime_state={"step": 4},
    )
    _write_format_1(tmp_path / "old", old)
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("old") == old
        [summary] = await store.list_sessions()
        assert (summary.title, summary.message_count) == ("from format 1", 4)
        stale = Session(id="old", messages=[*old.messages, _message(4)])
        await store.save_runtime_session(stale)
        assert stale.title == "from format 1"  # the merge read the format-1 group
        assert _snapshot(tmp_path / "old")["format"] == 2
        assert await store.load_session("old") == stale
        # The writes after it rewrite the format-1 file in place as a slot, cut
        # to the new bytes (the old file was much longer), in one batch or more.
        for step in (5, 6):
            stale.runtime_state = {"step": step}
            await store.save_runtime_session(stale)
            assert await store.load_session("old") == stale
        async with trio.open_nursery() as nursery:  # a save and a rename, one batch
            stale.runtime_state = {"step": 7}
            nursery.start_soon(store.save_runtime_session, stale)
            nursery.start_soon(store.set_title, "old", "renamed")
        loaded = await store.load_session("old")
        assert loaded is not None
        assert (loaded.title, loaded.runtime_state) == ("renamed", {"step": 7})
        assert (loaded.messages, loaded.metadata) == (stale.messages, stale.metadata)
    async with open_store(tmp_path, durability="flush") as other:
        assert await other.load_session("old") == loaded
    assert len(_journals(tmp_path / "old")) == 1


async def test_a_ui_edit_upgrades_format_1(tmp_path: Path) -> None:
    old = Session(id="old", messages=[_message(n) for n in range(2)])
    _write_format_1(tmp_path / "old", old)
    async with open_store(tmp_path, durability="flush") as store:
        renamed = await store.set_title("old", "new title")
        assert _snapshot(tmp_path / "old")["format"] == 2
        assert renamed.messages == old.messages
        # The actor knows the journal the upgrade wrote: the next save appends.
        grown = attrs.evolve(renamed, messages=[*renamed.messages, _message(2)])
        await store.save_runtime_session(grown)
        stats = store.statistics()
        assert (stats.journal_rewrites, stats.journal_appends) == (1, 1)
        assert await store.load_session("old") == grown


async def test_a_newer_format_is_refused_and_kept(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=[_message(0)]))
    path = _slot(tmp_path / "s")
    head = _snapshot(tmp_path / "s")
    head["format"] = 3
    path.write_bytes(orjson.dumps(head))
    raw = path.read_bytes()
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(sessionactors.UnsupportedFormatError, match="format 3") as caught:
            await store.load_session("s")
        assert isinstance(caught.value, sessionactors.CorruptSessionError)
        assert caught.value.path == str(path)
        with pytest.raises(sessionactors.UnsupportedFormatError):
            await store.save_runtime_session(Session(id="s"))
        with pytest.raises(sessionactors.UnsupportedFormatError):
            await store.set_title("s", "x")
        assert await store.list_sessions() == []
    assert path.read_bytes() == raw


@pytest.mark.parametrize("damage", ["missing journal", "short journal", "bad count"])
async def test_a_journal_that_disagrees_with_its_snapshot_is_corrupt(
    tmp_path: Path, damage: str
) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        await store.save_runtime_session(Session(id="s", messages=[_message(n) for n in range(3)]))
    [journal] = _journals(tmp_path / "s")
    if damage == "missing journal":
        journal.unlink()
    elif damage == "short journal":
        journal.write_bytes(journal.read_bytes()[:-30])
    else:
        head = _snapshot(tmp_path / "s")
        head["message_count"] = 2
        _slot(tmp_path / "s").write_bytes(encode_head(head))
    kept = {path: path.read_bytes() for path in (tmp_path / "s").iterdir()}
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(sessionactors.CorruptSessionError):
            await store.load_session("s")
        # Nothing replaces or sweeps away what is damaged.
        with pytest.raises(sessionactors.CorruptSessionError):
            await store.save_runtime_session(Session(id="s", messages=[_message(9)]))
        with pytest.raises(sessionactors.CorruptSessionError):
            await store.checkpoint_runtime_session(Session(id="s", messages=[_message(9)]))
        with pytest.raises(sessionactors.CorruptSessionError):
            await store.set_title("s", "renamed")
    assert {path: path.read_bytes() for path in (tmp_path / "s").iterdir()} == kept


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


async def test_slots_that_grow_and_shrink_read_back_whole(tmp_path: Path) -> None:
    """A slot rewritten in place is cut when shorter, read whole when longer than a read."""
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[_message(0)])
        for size in (10, 200_000, 300_000, 5, 70_000, 3, 0):
            session.runtime_state = {"blob": "x" * size}
            await store.save_runtime_session(session)
            async with open_store(tmp_path, durability="flush") as other:  # reads the files anew
                assert await other.load_session("s") == session
            for slot in tmp_path.joinpath("s").glob("session*.json"):
                data = slot.read_bytes()
                # Every slot holds exactly one snapshot, or nothing (the second one, at first).
                assert not data or data.count(b"\n") == 2, slot
