"""The command line, run as a new user runs it: ``python -m sessionactors ...`` on a real store."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import load, record_start, run
from support import (
    FORMAT_2_JOURNAL,
    current_generation,
    format_2_head,
    format_2_slot,
    write_format_2,
)

from sessionactors import Message, Session, open_store
from sessionactors.cli.verify import Progress

LONG_TITLE = "A very long title " * 6
LONG_TEXT = "lorem ipsum dolor sit amet " * 200 + "THE-END"
WHEN = datetime(2025, 3, 1, 12, 30, 0, tzinfo=timezone.utc)

NEW_RECORDS: list[dict[str, Any]] = [
    {
        "model": "m1",
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 7,
        "thinking_tokens": 3,
    },
    {"model": "m1", "input_tokens": 1, "output_tokens": 2, "reasoning_tokens": 4},
    {
        "model": "m2",
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    },
    {"model": "m1", "input_tokens": "many", "output_tokens": 1},  # irregular: a bad count
    {"note": "no model, no tokens"},  # irregular: nothing usable
]
MID_RECORDS: list[dict[str, Any]] = [{"model": "m2", "input_tokens": 1000, "output_tokens": 100}]

ZERO = {
    "calls": 0,
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_tokens": 0,
    "cache_creation_tokens": 0,
    "thinking_tokens": 0,
    "irregular_records": 0,
}
NEW_M1 = {
    **ZERO,
    "calls": 3,
    "input_tokens": 101,
    "output_tokens": 13,
    "cache_read_tokens": 5,
    "cache_creation_tokens": 7,
    "thinking_tokens": 7,
    "irregular_records": 1,
}
NEW_M2 = {**ZERO, "calls": 1, "input_tokens": 50, "output_tokens": 5, "cache_read_tokens": 8}
NEW_UNKNOWN = {**ZERO, "calls": 1, "irregular_records": 1}
MID_M2 = {**ZERO, "calls": 1, "input_tokens": 1000, "output_tokens": 100}
TOTAL = {
    "calls": 6,
    "input_tokens": 1151,
    "output_tokens": 118,
    "cache_read_tokens": 13,
    "cache_creation_tokens": 7,
    "thinking_tokens": 7,
    "irregular_records": 2,
}


async def _build(root: Path) -> None:
    async with open_store(root, durability="flush") as store:
        # Saved in this order, so list shows new, mid, old.
        old = Session(id="old", messages=[Message(id="m1", role="user", content="hello")])
        await store.save_runtime_session(old)
        await store.set_title("old", "Old one")
        mid = Session(
            id="mid",
            metadata={"agent": "planner"},
            messages=[
                Message(id="q", role="user", content=LONG_TEXT, created_at=WHEN),
                Message(id="a", role="assistant", content={"text": "short"}, extra={"k": 1}),
            ],
        )
        await store.save_runtime_session(mid)
        await store.set_title("mid", LONG_TITLE)
        await store.set_pinned("mid", True)
        await store.save_runtime_session(Session(id="new", title="New"))
        for record in NEW_RECORDS:
            await store.append_token_usage_record("new", record)
        for record in MID_RECORDS:
            await store.append_token_usage_record("mid", record)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built") / "store"
    trio.run(_build, root)
    return root


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built store, for a test that damages it."""
    root = tmp_path / "store"
    shutil.copytree(built, root)
    return root


def assert_fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, line


# --- list -----------------------------------------------------------------------------


def test_list_table(built: Path) -> None:
    result = run("list", built)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "TITLE",
        "PINNED",
        "MSGS",
        "REV",
        "UPDATED",
        "(UTC)",
        "FORK",
        "OF",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["new", "mid", "old"]
    mid = lines[2]
    assert "…" in mid and LONG_TITLE not in mid  # shortened to fit
    # Messages, then the revision (a save, a rename, a pin), then when; no fork.
    assert " yes " in mid and mid.split()[-4:-2] == ["2", "3"]
    assert "Old one" in lines[3] and " no " in lines[3] and lines[3].split()[-4:-2] == ["1", "2"]
    assert_fits(result.stdout)


