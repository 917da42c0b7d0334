"""Reading a session's log (format 4, or 3): its generations, records, revisions and transcripts.

A session directory holds one or more *generations* of its log::

    log.<seq>.<gen>.jsonl     the session's own; the highest ``seq`` is current
    link.<gen>.jsonl          another session's generation, hard-linked by a fork

Each starts with a header record naming its ``gen`` id, its ``base`` (the
generation and byte offset whose messages its transcript starts with: a
rewind or a fork) and its ``previous`` generation (where the revisions
before its first one are). Then come message, replacement and commit
records, appended; a commit is one revision: every field of the session but
the messages, the message count and where the messages end. The transcript
at a commit is the base's messages, then this generation's messages before
it, with each replacement before it applied in order (a replacement puts a
message at a position the transcript had then). Format 3, which earlier
versions wrote, is format 4 without replacements. Bytes after the last
whole commit are what a crash left of a write: not counted, cut off by the
next append.

The counted part of a generation never changes (appends go after it, a
crash's tail is cut after it), so a fork that links a generation and
records the offset it counts is never changed by later writes of either.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs
import orjson

from ..._errors import CorruptSessionError, UnsupportedFormatError
from ..._merge import Authoritative
from ..._model import Revision, Session, SessionSummary, converter, structure_session
from ..._util import last
from ..protocol import Head, Version
from .durable import open_at, read_prefix, refused
from .records import COMMIT, HEADER, MESSAGE, parse_record, parse_replacement

__all__ = [
    "FORMAT",
    "CommitRecord",
    "Generation",
    "Header",
    "Listing",
    "decoded_session",
    "gen_name",
    "link_name",
    "list_log",
    "parse_gen",
    "read_generation",
    "read_header",
    "read_tip",
    "replacement_of",
    "session_at",
    "transcript",
    "version_of",
]

FORMAT = 4
#: The formats of a log this version reads: 3 is 4 without replacement records.
_LOG_FORMATS = (3, FORMAT)
_GEN_PREFIX = "log."
_LINK_PREFIX = "link."
_SUFFIX = ".jsonl"
_TAIL = 8192  # bytes read from a log's end to find its last commit, doubled until found


def gen_name(seq: int, gen: str) -> str:
    return f"{_GEN_PREFIX}{seq}.{gen}{_SUFFIX}"


def link_name(gen: str) -> str:
    return f"{_LINK_PREFIX}{gen}{_SUFFIX}"


def _parse_name(name: str) -> tuple[int | None, str] | None:
    """``(seq, gen)`` of an own generation, ``(None, gen)`` of a link, None for other names."""
    if not name.endswith(_SUFFIX):
        return None
    stem = name[: -len(_SUFFIX)]
    if stem.startswith(_LINK_PREFIX):
        gen = stem[len(_LINK_PREFIX) :]
        return (None, gen) if _is_gen_id(gen) else None
    if stem.startswith(_GEN_PREFIX):
        seq, _, gen = stem[len(_GEN_PREFIX) :].partition(".")
        if seq.isdigit() and seq.isascii() and _is_gen_id(gen):
            return int(seq), gen
    return None


def parse_gen(name: str) -> str | None:
    """The generation id of a log file's name (own or linked), None for any other name."""
    parsed = _parse_name(name)
    return None if parsed is None else parsed[1]


def _is_gen_id(gen: str) -> bool:
    return len(gen) == 32 and all(c in "0123456789abcdef" for c in gen)


@attrs.frozen
class Listing:
    """The log files of a session directory: its own generations by ``seq``, and links."""

    own: dict[str, tuple[int, str]]  # gen -> (seq, file name)
    links: dict[str, str]  # gen -> file name

    @property
    def current(self) -> str | None:
        """The file of the current generation (the highest ``seq``), None if there is none."""
        if not self.own:
            return None
        return max(self.own.values())[1]

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.own.values()] + list(self.links.values())

    def file_of(self, gen: str) -> str | None:
        own = self.own.get(gen)
        return own[1] if own is not None else self.links.get(gen)


