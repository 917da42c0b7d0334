"""What ``update_session``'s function may do to a session, decided without I/O."""

from __future__ import annotations

import inspect
from typing import Any

from ._merge import Authoritative
from ._model import Message, Session
from ._planned import copy_message, json_copy_of, with_values
from ._values import check_json, check_messages

__all__ = ["apply_update"]

#: What the store owns or the UI does: an update's function must leave them as they are.
_FIXED = ("id", "created_at", "revision", "forked_from", "forked_from_revision")


def _copy(session: Session) -> Session:
    """A deep copy of ``session``, for a function to change without touching what is kept."""
    messages = list(map(copy_message, session.messages))
    return with_values(
        session, messages, json_copy_of(session.metadata), json_copy_of(session.runtime_state)
    )


def _unchanged_prefix(before: list[Message], after: list[Message]) -> int:
    count = 0
    for old, new in zip(before, after, strict=False):
        if type(new) is not Message or old != new:
            break
        count += 1
    return count


def apply_update(session: Session, fn: Any) -> tuple[Session, bool]:
    """``fn`` applied to a copy of ``session``: the copy, and whether ``fn`` changed anything.

    ``fn`` may change ``messages``, ``metadata`` and ``runtime_state``; the
    result is checked like a save's. ``updated_at`` is the store's: a change
    of it alone is no change, and the write sets it.

    Raises:
        Whatever ``fn`` raises.
        TypeError: ``fn`` returned an awaitable (an ``async def`` function).
        ValueError: ``fn`` changed the authoritative group, ``id``,
            ``created_at``, ``revision`` or the lineage.
        TypeError, ValueError: the result holds a value that would not read
            back equal (see :func:`~._values.check_json`).
    """
    work = _copy(session)
    returned = fn(work)
    if inspect.isawaitable(returned):
        if inspect.iscoroutine(returned):
            returned.close()  # never to be awaited: no "never awaited" warning
        raise TypeError(
            "update_session's function returned an awaitable: it runs in a worker thread,"
            " so it must be a plain function (an async one would change nothing)"
        )
    if type(work) is not Session:  # pragma: no cover - fn changes the object it is given
        raise TypeError("update_session's function must change the session in place")
    if Authoritative.of(work) != Authoritative.of(session):
        raise ValueError(
            "update_session may not change title, title_version, pinned or metadata_version:"
            " they are the UI's (use set_title or set_pinned)"
        )
    for name in _FIXED:
        if getattr(work, name) != getattr(session, name):
            raise ValueError(f"update_session may not change {name}: it is the store's")
    if not isinstance(work.messages, list):
        raise TypeError(f"messages must be a list, got {type(work.messages).__name__}")
    for name in ("metadata", "runtime_state"):
        if not isinstance(getattr(work, name), dict):
            raise TypeError(f"{name} must be a dict, got {type(getattr(work, name)).__name__}")
    work.updated_at = session.updated_at  # the store's to set, when it writes
    same = _unchanged_prefix(session.messages, work.messages)
    if (
        same == len(session.messages) == len(work.messages)
        and work.metadata == session.metadata
        and work.runtime_state == session.runtime_state
    ):
        return work, False
    check_messages(work.messages, same)
    check_json(work.metadata, "metadata")
    check_json(work.runtime_state, "runtime_state")
    return work, True
