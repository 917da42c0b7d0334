"""``sessionactors verify`` on sessions in a log (format 3): each check, and what it repairs.

Every check is met on a real store the library wrote (saves, appends, UI
edits, a rewrite, a rewind, forks of forks), changed by hand the way damage
or a crash changes it: a byte (its record's checksum no longer matches), a
record written whole again (a log sound record by record whose history is
not), a file removed, bytes left after the last commit, a name left behind.
Each case checks the exact line, the exit status, and what ``--repair`` does
(or, for damage, that it changes no byte).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import flip, history, load, rewrite_record, run
from support import (
    current_generation,
    format_2_head,
    format_2_slot,
    generations,
    links,
    log_record,
    log_records,
    write_format_2,
)

from sessionactors import Message, Session, open_store


def msg(message_id: str, content: str) -> Message:
    return Message(id=message_id, role="user", content=content)


async def _build(root: Path) -> None:
    async with open_store(root, durability="flush") as store:
        # s: revisions 1-4 in its first generation (three saves, a rename), 5 in a
        # second (most old messages edited), 6 in a third (a rewind: a header and a
        # commit whose transcript is the first generation's at revision 3).
        s = Session(id="s", messages=[msg("m1", "alpha")])
        await store.save_runtime_session(s)
        s.messages.append(msg("m2", "bravo"))
        await store.save_runtime_session(s)
        s.messages.append(msg("m3", "charlie"))
        await store.save_runtime_session(s)
        await store.set_title("s", "Named")
        s.messages[:2] = [msg("m1", "ALPHA"), msg("m2", "BRAVO")]
        await store.save_runtime_session(s)
        await store.rewind_session("s", 3)
        # f: s at revision 2, linking s's first generation; g: a fork of f.
        await store.fork_session("s", "f", revision=2)
        await store.fork_session("f", "g")
        # e: three generations, each whole (every save edits both old messages).
        e = Session(id="e", messages=[msg("m1", "one"), msg("m2", "two")])
        for content in ("one", "uno", "eins"):
            e.messages[:] = [msg("m1", content), msg("m2", content * 2)]
            await store.save_runtime_session(e)
        # t: one generation, two commits (a save, an append).
        t = Session(id="t", messages=[msg("m1", "first")])
        await store.save_runtime_session(t)
        t.messages.append(msg("m2", "second"))
        await store.save_runtime_session(t)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built") / "store"
    trio.run(_build, root)
    return root


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built store (hard links and all), for a test that changes it."""
    root = tmp_path / "store"
    root.mkdir()
    inodes: dict[int, Path] = {}
    for source in sorted(built.rglob("*")):
        target = root / source.relative_to(built)
        if source.is_dir():
            target.mkdir()
        elif source.stat().st_ino in inodes:  # a fork's link: linked again, not copied
            os.link(inodes[source.stat().st_ino], target)
        else:
            shutil.copy2(source, target)
            inodes[source.stat().st_ino] = target
    return root


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: verify on damage changes none."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def summary(root: Path, problems: int, *, leftovers: int = 0, repairable: int = 0) -> str:
    text = f"checked 5 sessions in {root}: {problems} problem{'' if problems == 1 else 's'}"
    if leftovers:
        kind = "an interrupted write" if leftovers == 1 else "interrupted writes"
        plural = "" if leftovers == 1 else "s"
        text += f": {problems - leftovers or 'no'} damage, {leftovers} leftover{plural} of {kind}"
    if repairable:
        text += f" ({repairable} repairable with --repair)"
    return text


def assert_damage_stays(root: Path, lines: list[str], *, leftovers: int = 0) -> None:
    """``verify`` reports exactly ``lines`` (then its summary), exit 1; ``--repair``
    reports the same and changes no byte."""
    before = files(root)
    for args in ((), ("--repair",)):
        found = run("verify", root, *args)
        expected = [*lines, summary(root, len(lines), leftovers=leftovers)]
        assert found.stdout.splitlines() == expected, found.stdout
        assert found.returncode == 1
    assert files(root) == before


