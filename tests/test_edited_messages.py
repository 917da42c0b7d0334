"""A save that edits a few old messages writes those messages, not the transcript.

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py).
What is written is seen in ``statistics()``: an append (``journal_appends``)
and a few bytes, where a whole write is a ``journal_rewrites``. The file
store's replacement records are in the second half of this file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from conftest import StoreFactory
from support import current_generation, generations, log_record, log_records, msg

from sessionactors import CorruptSessionError, Session, SessionStore, open_store
from sessionactors.cli import main as cli_main

#: 200 messages of about 1.5 KB: a whole write is about 300 KB.
MESSAGES = 200


def long_session(session_id: str = "s") -> Session:
    return Session(id=session_id, messages=[msg(f"m{n}", "x" * 1500) for n in range(MESSAGES)])


def dict_session(count: int) -> Session:
    """A session of ``count`` messages whose contents are dicts, for changes made in place."""
    return Session(id="s", messages=[msg(f"m{n}", {"n": n}) for n in range(count)])


async def persisted_long_session(store: SessionStore) -> Session:
    """A long session, saved once: the revision the tests edit."""
    session = long_session()
    await store.save_runtime_session(session)
    return session


async def saved(store: SessionStore, session: Session) -> tuple[int, int, int]:
    """Save ``session``; what that cost: (journal appends, journal rewrites, bytes written)."""
    before = store.statistics()
    await store.save_runtime_session(session)
    after = store.statistics()
    return (
        after.journal_appends - before.journal_appends,
        after.journal_rewrites - before.journal_rewrites,
        after.bytes_written - before.bytes_written,
    )


async def test_an_edit_of_an_old_message_writes_that_message(store: SessionStore) -> None:
    session = await persisted_long_session(store)
    before = copy.deepcopy(session)
    session.messages[3].content = "edited"
    appends, rewrites, written = await saved(store, session)
    assert (appends, rewrites) == (1, 0)
    assert written < 4_000  # one message and a commit, not 300 KB
    assert await store.load_session("s") == session
    assert await store.load_session("s", revision=1) == before  # the revision before stands


async def test_a_copy_with_one_message_changed_and_one_added_writes_those(
    store: SessionStore,
) -> None:
    """Another task's copy of the session: the positions where it differs are written."""
    session = await persisted_long_session(store)
    copied = copy.deepcopy(session)
    copied.messages[150] = msg("m150", "replaced by another object")
    copied.messages.append(msg("new", "a new turn"))
    appends, rewrites, written = await saved(store, copied)
    assert (appends, rewrites) == (1, 0)
    assert written < 4_000
    loaded = await store.load_session("s")
    assert loaded == copied and loaded.messages[150].content == "replaced by another object"


