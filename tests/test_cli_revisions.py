"""``history``, ``show --revision``, ``rewind`` and ``fork``: what they print, what they make.

Each runs as a user runs it (``python -m sessionactors``) on a store an
application wrote, and what a command wrote is read back through the library.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio
from cli_support import history, load, run
from support import files_under, write_format_2

from sessionactors import Message, Session, open_store


def msg(message_id: str, content: str) -> Message:
    return Message(id=message_id, role="user", content=content)


async def _build(root: Path) -> None:
    async with open_store(root, durability="flush") as store:
        session = Session(id="s", messages=[msg("m1", "hello")], metadata={"step": 1})
        await store.save_runtime_session(session)  # 1
        session.messages.append(msg("m2", "world"))
        session.metadata = {"step": 2}
        await store.save_runtime_session(session)  # 2
        await store.set_title("s", "Greetings")  # 3
        await store.set_pinned("s", True)  # 4
        session.messages.append(msg("m3", "again"))
        await store.checkpoint_runtime_session(session)  # 5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built") / "store"
    trio.run(_build, root)
    return root


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built store, for a test that writes."""
    root = tmp_path / "store"
    shutil.copytree(built, root)
    return root


def disk(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` and its bytes, every directory (None); a lock file aside:
    taking one writes nothing."""
    return {
        path: (root / path).read_bytes() if (root / path).is_file() else None
        for path in files_under(root)
        if not path.endswith(".lock")
    }


def assert_fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) < 80, line


# --- history -------------------------------------------------------------------------------


def test_history_table_newest_first(built: Path) -> None:
    result = run("history", built, "s")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "REV",
        "KIND",
        "UPDATED",
        "(UTC)",
        "MSGS",
        "TITLE",
        "PINNED",
        "VERSIONS",
    ]
    rows = [line.split() for line in lines[1:]]
    assert [row[:2] for row in rows] == [
        ["5", "checkpoint"],
        ["4", "pinned"],
        ["3", "title"],
        ["2", "save"],
        ["1", "save"],
    ]
    assert [row[4] for row in rows] == ["3", "2", "2", "2", "1"]  # messages
    assert rows[0][5:] == ["Greetings", "yes", "t1", "m2"]
    assert rows[2][5:] == ["Greetings", "no", "t1", "m1"]
    assert rows[4][5:] == ["no", "t0", "m0"]  # no title yet
    updated = {revision.revision: revision.updated_at for revision in history(built, "s")}
    assert rows[0][2:4] == updated[5].strftime("%Y-%m-%d %H:%M:%S").split()
    assert_fits(result.stdout)


def test_history_json_and_limit(built: Path) -> None:
    result = run("history", built, "s", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert entries == [
        {
            "revision": revision.revision,
            "kind": revision.kind,
            "updated_at": revision.updated_at.isoformat(),
            "message_count": revision.message_count,
            "title": revision.title,
            "pinned": revision.pinned,
            "title_version": revision.title_version,
            "metadata_version": revision.metadata_version,
        }
        for revision in history(built, "s")
    ]
    assert json.loads(run("history", built, "s", "--json", "--limit", "2").stdout) == entries[:2]
    limited = run("history", built, "s", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in limited] == ["REV", "5", "4", "(2"]
    assert limited[-1] == "(2 of 5 revisions shown)"


def test_history_of_a_session_of_format_2_is_its_one_revision(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_format_2(root / "legacy", Session(id="legacy", messages=[msg("m1", "old")]))
    entries = json.loads(run("history", root, "legacy", "--json").stdout)
    assert [(entry["revision"], entry["kind"], entry["message_count"]) for entry in entries] == [
        (1, "save", 1)
    ]
    assert files_under(root) == sorted(
        [
            "legacy",
            "legacy/session.json",
            "legacy/session.1.json",
            "legacy/messages.0123456789abcdef.jsonl",
        ]
    )  # read as it is: not moved into a log


def test_history_sees_every_revision_on_disk_whatever_the_default(tmp_path: Path) -> None:
    """An application keeping 150 revisions: the command line lists (and, rewinding, keeps)
    them all, where a store opened with the default history of 100 would drop 11."""
    root = tmp_path / "store"

    async def write() -> None:
        async with open_store(root, durability="flush", history=150) as store:
            session = Session(id="long", messages=[msg("m1", "0"), msg("m2", "tail")])
            for number in range(110):
                # Both messages changed: a new generation each.
                session.messages = [msg("m1", str(number)), msg("m2", f"tail {number}")]
                await store.save_runtime_session(session)

    trio.run(write)
    listed = json.loads(run("history", root, "long", "--json").stdout)
    assert [entry["revision"] for entry in listed] == list(range(110, 0, -1))
    shown = json.loads(run("show", root, "long", "--revision", "1", "--json").stdout)
    assert shown["messages"][0]["content"] == "0"

    assert run("rewind", root, "long", "1").returncode == 0

    async def kept() -> list[int]:
        async with open_store(root, durability="flush", history=150) as store:
            return [revision.revision for revision in await store.session_history("long")]

    assert trio.run(kept) == list(range(111, 0, -1))


# --- show --revision -----------------------------------------------------------------------


def test_show_a_revision(built: Path) -> None:
    result = run("show", built, "s", "--revision", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "revision      2" in out
    assert "pinned        no" in out and "versions      title 0, metadata 0" in out
    assert "messages      2" in out and 'metadata      {"step":2}' in out
    assert "#2 user  m2" in out and "#3" not in out
    shown = json.loads(run("show", built, "s", "--revision", "2", "--json").stdout)
    assert shown["revision"] == 2 and [m["id"] for m in shown["messages"]] == ["m1", "m2"]
    latest = json.loads(run("show", built, "s", "--json").stdout)
    assert latest["revision"] == 5 and len(latest["messages"]) == 3


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("s", "--revision", "9"),
            "session 's' has no revision 9: never written (the latest is 5)",
        ),
        (("nobody", "--revision", "1"), "no session 'nobody' in"),
        (("../x", "--revision", "1"), "invalid session id"),
    ],
)
def test_show_a_revision_that_is_not_there(built: Path, args: tuple[str, ...], error: str) -> None:
    result = run("show", built, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"sessionactors: error: {error}" in result.stderr


# --- rewind --------------------------------------------------------------------------------


def test_rewind_prints_the_new_revision_and_keeps_the_ui_group(store: Path) -> None:
    result = run("rewind", store, "s", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "rewound 's' to revision 2: now revision 6 (2 messages; the title and the pin stay "
        "as they are)\n"
    )
    rewound = load(store, "s")
    old = load(store, "s", revision=2)
    assert rewound.revision == 6
    assert (rewound.messages, rewound.metadata) == (old.messages, old.metadata)
    assert (rewound.title, rewound.pinned) == ("Greetings", True)
    assert [(entry.revision, entry.kind) for entry in history(store, "s")[:2]] == [
        (6, "rewind"),
        (5, "checkpoint"),
    ]
    undone = run("rewind", store, "s", "5")  # a rewind is undone by another
    assert undone.returncode == 0
    assert load(store, "s").messages == load(store, "s", revision=5).messages
    assert run("verify", store).returncode == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("s", "9"), "session 's' has no revision 9: never written (the latest is 5)"),
        (("nobody", "1"), "no session 'nobody' in"),
        (("a/b", "1"), "invalid session id"),
    ],
)
def test_rewind_to_what_is_not_there_writes_nothing(
    store: Path, args: tuple[str, ...], error: str
) -> None:
    before = disk(store)
    result = run("rewind", store, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"sessionactors: error: {error}" in result.stderr
    assert disk(store) == before


# --- fork ----------------------------------------------------------------------------------


def test_fork_prints_what_it_made(store: Path) -> None:
    result = run("fork", store, "s", "t", "--revision", "3", "--title", "  Another path ")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "forked 's' at revision 3 into 't' (revision 1): 2 messages, title 'Another path'\n"
    )
    fork = load(store, "t")
    source = load(store, "s", revision=3)
    assert (fork.revision, fork.forked_from, fork.forked_from_revision) == (1, "s", 3)
    assert (fork.title, fork.pinned, fork.title_version, fork.metadata_version) == (
        "Another path",
        False,
        0,
        0,
    )
    assert (fork.messages, fork.metadata) == (source.messages, source.metadata)

    latest = run("fork", store, "s", "u")  # the latest revision, the source's title
    assert latest.stdout == (
        "forked 's' at revision 5 into 'u' (revision 1): 3 messages, title 'Greetings'\n"
    )
    listed = json.loads(run("list", store, "--json").stdout)
    assert {entry["id"]: entry["forked_from"] for entry in listed} == {
        "u": "s",
        "t": "s",
        "s": None,
    }
    rows = run("list", store).stdout.splitlines()[1:]
    assert {row.split()[0]: row.endswith(" s") for row in rows} == {
        "u": True,
        "t": True,
        "s": False,
    }
    shown = run("show", store, "u").stdout
    assert "forked from   s at revision 5" in shown and "revision      1" in shown
    assert run("verify", store).returncode == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("s", "s"), "session 's' exists already"),
        (("nobody", "t"), "no session 'nobody' in"),
        (("s", "t", "--revision", "9"), "session 's' has no revision 9"),
        (("s", "t", "--title", "   "), "--title must not be empty (or blank)"),
        (("s", "../t"), "invalid session id"),
    ],
)
def test_fork_that_cannot_be_made_makes_nothing(
    store: Path, args: tuple[str, ...], error: str
) -> None:
    before = disk(store)
    result = run("fork", store, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"sessionactors: error: {error}" in result.stderr
    assert disk(store) == before


@pytest.mark.parametrize(
    "args",
    [
        ("history",),
        ("history", "s", "--limit", "0"),
        ("show", "s", "--revision", "0"),
        ("rewind", "s"),
        ("rewind", "s", "x"),
        ("fork", "s"),
        ("fork", "s", "t", "--revision", "-1"),
    ],
)
def test_bad_arguments(built: Path, args: tuple[str, ...]) -> None:
    result = run(args[0], built, *args[1:])
    assert result.returncode == 2
    assert "usage: sessionactors" in result.stderr


@pytest.mark.parametrize("command", [("history", "s"), ("rewind", "s", "1"), ("fork", "s", "t")])
def test_missing_root(tmp_path: Path, command: tuple[str, ...]) -> None:
    root = tmp_path / "nowhere"
    result = run(command[0], root, *command[1:])
    assert result.returncode == 2
    assert "does not exist" in result.stderr and str(root) in result.stderr
    assert not root.exists()  # not created