def test_a_store_of_saves_edits_rewinds_and_forks_is_clean(built: Path) -> None:
    for args in ((), ("--history", "1"), ("--history", "100")):
        found = run("verify", built, *args)
        assert found.stdout == f"checked 5 sessions in {built}: no problems\n"
        assert found.returncode == 0
    assert [len(generations(built / name)) for name in "efgst"] == [3, 1, 1, 3, 1]
    assert [len(links(built / name)) for name in "efgst"] == [0, 1, 2, 0, 0]


# --- every record's checksum, in every generation's counted part -------------------------


def test_a_changed_letter_in_a_message_is_damage_naming_the_file(store: Path) -> None:
    """In the generation ``s``'s latest revision starts from: ``s``, and the forks that
    share those bytes (``f`` and ``g`` through their links), are all damaged."""
    first = generations(store / "s")[0]
    start = flip(first, b'"bravo"', b'"brave"')
    gen = first.name.split(".")[2]
    assert_damage_stays(
        store,
        [
            f"{store / 'f' / f'link.{gen}.jsonl'}: corrupt: damaged record at byte {start} "
            "(checksum)",
            f"{store / 'g' / f'link.{gen}.jsonl'}: corrupt: damaged record at byte {start} "
            "(checksum)",
            f"{first}: corrupt: damaged record at byte {start} (checksum)",
        ],
    )


def test_a_changed_letter_in_an_older_generation_is_damage_though_the_latest_loads(
    store: Path,
) -> None:
    """Revision 5 of ``s`` (an edit) is in a generation no load of the latest reads."""
    second = generations(store / "s")[1]
    start = flip(second, b'"ALPHA"', b'"ALPHO"')
    assert load(store, "s").revision == 6  # the latest reads whole
    assert_damage_stays(store, [f"{second}: corrupt: damaged record at byte {start} (checksum)"])


def test_a_changed_byte_in_a_commit_is_damage(store: Path) -> None:
    """Revision 2's commit: not in the forks' prefix of that file (``f`` starts from the
    messages of revision 2, which end before its commit)."""
    first = generations(store / "s")[0]
    start = flip(first, b'"revision":2,"kind"', b'"revision":2,"kinD"')
    assert_damage_stays(store, [f"{first}: corrupt: damaged record at byte {start} (checksum)"])


def test_a_changed_byte_in_a_header_is_damage(store: Path) -> None:
    """Read first (a fork, a rewind, a list read nothing more of it), it is refused as such,
    in ``s`` and in the forks that link it."""
    first = generations(store / "s")[0]
    flip(first, b'"depth":0', b'"depth":1')
    gen = first.name.split(".")[2]
    assert_damage_stays(
        store,
        [
            f"{path}: corrupt: does not start with a whole header"
            for path in (
                store / "f" / f"link.{gen}.jsonl",
                store / "g" / f"link.{gen}.jsonl",
                first,
            )
        ],
    )


def test_a_damaged_last_commit_is_damage_and_never_cut(store: Path) -> None:
    """A last commit whose checksum fails looks like a write cut short, but no crash
    leaves a whole line that is not a record: it is damage, of the latest revision."""
    generation = current_generation(store / "t")
    flip(generation, b'"second"', b'"SECOND"')  # in the last save's message...
    data = generation.read_bytes()
    commit = data.rindex(b"\nc") + 1  # ...and its commit: what a load takes is revision 1
    generation.write_bytes(data[:commit] + data[commit:].replace(b'"revision":2', b'"revision":7'))
    assert_damage_stays(
        store,
        [
            f"{generation}: corrupt: damaged record at byte {commit} (checksum), after the"
            " last whole commit"
        ],
    )


# --- bytes after the last whole commit: a leftover, cut by --repair ------------------------


