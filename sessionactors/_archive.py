"""The session archive: what ``export_session`` writes and ``import_session`` reads.

A public, versioned JSON Lines format, the same for every backend (README,
"The session archive")::

    {"format": "sessionactors-archive", "version": 1, "revision": 7,
     "messages": 2, "usage_records": 1, "exported_at": "..."}
    {"session": {"id": ..., "title": ..., ... every field but messages and revision}}
    {"message": {"id": ..., "role": ..., "content": ..., "created_at": ..., "extra": {}}}
    {"message": {...}}
    {"usage": {...one token-usage record...}}
    {"end": {"lines": 6, "sha256": "<hex digest of every byte before this line>"}}

Each line one compact JSON object with one key saying what it holds, so a
JSON Lines reader takes it as it is. The header's counts and the end's
line count and digest make every kind of damage visible: a file cut short
(even at a line boundary), a line missing or changed, bytes after the end.
An archive is checked whole, as a save checks a session, before anything
is created from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import attrs
import orjson

from ._errors import UnsupportedFormatError
from ._ids import validate_session_id
from ._model import Message, Session, check_datetime, converter, utc_now
from ._values import check_session, encode_record

__all__ = ["FORMAT", "VERSION", "Archive", "decode_archive", "encode_archive"]

FORMAT = "sessionactors-archive"
VERSION = 1
#: Where an archive's errors say they are: it has no file name of its own.
_WHERE = "the archive"
#: The session's fields in its line: all but those an import sets itself.
_SESSION_FIELDS = tuple(
    field.name for field in attrs.fields(Session) if field.name not in ("messages", "revision")
)
#: A message line's fields: every field of a Message, as the archive writes it.
_MESSAGE_FIELDS = frozenset(field.name for field in attrs.fields(Message) if field.init)
_unstructure_message = converter.get_unstructure_hook(Message)
#: A run of digits as long as an integer beyond 64 bits must have (orjson reads one as a float).
_WIDE_INTEGER = re.compile(rb"[0-9]{20}")


@attrs.frozen
class Archive:
    """A checked archive: the session (``revision`` 0) and its usage lines, ready to write."""

    session: Session
    #: The token-usage records as the log stores them: compact lines, in order.
    usage: bytes
    #: The revision it was exported at.
    revision: int


def encode_archive(session: Session, usage: list[dict[str, Any]]) -> bytes:
    """``session`` (as persisted) and its token-usage records as one archive.

    Each line is added to one buffer as soon as it is made, so the archive
    is never held twice (no list of lines to join).
    """
    out = io.BytesIO()
    digest = hashlib.sha256()
    lines = 0

    def put(line: bytes) -> None:
        nonlocal lines
        out.write(line)
        digest.update(line)
        lines += 1

    header = {
        "format": FORMAT,
        "version": VERSION,
        "revision": session.revision,
        "messages": len(session.messages),
        "usage_records": len(usage),
        "exported_at": utc_now(),
    }
    put(orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
    fields = {name: getattr(session, name) for name in _SESSION_FIELDS}
    put(orjson.dumps({"session": converter.unstructure(fields)}, option=orjson.OPT_APPEND_NEWLINE))
    for message in session.messages:
        put(b'{"message":%s}\n' % orjson.dumps(_unstructure_message(message)))
    for record in usage:
        put(b'{"usage":%s}\n' % orjson.dumps(record))
    end = {"end": {"lines": lines + 1, "sha256": digest.hexdigest()}}
    out.write(orjson.dumps(end, option=orjson.OPT_APPEND_NEWLINE))
    return out.getvalue()


def decode_archive(data: bytes | bytearray | memoryview | str) -> Archive:
    """Check ``data`` whole and give what it holds; nothing is written here.

    Raises:
        ValueError: not an archive, or a damaged one: cut short, a line
            missing, changed or out of place, bytes after its end, a value
            a save would refuse.
        UnsupportedFormatError: an archive of a newer version of this format.
    """
    if isinstance(data, str):
        data = data.encode()  # an archive read in text mode: its UTF-8 is its bytes
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"an archive is bytes, got {type(data).__name__}")
    lines = _lines(bytes(data) if not isinstance(data, bytes) else data)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{_WHERE} is empty")
    header = _header(first)
    digest = hashlib.sha256(first)
    count = 1

    def line(key: str) -> Any:
        nonlocal count
        raw = next(lines, None)
        if raw is None:
            raise ValueError(f"{_WHERE} is cut short after line {count}")
        count += 1
        value = _object(raw, count)
        if key not in value or len(value) != 1:
            if "end" in value:
                raise ValueError(f"{_WHERE} ends at line {count}, before its last {key} line")
            raise ValueError(f"{_WHERE}: line {count} is not a {key} line")
        digest.update(raw)
        return value[key]

    fields = line("session")
    messages = [_message(line("message"), count) for _ in range(header["messages"])]
    usage = b"".join(_record(line("usage"), count) for _ in range(header["usage_records"]))
    expected = {"end": {"lines": count + 1, "sha256": digest.hexdigest()}}
    last = next(lines, None)
    if last is None:
        raise ValueError(f"{_WHERE} is cut short after line {count}: it has no end line")
    count += 1
    if _object(last, count) != expected:
        raise ValueError(
            f"{_WHERE}: line {count} is not the end its lines agree on (a line is"
            " missing, added or changed)"
        )
    if next(lines, None) is not None or not last.endswith(b"\n"):
        raise ValueError(f"{_WHERE} has bytes after its end line")
    session = _session(fields, messages)
    return Archive(session, usage, header["revision"])


def _lines(data: bytes) -> Iterator[bytes]:
    """Each line of ``data``, its newline kept (a last line may have none)."""
    start = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:]
            return
        yield data[start : end + 1]
        start = end + 1


def _object(raw: bytes, number: int) -> dict[str, Any]:
    try:
        if _WIDE_INTEGER.search(raw):
            # The standard parser keeps a wide integer exact, so the check a
            # save makes refuses it, where orjson would make it a float.
            # Decoded here: given bytes, it would take a BOM, which orjson refuses.
            value = json.loads(raw.decode(), parse_constant=_not_json)
        else:
            value = orjson.loads(raw)
    except (ValueError, RecursionError) as exc:  # orjson's JSONDecodeError is a ValueError
        raise ValueError(f"{_WHERE}: line {number} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{_WHERE}: line {number} is not a JSON object")
    return value


def _header(raw: bytes) -> dict[str, Any]:
    # The standard parser keeps integers exact: orjson reads one beyond 64
    # bits as a float, and a far newer version must read as a newer version.
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        header = {}
    if not isinstance(header, dict):
        header = {}
    if header.get("format") != FORMAT:
        raise ValueError(f"{_WHERE} is not a sessionactors archive (its first line says otherwise)")
    version = header.get("version")
    if type(version) is not int or version < 1:
        raise ValueError(f"{_WHERE}: its version {version!r} is not a version")
    if version > VERSION:
        raise UnsupportedFormatError(
            _WHERE, f"format version {version}; this version of sessionactors reads {VERSION}"
        )
    for key in ("revision", "messages", "usage_records"):
        value = header.get(key)
        if type(value) is not int or value < 0:
            raise ValueError(f"{_WHERE}: its header's {key} {value!r} is not a count")
    return header


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _message(value: Any, number: int) -> Message:
    if not isinstance(value, dict) or set(value) != _MESSAGE_FIELDS:
        raise ValueError(
            f"{_WHERE}: line {number} is not a message: it has not the fields"
            f" {sorted(_MESSAGE_FIELDS)}"
        )
    try:
        message = converter.structure(value, Message)
    except Exception as exc:  # cattrs groups every field error in its own exception
        raise ValueError(f"{_WHERE}: line {number} is not a message: {exc!r}") from None
    return message


def _record(value: Any, number: int) -> bytes:
    if not isinstance(value, dict):
        raise ValueError(f"{_WHERE}: line {number} is not a token-usage record (a JSON object)")
    return encode_record(value)


def _session(fields: Any, messages: list[Message]) -> Session:
    """The session the lines describe, checked as a save checks one."""
    if not isinstance(fields, dict) or set(fields) != set(_SESSION_FIELDS):
        raise ValueError(f"{_WHERE}: its session line has not the fields {list(_SESSION_FIELDS)}")
    try:
        session = converter.structure({**fields, "messages": []}, Session)
    except Exception as exc:
        raise ValueError(f"{_WHERE}: its session line is not a session: {exc!r}") from None
    session.messages = messages
    validate_session_id(session.id)
    check_session(session, messages)
    _check_lineage(session.forked_from, session.forked_from_revision)
    check_datetime(session.updated_at, "updated_at")
    return session


def _check_lineage(source: str | None, revision: int | None) -> None:
    if (source is None) != (revision is None):
        raise ValueError(f"{_WHERE}: forked_from and forked_from_revision must be given together")
    if source is not None:
        validate_session_id(source)
        if revision is None or revision < 1:
            raise ValueError(f"{_WHERE}: forked_from_revision {revision!r} is not a revision")