def list_log(dir_fd: int) -> Listing:
    """The log files in the open directory ``dir_fd``."""
    own: dict[str, tuple[int, str]] = {}
    links: dict[str, str] = {}
    # Every entry named like a generation, a directory or a link too: passed
    # over, it would let an older generation (or none) read as the session.
    # Opening it is refused (see :func:`.durable.open_at`, :func:`_read_error`).
    with os.scandir(dir_fd) as entries:
        found = [entry.name for entry in entries]
    for name in found:
        parsed = _parse_name(name)
        if parsed is None:
            continue
        seq, gen = parsed
        if seq is None:
            links[gen] = name
        else:
            own[gen] = (seq, name)
    return Listing(own, links)


@attrs.frozen
class Header:
    gen: str
    session: str
    base: tuple[str, int] | None  # (gen, offset): the transcript starts with its messages
    previous: str | None  # the generation of the revisions before ``first``
    first: int  # the revision of this generation's first commit
    depth: int  # how many bases deep its transcript reaches
    end: int  # where the header record ends
    format: int = FORMAT  # 3: it may hold no replacement record


@attrs.frozen
class CommitRecord:
    """One revision as its commit record holds it."""

    data: dict[str, Any]
    offset: int  # where the record starts
    end: int  # where it ends: the generation's counted size, if it is the last

    @property
    def revision(self) -> int:
        value: int = self.data["revision"]
        return value

    @property
    def count(self) -> int:
        value: int = self.data["count"]
        return value

    @property
    def msg_end(self) -> int:
        """Where this revision's last message of the generation ends (its header's end if none)."""
        value: int = self.data["msg_end"]
        return value

    @property
    def commit_bytes(self) -> int:
        """Bytes of commit and replacement records before this one in its generation."""
        value: int = self.data["cb"]
        return value

    @property
    def fields(self) -> dict[str, Any]:
        value: dict[str, Any] = self.data["session"]
        return value

    def head(self, name: str) -> Head:
        fields = self.fields
        return Head(
            Authoritative(
                fields["title"],
                fields["title_version"],
                fields["pinned"],
                fields["metadata_version"],
            ),
            version_of(name, self),
            self.revision,
            _datetime(fields["created_at"]),
            fields["forked_from"],
            fields["forked_from_revision"],
        )

    def summary(self) -> SessionSummary:
        fields = self.fields
        return SessionSummary(
            id=fields["id"],
            title=fields["title"],
            pinned=fields["pinned"],
            title_version=fields["title_version"],
            metadata_version=fields["metadata_version"],
            created_at=_datetime(fields["created_at"]),
            updated_at=_datetime(fields["updated_at"]),
            message_count=self.count,
            revision=self.revision,
            forked_from=fields["forked_from"],
        )

    def as_revision(self) -> Revision:
        fields = self.fields
        return Revision(
            revision=self.revision,
            kind=self.data["kind"],
            updated_at=_datetime(fields["updated_at"]),
            message_count=self.count,
            title=fields["title"],
            pinned=fields["pinned"],
            title_version=fields["title_version"],
            metadata_version=fields["metadata_version"],
        )


def _datetime(value: str) -> datetime:
    result: datetime = converter.structure(value, datetime)
    return result


def version_of(name: str, commit: CommitRecord) -> Version:
    """Names the transcript of ``commit``: its generation, where its messages end, its count.

    A commit of the metadata alone names the same transcript as the one before.
    """
    return (name, commit.msg_end, commit.count)


_COMMIT_KEYS: dict[str, type] = {
    "revision": int,
    "kind": str,
    "count": int,
    "msg_end": int,
    "cb": int,
    "session": dict,
}


