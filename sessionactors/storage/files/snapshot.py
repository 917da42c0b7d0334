"""One snapshot slot's bytes: the head as one JSON line and its CRC-32 (format 2).

Format 1 (a head line, then a body line holding the messages) is decoded
too, and never written.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import attrs
import orjson

from ..._errors import CorruptSessionError, UnsupportedFormatError
from ..._merge import Authoritative
from ..._model import Session, converter, structure_session
from ..protocol import Version
from .layout import FORMAT, is_journal

__all__ = [
    "Snapshot",
    "decode_snapshot",
    "encode_head",
    "encode_snapshot",
    "format1_session",
    "recorded_id",
    "version",
]

_GROUP_KEYS = ("title", "title_version", "pinned", "metadata_version")


@attrs.frozen
class Snapshot:
    """A decoded ``session.json`` of either format.

    Attributes:
        head: the snapshot's JSON object (format 1: its first line).
        body: format 1 only: the raw second line, holding the messages.
    """

    path: str
    head: dict[str, Any]
    body: bytes | None = None
    slot: int = 0
    size: int = 0  #: the slot's length in bytes
    #: Why the other slot does not decode, when this one was chosen beside it.
    damaged_beside: CorruptSessionError | None = attrs.field(default=None, eq=False)

    @property
    def seq(self) -> int:
        """Which of the two slots is newer: the one with the higher ``seq``."""
        seq: int = self.head.get("seq", 0)
        return seq

    @property
    def format(self) -> int:
        version: int = self.head["format"]
        return version

    @property
    def journal(self) -> str | None:
        name: str | None = self.head.get("journal")
        return name

    @property
    def journal_size(self) -> int:
        size: int = self.head.get("journal_size", 0)
        return size

    @property
    def message_count(self) -> int:
        count: int = self.head["message_count"]
        return count

    def group(self) -> Authoritative:
        return Authoritative(**{key: self.head[key] for key in _GROUP_KEYS})


def encode_head(head: dict[str, Any]) -> bytes:
    """A format-2 slot's bytes: the head as one JSON line, then its CRC-32 line.

    The CRC tells a slot torn by a crash in the middle of its rewrite from a
    whole one, so a reader falls back to the other slot.
    """
    line = orjson.dumps(head)
    return line + b"\n" + b"%08x\n" % zlib.crc32(line)


def decode_snapshot(path: str, raw: bytes, session_id: str, slot: int = 0) -> Snapshot:
    """Check and decode the bytes of one snapshot slot.

    Raises:
        UnsupportedFormatError: written by a newer version of the library.
        CorruptSessionError: anything else that is not a snapshot of this session.
    """
    line, _, rest = raw.partition(b"\n")
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable: {exc}") from None
    if not isinstance(head, dict):
        raise CorruptSessionError(path, "not a JSON object")
    version = head.get("format")
    if type(version) is not int or version < 1:
        raise CorruptSessionError(path, f"no valid format number ({version!r})")
    if version > FORMAT:
        raise UnsupportedFormatError(
            path,
            f"written in format {version}; this version of sessionactors reads "
            f"formats 1 to {FORMAT}: upgrade it to read this session",
        )
    if version == 2:
        crc, _, tail = rest.partition(b"\n")
        if crc != b"%08x" % zlib.crc32(line) or tail:
            raise CorruptSessionError(path, "torn: its checksum does not match")
    checks: dict[str, type | tuple[type, ...]] = {
        "id": str,
        "title": str,
        "title_version": int,
        "pinned": bool,
        "metadata_version": int,
        "message_count": int,
        "created_at": str,
        "updated_at": str,
    }
    if version == 2:
        checks.update(seq=int, journal=str, journal_size=int, metadata=dict, runtime_state=dict)
    for key, kind in checks.items():
        if not isinstance(head.get(key), kind):
            raise CorruptSessionError(path, f"{key!r} is missing or of the wrong type")
    if head["id"] != session_id:
        raise CorruptSessionError(path, f"holds session {head['id']!r}, not {session_id!r}")
    if version == 2:
        journal = head["journal"]
        if not is_journal(journal) or "/" in journal or journal.startswith("."):
            raise CorruptSessionError(path, f"names no valid journal ({journal!r})")
        return Snapshot(path, head, slot=slot, size=len(raw))
    if slot != 0:
        raise CorruptSessionError(path, "format 1 in the second slot")
    return Snapshot(path, head, rest, size=len(raw))


def encode_snapshot(session: Session, journal: str, journal_size: int, seq: int) -> bytes:
    """The bytes of a format-2 snapshot slot for a checked session."""
    return encode_head(
        {
            "format": FORMAT,
            "seq": seq,
            "id": session.id,
            "title": session.title,
            "title_version": session.title_version,
            "pinned": session.pinned,
            "metadata_version": session.metadata_version,
            "created_at": converter.unstructure(session.created_at, datetime),
            "updated_at": converter.unstructure(session.updated_at, datetime),
            "message_count": len(session.messages),
            "journal": journal,
            "journal_size": journal_size,
            "metadata": session.metadata,
            "runtime_state": session.runtime_state,
        }
    )


def format1_session(snapshot: Snapshot) -> Session:
    """The session a format-1 snapshot holds: its head, and the messages of its body."""
    try:
        body = orjson.loads(snapshot.body or b"")
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(snapshot.path, f"unreadable body: {exc}") from None
    if not isinstance(body, dict):
        raise CorruptSessionError(snapshot.path, "the body is not a JSON object")
    session = structure_session(snapshot.path, {**snapshot.head, **body})
    if len(session.messages) != snapshot.message_count:
        raise CorruptSessionError(snapshot.path, "message count does not match")
    return session


def recorded_id(raw: bytes) -> str | None:
    """The session id a slot's first line records, even in a slot that is torn after it."""
    try:
        head = orjson.loads(raw.partition(b"\n")[0])
    except orjson.JSONDecodeError:
        return None
    recorded = head.get("id") if isinstance(head, dict) else None
    return recorded if isinstance(recorded, str) else None


def version(snapshot: Snapshot) -> Version | None:
    """What names a format-2 transcript on disk: its journal, counted size and count."""
    if snapshot.format != FORMAT:
        return None  # format 1 is never appended to: its next write makes it format 2
    return (snapshot.journal, snapshot.journal_size, snapshot.message_count)
