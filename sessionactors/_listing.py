"""What a page of ``list_sessions`` holds: the order, the filters and the cursor, without I/O."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime

import attrs

from ._model import SessionSummary

__all__ = ["ListQuery", "order_key"]


def order_key(summary: SessionSummary) -> tuple[datetime, str]:
    """The listing's order, newest first: (``updated_at``, ``id``) descending."""
    return (summary.updated_at, summary.id)


def _check_cursor(before: object) -> None:
    """Refuse a ``before`` no page can start after (one a listing gave always can)."""
    if not isinstance(before, SessionSummary):
        raise TypeError(f"before must be a SessionSummary, got {type(before).__name__}")
    if type(before.id) is not str:
        raise TypeError(f"before.id must be a str, got {type(before.id).__name__}")
    if not isinstance(before.updated_at, datetime):
        raise TypeError(
            f"before.updated_at must be a datetime, got {type(before.updated_at).__name__}"
        )
    if before.updated_at.utcoffset() is None:
        raise ValueError(
            f"before.updated_at must be timezone-aware, got naive {before.updated_at!r}"
        )


@attrs.frozen
class ListQuery:
    """One page: at most ``limit`` summaries after ``before`` that pass the filters.

    ``title_fold`` is the casefolded ``title_contains``; ``before`` the
    (``updated_at``, ``id``) of the summary the page starts strictly after.
    """

    limit: int | None = None
    before: tuple[datetime, str] | None = None
    pinned: bool | None = None
    title_fold: str | None = None

    @classmethod
    def of(
        cls,
        *,
        limit: int | None,
        before: SessionSummary | None,
        pinned: bool | None,
        title_contains: str | None,
    ) -> ListQuery:
        """The query of a ``list_sessions`` call, its arguments checked.

        Raises:
            TypeError, ValueError: an argument of the wrong type, or a
                ``limit`` below 1.
        """
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be None or a positive int, got {limit!r}")
        if before is not None:
            _check_cursor(before)
        if pinned is not None and type(pinned) is not bool:
            raise TypeError(f"pinned must be None or a bool, got {type(pinned).__name__}")
        if title_contains is not None and not isinstance(title_contains, str):
            raise TypeError(f"title_contains must be a str, got {type(title_contains).__name__}")
        return cls(
            limit=limit,
            before=None if before is None else order_key(before),
            pinned=pinned,
            title_fold=None if title_contains is None else title_contains.casefold(),
        )

    def admits(self, summary: SessionSummary) -> bool:
        """Whether ``summary`` belongs on this page, the limit aside."""
        if self.pinned is not None and summary.pinned != self.pinned:
            return False
        if self.title_fold is not None and self.title_fold not in summary.title.casefold():
            return False
        return self.before is None or order_key(summary) < self.before

    def page(self, summaries: Iterable[SessionSummary]) -> list[SessionSummary]:
        """The page among ``summaries`` (any order), newest first."""
        admitted = filter(self.admits, summaries)
        if self.limit is None:
            return sorted(admitted, key=order_key, reverse=True)
        return heapq.nlargest(self.limit, admitted, key=order_key)
