"""The records a write adds to a session's log (format 4), and the files it makes.

A save that appends messages (and replaces a few old ones) adds their
records and one commit to the current generation in one ``write`` and one
``fdatasync``: the only fsync of the save (bytes after the last whole commit
are not counted, so a crash in the middle leaves the revision before).
Anything else (a removal or a change of most old messages, a rewind, a fork,
a compaction, a migration) makes a new generation, whole, under a temporary
name, renamed into place.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime

import orjson

from ..._errors import CorruptSessionError
from ..._model import Session, converter
from ..protocol import IoCounts
from .durable import append_synced, open_at, replace_whole
from .generations import FORMAT, gen_name
from .records import COMMIT, HEADER, encode_record

__all__ = ["append_records", "commit_record", "create_generation", "header_record", "new_gen_id"]


def new_gen_id() -> str:
    return uuid.uuid4().hex


def _iso(value: datetime) -> str:
    text: str = converter.unstructure(value, datetime)
    return text


def commit_record(session: Session, *, kind: str, msg_end: int, commit_bytes: int) -> bytes:
    """The commit record of ``session`` as revision ``session.revision`` of kind ``kind``."""
    fields = {
        "id": session.id,
        "title": session.title,
        "title_version": session.title_version,
        "pinned": session.pinned,
        "metadata_version": session.metadata_version,
        "created_at": _iso(session.created_at),
        "updated_at": _iso(session.updated_at),
        "metadata": session.metadata,
        "runtime_state": session.runtime_state,
        "revision": session.revision,
        "forked_from": session.forked_from,
        "forked_from_revision": session.forked_from_revision,
    }
    body = orjson.dumps(
        {
            "revision": session.revision,
            "kind": kind,
            "count": len(session.messages),
            "msg_end": msg_end,
            "cb": commit_bytes,
            "session": fields,
        }
    )
    return encode_record(COMMIT, body)


def header_record(
    *,
    gen: str,
    session_id: str,
    base: tuple[str, int] | None,
    previous: str | None,
    first: int,
    depth: int,
) -> bytes:
    body = orjson.dumps(
        {
            "format": FORMAT,
            "gen": gen,
            "session": session_id,
            "base": None if base is None else list(base),
            "previous": previous,
            "first": first,
            "depth": depth,
        }
    )
    return encode_record(HEADER, body)


def append_records(
    dir_fd: int,
    directory: str,
    name: str,
    counted: int,
    data: bytes | bytearray,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
) -> None:
    """Append ``data`` durably to the generation ``name`` of ``counted`` bytes (locked).

    Bytes beyond ``counted`` (a write a crash cut short) are cut off first;
    they are after every offset anything counts, a fork's included.
    """
    fd = open_at(dir_fd, directory, name, os.O_RDWR | os.O_APPEND)
    try:
        actual = os.fstat(fd).st_size
        if actual < counted:
            path = os.path.join(directory, name)
            raise CorruptSessionError(path, f"shorter than the {counted} bytes counted")
        if actual > counted:
            os.ftruncate(fd, counted)
        append_synced(fd, data, counted, sync)
    finally:
        os.close(fd)
    counts.journal_appends += 1
    counts.bytes_written += len(data)


def create_generation(
    dir_fd: int,
    directory: str,
    seq: int,
    gen: str,
    data: bytes | bytearray,
    *,
    counts: IoCounts,
    sync: Callable[[int], None],
    sync_directory: Callable[[], None],
) -> str:
    """Make the generation ``seq`` whole under a temporary name, then rename it into place.

    Returns its name. It is current (the highest ``seq``) once the rename is
    durable; a crash before leaves a temporary file, which is swept.
    """
    name = gen_name(seq, gen)
    replace_whole(dir_fd, directory, name, data, sync, sync_directory)
    counts.journal_rewrites += 1
    counts.bytes_written += len(data)
    return name
