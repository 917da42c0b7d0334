"""``prune``: what it selects, what a dry run says (and leaves), what it archives and frees.

The commands run as a user runs them (``python -m sessionactors``), on
files and on PostgreSQL. The old sessions are imported from archives dated
back (``cli_support.aged``), so which sessions are old does not hang on a
clock. A session written while a prune runs is kept: that is checked in
this process, on every backend, with the write landing between the listing
and the delete, and between the export and the delete (the ``if_revision``
path), through ``prune_selected``, the part of the command that deletes.
"""

from __future__ import annotations

import argparse
import functools
import os
import pty
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio
from cli_support import aged, in_store, load, run
from support import files_under, msg

from sessionactors import Session, SessionStore, SessionSummary, open_store
from sessionactors.cli.durations import duration
from sessionactors.cli.prune import Report, archive_name, prune_selected, select

UTC = timezone.utc
#: The old sessions, oldest first: id, last updated, pinned.
OLD: list[tuple[str, datetime, bool]] = [
    ("old", datetime(2020, 1, 1, tzinfo=UTC), False),
    ("old pinned ✓", datetime(2021, 6, 1, 12, 30, tzinfo=UTC), True),
    ("old source 100%", datetime(2022, 3, 4, tzinfo=UTC), False),
]
YOUNG = ["young", "young fork"]


async def _put_old(store: SessionStore, session_id: str, when: datetime, pinned: bool) -> None:
    """Make ``session_id`` as a session last updated at ``when`` (an aged archive imported)."""
    scratch = f"scratch-{session_id}"
    session = Session(
        id=scratch,
        title=f"Title of {session_id}",
        messages=[msg(f"m{i}", f"message {i} of {session_id} " * 20) for i in range(12)],
        metadata={"agent": "coder"},
    )
    await store.save_runtime_session(session)
    await store.set_pinned(scratch, pinned)
    await store.append_token_usage_record(scratch, {"model": "m-1", "input_tokens": 100})
    data = await store.export_session(scratch)
    await store.delete_session(scratch)
    await store.import_session(aged(data, when), session_id=session_id)


async def _build(store: SessionStore) -> None:
    for session_id, when, pinned in OLD:
        await _put_old(store, session_id, when, pinned)
    await store.save_runtime_session(Session(id="young", messages=[msg("y1", "fresh")]))
    # A fork of an old session is young: on files it links the old one's generation.
    await store.fork_session("old source 100%", "young fork")