async def test_an_edit_of_most_old_messages_writes_them_all(store: SessionStore) -> None:
    session = await persisted_long_session(store)
    for message in session.messages[: MESSAGES // 2 + 1]:
        message.content = "edited"
    appends, rewrites, _ = await saved(store, session)
    assert (appends, rewrites) == (0, 1)
    assert await store.load_session("s") == session


async def test_edits_between_appends_rewinds_and_forks_load_as_written(
    store: SessionStore,
) -> None:
    """Each revision loads as its call left it; a rewind or a fork of one holds its edits."""
    session = Session(id="s", messages=[msg(f"m{n}", n) for n in range(6)])
    await store.save_runtime_session(session)
    written = {1: copy.deepcopy(session)}
    for step in range(1, 9):
        if step % 2:
            session.messages[step % 5].content = {"edited at": step}
        else:
            session.messages.append(msg(f"n{step}", step))
            session.messages[0] = msg("m0", f"replaced at {step}")
        await store.save_runtime_session(session)
        written[session.revision] = copy.deepcopy(session)
    session.messages[-3].content = "edited in the tail"
    await store.save_runtime_session(session)
    for revision, expected in written.items():
        assert await store.load_session("s", revision=revision) == expected
    tail = await store._load_tail("s", 4)
    assert tail is not None and tail.messages == session.messages[-4:]
    rewound = await store.rewind_session("s", 4)
    assert rewound.messages == written[4].messages
    fork = await store.fork_session("s", "f", revision=6)
    assert fork.messages == written[6].messages
    fork.messages[1].content = "the fork's own edit"
    await store.save_runtime_session(fork)
    assert await store.load_session("f") == fork
    assert await store.load_session("s", revision=6) == written[6]
    latest = await store.load_session("s")
    assert latest is not None and latest.messages == written[4].messages


async def test_an_edit_to_a_value_that_is_not_json_is_refused_and_writes_nothing(
    store: SessionStore,
) -> None:
    session = await persisted_long_session(store)
    before = copy.deepcopy(session)
    session.messages[7].content = {"a tuple": (1, 2)}  # it would read back as a list
    with pytest.raises(TypeError):
        await store.save_runtime_session(session)
    assert await store.load_session("s") == before
    session.messages[7].content = "fine"
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session


async def test_an_edit_after_another_process_wrote_is_not_taken_for_a_replacement(
    make_store: StoreFactory,
) -> None:
    """What this actor knows is stale once another store wrote: the whole session is written."""
    session = long_session()
    async with make_store() as mine, make_store() as theirs:
        await mine.save_runtime_session(session)
        other = copy.deepcopy(session)
        other.messages[0].content = "theirs"
        other.messages.append(msg("their turn", "t"))
        await theirs.save_runtime_session(other)
        session.messages[5].content = "mine"
        appends, rewrites, _ = await saved(mine, session)
        assert (appends, rewrites) == (0, 1)
        assert await theirs.load_session("s") == session


# --- nested values changed in place ----------------------------------------------------


async def test_a_nested_value_changed_in_place_is_written_as_an_edit(store: SessionStore) -> None:
    """``message.content["k"] = ...`` on a saved message: the next save writes that message."""
    session = Session(
        id="s",
        messages=[msg(f"m{n}", {"text": "x" * 1500, "parts": [n]}) for n in range(MESSAGES)],
    )
    await store.save_runtime_session(session)
    before = copy.deepcopy(session)
    session.messages[3].content["parts"].append({"added": True})
    session.messages[150].extra["score"] = 1  # an empty extra, filled in place
    appends, rewrites, written = await saved(store, session)
    assert (appends, rewrites) == (1, 0)
    assert written < 8_000  # two messages and a commit, not 300 KB
    assert await store.load_session("s") == session
    assert await store.load_session("s", revision=1) == before
    # What was written is what is compared with from now on: a change back is seen too.
    session.messages[3].content["parts"].pop()
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session


async def test_nested_changes_beside_edits_and_new_messages_are_all_written(
    store: SessionStore,
) -> None:
    session = dict_session(10)
    await store.save_runtime_session(session)
    session.messages[2].content["n"] = "changed in place"
    session.messages[4].content = {"n": "assigned"}
    session.messages[5].extra["in place"] = [1]
    session.messages.append(msg("new", {"n": "new"}))
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session


async def test_a_nested_change_in_another_tasks_copy_is_written(store: SessionStore) -> None:
    """Equal copies are known equal once; a nested change in one afterwards is still seen."""
    session = dict_session(20)
    await store.save_runtime_session(session)
    copied = copy.deepcopy(session)
    await store.save_runtime_session(copied)
    copied.messages[0].content["n"] = "the copy's change"
    await store.save_runtime_session(copied)
    assert await store.load_session("s") == copied
    await store.save_runtime_session(session)  # the first copy, unchanged: last writer wins
    assert await store.load_session("s") == session


async def test_a_loaded_session_changed_in_place_saves_as_it_stands(store: SessionStore) -> None:
    await store.save_runtime_session(
        Session(id="s", messages=[msg(f"m{n}", {"n": [n]}) for n in range(20)])
    )
    loaded = await store.load_session("s")
    assert loaded is not None
    loaded.messages[7].content["n"].append("changed after the load")
    await store.save_runtime_session(loaded)
    assert await store.load_session("s") == loaded
    rewound = await store.rewind_session("s", 1)
    rewound.messages[0].extra["after the rewind"] = True
    await store.save_runtime_session(rewound)
    assert await store.load_session("s") == rewound


async def test_a_checkpoint_keeps_a_persisted_message_changed_in_place_as_persisted(
    store: SessionStore,
) -> None:
    """A checkpoint never changes a persisted message: the caller's object is corrected."""
    session = dict_session(4)
    await store.checkpoint_runtime_session(session)
    session.messages[1].content["n"] = "changed in place"
    session.messages.append(msg("m4", {"n": 4}))
    await store.checkpoint_runtime_session(session)
    assert session.messages[1].content == {"n": 1}
    assert [m.id for m in session.messages] == ["m0", "m1", "m2", "m3", "m4"]
    assert await store.load_session("s") == session


async def test_a_content_made_a_container_then_changed_in_place_is_written(
    store: SessionStore,
) -> None:
    """Every content a string at first: the first one made a dict is watched from then on."""
    session = Session(id="s", messages=[msg(f"m{n}", f"text {n}") for n in range(10)])
    await store.save_runtime_session(session)
    session.messages[2].content = {"parts": []}  # assigned: written, kept from now on
    await store.save_runtime_session(session)
    session.messages[2].content["parts"].append("in place")
    await store.save_runtime_session(session)
    assert await store.load_session("s") == session


async def test_an_agents_add_keeps_a_persisted_message_changed_in_place_as_persisted(
    store: SessionStore,
) -> None:
    """sessionactors.agents' add brings new messages alone: the persisted ones stay."""
    session = dict_session(4)
    await store.save_runtime_session(session)
    before = copy.deepcopy(session)
    session.messages[1].content["n"] = "changed in place, never saved"
    await store._checkpoint_new(Session(id="s", messages=[msg("m4", {"n": 4})]))
    loaded = await store.load_session("s")
    assert loaded is not None
    assert loaded.messages[:4] == before.messages
    assert [m.id for m in loaded.messages] == ["m0", "m1", "m2", "m3", "m4"]


async def test_most_messages_changed_in_place_write_the_transcript_whole(
    store: SessionStore,
) -> None:
    session = dict_session(10)
    await store.save_runtime_session(session)
    for message in session.messages[:6]:
        message.content["n"] = "in place"
    appends, rewrites, _ = await saved(store, session)
    assert (appends, rewrites) == (0, 1)
    assert await store.load_session("s") == session


# --- the file store: replacement records (format 4) -----------------------------------------


async def test_a_replacement_is_one_record_appended_and_verifies_clean(tmp_path: Path) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = await persisted_long_session(store)
        session.messages[9].content = "edited"
        await store.save_runtime_session(session)
    [generation] = generations(tmp_path / "s")
    records = log_records(generation)
    assert records[0][1]["format"] == 4
    kind, body, _, _ = records[-2]
    assert (kind, body[0], body[1]["content"]) == (b"r", 9, "edited")
    assert records[-1][0] == b"c" and records[-1][1]["msg_end"] == records[-2][3]
    assert cli_main(["verify", str(tmp_path)]) == 0


async def test_a_log_of_format_3_is_written_anew_to_take_a_replacement(tmp_path: Path) -> None:
    """An earlier version's log may be read by it still: no record it cannot read goes in."""
    async with open_store(tmp_path, durability="flush") as store:
        await persisted_long_session(store)
    old = current_generation(tmp_path / "s")
    records = old.read_bytes().split(b"\n")
    header = orjson.loads(records[0][10:])
    header["format"] = 3
    records[0] = log_record(b"h", header)[:-1]
    old.write_bytes(b"\n".join(records))
    async with open_store(tmp_path, durability="flush") as store:
        loaded = await store.load_session("s")
        assert loaded is not None
        loaded.messages[0].content = "edited"
        appends, rewrites, _ = await saved(store, loaded)
        assert (appends, rewrites) == (0, 1)
        assert await store.load_session("s") == loaded
    newest = current_generation(tmp_path / "s")
    assert newest != old and log_records(newest)[0][1]["format"] == 4


def _rewrite_replacement(path: Path, old: bytes, new: bytes) -> None:
    """Change ``old`` to ``new`` (as long) in the last replacement record, checksum and all."""
    lines = path.read_bytes().split(b"\n")
    index = max(i for i, line in enumerate(lines) if line.startswith(b"r"))
    body = lines[index][10:]
    assert old in body and len(old) == len(new)
    lines[index] = log_record(b"r", body.replace(old, new))[:-1]
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"[1,", b"[9,", "past the transcript's end"),
        (b"[1,", b"[x,", "names no position"),
        (b'"id"', b'"ix"', "unreadable|not a message|id"),
    ],
    ids=["past the end", "no position", "no message"],
)
async def test_a_replacement_that_is_no_message_of_the_transcript_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: bytes, new: bytes, reason: str
) -> None:
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[msg(f"m{n}", n) for n in range(4)])
        await store.save_runtime_session(session)
        session.messages[1].content = "edited"
        await store.save_runtime_session(session)
    path = current_generation(tmp_path / "s")
    _rewrite_replacement(path, old, new)
    damaged = path.read_bytes()
    async with open_store(tmp_path, durability="flush") as store:
        with pytest.raises(CorruptSessionError, match=reason) as raised:
            await store.load_session("s")
        assert raised.value.path == str(path)
        with pytest.raises(CorruptSessionError):
            await store._load_tail("s", 3)
    capsys.readouterr()
    assert cli_main(["verify", str(tmp_path)]) == 1
    assert f"{path}: corrupt" in capsys.readouterr().out
    assert path.read_bytes() == damaged