def torn_write(path: Path) -> bytes:
    """Append what a crash leaves of a save's write: a whole message record, then part
    of the next one; returns the bytes before."""
    before = path.read_bytes()
    with open(path, "ab") as file:
        file.write(log_record(b"m", {"id": "x", "role": "user", "content": "lost"}))
        file.write(log_record(b"m", {"id": "y", "role": "user", "content": "lost"})[:20])
    return before


@pytest.mark.parametrize("which", ["current", "older"])
def test_bytes_after_the_last_commit_are_a_leftover_cut_by_repair(store: Path, which: str) -> None:
    """Of ``s``'s current generation, or of its first (which ``f`` and ``g`` link: the
    same file; only their counted prefix is theirs)."""
    own = generations(store / "s")
    generation = own[-1] if which == "current" else own[0]
    last = log_records(generation)[-1][1]["revision"]
    expected = {name: load(store, name) for name in "fgs"}
    old = {revision: load(store, "s", revision) for revision in range(1, 7)}
    before = torn_write(generation)
    tail = len(generation.read_bytes()) - len(before)
    line = (
        f"{generation}: {tail} bytes after the last whole commit (revision {last}): what a "
        "crash left of a write; readers ignore them and the next write cuts them off"
    )
    found = run("verify", store)
    assert found.stdout.splitlines() == [
        f"{line} (repairable)",
        summary(store, 1, leftovers=1, repairable=1),
    ]
    assert found.returncode == 1
    assert {name: load(store, name) for name in "fgs"} == expected  # readers ignore them

    repaired = run("verify", store, "--repair")
    assert repaired.stdout.splitlines() == [
        f"{line}: repaired (cut back to the last whole commit)",
        f"checked 5 sessions in {store}: repaired 1, no problems left",
    ]
    assert repaired.returncode == 0
    assert generation.read_bytes() == before
    assert {name: load(store, name) for name in "fgs"} == expected
    assert {revision: load(store, "s", revision) for revision in range(1, 7)} == old
    assert run("verify", store).returncode == 0


def test_bytes_after_the_last_commit_beside_damage_are_not_cut(store: Path) -> None:
    """A tail on ``s``'s current generation, a changed letter in its first."""
    first, _, current = generations(store / "s")
    torn_write(current)
    tail = len(current.read_bytes()) - log_records_end(current)
    start = flip(first, b'"bravo"', b'"brave"')
    gen = first.name.split(".")[2]
    assert_damage_stays(
        store,
        [
            *(
                f"{store / name / f'link.{gen}.jsonl'}: corrupt: damaged record at byte "
                f"{start} (checksum)"
                for name in "fg"
            ),
            f"{first}: corrupt: damaged record at byte {start} (checksum)",
            f"{current}: {tail} bytes after the last whole commit (revision 6): what a crash "
            "left of a write; readers ignore them and the next write cuts them off; not "
            "repaired while the session's log is damaged",
        ],
        leftovers=1,
    )


def log_records_end(path: Path) -> int:
    """Where the last whole commit of ``path`` ends."""
    data = path.read_bytes()
    return data.index(b"\n", data.rindex(b"\nc") + 1) + 1


# --- references to generations -----------------------------------------------------------


def test_a_missing_base_is_a_dangling_reference(store: Path) -> None:
    first, _, rewound = generations(store / "s")
    gen = first.name.split(".")[2]
    base = log_records(rewound)[0][1]["base"]
    (link_f,) = links(store / "f")
    fork_f = current_generation(store / "f")
    first.unlink()
    link_f.unlink()
    assert_damage_stays(
        store,
        [
            f"{fork_f}: dangling reference: its base, generation {gen} (its transcript's "
            f"first {log_records(fork_f)[0][1]['base'][1]} bytes), is missing from the "
            "directory",
            f"{rewound}: dangling reference: its base, generation {gen} (its transcript's "
            f"first {base[1]} bytes), is missing from the directory",
        ],
    )