@pytest.fixture(params=["file", "postgres"])
def built(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A built store on files or PostgreSQL (the command line reaches no memory store)."""
    where: Path | str = tmp_path / "store"
    if request.param == "postgres":
        where = request.getfixturevalue("postgres_url")
    in_store(where, _build)
    # The first store opened after the writer's has closed tidies the listing
    # index (the writer's registration): a reader's doing, before any test looks.
    assert run("list", where).returncode == 0
    return where


def _state(location: Path | str) -> Any:
    """The whole store: every file and its bytes, or every row of every table."""
    if isinstance(location, Path):
        return {
            path: (location / path).read_bytes() if (location / path).is_file() else None
            for path in files_under(location)
        }
    tables = ("sessions", "revisions", "messages", "token_usage")
    with psycopg.connect(location) as conn:
        return [
            conn.execute(f"SELECT t::text FROM sessionactors_{table} t ORDER BY 1").fetchall()
            for table in tables
        ]


def _frees(root: Path, session_id: str) -> int:
    """What deleting the session alone frees, by os.stat: its files no other name holds."""
    directory = root / session_id
    return sum(
        info.st_size
        for info in (os.lstat(directory / name) for name in os.listdir(directory))
        if info.st_nlink == 1
    )


def _ids(location: Path | str) -> list[str]:
    summaries = in_store(location, lambda store: store.list_sessions())
    return sorted(summary.id for summary in summaries)


def _table_ids(stdout: str) -> list[str]:
    """The ids of a dry run's table (an id may hold spaces: the date starts the rest)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "(UTC)", "PINNED", "FREES"]
    ids = []
    for line in lines[1:]:
        if line.startswith("would delete"):
            break
        ids.append(line[:30].rstrip())
    return ids


# --- a dry run ------------------------------------------------------------------------------


def test_a_dry_run_lists_what_would_go_and_changes_nothing(built: Path | str) -> None:
    before = _state(built)
    result = run("prune", built, "--older-than", "30d", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert _table_ids(result.stdout) == [session_id for session_id, _, _ in OLD]
    assert "would delete 3 sessions" in result.stdout
    assert "nothing was changed (dry run)" in result.stdout
    assert _state(built) == before
    if isinstance(built, Path):
        # Each session's files, less what a fork that stays still links.
        frees = {session_id: _frees(built, session_id) for session_id, _, _ in OLD}
        shared = built / "old source 100%"
        assert frees["old source 100%"] < sum(f.stat().st_size for f in shared.iterdir())
        for line in result.stdout.splitlines()[1:4]:
            assert int(line.split()[-1]) == frees[line[:30].rstrip()]
        assert f"freeing {sum(frees.values())} bytes" in result.stdout.replace("\n", " ")
    else:
        assert "PostgreSQL: an estimate" in result.stdout


def test_keep_pinned_keeps_the_pinned(built: Path | str) -> None:
    result = run("prune", built, "--older-than", "2w", "--keep-pinned", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert _table_ids(result.stdout) == ["old", "old source 100%"]


def test_nothing_old_enough(built: Path | str) -> None:
    before = _state(built)
    result = run("prune", built, "--older-than", "3000w")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no sessions to prune in ")
    assert _state(built) == before


@pytest.mark.parametrize("bad", ["30", "d", "1.5d", "-1d", "0s", "30D", "1y", "", "9" * 30 + "w"])
def test_a_bad_duration_is_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(bad)


def test_good_durations_add_up() -> None:
    assert duration("1d12h") == timedelta(days=1, hours=12)
    assert duration("2w") == timedelta(weeks=2)
    assert duration("90m") == duration("1h30m") == timedelta(minutes=90)


def test_a_bad_duration_is_a_usage_error(built: Path | str) -> None:
    before = _state(built)
    result = run("prune", built, "--older-than", "1.5d")
    assert result.returncode == 2
    assert "--older-than" in result.stderr
    assert _state(built) == before


def test_older_than_is_required(tmp_path: Path) -> None:
    result = run("prune", tmp_path)
    assert result.returncode == 2
    assert "--older-than" in result.stderr


# --- a prune --------------------------------------------------------------------------------


async def _whole(store: SessionStore, session_id: str) -> tuple[Session, list[dict[str, Any]]]:
    session = await store.load_session(session_id)
    assert session is not None
    return session, await store.read_token_usage(session_id)


def test_prune_archives_then_deletes(built: Path | str, tmp_path: Path) -> None:
    pruned = ["old", "old source 100%"]  # the pinned one is kept
    before = {
        session_id: in_store(built, functools.partial(_whole, session_id=session_id))
        for session_id in [*pruned, "young fork"]
    }
    frees = None
    if isinstance(built, Path):
        frees = sum(_frees(built, session_id) for session_id in pruned)
    archive = tmp_path / "archives"
    archive.mkdir()
    earlier = archive / "old.jsonl"  # an archive of an earlier session "old": kept
    earlier.write_bytes(b"an earlier archive")

    result = run("prune", built, "--older-than", "30d", "--keep-pinned", "--archive", archive)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar but on a terminal
    assert f"deleted 'old' (archived as {archive / 'old~2.jsonl'})" in result.stdout
    assert "deleted 'old source 100%' (archived as" in result.stdout
    summary = result.stdout.replace("\n", " ")
    assert "deleted 2 sessions, freed " in summary
    assert "kept 0 written meanwhile" in summary
    if frees is not None:
        assert f"freed {frees} bytes" in summary

    assert _ids(built) == ["old pinned ✓", *YOUNG]
    # The fork that stays reads whole: the generation it links outlives its source.
    assert load(built, "young fork") == before["young fork"][0]
    assert earlier.read_bytes() == b"an earlier archive"
    files = {
        "old": archive / "old~2.jsonl",
        "old source 100%": archive / f"{archive_name('old source 100%')}.jsonl",
    }
    assert archive_name("old source 100%") == "old%20source%20100%25"
    assert sorted(archive.iterdir()) == sorted([earlier, *files.values()])

    async def imported_back() -> None:
        async with open_store(f"memory://pruned-back-{uuid.uuid4().hex}") as store:
            for session_id, path in files.items():
                made = await store.import_session(path.read_bytes())
                original, usage = before[session_id]
                assert made == attrs.evolve(original, revision=1)
                assert await _whole(store, session_id) == (made, usage)

    trio.run(imported_back)


def test_prune_without_an_archive(built: Path | str) -> None:
    result = run("prune", built, "--older-than", "1d")
    assert result.returncode == 0, result.stderr
    assert "deleted 3 sessions" in result.stdout
    assert _ids(built) == YOUNG
    assert load(built, "young fork").messages  # its transcript outlived its source


def test_the_archive_directory_is_made_if_its_parent_is_there(
    built: Path | str, tmp_path: Path
) -> None:
    before = _state(built)
    result = run("prune", built, "--older-than", "1d", "--archive", tmp_path / "no" / "such")
    assert result.returncode == 2
    assert "no such parent" in result.stderr
    assert _state(built) == before  # nothing deleted without its archive

    made = tmp_path / "made"
    result = run("prune", built, "--older-than", "1d", "--archive", made)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in made.iterdir()) == sorted(
        f"{archive_name(session_id)}.jsonl" for session_id, _, _ in OLD
    )


def test_a_progress_bar_on_a_terminal_only(built: Path | str) -> None:
    terminal, stderr = pty.openpty()
    try:
        child = subprocess.run(
            [sys.executable, "-m", "sessionactors", "prune", str(built), "--older-than", "1d"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=60,
        )
        os.close(stderr)
        drawn = b""
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child's end is closed, all is read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(terminal)
    assert child.returncode == 0
    assert b"prune [" in drawn and b"3/3" in drawn
    assert drawn.endswith(b"\r\x1b[K")
    assert b"prune [" not in child.stdout


# --- a session written while a prune runs is kept (in this process, every backend) ----------


class _WriteAfterExport:
    """A store whose ``export_session`` of one session is followed by a write of it.

    So the write lands between the archive and the delete: only the delete's
    ``if_revision`` can tell.
    """

    def __init__(self, store: SessionStore, session_id: str, write: Callable[[], Awaitable[Any]]):
        self._store = store
        self._session_id = session_id
        self._write = write

    async def export_session(self, session_id: str) -> bytes:
        data = await self._store.export_session(session_id)
        if session_id == self._session_id:
            await self._write()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _two_listed(store: SessionStore) -> list[SessionSummary]:
    for session_id in ("a", "b", "c"):
        await store.save_runtime_session(Session(id=session_id, messages=[msg("m1", "hi")]))
    future = datetime.now(UTC) + timedelta(days=1)
    return select(await store.list_sessions(), future, keep_pinned=False)


async def test_a_session_written_after_the_listing_is_kept(store: SessionStore) -> None:
    selected = await _two_listed(store)
    assert [summary.id for summary in selected] == ["a", "b", "c"]
    await store.save_runtime_session(Session(id="a", messages=[msg("m1", "hi"), msg("m2", "more")]))
    await store.set_pinned("c", True)  # an edit is a write too
    report = Report()
    await prune_selected(store, selected, archive=None, report=report)
    assert (report.deleted, report.kept) == (["b"], ["a", "c"])
    a = await store.load_session("a")
    assert a is not None and [m.id for m in a.messages] == ["m1", "m2"]
    assert await store.load_session("b") is None
    assert await store.load_session("c") is not None


async def test_a_session_written_between_its_export_and_its_delete_is_kept(
    store: SessionStore, tmp_path: Path
) -> None:
    selected = await _two_listed(store)
    archive = tmp_path / "archives"
    archive.mkdir()

    async def write() -> None:
        await store.set_title("a", "Still in use")

    busy: Any = _WriteAfterExport(store, "a", write)
    report = Report()
    outcomes: list[tuple[str, str]] = []
    await prune_selected(
        busy, selected, archive=archive, report=report, done=lambda *o: outcomes.append(o)
    )
    assert outcomes == [("a", "kept"), ("b", "deleted"), ("c", "deleted")]
    a = await store.load_session("a")
    assert a is not None and a.title == "Still in use"
    # Its archive, of a revision no longer the latest, is gone; the others are there.
    assert sorted(os.listdir(archive)) == ["b.jsonl", "c.jsonl"]
    assert report.archives == {"b": archive / "b.jsonl", "c": archive / "c.jsonl"}


async def test_a_session_written_before_its_export_is_kept_unarchived(
    store: SessionStore, tmp_path: Path
) -> None:
    selected = await _two_listed(store)
    archive = tmp_path / "archives"
    archive.mkdir()
    await store.set_title("b", "Written since the listing")
    await store.delete_session("c")  # by another: gone, not an error
    report = Report()
    await prune_selected(store, selected, archive=archive, report=report)
    assert (report.deleted, report.kept, report.gone) == (["a"], ["b"], ["c"])
    assert sorted(os.listdir(archive)) == ["a.jsonl"]
    assert await store.load_session("b") is not None


def test_long_and_odd_ids_make_one_file_name_each() -> None:
    names = {archive_name(session_id) for session_id in ("é" * 200, "é" * 199 + "e", "a~2")}
    assert len(names) == 3
    assert all(len((name + "~99.jsonl").encode()) <= 200 for name in names)
    assert archive_name("a~2") == "a%7E2"  # never taken for the second archive of "a"