async def test_replacements_a_crash_left_without_their_commit_are_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The revision before stands; verify calls them a leftover; the next save cuts them."""
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[msg(f"m{n}", n) for n in range(4)])
        await store.save_runtime_session(session)
        before = copy.deepcopy(session)
        session.messages[1].content = "edited"
        await store.save_runtime_session(session)
    path = current_generation(tmp_path / "s")
    *_, (kind, _, start, _) = log_records(path)
    assert kind == b"c"
    with path.open("r+b") as file:
        file.truncate(start)  # the replacement whole, its commit not written
    async with open_store(tmp_path, durability="flush") as store:
        assert await store.load_session("s") == before
        assert cli_main(["verify", str(tmp_path)]) == 1
        assert "what a crash left of a write" in capsys.readouterr().out  # not damage
        before.messages.append(msg("later", "a turn"))
        await store.save_runtime_session(before)
        assert await store.load_session("s") == before
    assert [kind for kind, *_ in log_records(path)] == [b"h", *[b"m"] * 4, b"c", b"m", b"c"]
    assert cli_main(["verify", str(tmp_path)]) == 0


async def test_replacements_count_toward_compaction(tmp_path: Path) -> None:
    """A message edited again and again: the log is written anew once they outweigh it."""
    big = "y" * 300_000
    async with open_store(tmp_path, durability="flush") as store:
        session = Session(id="s", messages=[msg(name, big) for name in "abc"])
        await store.save_runtime_session(session)
        first = current_generation(tmp_path / "s")
        for step in range(8):
            session.messages[0].content = big + str(step)
            await store.save_runtime_session(session)
        assert current_generation(tmp_path / "s") != first
        assert current_generation(tmp_path / "s").stat().st_size < 3 * 1_000_000
        assert await store.load_session("s") == session
