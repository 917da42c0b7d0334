"""One line of a session's log (format 4): a kind, a CRC-32 and a JSON body.

``<kind><crc32 as 8 hex digits><space><json>\\n``, the kind one of ``h``
(a generation's header, its first line), ``m`` (a message), ``r`` (a
message replacing the one at a position: ``[<position>,<message>]``,
format 4 only) and ``c`` (a commit: one revision). The checksum covers the
JSON, so a changed byte anywhere in a record is seen: within the counted part of a log it is
damage (``CorruptSessionError``), never data; after the last whole commit
it is what a crash left of a write (uncounted, cut off by the next one).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from ..._model import Message, encode_message

__all__ = [
    "COMMIT",
    "HEADER",
    "MESSAGE",
    "REPLACE",
    "encode_messages",
    "encode_record",
    "encode_replacements",
    "parse_record",
    "parse_replacement",
]

HEADER = b"h"
MESSAGE = b"m"
COMMIT = b"c"
REPLACE = b"r"
_KINDS = (HEADER, MESSAGE, COMMIT, REPLACE)
_PREFIX = 10  # kind, 8 hex digits, a space


def encode_record(kind: bytes, body: bytes) -> bytes:
    """One whole line: ``body`` (compact JSON, no newline) with its kind and checksum."""
    return b"%s%08x %s\n" % (kind, zlib.crc32(body), body)


def encode_messages(messages: Sequence[Message]) -> bytearray:
    """Message records for ``messages``, in one buffer, each added as soon as it is made."""
    out = bytearray()
    for message in messages:
        body = encode_message(message)
        out += b"m%08x %s\n" % (zlib.crc32(body), body)
    return out


def encode_replacements(messages: Sequence[Message], positions: Sequence[int]) -> bytearray:
    """Replacement records: each of ``positions`` now holds its message of ``messages``."""
    out = bytearray()
    for position in positions:
        body = b"[%d,%s]" % (position, encode_message(messages[position]))
        out += b"r%08x %s\n" % (zlib.crc32(body), body)
    return out


def parse_replacement(body: bytes) -> tuple[int, bytes] | None:
    """``(position, message body)`` of a replacement record's body, None if it is not one."""
    comma = body.find(b",")
    digits = body[1:comma]
    if body[:1] != b"[" or body[-1:] != b"]" or not digits.isdigit() or len(digits) > 10:
        return None
    return int(digits), body[comma + 1 : -1]


def parse_record(line: bytes | memoryview) -> tuple[bytes, bytes] | None:
    """``(kind, body)`` of one line (its newline removed), or None if it is not whole."""
    if len(line) < _PREFIX + 2 or line[_PREFIX - 1 : _PREFIX] != b" ":
        return None
    kind = bytes(line[:1])
    if kind not in _KINDS:
        return None
    body = bytes(line[_PREFIX:])
    if line[1 : _PREFIX - 1] != b"%08x" % zlib.crc32(body):
        return None
    return kind, body
