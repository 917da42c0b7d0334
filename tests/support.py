"""Helpers and bad-input matrices the tests share, each defined once (see README.md here).

Messages and sessions to store, the state of a store on disk, and the lists of
bad session ids, bad token-usage records and values that are not plain JSON.
A matrix is a list of ``pytest.param`` (each with an id) where a test
parametrizes over it; a test that checks many values in one loop takes the
plain values, ``EVERY_BAD_ID`` / ``EVERY_BAD_RECORD``.
"""

from __future__ import annotations

import math
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from sessionactors import Message, Session


def msg(message_id: str, content: Any = None, **kwargs: Any) -> Message:
    """A user message: what most tests need of one."""
    return Message(id=message_id, role="user", content=content, **kwargs)


# --- the state of a store on disk ---------------------------------------------------------


def session_files(root: Path | None, session_id: str) -> dict[str, bytes] | None:
    """Every file of a session's directory with its bytes; None without one (or a root).

    "Nothing was written" compares this whole state before and after, never
    one file: a write goes to whichever snapshot slot is older, a journal, or
    the log.
    """
    if root is None or not (root / session_id).is_dir():
        return None
    directory = root / session_id
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def files_under(path: Path | None) -> list[str]:
    """Every file and directory below ``path``, relative, sorted; none on PostgreSQL."""
    if path is None or not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def log_path(root: Path, session_id: str) -> Path:
    return root / session_id / "token-usage.jsonl"


def edit_every_message(session: Session, content: Any = "edited") -> None:
    """Assign ``content`` to every message: the next save writes the transcript whole.

    A save changing at most half the persisted messages appends their
    replacements instead (the file store: to its current generation).
    """
    for message in session.messages:
        message.content = content


# --- a session's log (format 4), read and written by hand -----------------------------------


def generations(directory: Path) -> list[Path]:
    """The session's own log generations (``log.<seq>.<gen>.jsonl``), oldest ``seq`` first."""
    found = [
        path
        for path in directory.glob("log.*.jsonl")
        if path.name.count(".") == 3 and path.name.split(".")[1].isdigit()
    ]
    return sorted(found, key=lambda path: int(path.name.split(".")[1]))


def current_generation(directory: Path) -> Path:
    """The generation with the highest ``seq``: the one a save appends to."""
    found = generations(directory)
    assert found, f"no log generation in {directory}"
    return found[-1]


def links(directory: Path) -> list[Path]:
    """The generations of other sessions a fork hard-linked (``link.<gen>.jsonl``)."""
    return sorted(directory.glob("link.*.jsonl"))


