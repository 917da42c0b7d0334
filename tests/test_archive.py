"""export_session and import_session (docs/reference.md, "Moving sessions").

Every test runs on every backend (files, memory, PostgreSQL; see conftest.py);
the moves between backends run for each pair. A failed import leaves nothing:
checked on the whole root (files) and the whole listing (every backend).
What a kill during an import leaves is test_archive_crash.py's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import orjson
import pytest
from conftest import StoreFactory, file_only, fresh_schema
from support import files_under, msg, rich_session

import sessionactors
from sessionactors import (
    Change,
    Session,
    SessionExistsError,
    SessionNotFoundError,
    SessionStore,
    StoreClosedError,
    UnsupportedFormatError,
    VersionConflictError,
)
from sessionactors.storage.files.verify import verify_session

LONG_AGO = datetime(2023, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=-4)))


async def exported_source(store: SessionStore) -> tuple[Session, list[dict[str, object]]]:
    """A forked session with rich values, UI edits, three revisions and three usage records."""
    await store.save_runtime_session(rich_session("parent"))
    await store.fork_session("parent", "src", title="Forked")
    source = await store.set_pinned("src", True)
    source.messages.append(msg("late", {"text": "é ✓ \u0000 end"}))
    source.runtime_state["step"] = 8
    await store.save_runtime_session(source)
    records: list[dict[str, object]] = [
        {"model": "m-1", "input_tokens": 10, "output_tokens": 2},
        {"model": "m-2", "cost": 0.25, "tags": ["a", "b"], "nested": {"x": None}},
        {"model": "m-1", "input_tokens": 7},
    ]
    for record in records:
        await store.append_token_usage_record("src", record)
    return source, records


def same_but_revision(imported: Session, source: Session, new_id: str | None = None) -> bool:
    return attrs.evolve(imported, revision=source.revision, id=source.id) == source and (
        new_id is None or imported.id == new_id
    )


async def test_an_export_imported_under_another_id_loads_equal_with_its_records(
    store: SessionStore,
) -> None:
    source, records = await exported_source(store)
    data = await store.export_session("src")

    imported = await store.import_session(data, session_id="copy")

    assert imported.revision == 1
    assert same_but_revision(imported, source, "copy")
    assert await store.load_session("copy") == imported
    assert await store.read_token_usage("copy") == records
    # The archive's times and lineage are kept, not set anew.
    assert (imported.created_at, imported.updated_at) == (source.created_at, source.updated_at)
    assert (imported.forked_from, imported.forked_from_revision) == ("parent", 1)
    [revision] = await store.session_history("copy")
    assert (revision.revision, revision.kind, revision.message_count) == (
        1,
        "import",
        len(source.messages),
    )
    # The source is untouched, and the two are independent afterwards.
    assert await store.load_session("src") == source
    imported.messages.append(msg("only-in-copy"))
    await store.save_runtime_session(imported)
    assert await store.load_session("src") == source
    assert await store.read_token_usage("src") == records


async def test_an_archive_imports_under_its_own_id_once_the_source_is_gone(
    store: SessionStore,
) -> None:
    source, records = await exported_source(store)
    data = await store.export_session("src")
    assert await store.delete_session("src")

    imported = await store.import_session(data)

    assert imported.id == "src"
    assert same_but_revision(imported, source)
    assert await store.read_token_usage("src") == records
    # Written to again, it goes on from revision 1.
    imported.messages.append(msg("next"))
    await store.save_runtime_session(imported)
    assert imported.revision == 2
    assert await store.load_session("src") == imported


async def test_an_empty_session_without_records_round_trips(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="empty", created_at=LONG_AGO))
    data = await store.export_session("empty")
    imported = await store.import_session(data, session_id="empty-2")
    assert imported.messages == [] and imported.created_at == LONG_AGO
    assert await store.read_token_usage("empty-2") == []


async def test_an_import_keeps_its_updated_at_in_the_listing_order(store: SessionStore) -> None:
    source, _ = await exported_source(store)
    data = await store.export_session("src")
    await store.save_runtime_session(Session(id="newer"))
    imported = await store.import_session(data, session_id="old")
    summaries = await store.list_sessions()
    ids = [summary.id for summary in summaries]
    assert ids.index("newer") < ids.index("old")
    [summary] = [summary for summary in summaries if summary.id == "old"]
    assert summary.updated_at == source.updated_at == imported.updated_at
    assert summary.revision == 1


async def test_an_import_is_announced_to_watchers(store: SessionStore) -> None:
    await exported_source(store)
    data = await store.export_session("src")
    async with store.watch("copy") as changes:
        await store.import_session(data, session_id="copy")
        async for change in changes:
            assert change == Change("copy", "import", 1)
            break


async def test_the_archive_is_the_documented_json_lines(store: SessionStore) -> None:
    source, records = await exported_source(store)
    lines = [orjson.loads(line) for line in (await store.export_session("src")).splitlines()]
    header, session_line, *rest, end = lines
    assert header["format"] == "sessionactors-archive" and header["version"] == 1
    assert (header["revision"], header["messages"], header["usage_records"]) == (
        source.revision,
        len(source.messages),
        len(records),
    )
    assert session_line["session"]["id"] == "src"
    assert "messages" not in session_line["session"] and "revision" not in session_line["session"]
    assert [line["message"]["id"] for line in rest[: len(source.messages)]] == [
        message.id for message in source.messages
    ]
    assert [line["usage"] for line in rest[len(source.messages) :]] == records
    assert end["end"]["lines"] == len(lines)


async def test_exporting_an_unknown_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.export_session("nobody")


# --- nothing is made when an import fails ---------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _damaged(data: bytes) -> dict[str, bytes]:
    """Every kind of damage the contract names, and a few more."""
    lines = _lines(data)
    message_at = 3  # the second message line
    changed = lines[message_at].replace(b'"m1"', b'"m9"')
    assert changed != lines[message_at]
    return {
        "empty": b"",
        "not the format": b'{"hello": "world"}\n' + b"".join(lines[1:]),
        "not JSON at all": b"\x00\x01 garbage",
        "cut inside a line": data[: len(data) // 2],
        "cut at a line boundary": b"".join(lines[:-1]),
        "cut before its usage": b"".join(lines[: 2 + 10]),
        "a message line missing": b"".join(lines[:message_at] + lines[message_at + 1 :]),
        "a line doubled": b"".join(lines[: message_at + 1] + lines[message_at:]),
        "a changed message": b"".join([*lines[:message_at], changed, *lines[message_at + 1 :]]),
        "lines swapped": b"".join([*lines[:2], lines[3], lines[2], *lines[4:]]),
        "bytes after its end": data + b'{"usage": {}}\n',
        "a newline after its end": data + b"\n",
        "no final newline": data[:-1],
        "a usage line that is no object": b"".join(lines[:-2]).replace(
            b'{"usage":{"model":"m-1","input_tokens":7}}', b'{"usage":[1]}'
        )
        + lines[-1],
    }


async def _nothing_made(
    store: SessionStore, disk: Path | None, before: list[str], ids: list[str]
) -> None:
    assert sorted(s.id for s in await store.list_sessions()) == ids
    assert await store.load_session("copy") is None
    assert await store.read_token_usage("copy") == []
    assert files_under(disk) == before


async def test_a_damaged_archive_is_refused_and_nothing_is_made(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(
        Session(id="src", messages=[msg(f"m{i}", i) for i in range(10)])
    )
    for i in range(3):
        await store.append_token_usage_record("src", {"model": "m-1", "input_tokens": 5 + i})
    data = await store.export_session("src")
    assert (await store.import_session(data, session_id="check")).id == "check"
    assert await store.delete_session("check")
    before = files_under(disk)
    for name, damaged in _damaged(data).items():
        with pytest.raises(ValueError) as refused:
            await store.import_session(damaged, session_id="copy")
        assert not isinstance(refused.value, UnsupportedFormatError), name
        await _nothing_made(store, disk, before, ["src"])


@pytest.mark.parametrize("version", [2, 2**64, 10**20])
async def test_a_newer_format_is_unsupported_and_nothing_is_made(
    store: SessionStore, disk: Path | None, version: int
) -> None:
    await store.save_runtime_session(Session(id="src", messages=[msg("a")]))
    lines = _lines(await store.export_session("src"))
    header = orjson.loads(lines[0])
    header["version"] = version
    newer = json.dumps(header).encode() + b"\n" + b"".join(lines[1:])
    before = files_under(disk)
    with pytest.raises(UnsupportedFormatError, match=f"version {version}"):
        await store.import_session(newer, session_id="copy")
    await _nothing_made(store, disk, before, ["src"])


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("session", "id", "a/b"),
        ("session", "title_version", -1),
        ("session", "title_version", 5),  # above metadata_version
        ("session", "created_at", "2024-01-01T00:00:00"),  # naive
        ("session", "forked_from", "parent"),  # without forked_from_revision
        ("session", "metadata", [1, 2]),
        ("session", "surprise", 1),
        # Of another type than the field's: read as it is, never coerced.
        ("session", "title", 5),
        ("session", "pinned", "yes"),
        ("session", "pinned", 1),
        ("session", "metadata_version", "0"),
        ("session", "title_version", False),
        ("session", "metadata_version", 1.0),
        ("message", "id", 7),
        ("message", "role", 5),
        ("message", "role", None),
        ("message", "surprise", 1),
        # Beyond 64 bits: a save refuses it; read as a float, it would pass.
        ("message", "content", 10**23),
        ("usage", "n", -(10**23)),
    ],
)
async def test_a_line_a_save_would_refuse_is_refused(
    store: SessionStore, disk: Path | None, kind: str, field: str, value: object
) -> None:
    """An archive made by hand with a sound digest is still checked as a save is."""
    await store.save_runtime_session(Session(id="src", messages=[msg("a")]))
    await store.append_token_usage_record("src", {"n": 1})
    lines = _lines(await store.export_session("src"))
    at = {"session": 1, "message": 2, "usage": 3}[kind]
    line = orjson.loads(lines[at])
    line[kind][field] = value
    # The standard encoder writes integers of any width.
    lines[at] = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    forged = _with_digest(lines[:-1])
    before = files_under(disk)
    with pytest.raises(ValueError):
        await store.import_session(forged, session_id="copy")
    await _nothing_made(store, disk, before, ["src"])


@pytest.mark.parametrize(
    ("updated_at", "kept"),
    [
        ("9999-12-31T18:00:00-05:00", True),  # 23:00 UTC: the last hour there is
        ("0001-01-01T05:00:00+05:00", True),  # midnight UTC: the first
        ("9999-12-31T23:59:59-05:00", False),  # year 10000 in UTC
        ("0001-01-01T00:00:00+05:00", False),  # year 0 in UTC
    ],
)
async def test_an_updated_at_at_the_ends_of_the_years_is_listed_and_beyond_them_refused(
    store: SessionStore, disk: Path | None, updated_at: str, kept: bool
) -> None:
    await store.save_runtime_session(Session(id="src", messages=[msg("a")]))
    lines = _lines(await store.export_session("src"))
    line = orjson.loads(lines[1])
    line["session"]["updated_at"] = updated_at
    lines[1] = orjson.dumps(line) + b"\n"
    archive = _with_digest(lines[:-1])
    if not kept:
        before = files_under(disk)
        with pytest.raises(ValueError, match="outside the years 1 to 9999"):
            await store.import_session(archive, session_id="copy")
        await _nothing_made(store, disk, before, ["src"])
        return
    imported = await store.import_session(archive, session_id="copy")
    listed = await store.list_sessions()
    assert {summary.id for summary in listed} == {"src", "copy"}
    assert next(s for s in listed if s.id == "copy").updated_at == imported.updated_at


def _with_digest(lines: list[bytes]) -> bytes:
    """An archive of ``lines`` with the end line they agree on (as a careful forger writes it)."""
    import hashlib

    body = b"".join(lines)
    end = {"end": {"lines": len(lines) + 1, "sha256": hashlib.sha256(body).hexdigest()}}
    return body + orjson.dumps(end) + b"\n"


async def test_a_forged_archive_with_a_sound_digest_imports(store: SessionStore) -> None:
    """The digest is how damage shows; the checks above are what a sound one still passes."""
    await store.save_runtime_session(Session(id="src", messages=[msg("a")]))
    lines = _lines(await store.export_session("src"))
    imported = await store.import_session(_with_digest(lines[:-1]), session_id="copy")
    assert imported.messages == [msg("a")]


async def test_a_taken_id_is_refused_and_the_session_there_is_unchanged(
    store: SessionStore, disk: Path | None
) -> None:
    source, records = await exported_source(store)
    data = await store.export_session("src")
    other = Session(id="taken", messages=[msg("mine")])
    await store.save_runtime_session(other)
    await store.append_token_usage_record("taken", {"mine": True})
    before = files_under(disk)
    history = await store.session_history("taken")
    for target in ("taken", None):  # None: the archive's own id, "src"
        with pytest.raises(SessionExistsError):
            await store.import_session(data, session_id=target)
    assert files_under(disk) == before
    assert await store.load_session("taken") == other
    assert await store.session_history("taken") == history
    assert await store.read_token_usage("taken") == [{"mine": True}]
    assert await store.load_session("src") == source
    assert await store.read_token_usage("src") == records


async def test_import_arguments_are_checked_first(store: SessionStore) -> None:
    await store.save_runtime_session(Session(id="src"))
    data = await store.export_session("src")
    with pytest.raises(ValueError):
        await store.import_session(data, session_id="../x")
    with pytest.raises(TypeError):
        await store.import_session(["not", "bytes"], session_id="x")  # type: ignore[arg-type]
    assert [s.id for s in await store.list_sessions()] == ["src"]
    # An archive read as text is taken as its UTF-8.
    assert (await store.import_session(data.decode(), session_id="x")).id == "x"


async def test_an_import_into_a_closed_store_says_so_before_reading_the_archive(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        await store.save_runtime_session(Session(id="src"))
        data = await store.export_session("src")
    for archive in (data, b"not an archive"):
        with pytest.raises(StoreClosedError):
            await store.import_session(archive, session_id="copy")


@file_only
async def test_records_left_without_their_session_are_nobody_s(
    store: SessionStore, root: Path
) -> None:
    """What an import (or a delete) killed before its session was in place leaves on files."""
    (root / "left").mkdir()
    (root / "left" / "token-usage.jsonl").write_bytes(b'{"stale": 1}\n')
    assert await store.read_token_usage("left") == []
    assert await store.list_sessions() == []
    await store.save_runtime_session(Session(id="left"))
    assert await store.read_token_usage("left") == []
    await store.append_token_usage_record("left", {"fresh": 1})
    assert await store.read_token_usage("left") == [{"fresh": 1}]


def test_verify_names_records_left_without_their_session_and_repair_removes_them(
    root: Path,
) -> None:
    (root / "left").mkdir(parents=True)
    (root / "left" / "token-usage.jsonl").write_bytes(b'{"stale": 1}\n')
    [problem] = verify_session(root, "left", repair=False).problems
    assert problem.path == root / "left" / "token-usage.jsonl"
    assert problem.repair is not None and "without its session" in problem.message
    report = verify_session(root, "left", repair=True)
    assert (report.problems, len(report.repaired)) == ([], 1)
    assert not (root / "left").exists()


# --- between backends -----------------------------------------------------------------------


@pytest.fixture(params=["file", "memory", "postgres"])
def elsewhere(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | Path]:
    """Another location, on the backend named by the param (PostgreSQL: a schema of its own)."""
    target: str = request.param
    if target == "file":
        yield tmp_path / "elsewhere"
    elif target == "memory":
        yield f"memory://elsewhere-{uuid.uuid4().hex}"
    else:
        with fresh_schema() as url:  # not the test's own: both stores may be PostgreSQL
            yield url


async def test_an_export_moves_to_every_backend(store: SessionStore, elsewhere: str | Path) -> None:
    source, records = await exported_source(store)
    data = await store.export_session("src")
    async with sessionactors.open_store(elsewhere, durability="flush") as there:
        imported = await there.import_session(data)
        assert same_but_revision(imported, source)
        assert await there.load_session("src") == imported
        assert await there.read_token_usage("src") == records
        # And back, through a second archive: the same lines but the header's time.
        again = await there.export_session("src")
    assert _lines(again)[1:-1] == _lines(data)[1:-1]


# --- a delete that names the revision it saw ------------------------------------------------


async def test_a_delete_naming_an_old_revision_deletes_nothing(
    make_store: StoreFactory,
) -> None:
    async with make_store() as store:
        session = Session(id="s", messages=[msg("a")])
        await store.save_runtime_session(session)
        seen = session.revision
        session.messages.append(msg("b"))
        await store.save_runtime_session(session)
        with pytest.raises(VersionConflictError) as conflict:
            await store.delete_session("s", if_revision=seen)
        assert (conflict.value.expected, conflict.value.current) == (seen, seen + 1)
        assert await store.load_session("s") == session
        assert await store.delete_session("s", if_revision=seen + 1)
        assert await store.load_session("s") is None
        assert not await store.delete_session("s", if_revision=seen + 1)
        with pytest.raises(TypeError):
            await store.delete_session("s", if_revision="1")  # type: ignore[arg-type]