@attrs.define
class Generation:
    """One generation read up to its counted end: its header, commits and message lines.

    Every record's checksum is checked when it is read; a commit's JSON is
    decoded (and checked) only when :attr:`commits` is first asked for. A
    load needs the last commit alone, read from the file's end, where a log
    that has grown by a commit a write holds hundreds: decoding them all
    was a fifth of a load's time.
    """

    name: str
    path: str
    header: Header
    #: Each commit record's body, and where the record starts and ends, in order.
    raw_commits: list[tuple[bytes, int, int]]
    #: Each message record's body and where the record ends, in order.
    messages: list[tuple[bytes, int]]
    end: int
    #: Each replacement record's position, message body and end, in order.
    replaced: list[tuple[int, bytes, int]] = attrs.Factory(list)
    _commits: list[CommitRecord] | None = None

    @property
    def commits(self) -> list[CommitRecord]:
        """Every commit, decoded (and checked) on the first call.

        Raises:
            CorruptSessionError: a commit that is not a revision.
        """
        if self._commits is None:
            self._commits = [
                _commit(self.path, body, start, stop) for body, start, stop in self.raw_commits
            ]
        return self._commits

    def messages_before(self, offset: int) -> list[bytes]:
        return [body for body, end in self.messages if end <= offset]

    def commit(self, revision: int) -> CommitRecord | None:
        for commit in self.commits:
            if commit.revision == revision:
                return commit
        return None


def _header(path: str, body: bytes, end: int) -> Header:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable header: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptSessionError(path, "the header is not a JSON object")
    fmt = data.get("format")
    if type(fmt) is int and fmt > FORMAT:
        raise UnsupportedFormatError(
            path,
            f"written in format {fmt}; this version of sessionactors reads formats 1 to"
            f" {FORMAT}: upgrade it to read this session",
        )
    base = data.get("base")
    ok = (
        fmt in _LOG_FORMATS
        and type(fmt) is int
        and isinstance(data.get("gen"), str)
        and isinstance(data.get("session"), str)
        and type(data.get("first")) is int
        and type(data.get("depth")) is int
        and (data.get("previous") is None or isinstance(data.get("previous"), str))
        and (
            base is None
            or (
                isinstance(base, list)
                and len(base) == 2
                and isinstance(base[0], str)
                and type(base[1]) is int
            )
        )
    )
    if not ok:
        raise CorruptSessionError(path, f"not a log header of format {FORMAT} or 3")
    return Header(
        data["gen"],
        data["session"],
        None if base is None else (base[0], base[1]),
        data["previous"],
        data["first"],
        data["depth"],
        end,
        data["format"],
    )


#: The fields of a commit's session, by their exact types (a bool is no int here).
_FIELD_KINDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "title": (str,),
    "title_version": (int,),
    "pinned": (bool,),
    "metadata_version": (int,),
    "created_at": (str,),
    "updated_at": (str,),
    "metadata": (dict,),
    "runtime_state": (dict,),
    "revision": (int,),
    "forked_from": (str, type(None)),
    "forked_from_revision": (int, type(None)),
}


def _commit(path: str, body: bytes, offset: int, end: int) -> CommitRecord:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable commit at byte {offset}: {exc}") from None
    not_a_revision = CorruptSessionError(path, f"the commit at byte {offset} is not a revision")
    if not isinstance(data, dict) or any(
        type(data.get(key)) is not kind for key, kind in _COMMIT_KEYS.items()
    ):
        raise not_a_revision
    # A head, a summary and a history entry are made of these fields without
    # structuring the whole session: each is checked here, as a load would.
    fields = data["session"]
    if any(type(fields.get(key)) not in kinds for key, kinds in _FIELD_KINDS.items()):
        raise not_a_revision
    try:
        _datetime(fields["created_at"])
        _datetime(fields["updated_at"])
    except (TypeError, ValueError):
        raise not_a_revision from None
    return CommitRecord(data, offset, end)