def log_record(kind: bytes, body: Any) -> bytes:
    """One whole record of a log, made by hand: ``<kind><crc32> <json>\\n``."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return kind + b"%08x " % zlib.crc32(data) + data + b"\n"


def log_records(path: Path) -> list[tuple[bytes, Any, int, int]]:
    """Every line of a generation: its kind, its JSON, where it starts and ends.

    Checked by hand (checksum, newline): a test reading a log it did not
    damage sees whole records only.
    """
    data = path.read_bytes()
    records = []
    start = 0
    for line in data.split(b"\n")[:-1]:
        kind, crc, body = line[:1], line[1:9], line[10:]
        assert line[9:10] == b" " and crc == b"%08x" % zlib.crc32(body), (path, start, line)
        records.append((kind, orjson.loads(body), start, start + len(line) + 1))
        start += len(line) + 1
    assert start == len(data), f"{path}: bytes after the last newline"
    return records


# --- formats 1 and 2, as older versions wrote them ------------------------------------------

_GROUP = ("title", "title_version", "pinned", "metadata_version")


def _fields(session: Session) -> dict[str, Any]:
    """What formats 1 and 2 stored of a session: no revision, no lineage."""
    return {
        "id": session.id,
        **{key: getattr(session, key) for key in _GROUP},
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
    }


def _message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "created_at": None if message.created_at is None else message.created_at.isoformat(),
        "extra": message.extra,
    }


def write_format_1(directory: Path, session: Session) -> Path:
    """``session.json`` of format 1: a head line, then a body line holding the messages."""
    head = {**_fields(session), "format": 1, "message_count": len(session.messages)}
    body = {
        "messages": [_message_json(message) for message in session.messages],
        "metadata": session.metadata,
        "runtime_state": session.runtime_state,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "session.json"
    path.write_bytes(orjson.dumps(head) + b"\n" + orjson.dumps(body) + b"\n")
    return path


FORMAT_2_JOURNAL = "messages.0123456789abcdef.jsonl"


def format_2_slot(head: dict[str, Any]) -> bytes:
    """A format-2 snapshot slot: the head as one JSON line, then its CRC-32 line."""
    line = orjson.dumps(head)
    return line + b"\n" + b"%08x\n" % zlib.crc32(line)


def format_2_head(
    session: Session, *, seq: int = 1, journal: str = FORMAT_2_JOURNAL
) -> dict[str, Any]:
    lines = b"".join(orjson.dumps(_message_json(m)) + b"\n" for m in session.messages)
    return {
        **_fields(session),
        "format": 2,
        "seq": seq,
        "message_count": len(session.messages),
        "journal": journal,
        "journal_size": len(lines),
        "metadata": session.metadata,
        "runtime_state": session.runtime_state,
    }


def write_format_2(directory: Path, session: Session) -> dict[str, Path]:
    """A session of format 2: its snapshot in slot 0, the second slot empty, its journal.

    Returns the paths: ``"slot"``, ``"other slot"`` and ``"journal"``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    journal = directory / FORMAT_2_JOURNAL
    journal.write_bytes(b"".join(orjson.dumps(_message_json(m)) + b"\n" for m in session.messages))
    slot = directory / "session.json"
    slot.write_bytes(format_2_slot(format_2_head(session)))
    other = directory / "session.1.json"
    other.write_bytes(b"")
    return {"slot": slot, "other slot": other, "journal": journal}


# --- sessions holding every kind of value ---------------------------------------------------

IST = timezone(timedelta(hours=5, minutes=30))
NST = timezone(timedelta(hours=-3, minutes=-30))

# Every kind of JSON value, at the edges orjson and JSON allow.
JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.0,
    1.5,
    -0.1,
    1e300,
    5e-324,
    "",
    "plain text",
    'unicode \u2603 \U0001f600 and escapes \u0000 \n \t " \\ \u2028',
    [],
    {},
    [1, "two", None, [3.5, {"k": []}], False],
    {"nested": {"deep": [True, {"x": None}]}, "": "empty key", "n\u00e9": 1},
]


def rich_session(session_id: str = "rich") -> Session:
    messages = [
        msg(f"m{i}", value, created_at=datetime(2024, 1, 1, 12, 0, i, tzinfo=IST))
        for i, value in enumerate(JSON_VALUES)
    ]
    messages.append(
        Message(
            id="with-extra",
            role="assistant",
            content={"text": "hi", "tokens": [1, 2, 3]},
            created_at=None,
            extra={"model": "m-1", "scores": [0.5, -2.25], "flags": {"a": True, "b": None}},
        )
    )
    return Session(
        id=session_id,
        title="A title",
        created_at=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=NST),
        messages=messages,
        metadata={"model": "m-1", "values": JSON_VALUES, "nested": {"a": [{"b": {}}]}},
        runtime_state={"step": 7, "cursor": None, "stack": [[1], [2, [3]]], "ok": True},
    )


def deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


# --- bad input ------------------------------------------------------------------------------


class StrKey(str):
    """A subclass of str: equal to its value, but the encoder takes no such dict key."""


class Opaque:
    pass


