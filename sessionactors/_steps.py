"""The steps a planner asks of a storage, and what a storage answers: plain values.

A storage executes each step durably and reports what it did; it decides
nothing about merging or which messages are new (``_plan.py`` does).
"""

from __future__ import annotations

import attrs

from ._model import Session
from .storage.protocol import Head, Stored, Version

__all__ = [
    "AppendUsage",
    "DeleteSession",
    "Head",
    "ReadHead",
    "ReadSession",
    "ReadUsageLog",
    "SessionExists",
    "Step",
    "Stored",
    "Version",
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
    """Answer: the session as :class:`Stored`, or None when there is none."""


@attrs.frozen
class ReadUsageLog(Step):
    """Answer: every complete token-usage record, in order."""


@attrs.frozen
class WriteSnapshot(Step):
    """Write ``session`` whole, durably. Answer: the :class:`Version` now persisted.

    ``append_from``: the persisted transcript is ``session.messages[:append_from]``
    unchanged, so only the messages after it are new (None: write them all).
    ``trusted``: the persisted transcript is the one this actor last wrote or
    read; otherwise the storage looks at what it replaces (it may be damage
    to keep, or another process's leftovers).
    """

    session: Session
    append_from: int | None
    trusted: bool


@attrs.frozen
class WriteMetadata(Step):
    """Write ``session``'s authoritative group and ``updated_at``; the transcript stays."""

    session: Session


@attrs.frozen
class AppendUsage(Step):
    """Append whole token-usage lines (compact JSON, each ending in a newline)."""

    data: bytes


@attrs.frozen
class DeleteSession(Step):
    """Remove the session and its log. Answer: whether a session existed."""
