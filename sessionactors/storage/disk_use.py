"""What a session takes on its backend's storage, in bytes, as ``sessionactors du`` shows it.

One record a session whatever the backend, so the command shows the files
and the rows alike: the bytes of the transcript its latest revision reads,
of the history kept for its older revisions, of its token-usage log, and
of anything else of it (leftovers of interrupted writes, damaged files kept
aside). Bytes that several sessions share (a fork's hard links) are counted
once, in one session's row; each sharer says how many bytes it shares, and
with whom.
"""

from __future__ import annotations

import attrs

__all__ = ["SessionBytes"]


@attrs.frozen
class SessionBytes:
    """The bytes of one session counted in its row, and those it shares with others."""

    session_id: str
    transcript: int
    history: int
    usage: int
    #: Leftovers of interrupted writes, damaged files kept aside, files of no known kind.
    other: int = 0
    #: Bytes of files this session holds that other sessions hold too (counted
    #: in this row or in another's: once in all).
    shared: int = 0
    #: The sessions it shares them with, sorted.
    shared_with: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """The bytes counted in this row: adding every row's counts each byte once."""
        return self.transcript + self.history + self.usage + self.other