def test_a_missing_previous_is_damage_only_within_the_history_given(store: Path) -> None:
    """``e`` without its middle generation: its first one is no longer reachable (a
    leftover); with ``--history 3`` the missing one held a kept revision (damage)."""
    first, second, third = generations(store / "e")
    expected = load(store, "e")
    second.unlink()
    unneeded = (
        f"{first}: a generation no kept revision needs (a write that crashed before "
        "removing it): readers ignore it"
    )
    found = run("verify", store, "--history", "3")
    assert found.stdout.splitlines() == [
        f"{third}: dangling reference: its previous generation {second.name.split('.')[2]}, "
        "holding the revisions before 3 that a history of 3 keeps (from 1 on), is missing "
        "from the directory",
        f"{unneeded}; not repaired while the session's log is damaged",
        summary(store, 2, leftovers=1),
    ]
    assert found.returncode == 1
    for args in ((), ("--history", "1")):
        found = run("verify", store, *args)
        assert found.stdout.splitlines() == [
            f"{unneeded} (repairable)",
            summary(store, 1, leftovers=1, repairable=1),
        ]
    repaired = run("verify", store, "--repair")
    assert repaired.stdout.splitlines()[0] == (
        f"{unneeded}: repaired (removed; no kept revision needs it)"
    )
    assert repaired.returncode == 0
    assert generations(store / "e") == [third]
    assert load(store, "e") == expected
    assert [revision.revision for revision in history(store, "e")] == [3]


def test_a_link_no_generation_needs_is_a_leftover(store: Path) -> None:
    """A name a crashed fork (or prune) left: removed, the other session's file as it was."""
    second = generations(store / "s")[1]
    stray = store / "f" / f"link.{second.name.split('.')[2]}.jsonl"
    os.link(second, stray)
    kept = second.read_bytes()
    expected = load(store, "f")
    line = (
        f"{stray}: a link no generation of this session needs (a fork, or a write, that "
        "crashed before removing it): readers ignore it; removing it leaves the other "
        "session's file as it is"
    )
    found = run("verify", store)
    assert found.stdout.splitlines() == [
        f"{line} (repairable)",
        summary(store, 1, leftovers=1, repairable=1),
    ]
    repaired = run("verify", store, "--repair")
    assert repaired.stdout.splitlines()[0] == (
        f"{line}: repaired (link removed; the other session's file is as it was)"
    )
    assert repaired.returncode == 0
    assert not stray.exists()
    assert second.read_bytes() == kept and second.stat().st_nlink == 1
    assert load(store, "f") == expected


# --- history against the log -------------------------------------------------------------


def _revision(commit: dict[str, Any], number: int) -> dict[str, Any]:
    return {**commit, "revision": number, "session": {**commit["session"], "revision": number}}


def test_revisions_that_skip_within_a_generation(store: Path) -> None:
    generation = current_generation(store / "t")
    start = rewrite_record(generation, -1, lambda commit: _revision(commit, 3))
    assert_damage_stays(
        store,
        [
            f"{generation}: history disagrees with the log: revision 3 follows revision 1 "
            f"(the commit at byte {start})"
        ],
    )


def test_revisions_that_skip_between_generations(store: Path) -> None:
    _, second, third = generations(store / "e")
    rewrite_record(third, 0, lambda header: {**header, "first": 4})
    rewrite_record(third, -1, lambda commit: _revision(commit, 4))
    assert_damage_stays(
        store,
        [
            f"{third}: history disagrees with the log: its first revision is 4, but its "
            f"previous generation ({second.name}) ends at revision 2"
        ],
    )


def test_a_header_whose_first_revision_is_not_its_first_commit(store: Path) -> None:
    generation = current_generation(store / "t")
    rewrite_record(generation, 0, lambda header: {**header, "first": 2})
    assert_damage_stays(
        store,
        [
            f"{generation}: history disagrees with the log: its header says its first "
            "revision is 2, its first commit is revision 1"
        ],
    )


