"""The steps a planner asks of a storage, and what a storage answers: plain values.

A storage executes each step durably and reports what it did; it decides
nothing about merging or which messages are new (``_plan.py`` does).
"""

from __future__ import annotations

import attrs

from ._model import Session, SessionSummary
from .storage.protocol import Commit, Head, Stored, Version

__all__ = [
    "AppendUsage",
    "Commit",
    "DeleteSession",
    "Head",
    "Publish",
    "ReadHead",
    "ReadHistory",
    "ReadRevision",
    "ReadSession",
    "ReadSource",
    "ReadUsageLog",
    "SessionExists",
    "Step",
    "Stored",
    "Version",
    "WriteFork",
    "WriteImport",
    "WriteMetadata",
    "WriteSnapshot",
]


class Step:
    """One thing a planner asks a storage to do, under the session's lock."""


@attrs.frozen
class ReadHead(Step):
    """Answer: the :class:`Head`, or None when there is no session."""


@attrs.frozen
class SessionExists(Step):
    """Answer: whether there is a session (cheaper than its head: nothing decoded)."""


@attrs.frozen
class ReadSession(Step):
    """Answer: the session as :class:`Stored`, or None when there is none.

    ``tail``: only the transcript's last ``tail`` messages are decoded and
    given (the version still names the whole transcript); None: all of them.
    """

    tail: int | None = None


@attrs.frozen
class ReadRevision(Step):
    """Answer: the session as ``revision`` left it (:class:`Stored`), or None when not kept."""

    revision: int


@attrs.frozen
class ReadHistory(Step):
    """Answer: the kept revisions from ``oldest`` on, newest first."""

    oldest: int


@attrs.frozen
class ReadSource(Step):
    """Answer: another session's :class:`Head` and its ``revision`` (None: latest), or None.

    The fork's source: the Stored is None when that revision is not kept.
    """

    source_id: str
    revision: int | None


@attrs.frozen
class ReadUsageLog(Step):
    """Answer: every complete token-usage record, in order."""


@attrs.frozen
class WriteSnapshot(Step):
    """Write ``session`` whole, durably, as a new revision. Answer: the :class:`Version` persisted.

    ``append_from``: the persisted transcript is ``session.messages[:append_from]``
    unchanged but at the positions ``replaced``, so only the messages there
    and after it are new (None: write them all).
    ``trusted``: the persisted transcript is the one this actor last wrote or
    read; otherwise the storage looks at what it replaces (it may be damage
    to keep, or another process's leftovers). ``transcript_of``: the
    messages are the transcript persisted at that version (a rewind's
    target), which the storage may reference rather than write again.
    """

    session: Session
    commit: Commit
    append_from: int | None
    trusted: bool
    transcript_of: Version | None = None
    replaced: tuple[int, ...] = ()


@attrs.frozen
class WriteMetadata(Step):
    """Write ``session``'s group and ``updated_at`` as a new revision; the transcript stays."""

    session: Session
    commit: Commit


@attrs.frozen
class WriteFork(Step):
    """Make this session, revision 1 of a fork. Answer: the :class:`Version` persisted.

    Its messages are ``source_id``'s transcript at ``transcript_of``, which the
    storage references or copies where it lies.
    """

    session: Session
    source_id: str
    transcript_of: Version | None


@attrs.frozen
class WriteImport(Step):
    """Make this session, revision 1, with its token-usage lines. Answer: the :class:`Version`.

    Both or neither: no reader ever sees the session without its records, nor
    records where there is no session, whatever crashes (``usage`` may be empty).
    """

    session: Session
    commit: Commit
    usage: bytes


@attrs.frozen
class AppendUsage(Step):
    """Append whole token-usage lines (compact JSON, each ending in a newline)."""

    data: bytes


@attrs.frozen
class DeleteSession(Step):
    """Remove the session and its log. Answer: whether a session existed."""


@attrs.frozen
class Publish(Step):
    """Tell listings and watchers what this hold of the lock changed (last, under the lock).

    ``summary``: the session as the hold left it (None: deleted), its latest
    revision of ``kind`` (None: no revision was written); ``usage``: token
    usage was appended. A storage keeping a listing index updates it, one
    with a change feed sends it; neither may fail the writes before it.
    """

    session_id: str
    summary: SessionSummary | None
    kind: str | None
    usage: bool