def _lines(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each whole line of ``data`` (``end`` past its newline)."""
    start = 0
    while True:
        newline = data.find(b"\n", start)
        if newline < 0:
            return
        yield start, newline + 1
        start = newline + 1


def read_generation(
    dir_fd: int, directory: str, name: str, session_id: str | None, end: int | None = None
) -> Generation:
    """The generation ``name`` up to ``end`` (None: its last whole commit).

    Every record before that end must be whole: a checksum that does not
    match there is damage. ``session_id``: the session it must belong to
    (None for another session's generation, linked by a fork).

    Raises:
        CorruptSessionError: damage in the counted part, no header, no
            commit, or the file is not this session's.
        FileNotFoundError: there is no such file.
    """
    path = os.path.join(directory, name)
    if end is None:
        end = _counted_end(dir_fd, directory, name)
    data = read_prefix(dir_fd, directory, name, end)
    if len(data) != end:
        raise CorruptSessionError(path, f"shorter than the {end} bytes counted")
    header: Header | None = None
    commits: list[tuple[bytes, int, int]] = []
    messages: list[tuple[bytes, int]] = []
    replaced: list[tuple[int, bytes, int]] = []
    for start, stop in _lines(data):
        record = parse_record(memoryview(data)[start : stop - 1])
        if record is None:
            raise CorruptSessionError(path, f"damaged record at byte {start} (checksum)")
        kind, body = record
        if header is None:
            if kind != HEADER:
                raise CorruptSessionError(path, "does not start with a header")
            header = _header(path, body, stop)
        elif kind == MESSAGE:
            messages.append((body, stop))
        elif kind == COMMIT:
            commits.append((body, start, stop))
        elif kind == HEADER:
            raise CorruptSessionError(path, f"a second header at byte {start}")
        else:
            replaced.append((*replacement_of(path, header, body, start), stop))
    if header is None or (data and not data.endswith(b"\n")):
        raise CorruptSessionError(path, "no whole header")
    if session_id is not None and header.session != session_id:
        raise CorruptSessionError(path, f"holds session {header.session!r}, not {session_id!r}")
    parsed = _parse_name(name)
    if parsed is None or parsed[1] != header.gen:
        raise CorruptSessionError(path, f"its header names generation {header.gen!r}")
    return Generation(name, path, header, commits, messages, end, replaced)


def replacement_of(path: str, header: Header, body: bytes, start: int) -> tuple[int, bytes]:
    """The position and message body of the replacement record ``body`` at byte ``start``."""
    if header.format < 4:
        raise CorruptSessionError(path, f"a replacement at byte {start} in a log of format 3")
    replacement = parse_replacement(body)
    if replacement is None:
        raise CorruptSessionError(path, f"the replacement at byte {start} names no position")
    return replacement


def _counted_end(dir_fd: int, directory: str, name: str) -> int:
    """Where the last whole commit of ``name`` ends."""
    return _last_commit(dir_fd, directory, name)[1]


def _last_commit(dir_fd: int, directory: str, name: str) -> tuple[int, int, bytes]:
    """The last whole commit of ``name``: where it starts and ends, and its JSON.

    Read from the file's end, in windows growing until one holds it.
    """
    path = os.path.join(directory, name)
    fd = open_at(dir_fd, directory, name, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        window = _TAIL
        while True:
            start = max(0, size - window)
            data = os.pread(fd, size - start, start)
            try:
                found = _find_last_commit(data, whole_first=start == 0)
            except _DamagedTail as damaged:
                raise CorruptSessionError(
                    path,
                    f"damaged record at byte {start + damaged.offset} (checksum),"
                    " after the last whole commit",
                ) from None
            if found is not None:
                begin, end, body = found
                return start + begin, start + end, body
            if start == 0:
                raise CorruptSessionError(path, "no whole commit: not a revision of a session")
            window *= 4
    except OSError as exc:
        raise _read_error(path, exc) from None
    finally:
        os.close(fd)


class _DamagedTail(Exception):
    """A whole line after the last commit that is no record: no crash leaves that."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _find_last_commit(data: bytes, *, whole_first: bool) -> tuple[int, int, bytes] | None:
    """The last whole commit record in ``data`` (start, end, JSON); its first line may be cut.

    A kill leaves whole records and at most one cut short (no newline) after
    the last commit; a whole line that fails its checksum is damage (the
    latest commit itself, perhaps), never a tail to ignore and cut.
    """
    end = data.rfind(b"\n") + 1  # a last line with no newline is torn: not counted
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1
        if start == 0 and not whole_first:
            return None  # this line may begin before the window
        record = parse_record(memoryview(data)[start : end - 1])
        if record is None:
            raise _DamagedTail(start)
        if record[0] == COMMIT:
            return start, end, record[1]
        if record[0] == HEADER:
            return None
        end = start
    return None


def transcript(
    dir_fd: int, directory: str, listing: Listing, generation: Generation, offset: int
) -> list[bytes]:
    """The message lines of the transcript at ``offset`` of ``generation``, its bases first."""
    own = generation.messages_before(offset)
    base = generation.header.base
    if base is None:
        lines = own
    else:
        gen, base_offset = base
        name = listing.file_of(gen)
        if name is None:
            raise CorruptSessionError(
                generation.path, f"its base generation {gen} is missing from the directory"
            )
        below = read_generation(dir_fd, directory, name, None, base_offset)
        lines = transcript(dir_fd, directory, listing, below, base_offset) + own
    if generation.replaced:
        _replace(generation, lines, len(lines) - len(own), offset)
    return lines


def _replace(generation: Generation, lines: list[bytes], below: int, offset: int) -> None:
    """Apply ``generation``'s replacements before ``offset`` to its transcript ``lines``.

    ``below``: how many of the lines its bases hold. A replacement names a
    position the transcript had when it was written.
    """
    ends = [end for _, end in generation.messages]
    for position, body, end in generation.replaced:
        if end > offset:
            return
        if position >= below + bisect.bisect_left(ends, end):
            raise CorruptSessionError(
                generation.path,
                f"the replacement ending at byte {end} names message {position}, past the"
                " transcript's end",
            )
        lines[position] = body


def session_at(
    dir_fd: int,
    directory: str,
    listing: Listing,
    generation: Generation,
    commit: CommitRecord,
    tail: int | None = None,
) -> Session:
    """The session as ``commit`` left it: its fields and transcript (its last ``tail``), decoded."""
    lines = transcript(dir_fd, directory, listing, generation, commit.offset)
    if len(lines) != commit.count:
        raise CorruptSessionError(
            generation.path,
            f"{len(lines)} messages where revision {commit.revision} counts {commit.count}",
        )
    return decoded_session(generation.path, commit, last(lines, tail))


def decoded_session(path: str, commit: CommitRecord, lines: Sequence[bytes]) -> Session:
    """The session of ``commit``'s fields and the message records ``lines``, decoded."""
    try:
        messages = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError as exc:
        raise CorruptSessionError(path, f"unreadable message: {exc}") from None
    return structure_session(path, {**commit.fields, "messages": messages})


def _read_error(path: str, exc: OSError) -> Exception:
    """What reading ``path`` raised: a refusal (a directory in place of a file), or ``exc``."""
    refusal = refused(path, exc)
    return exc if refusal is None else refusal


def read_header(dir_fd: int, directory: str, name: str) -> Header:
    """The header of the generation ``name`` (its first line only)."""
    path = os.path.join(directory, name)
    fd = open_at(dir_fd, directory, name, os.O_RDONLY)
    try:
        size = 4096
        while True:
            data = os.pread(fd, size, 0)
            newline = data.find(b"\n")
            if newline >= 0 or len(data) < size:
                break
            size *= 4
    except OSError as exc:
        raise _read_error(path, exc) from None
    finally:
        os.close(fd)
    if newline < 0:
        raise CorruptSessionError(path, "no whole header")
    record = parse_record(memoryview(data)[:newline])
    if record is None or record[0] != HEADER:
        raise CorruptSessionError(path, "does not start with a whole header")
    return _header(path, record[1], newline + 1)


def read_tip(
    dir_fd: int, directory: str, name: str, session_id: str, header: Header | None = None
) -> tuple[Header, CommitRecord]:
    """The header and the last whole commit of this session's generation ``name``.

    ``header``: its header, if read before (a header never changes).
    """
    path = os.path.join(directory, name)
    if header is None:
        header = read_header(dir_fd, directory, name)
    if header.session != session_id:
        raise CorruptSessionError(
            path,
            f"holds session {header.session!r}, not {session_id!r}: refused "
            "(a case- or normalization-insensitive filesystem?)",
        )
    offset, end, body = _last_commit(dir_fd, directory, name)
    return header, _commit(path, body, offset, end)