def test_a_commit_whose_count_disagrees_with_its_transcript(store: Path) -> None:
    generation = current_generation(store / "t")
    rewrite_record(generation, -1, lambda commit: {**commit, "count": 5})
    assert_damage_stays(
        store,
        [
            f"{generation}: history disagrees with the log: revision 2 counts 5 messages, "
            "its transcript holds 2"
        ],
    )


def test_a_commit_whose_message_end_disagrees_with_its_records(store: Path) -> None:
    generation = current_generation(store / "t")
    real = log_records(generation)[-1][1]["msg_end"]
    rewrite_record(generation, -1, lambda commit: {**commit, "msg_end": real - 1})
    assert_damage_stays(
        store,
        [
            f"{generation}: history disagrees with the log: revision 2 says its messages "
            f"end at byte {real - 1}, they end at byte {real}"
        ],
    )


def test_a_header_whose_depth_disagrees_with_its_base(store: Path) -> None:
    rewound = generations(store / "s")[-1]
    rewrite_record(rewound, 0, lambda header: {**header, "depth": 2})
    assert_damage_stays(
        store,
        [f"{rewound}: header disagrees with the log: depth 2, where its base's depth 0 makes it 1"],
    )


def test_a_commit_holding_versions_the_library_never_writes(store: Path) -> None:
    generation = current_generation(store / "t")
    start = rewrite_record(
        generation,
        -1,
        lambda commit: {
            **commit,
            "session": {**commit["session"], "title_version": 5, "metadata_version": 3},
        },
    )
    assert_damage_stays(
        store,
        [
            f"{generation}: versions disagree: revision 2 (the commit at byte {start}): "
            "title_version 5 > metadata_version 3 (every title edit bumps both)"
        ],
    )


# --- the files of an older format beside a log ---------------------------------------------


def test_files_of_format_2_beside_its_log_are_leftovers(tmp_path: Path) -> None:
    """A move into the log that crashed before removing the slots and the journal."""
    root = tmp_path / "store"
    session = Session(id="legacy", messages=[msg("m1", "old"), msg("m2", "older")])
    old_files = write_format_2(root / "legacy", session)
    kept = {path: path.read_bytes() for path in old_files.values()}

    async def write() -> None:
        async with open_store(root, durability="flush") as store:
            await store.set_title("legacy", "Moved")  # moves it into a log, as revision 1

    trio.run(write)
    assert not any(path.exists() for path in kept)
    for path, data in kept.items():
        path.write_bytes(data)  # as the crash left them
    expected = load(root, "legacy")
    assert expected.title == "Moved"

    lines = [
        f"{path}: a file of an older format beside the log, which holds the session (a move "
        "into the log that crashed before removing it): readers ignore it"
        for path in sorted(kept)
    ]
    found = run("verify", root)
    assert found.stdout.splitlines() == [
        *(f"{line} (repairable)" for line in lines),
        f"checked 1 session in {root}: 3 problems: no damage, 3 leftovers of interrupted "
        "writes (3 repairable with --repair)",
    ]
    repaired = run("verify", root, "--repair")
    assert repaired.stdout.splitlines() == [
        *(f"{line}: repaired (removed; the log holds the session)" for line in lines),
        f"checked 1 session in {root}: repaired 3, no problems left",
    ]
    assert not any(path.exists() for path in kept)
    assert load(root, "legacy") == expected

    for path, data in kept.items():
        path.write_bytes(data)
    start = flip(current_generation(root / "legacy"), b'"older"', b'"elder"')
    found = run("verify", root, "--repair")
    assert found.stdout.splitlines() == [
        f"{current_generation(root / 'legacy')}: corrupt: damaged record at byte {start} "
        "(checksum)",
        *(f"{line}; not repaired while the session's log is damaged" for line in lines),
        f"checked 1 session in {root}: 4 problems: 1 damage, 3 leftovers of interrupted writes",
    ]
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_a_slot_of_format_2_beside_a_log_is_never_read(tmp_path: Path) -> None:
    """Its values do not matter: the log holds the session (a slot naming other versions)."""
    root = tmp_path / "store"
    session = Session(id="s", messages=[msg("m1", "one")])

    async def write() -> None:
        async with open_store(root, durability="flush") as store:
            await store.save_runtime_session(session)

    trio.run(write)
    head = {**format_2_head(session), "title_version": 5, "metadata_version": 3}
    (root / "s" / "session.json").write_bytes(format_2_slot(head))
    found = run("verify", root)
    assert "versions disagree" not in found.stdout
    assert found.stdout.splitlines()[-1].endswith("(1 repairable with --repair)")


