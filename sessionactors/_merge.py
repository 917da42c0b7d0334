"""The merge rule and the UI edits: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

import attrs

from ._model import MAX_VERSION

__all__ = ["Authoritative", "merge_authoritative", "merge_transcript", "pin", "retitle"]


class _HasGroup(Protocol):
    title: str
    title_version: int
    pinned: bool
    metadata_version: int


@attrs.frozen
class Authoritative:
    """The UI-owned metadata, decided as one group by ``metadata_version``."""

    title: str
    title_version: int
    pinned: bool
    metadata_version: int

    @classmethod
    def of(cls, holder: _HasGroup) -> Authoritative:
        """The group a session (or anything holding the four fields) carries."""
        return cls(holder.title, holder.title_version, holder.pinned, holder.metadata_version)

    def assign(self, holder: _HasGroup) -> None:
        """Set the four fields of ``holder`` (a caller's session, in place)."""
        holder.title = self.title
        holder.title_version = self.title_version
        holder.pinned = self.pinned
        holder.metadata_version = self.metadata_version


def merge_authoritative(persisted: Authoritative | None, caller: Authoritative) -> Authoritative:
    """The group a runtime save writes.

    Only UI edits move ``metadata_version``, so a tie means the caller's copy
    was read from (or before) what is on disk: the disk wins. The caller wins
    only with a strictly newer version, e.g. when it carries an edit itself.
    """
    if persisted is None or caller.metadata_version > persisted.metadata_version:
        return caller
    return persisted


def clean_title(title: object) -> str:
    """``title`` stripped, as a UI edit stores it.

    Raises:
        TypeError: ``title`` is not a str.
        ValueError: ``title`` is empty once stripped, or not valid UTF-8.
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    title = title.strip()
    if not title:
        raise ValueError("title must not be empty")
    try:
        title.encode()
    except UnicodeEncodeError:
        raise ValueError(f"title {title!r} holds a lone surrogate, not UTF-8") from None
    return title


def check_pinned(pinned: object) -> bool:
    """``pinned`` if it is a bool.

    Raises:
        TypeError: it is not.
    """
    if not isinstance(pinned, bool):
        raise TypeError(f"pinned must be a bool, got {type(pinned).__name__}")
    return pinned


def retitle(group: Authoritative, title: str) -> Authoritative | None:
    """The group after a UI rename, or None when the title does not change.

    Raises:
        TypeError, ValueError: see :func:`clean_title`; ValueError also when
            ``metadata_version`` cannot move further.
    """
    title = clean_title(title)
    if title == group.title:
        return None
    return Authoritative(
        title=title,
        title_version=group.title_version + 1,
        pinned=group.pinned,
        metadata_version=_next_metadata_version(group),
    )


def pin(group: Authoritative, pinned: bool) -> Authoritative | None:
    """The group after a UI pin or unpin, or None when nothing changes.

    Raises:
        TypeError: ``pinned`` is not a bool.
        ValueError: ``metadata_version`` cannot move further.
    """
    if check_pinned(pinned) == group.pinned:
        return None
    return attrs.evolve(group, pinned=pinned, metadata_version=_next_metadata_version(group))


def _next_metadata_version(group: Authoritative) -> int:
    """The version a UI edit of ``group`` makes (``title_version`` never exceeds it).

    Raises:
        ValueError: ``metadata_version`` is already the largest every backend
            stores: the edit would write a session no store could save again.
    """
    if group.metadata_version >= MAX_VERSION:
        raise ValueError(
            f"metadata_version is {group.metadata_version}, the largest there may be:"
            " a UI edit cannot move it further"
        )
    return group.metadata_version + 1


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


M = TypeVar("M", bound=_HasId)


def merge_transcript(persisted: Sequence[M], incoming: Iterable[M]) -> list[M]:
    """The append-safe transcript of a checkpoint.

    Every persisted message stays, in its persisted order; incoming messages
    whose id is not persisted follow, in their order. The result is never
    shorter than ``persisted``.
    """
    known = {message.id for message in persisted}
    merged = list(persisted)
    merged.extend(message for message in incoming if message.id not in known)
    return merged
