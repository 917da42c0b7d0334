"""append_token_usage_record and read_token_usage (docs/reference.md: "`SessionStore`",
"Formats").

Tests taking ``store`` run on every backend (files, memory, PostgreSQL; see
conftest.py); where they also check the log file they take ``disk`` (``None``
off the file store) or are ``@file_only``. Torn and damaged logs are in
test_crash.py and test_faults.py; DuckDB and pandas reading the log, in
test_log_readers.py.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import StoreFactory, file_only
from support import (
    BAD_RECORDS,
    files_under,
    log_path,
)

from sessionactors import (
    Session,
    SessionNotFoundError,
    SessionStore,
)

# --- helpers ------------------------------------------------------------------------------


def log_bytes(disk: Path | None, session_id: str) -> bytes | None:
    """The token-usage log's bytes; ``None`` on PostgreSQL."""
    return None if disk is None else log_path(disk, session_id).read_bytes()


def read_log_with_stdlib(path: Path) -> list[dict[str, Any]]:
    """The log read the plain way: one json.loads per line, each an object."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            assert line.endswith("\n")
            value = json.loads(line)
            assert isinstance(value, dict)
            records.append(value)
    return records


# --- appending and reading ----------------------------------------------------------------


async def test_token_usage_str_and_mapping_records(store: SessionStore, disk: Path | None) -> None:
    await store.save_runtime_session(Session(id="s"))
    first = {"input": 10, "output": 2, "model": "m-\u00e9", "cost": 0.25, "cached": None}
    second = {"nested": {"a": [1, 2, {"b": True}]}, "empty": {}, "list": []}
    third = {"big": 2**64 - 1, "neg": -(2**63), "huge": 1e300, "unicode": "\U0001f600"}
    await store.append_token_usage_record("s", json.dumps(first))
    await store.append_token_usage_record("s", json.dumps(second) + "\n")  # trailing newline
    await store.append_token_usage_record("s", types.MappingProxyType(third))  # any Mapping
    await store.append_token_usage_record("s", {"n": 4})

    expected = [first, second, third, {"n": 4}]
    records = await store.read_token_usage("s")
    assert records == expected
    assert type(records[2]["huge"]) is float  # not turned into an integer
    if disk is not None:
        lines = log_path(disk, "s").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == expected


async def test_token_usage_pretty_printed_record_is_one_compact_line(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))
    record = {"model": "m", "usage": {"input": 1, "output": 2}, "tags": ["a", "b"], "x": "a b"}
    pretty = json.dumps(record, indent=4) + "\n"
    assert pretty.count("\n") > 3
    await store.append_token_usage_record("s", pretty)
    await store.append_token_usage_record("s", {"after": 1})

    assert await store.read_token_usage("s") == [record, {"after": 1}]
    if disk is not None:
        lines = log_path(disk, "s").read_bytes().split(b"\n")
        assert lines[-1] == b""  # every line ends with a newline
        assert lines[:-1] == [
            json.dumps(record, separators=(",", ":")).encode(),
            b'{"after":1}',
        ]


async def test_token_usage_of_an_unknown_session(store: SessionStore, disk: Path | None) -> None:
    with pytest.raises(SessionNotFoundError) as info:
        await store.append_token_usage_record("nobody", {"tokens": 1})
    assert isinstance(info.value, KeyError)
    assert await store.load_session("nobody") is None
    assert await store.read_token_usage("nobody") == []
    assert await store.list_sessions() == []
    assert files_under(disk) == []

    # Deleted sessions are unknown too.
    await store.save_runtime_session(Session(id="gone"))
    await store.append_token_usage_record("gone", {"tokens": 1})
    assert await store.delete_session("gone") is True
    with pytest.raises(SessionNotFoundError):
        await store.append_token_usage_record("gone", {"tokens": 2})
    assert await store.load_session("gone") is None
    assert await store.read_token_usage("gone") == []
    assert await store.list_sessions() == []
    assert files_under(disk) == []


async def test_token_usage_str_record_with_a_huge_integer_is_not_altered(
    store: SessionStore,
) -> None:
    # The object read back equals the object given: a JSON integer wider than
    # 64 bits must be refused (as Mappings holding one are), not turned into a float.
    await store.save_runtime_session(Session(id="s"))
    text = '{"tokens": 18446744073709551617}'
    try:
        await store.append_token_usage_record("s", text)
    except ValueError:
        assert await store.read_token_usage("s") == []
    else:
        assert await store.read_token_usage("s") == [json.loads(text)]


async def test_token_usage_forty_tasks_of_twenty_five_appends(
    store: SessionStore, make_store: StoreFactory, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))

    async def writer(target: SessionStore, task: int) -> None:
        for seq in range(25):
            record = {"task": task, "seq": seq, "pad": "x" * (task % 7)}
            if seq % 2:
                await target.append_token_usage_record("s", json.dumps(record))
            else:
                await target.append_token_usage_record("s", record)

    async with make_store() as other, trio.open_nursery() as nursery:
        for task in range(40):  # half through this store, half through another
            nursery.start_soon(writer, store if task % 2 else other, task)

    records = await store.read_token_usage("s")
    assert len(records) == 1000
    assert len({(r["task"], r["seq"]) for r in records}) == 1000
    for task in range(40):
        assert [r["seq"] for r in records if r["task"] == task] == list(range(25))
    if disk is not None:  # the file agrees, line for line
        lines = log_path(disk, "s").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == records


@file_only
async def test_token_usage_log_is_one_json_object_per_line_for_the_stdlib(
    store: SessionStore, root: Path
) -> None:
    await store.save_runtime_session(Session(id="s"))
    records: list[dict[str, Any]] = [
        {"i": i, "text": "line\nbreak \u2028 sep", "v": [i, None, True, 1.5]} for i in range(30)
    ]
    for record in records:
        await store.append_token_usage_record("s", record)
    assert read_log_with_stdlib(log_path(root, "s")) == records


# --- bad records (the matrix is support.BAD_RECORDS) --------------------------------------


@pytest.mark.parametrize("record", BAD_RECORDS)
async def test_token_usage_bad_record_is_refused_and_nothing_written(
    store: SessionStore, disk: Path | None, record: Any
) -> None:
    await store.save_runtime_session(Session(id="s"))
    await store.append_token_usage_record("s", {"good": 1})
    before = log_bytes(disk, "s")
    with pytest.raises(ValueError):
        await store.append_token_usage_record("s", record)
    assert log_bytes(disk, "s") == before
    assert await store.read_token_usage("s") == [{"good": 1}]
    # The actor keeps serving.
    await store.append_token_usage_record("s", {"good": 2})
    assert await store.read_token_usage("s") == [{"good": 1}, {"good": 2}]


async def test_token_usage_bad_first_record_creates_no_log(
    store: SessionStore, disk: Path | None
) -> None:
    await store.save_runtime_session(Session(id="s"))
    for record in ("[1]", "null", {"a": {1}}):
        with pytest.raises(ValueError):
            await store.append_token_usage_record("s", record)
    if disk is not None:
        assert not log_path(disk, "s").exists() or log_path(disk, "s").read_bytes() == b""
    assert await store.read_token_usage("s") == []
    await store.append_token_usage_record("s", {"first": 1})
    assert await store.read_token_usage("s") == [{"first": 1}]
