"""``export`` and ``import``: a session moved through an archive file, between backends too.

Each command runs as a user runs it (``python -m sessionactors``); what it
made is read back through the library. A session made from an archive is
``==`` the one exported, apart from ``revision`` (and ``id``, if renamed),
with the same token-usage records; an archive that cannot be imported, or a
taken id, leaves the store as it was, byte for byte (files) or row for row
(PostgreSQL).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from cli_support import in_store, load, run, run_bytes
from support import files_under, rich_session

from sessionactors import Session, SessionStore

#: Token-usage records of every shape a log takes (odd ones included).
RECORDS: list[dict[str, Any]] = [
    {"model": "claude-sonnet-4", "input_tokens": 1200, "output_tokens": 300},
    {"model": "gpt-4.1-mini", "input_tokens": 800, "output_tokens": 95, "note": "ünïcode"},
    {"odd": [1, None, {"x": 1.5}]},
]


async def _build(store: SessionStore) -> Session:
    """A rich session with revisions, a title, a pin, usage, and a fork of it: the fork."""
    session = rich_session("source")
    await store.save_runtime_session(session)
    session.metadata = {**session.metadata, "step": 2}
    await store.save_runtime_session(session)
    await store.set_pinned("source", True)
    for record in RECORDS:
        await store.append_token_usage_record("source", record)
    fork = await store.fork_session("source", "rich fork é", title="Forked ✓")
    await store.append_token_usage_record(fork.id, RECORDS[0])
    return fork


async def _exported(store: SessionStore, session_id: str) -> tuple[Session, list[dict[str, Any]]]:
    session = await store.load_session(session_id)
    assert session is not None
    return session, await store.read_token_usage(session_id)


def _usage(location: Path | str, session_id: str) -> list[dict[str, Any]]:
    return in_store(location, lambda store: store.read_token_usage(session_id))


def _same_but_revision(made: Session, original: Session, **changes: Any) -> None:
    assert made.revision == 1
    assert made == attrs.evolve(original, revision=1, **changes)


def _round_trip(source: Path | str, target: Path | str, tmp_path: Path) -> None:
    """Export from ``source`` to a file and by a pipe; import both into ``target``."""
    for session_id in ("source", "rich fork é"):
        original, usage = in_store(source, functools.partial(_exported, session_id=session_id))

        archive = tmp_path / "archive.jsonl"
        result = run("export", source, session_id, "-o", archive)
        assert result.returncode == 0, result.stderr
        assert f"exported {session_id!r} at revision {original.revision}" in result.stdout
        assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]

        result = run("import", target, archive)
        assert result.returncode == 0, result.stderr
        count = len(original.messages)
        assert result.stdout.startswith(f"imported {session_id!r} (revision 1): {count} messages")
        _same_but_revision(load(target, session_id), original)
        assert _usage(target, session_id) == usage

        # stdout to stdin, under a new id.
        exported = run_bytes("export", source, session_id)
        assert exported.returncode == 0 and exported.stderr == b""
        renamed = f"{session_id} (moved)"
        piped = run_bytes("import", target, "-", "--id", renamed, stdin=exported.stdout)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout.decode().startswith(f"imported {renamed!r} (revision 1)")
        _same_but_revision(load(target, renamed), original, id=renamed)
        assert _usage(target, renamed) == usage


def test_round_trip_files_to_files(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    in_store(source, _build)
    target.mkdir()
    _round_trip(source, target, tmp_path)


def test_round_trip_files_to_postgres(tmp_path: Path, postgres_url: str) -> None:
    source = tmp_path / "a"
    in_store(source, _build)
    _round_trip(source, postgres_url, tmp_path)


def test_round_trip_postgres_to_files(tmp_path: Path, postgres_url: str) -> None:
    target = tmp_path / "b"
    in_store(postgres_url, _build)
    target.mkdir()
    _round_trip(postgres_url, target, tmp_path)


def test_export_replaces_its_output_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    in_store(root, _build)
    archive = tmp_path / "out.jsonl"
    archive.write_bytes(b"something else, longer than nothing")
    assert run("export", root, "source", "-o", archive).returncode == 0
    assert archive.read_bytes().startswith(b'{"format":"sessionactors-archive"')
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "store"]


# --- what cannot be imported leaves the store as it was ---------------------------------------


def _cut_at_a_line(data: bytes) -> bytes:
    return b"".join(data.splitlines(keepends=True)[:-1])


def _a_line_missing(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[:3] + lines[4:])


def _a_byte_changed(data: bytes) -> bytes:
    at = data.index(b"plain text")
    return data[:at] + b"P" + data[at + 1 :]


# Each kind of damage is the library's to find (test_archive.py, every kind on every
# backend); here, that the command turns its two errors into a refusal that changes nothing.
DAMAGE = [
    pytest.param(_a_byte_changed, id="a-byte-changed"),
    pytest.param(lambda data: data.replace(b'"version":1', b'"version":2', 1), id="a-newer-format"),
]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` and its bytes, every directory (None)."""
    return {
        path: (root / path).read_bytes() if (root / path).is_file() else None
        for path in files_under(root)
    }


def _rows(url: str) -> list[Any]:
    """Every row of every table of the store's schema, in order."""
    tables = (
        "sessionactors_sessions",
        "sessionactors_revisions",
        "sessionactors_messages",
        "sessionactors_token_usage",
    )
    with psycopg.connect(url) as conn:
        return [
            conn.execute(f"SELECT t::text FROM {table} t ORDER BY t::text").fetchall()
            for table in tables
        ]


@pytest.fixture(params=["file", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A store holding the built sessions, on files or PostgreSQL."""
    location: Path | str = tmp_path / "store"
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_url")
    in_store(location, _build)
    return location


def _state(location: Path | str) -> Any:
    return _rows(location) if isinstance(location, str) else _tree(location)


def _refused(location: Path | str, *args: object) -> str:
    """Run ``import LOCATION ARGS``: refused (exit 2, one line), and nothing changed."""
    before = _state(location)
    result = run("import", location, *args)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sessionactors: error: ")
    assert _state(location) == before
    return result.stderr


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_archive_that_cannot_be_imported_changes_nothing(
    target: Path | str, tmp_path: Path, damage: Any
) -> None:
    archive = tmp_path / "archive.jsonl"
    assert run("export", target, "source", "-o", archive).returncode == 0
    archive.write_bytes(damage(archive.read_bytes()))
    said = _refused(target, archive, "--id", "new")
    assert "cannot import" in said
    assert in_store(target, lambda store: store.load_session("new")) is None


def test_a_taken_id_changes_nothing(target: Path | str, tmp_path: Path) -> None:
    archive = tmp_path / "archive.jsonl"
    assert run("export", target, "source", "-o", archive).returncode == 0
    assert "'source' exists already" in _refused(target, archive)
    assert "exists already" in _refused(target, archive, "--id", "rich fork é")
    assert "invalid session id" in _refused(target, archive, "--id", "a/b")


def test_no_such_archive_or_session(target: Path | str, tmp_path: Path) -> None:
    assert "no archive at" in _refused(target, tmp_path / "missing.jsonl")
    assert "no archive at" in _refused(target, tmp_path)  # a directory
    result = run("export", target, "nobody", "-o", tmp_path / "out.jsonl")
    assert result.returncode == 2
    assert "no session 'nobody'" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()