def test_list_json_and_limit(built: Path) -> None:
    result = run("list", built, "--json")
    assert result.returncode == 0
    sessions = json.loads(result.stdout)
    assert [entry["id"] for entry in sessions] == ["new", "mid", "old"]
    assert sessions[1]["title"] == LONG_TITLE.strip()
    assert sessions[1]["pinned"] is True
    assert sessions[1]["message_count"] == 2
    assert sessions[1]["metadata_version"] == 2
    assert (sessions[1]["revision"], sessions[1]["forked_from"]) == (3, None)
    assert json.loads(run("list", built, "--json", "--limit", "2").stdout) == sessions[:2]
    limited = run("list", built, "--limit", "1").stdout.splitlines()
    assert [line.split()[0] for line in limited] == ["ID", "new", "(1"]


def test_list_empty_store(tmp_path: Path) -> None:
    result = run("list", tmp_path)
    assert result.returncode == 0
    assert "no sessions" in result.stdout
    assert json.loads(run("list", tmp_path, "--json").stdout) == []


# --- show -----------------------------------------------------------------------------


def test_show_text_shortened_and_full(built: Path) -> None:
    result = run("show", built, "mid")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pinned        yes" in out
    assert "versions      title 1, metadata 2" in out
    assert "revision      3" in out and "forked from" not in out
    assert 'metadata      {"agent":"planner"}' in out
    assert "#1 user  q  2025-03-01 12:30:00" in out
    assert "#2 assistant  a" in out
    assert '{"text":"short"}' in out and '{"k":1}' in out
    assert "THE-END" not in out
    assert f"{len(LONG_TEXT):,} characters in all (--full shows them)" in out
    assert_fits(out)

    full = run("show", built, "mid", "--full")
    assert full.returncode == 0
    assert LONG_TEXT in full.stdout


def test_show_json(built: Path) -> None:
    result = run("show", built, "mid", "--json")
    assert result.returncode == 0
    session = json.loads(result.stdout)
    assert session["id"] == "mid"
    assert session["title"] == LONG_TITLE.strip()
    assert session["messages"][0]["content"] == LONG_TEXT
    assert session["messages"][0]["created_at"] == WHEN.isoformat()
    assert session["messages"][1]["extra"] == {"k": 1}
    assert session["metadata"] == {"agent": "planner"}


# --- usage ----------------------------------------------------------------------------


def test_usage_table(built: Path) -> None:
    result = run("usage", built)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "SESSION",
        "/",
        "MODEL",
        "CALLS",
        "INPUT",
        "OUTPUT",
        "CACHE",
        "RD",
        "CACHE",
        "WR",
        "THINKING",
    ]
    rows = [line.split() for line in lines[1:13]]
    assert rows == [
        ["mid"],
        ["m2", "1", "1000", "100", "0", "0", "0"],
        ["new"],
        ["(unknown)", "1", "0", "0", "0", "0", "0"],
        ["m1", "3", "101", "13", "5", "7", "7"],
        ["m2", "1", "50", "5", "8", "0", "0"],
        ["all", "models", "5", "151", "18", "13", "7", "7"],
        ["-" * 79],
        ["all", "sessions"],
        ["(unknown)", "1", "0", "0", "0", "0", "0"],
        ["m1", "3", "101", "13", "5", "7", "7"],
        ["m2", "2", "1050", "105", "8", "0", "0"],
    ]
    assert lines[13].split() == ["all", "models", "6", "1151", "118", "13", "7", "7"]
    assert "Irregular records: 2 of 6" in result.stdout
    assert_fits(result.stdout)