#: Session ids every method refuses (docs/reference.md, "Session ids").
BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("/abs", id="leading-slash"),
    pytest.param("../escape", id="dotdot-slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("..\\escape", id="dotdot-backslash"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("\x01", id="ctrl-01"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("tab\there", id="tab"),
    pytest.param("cr\r", id="cr"),
    pytest.param("del\x7f", id="del"),
    pytest.param("nel\x85", id="c1-nel"),
    pytest.param("x" * 201, id="201-chars"),
    pytest.param("\u00e9" * 201, id="201-non-ascii-chars"),
]

#: BAD_IDS and two more, for a test that checks them all in one loop.
EVERY_BAD_ID: list[str] = [param.values[0] for param in BAD_IDS] + ["/", "\x1b[31m"]

#: Token-usage records append_token_usage_record refuses, writing nothing.
BAD_RECORDS: list[Any] = [
    pytest.param('[{"a": 1}]', id="json-array"),
    pytest.param("[]", id="empty-array"),
    pytest.param("42", id="number"),
    pytest.param('"a string"', id="json-string"),
    pytest.param("null", id="null"),
    pytest.param("true", id="bool"),
    pytest.param('{"a": 1}{"b": 2}', id="two-objects"),
    pytest.param('{"a": 1}\n{"b": 2}\n', id="two-lines"),
    pytest.param('{"a": 1', id="invalid-json"),
    pytest.param("{'a': 1}", id="python-repr"),
    pytest.param('{"a": NaN}', id="nan-literal"),
    pytest.param("", id="empty-str"),
    pytest.param(" \n", id="blank-str"),
    pytest.param({"a": {1, 2}}, id="mapping-set"),
    pytest.param({"a": b"bytes"}, id="mapping-bytes"),
    pytest.param({"a": (1, 2)}, id="mapping-tuple"),
    pytest.param({"a": math.nan}, id="mapping-nan"),
    pytest.param({"a": math.inf}, id="mapping-inf"),
    pytest.param({"a": Opaque()}, id="mapping-object"),
    pytest.param({"a": datetime(2024, 1, 1, tzinfo=timezone.utc)}, id="mapping-datetime"),
    pytest.param({1: "int key"}, id="mapping-int-key"),
    pytest.param({StrKey("a"): 1}, id="mapping-str-subclass-key"),
    pytest.param({"a": 2**64}, id="mapping-int-too-big"),
    pytest.param(["not", "a", "mapping"], id="list"),
    pytest.param(42, id="int"),
]

#: BAD_RECORDS and more, for a test that checks them all in one loop.
EVERY_BAD_RECORD: list[Any] = [param.values[0] for param in BAD_RECORDS] + [
    "not json",
    '{"a": Infinity}',
    {"a": deep(300)},
    None,
    {"a"},
]

#: Values a save refuses wherever plain JSON goes (metadata, runtime_state, content, extra).
NOT_PLAIN_JSON: list[Any] = [
    pytest.param({1, 2}, id="set"),
    pytest.param(frozenset({1}), id="frozenset"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(bytearray(b"x"), id="bytearray"),
    pytest.param((1, 2), id="tuple"),
    pytest.param(Opaque(), id="object"),
    pytest.param(datetime(2024, 1, 1), id="naive-datetime"),
    pytest.param(datetime(2024, 1, 1, tzinfo=timezone.utc), id="aware-datetime"),
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="-inf"),
    pytest.param({1: "int key"}, id="int-key"),
    pytest.param({("a",): 1}, id="tuple-key"),
    pytest.param({StrKey("a"): 1}, id="str-subclass-key"),
    pytest.param(2**64, id="int-beyond-64-bits"),
    pytest.param(-(2**63) - 1, id="int-below-64-bits"),
    pytest.param([1, {"deep": {2, 3}}], id="set-nested-in-list"),
    pytest.param("\ud800", id="lone-surrogate"),
]

#: Titles set_title refuses: empty once stripped.
EMPTY_TITLES = ["", " ", "\n\t ", "\u3000"]