# --- what a load of the latest revision does not read ----------------------------------------


def test_a_changed_letter_in_a_link_an_older_revision_needs(tmp_path: Path) -> None:
    """``h`` forked ``s`` at revision 2, then rewrote its transcript: its latest reads
    nothing of its link, which its revision 1 still needs, and verify reads it."""
    root = tmp_path / "store"

    async def write() -> None:
        async with open_store(root, durability="flush") as store:
            s = Session(id="s", messages=[msg("m1", "alpha")])
            await store.save_runtime_session(s)
            s.messages.append(msg("m2", "bravo"))
            await store.save_runtime_session(s)
            h = await store.fork_session("s", "h")
            h.messages[:] = [msg("m1", "other"), msg("m2", "others")]
            await store.save_runtime_session(h)  # a whole generation of its own

    trio.run(write)
    first = generations(root / "s")[0]
    start = flip(first, b'"alpha"', b'"alpho"')
    (link,) = links(root / "h")
    assert load(root, "h").messages[0].content == "other"  # the latest reads whole
    found = run("verify", root, "--repair")
    assert found.stdout.splitlines() == [
        f"{link}: corrupt: damaged record at byte {start} (checksum)",
        f"{first}: corrupt: damaged record at byte {start} (checksum)",
        f"checked 2 sessions in {root}: 2 problems",
    ]
    assert found.returncode == 1


def test_a_base_that_counts_no_whole_prefix_is_a_dangling_reference(store: Path) -> None:
    """The rewind's header counts its base's bytes to the middle of a record."""
    first, _, rewound = generations(store / "s")
    gen, offset = log_records(rewound)[0][1]["base"]
    assert len(str(offset)) == len(str(offset - 1))  # the header keeps its length
    rewrite_record(rewound, 0, lambda header: {**header, "base": [gen, offset - 1]})
    assert_damage_stays(
        store,
        [
            f"{rewound}: dangling reference: its base counts {offset - 1} bytes of generation "
            f"{gen}, which is no whole prefix of its counted {len(first.read_bytes())} bytes",
            # Its transcript then ends a message early.
            f"{rewound}: history disagrees with the log: revision 6 counts 3 messages, its "
            "transcript holds 2",
        ],
    )


def test_a_message_the_library_would_not_load_in_an_older_generation(store: Path) -> None:
    """Whole, its checksum right, but no message: in ``s``'s second generation, which no
    load of its latest revision reads."""
    second = generations(store / "s")[1]
    records = log_records(second)
    index = next(number for number, record in enumerate(records) if record[0] == b"m")
    end = records[index][3]
    rewrite_record(second, index, lambda message: {**message, "created_at": 1234})
    assert load(store, "s").revision == 6
    before = files(store)
    found = run("verify", store, "--repair")
    assert found.stdout.splitlines()[0].startswith(
        f"{second}: corrupt: the message record ending at byte {end}: not a message ("
    )
    assert found.stdout.splitlines()[1:] == [summary(store, 1)]
    assert found.returncode == 1
    assert files(store) == before