def test_usage_json(built: Path) -> None:
    result = run("usage", built, "--json")
    assert result.returncode == 0, result.stderr
    usage = json.loads(result.stdout)
    assert usage["total"] == TOTAL
    sessions = {entry["session"]: entry for entry in usage["by_session"]}
    assert set(sessions) == {"mid", "new"}  # "old" has no usage
    assert sessions["new"]["by_model"] == [
        {"model": "(unknown)", **NEW_UNKNOWN},
        {"model": "m1", **NEW_M1},
        {"model": "m2", **NEW_M2},
    ]
    assert sessions["new"]["calls"] == 5
    assert sessions["new"]["irregular_records"] == 2
    models = {entry["model"]: entry for entry in usage["by_model"]}
    assert models["m2"]["input_tokens"] == 1050
    assert models["m1"] == {"model": "m1", **NEW_M1}

    one = json.loads(run("usage", built, "mid", "--json").stdout)
    assert [entry["session"] for entry in one["by_session"]] == ["mid"]
    assert one["total"] == MID_M2


def test_usage_csv(built: Path) -> None:
    result = run("usage", built, "--csv")
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    table = {
        (row.pop("session"), row.pop("model")): {k: int(v) for k, v in row.items()} for row in rows
    }
    assert table == {
        ("mid", "m2"): MID_M2,
        ("new", "(unknown)"): NEW_UNKNOWN,
        ("new", "m1"): NEW_M1,
        ("new", "m2"): NEW_M2,
    }


def test_usage_of_a_session_without_records(built: Path) -> None:
    result = run("usage", built, "old")
    assert result.returncode == 0
    assert "no token usage recorded" in result.stdout


# --- verify ---------------------------------------------------------------------------


def damage(root: Path) -> dict[str, Path]:
    """A changed letter in a message of a log, a torn tail and a stray temporary file."""
    corrupt = current_generation(root / "old")
    data = corrupt.read_bytes()
    at = data.index(b'"hello"')
    corrupt.write_bytes(data[:at] + b'"jello"' + data[at + 7 :])  # one letter: still JSON
    log = root / "new" / "token-usage.jsonl"
    with open(log, "ab") as file:
        file.write(b'{"model": "m1", "input_tok')
    generation = current_generation(root / "mid").name
    temp = root / "mid" / f".{generation}.0123456789abcdef0123456789abcdef.tmp"
    temp.write_bytes(b"half a generation")
    return {"corrupt": corrupt, "log": log, "temp": temp}


def test_verify_clean(built: Path) -> None:
    result = run("verify", built)
    assert result.returncode == 0, result.stdout
    assert result.stdout == f"checked 3 sessions in {built}: no problems\n"


def test_verify_finds_each_problem(store: Path) -> None:
    paths = damage(store)
    (store / "stray-dir").mkdir()
    (store / "stray-dir" / "notes.txt").write_text("not the store's")
    with open(store / "mid" / "token-usage.jsonl", "ab") as file:
        file.write(b"[1, 2]\n")
    result = run("verify", store)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    at = record_start(paths["corrupt"], b'"jello"')
    assert f"{paths['corrupt']}: corrupt: damaged record at byte {at} (checksum)" in lines
    torn = f"{paths['log']}: torn tail: 26 bytes after the last complete line (repairable)"
    assert torn in lines
    assert f"{paths['temp']}: stray temporary file (a crashed save) (repairable)" in lines
    assert f"{store / 'mid' / 'token-usage.jsonl'}: line 2: not a JSON object" in result.stdout
    assert f"{store / 'stray-dir'}: no log and no session.json: not a session (a foreign" in (
        result.stdout
    )
    assert lines[-1] == (
        f"checked 4 sessions in {store}: 5 problems: 3 damage, "
        "2 leftovers of interrupted writes (2 repairable with --repair)"
    )
    assert paths["temp"].exists()  # verify alone changes nothing
    assert not (store / "stray-dir" / ".lock").exists()


