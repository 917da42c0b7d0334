"""Helpers and bad-input matrices the tests share, each defined once (see README.md here).

Messages and sessions to store, the state of a store on disk, and the lists of
bad session ids, bad token-usage records and values that are not plain JSON.
A matrix is a list of ``pytest.param`` (each with an id) where a test
parametrizes over it; a test that checks many values in one loop takes the
plain values, ``EVERY_BAD_ID`` / ``EVERY_BAD_RECORD``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
    pytest.param(2**64, id="int-beyond-64-bits"),
    pytest.param(-(2**63) - 1, id="int-below-64-bits"),
    pytest.param([1, {"deep": {2, 3}}], id="set-nested-in-list"),
    pytest.param("\ud800", id="lone-surrogate"),
]

#: Titles set_title refuses: empty once stripped.
EMPTY_TITLES = ["", " ", "\n\t ", "\u3000"]
