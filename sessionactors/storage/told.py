"""What a watch feed remembers having told: the latest revision of a bounded set of sessions."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["ToldRevisions"]

_Told = TypeVar("_Told")


class ToldRevisions(Generic[_Told]):
    """The revision a watch last told of each session, for the ``KEPT`` sessions told of last.

    A feed consults it to tell no revision twice and to notice a session
    deleted and made again between two of its reads. A watch may run for
    days over a root of many sessions: it remembers the sessions told of
    most recently, so what it holds does not grow with every session it ever
    saw. A session forgotten is one unchanged while ``KEPT`` others changed;
    for it alone, a delete and re-creation between two reads is not told as
    such, and a revision read again (after a lost connection, or from an
    index built anew) may be told twice.
    """

    KEPT = 10_000

    def __init__(self) -> None:
        self._told: collections.OrderedDict[str, _Told] = collections.OrderedDict()

    def get(self, session_id: str) -> _Told | None:
        return self._told.get(session_id)

    def tell(self, session_id: str, told: _Told) -> None:
        """``told`` is what was told of ``session_id`` last."""
        self._told[session_id] = told
        self._told.move_to_end(session_id)
        if len(self._told) > self.KEPT:
            self._told.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """``session_id`` was told deleted."""
        self._told.pop(session_id, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._told)