def test_verify_repair_keeps_the_corrupt_session(store: Path) -> None:
    paths = damage(store)
    corrupt_bytes = paths["corrupt"].read_bytes()
    result = run("verify", store, "--repair")
    assert result.returncode == 1  # the corrupt session remains
    lines = result.stdout.splitlines()
    torn = f"{paths['log']}: torn tail: 26 bytes after the last complete line: repaired (cut off)"
    assert torn in lines
    assert f"{paths['temp']}: stray temporary file (a crashed save): repaired (removed)" in lines
    assert lines[-2].startswith(f"{paths['corrupt']}: corrupt:")
    assert lines[-1] == f"checked 3 sessions in {store}: repaired 2, 1 problem left"
    assert not paths["temp"].exists()
    assert paths["log"].read_bytes().endswith(b"}\n")
    assert paths["corrupt"].read_bytes() == corrupt_bytes  # never deleted or rewritten

    again = run("verify", store)
    assert again.returncode == 1
    lines = again.stdout.splitlines()
    assert len(lines) == 2
    at = record_start(paths["corrupt"], b'"jello"')
    assert lines[0] == f"{paths['corrupt']}: corrupt: damaged record at byte {at} (checksum)"
    assert lines[1] == f"checked 3 sessions in {store}: 1 problem"

    async def records() -> list[dict[str, Any]]:
        async with open_store(store, durability="flush") as opened:
            return await opened.read_token_usage("new")

    assert trio.run(records) == NEW_RECORDS


def test_verify_repair_of_repairable_problems_only(store: Path) -> None:
    paths = damage(store)
    paths["corrupt"].unlink()
    shutil.rmtree(paths["corrupt"].parent)
    result = run("verify", store, "--repair")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1].endswith("repaired 2, no problems left")
    assert run("verify", store).returncode == 0


def format_2_store(tmp_path: Path) -> tuple[Path, Session]:
    """A store holding one session of format 2, as an older version left it (not yet moved
    into a log: that happens on its next write, which these tests never make)."""
    root = tmp_path / "legacy-store"
    session = Session(
        id="legacy",
        messages=[
            Message(id="q", role="user", content="question"),
            Message(id="a", role="assistant", content={"text": "answer"}),
        ],
    )
    write_format_2(root / "legacy", session)
    return root, session


def test_verify_a_clean_session_of_format_2(tmp_path: Path) -> None:
    root, _ = format_2_store(tmp_path)
    result = run("verify", root)
    assert result.stdout == f"checked 1 session in {root}: no problems\n"
    assert result.returncode == 0


def test_verify_journal_leftovers_of_format_2(tmp_path: Path) -> None:
    """Bytes a crashed save left beyond the counted journal, and a crashed rewrite's journal."""
    root, session = format_2_store(tmp_path)
    journal = root / "legacy" / FORMAT_2_JOURNAL
    counted = journal.read_bytes()
    with open(journal, "ab") as file:
        file.write(b'{"id": "uncounted", "role": "user", "content": 1}\n{"id": "to')
    orphan = root / "legacy" / "messages.00000000deadbeef.jsonl"
    orphan.write_bytes(b'{"id": "orphan", "role": "user", "content": 1}\n')
    result = run("verify", root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    extra = len(journal.read_bytes()) - len(counted)
    assert (
        f"{journal}: {extra} bytes beyond the {len(counted)} counted (a crashed save) (repairable)"
        in lines
    )
    assert f"{orphan}: journal no snapshot names (a crashed rewrite) (repairable)" in lines

    result = run("verify", root, "--repair")
    assert result.returncode == 0, result.stdout
    assert journal.read_bytes() == counted
    assert not orphan.exists()
    assert run("verify", root).returncode == 0
    # Repairs write no session: it is still in format 2, and reads as it did.
    assert sorted(path.name for path in (root / "legacy").iterdir() if path.name != ".lock") == [
        FORMAT_2_JOURNAL,
        "session.1.json",
        "session.json",
    ]
    loaded = load(root, "legacy")
    assert (loaded.messages, loaded.revision) == (session.messages, 1)


def test_verify_insane_versions_of_format_2(tmp_path: Path) -> None:
    root, session = format_2_store(tmp_path)
    path = root / "legacy" / "session.json"
    head = format_2_head(session)
    head.update(title_version=5, metadata_version=3, message_count=7)
    path.write_bytes(format_2_slot(head))
    result = run("verify", root)
    assert result.returncode == 1
    assert f"{path}: versions disagree: title_version 5 > metadata_version 3" in result.stdout
    journal = path.parent / head["journal"]
    assert f"{journal}: corrupt: 2 messages where 7 are counted" in result.stdout

    head.update(title_version=-1, metadata_version=-2, message_count=2)
    path.write_bytes(format_2_slot(head))
    result = run("verify", root)
    assert result.returncode == 1
    assert "title_version is -1, not a non-negative integer" in result.stdout
    assert "metadata_version is -2, not a non-negative integer" in result.stdout

    head.update(metadata_version="3")  # of the wrong type: the slot does not decode
    path.write_bytes(format_2_slot(head))
    result = run("verify", root)
    assert result.returncode == 1
    assert f"{path}: corrupt: 'metadata_version' is missing or of the wrong type" in result.stdout


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress(300, terminal, minimum=100)
    progress.update(300)
    progress.clear()
    drawn = terminal.getvalue()
    assert "verify [" in drawn and "300/300" in drawn and drawn.endswith("\r\x1b[K")
    assert all(len(part) <= 80 for part in drawn.split("\r"))

    for stream, total in ((io.StringIO(), 300), (Terminal(), 5)):
        quiet = Progress(total, stream, minimum=100)
        quiet.update(total)
        quiet.clear()
        assert stream.getvalue() == ""


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [("list",), ("show", "x"), ("usage",), ("usage", "x"), ("verify",)]
)
def test_missing_root(tmp_path: Path, args: tuple[str, ...]) -> None:
    root = tmp_path / "nowhere"
    result = run(args[0], root, *args[1:])
    assert result.returncode == 2
    assert "does not exist" in result.stderr and str(root) in result.stderr
    assert result.stdout == ""
    assert not root.exists()  # not created


