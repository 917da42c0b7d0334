"""A transcript's last messages, read from its generation's end.

A reader of a conversation's latest turns (``sessionactors.agents``) pays for
those messages alone, not for the conversation's length: the generation is
read backwards from where the revision's messages end, in windows growing
until they hold the messages asked for. Every record read is checked; the
records before them are not read at all (a whole load checks every one).
A replacement of one of those messages comes after its message record, so
it is among the records read.
"""

from __future__ import annotations

import os

from ..._errors import CorruptSessionError
from .durable import open_at, refused
from .generations import CommitRecord, Header, replacement_of
from .records import COMMIT, HEADER, MESSAGE, parse_record

__all__ = ["last_messages"]

_WINDOW = 1 << 16  # bytes read first; multiplied by 4 until the messages are in


def last_messages(
    dir_fd: int, directory: str, name: str, header: Header, commit: CommitRecord, count: int
) -> list[bytes] | None:
    """The bodies of the last ``count`` messages of the transcript at ``commit``, oldest first.

    All of them if it holds fewer. None when some are in a base generation
    (a fork's or a rewind's): the caller reads the transcript whole.

    Raises:
        CorruptSessionError: a record read is damaged, or the generation
            holds another number of messages than ``commit`` counts.
    """
    path = os.path.join(directory, name)
    stop = commit.msg_end
    fd = open_at(dir_fd, directory, name, os.O_RDONLY)
    try:
        window = _WINDOW
        while True:
            start = max(header.end, stop - window)
            data = os.pread(fd, stop - start, start)
            if len(data) != stop - start:
                raise CorruptSessionError(path, f"shorter than the {stop} bytes counted")
            read = _newest_first(path, header, data, start, count)
            if read is not None:
                break
            window *= 4
    except OSError as exc:
        refusal = refused(path, exc)
        raise exc if refusal is None else refusal from None
    finally:
        os.close(fd)
    found, replaced = read
    if len(found) < count:  # every message of the generation is in found
        if header.base is not None:
            return None
        if len(found) != commit.count:
            raise CorruptSessionError(
                path,
                f"{len(found)} messages where revision {commit.revision} counts {commit.count}",
            )
    found.reverse()
    first = commit.count - len(found)  # the position of found[0] in the transcript
    for position, body in reversed(replaced):  # oldest first: the newest stays
        if position >= commit.count:
            raise CorruptSessionError(
                path, f"a replacement names message {position}, past the transcript's end"
            )
        if position >= first:
            found[position - first] = body
    return found


def _newest_first(
    path: str, header: Header, data: bytes, offset: int, count: int
) -> tuple[list[bytes], list[tuple[int, bytes]]] | None:
    """Up to ``count`` message bodies from the end of ``data`` (at ``offset`` in the file).

    With them, the replacements read on the way (position and body), newest
    first. None when ``data`` holds fewer and does not start at a record
    (at the header's end): its first line may be cut, so a wider window is needed.
    """
    whole = offset == header.end
    found: list[bytes] = []
    replaced: list[tuple[int, bytes]] = []
    end = len(data)
    while end > 0 and len(found) < count:
        start = data.rfind(b"\n", 0, end - 1) + 1
        if start == 0 and not whole:
            return None
        record = parse_record(memoryview(data)[start : end - 1])
        if record is None:
            raise CorruptSessionError(path, f"damaged record at byte {offset + start} (checksum)")
        kind, body = record
        if kind == MESSAGE:
            found.append(body)
        elif kind == HEADER:
            raise CorruptSessionError(path, f"a second header at byte {offset + start}")
        elif kind != COMMIT:
            replaced.append(replacement_of(path, header, body, offset + start))
        end = start
    return found, replaced