def test_unknown_and_invalid_ids(built: Path) -> None:
    for command in ("show", "usage"):
        result = run(command, built, "nobody")
        assert result.returncode == 2
        assert "no session 'nobody'" in result.stderr
        result = run(command, built, "../escape")
        assert result.returncode == 2
        assert "invalid session id" in result.stderr
    assert not (built / "nobody").exists()


def test_bad_arguments() -> None:
    assert run("list").returncode == 2
    assert run("list", ".", "--limit", "0").returncode == 2
    assert run("usage", ".", "--json", "--csv").returncode == 2


def test_a_corrupt_session_is_reported_not_fatal(store: Path) -> None:
    paths = damage(store)
    shown = run("show", store, "old")
    assert shown.returncode == 1
    assert f"error: {paths['corrupt']}: damaged record at byte" in shown.stderr

    # A list reads each log's header and last commit only: damage it there.
    data = paths["corrupt"].read_bytes()
    paths["corrupt"].write_bytes(data.replace(b'"first":1', b'"first":2', 1))
    listed = run("list", store)
    assert listed.returncode == 1  # the others are listed, the corrupt one warned about
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["new", "mid"]
    assert str(paths["corrupt"]) in listed.stderr and "verify" in listed.stderr

    usage = run("usage", store, "--json")
    assert usage.returncode == 1
    assert json.loads(usage.stdout)["total"] == TOTAL  # the torn tail is not a record


def test_a_bad_log_line_is_reported_not_fatal(store: Path) -> None:
    with open(store / "new" / "token-usage.jsonl", "ab") as file:
        file.write(b"[1, 2]\n")
    usage = run("usage", store, "--json")
    assert usage.returncode == 1
    assert "token-usage.jsonl" in usage.stderr and "'new'" in usage.stderr
    assert json.loads(usage.stdout)["total"] == MID_M2


# --- demo -----------------------------------------------------------------------------


def test_demo(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = run("demo", root)
    assert result.returncode == 0, result.stderr
    assert "demo-0: 'demo-0 rename 5' v5, pinned, 80 msgs, 60 usage records" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    listed = json.loads(run("list", root, "--json").stdout)
    assert sorted(entry["id"] for entry in listed) == ["demo-0", "demo-1", "demo-2"]
    # The runtime's stale saves never clobbered the UI's edits; nothing was lost.
    for entry in listed:
        assert entry["title"] == f"{entry['id']} rename 5"
        assert (entry["title_version"], entry["metadata_version"]) == (5, 6)
        assert entry["pinned"] is True
        assert entry["message_count"] == 80
    assert run("verify", root).returncode == 0
