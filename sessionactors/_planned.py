"""The sessions a planner writes, made from checked values without checking them again."""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Any, Protocol

import attrs

from ._merge import Authoritative
from ._model import Message, Session, edit_mark
from .storage.protocol import Head

__all__ = [
    "Lineage",
    "copy_message",
    "group_of",
    "json_copy_of",
    "own_messages",
    "set_written",
    "with_group",
    "with_values",
]

_new = object.__new__
_set = object.__setattr__
#: Every field of a Session but the three that may change in place.
_SCALARS = tuple(
    field.name
    for field in attrs.fields(Session)
    if field.name not in ("messages", "metadata", "runtime_state")
)


class Lineage(Protocol):
    """What names where a session was forked from: a Session, or a storage's Head."""

    @property
    def forked_from(self) -> str | None: ...

    @property
    def forked_from_revision(self) -> int | None: ...


def with_group(
    session: Session, group: Authoritative, updated_at: datetime, lineage: Lineage | None
) -> Session:
    """A new Session: ``session`` with ``group``, ``updated_at``, ``lineage``; no validators run.

    ``revision`` is 0 until the write sets it; ``lineage`` is the persisted
    one (None: no session persisted, so no lineage).

    Every value is checked already (the save's copy when it was called, a
    session as read, a group from the merge rule or an edit's checks), and
    this runs for every save: ``attrs.evolve`` would check them all again at
    five times the cost. Every field is set here (``test_plan`` checks it
    against ``attrs.evolve``).
    """
    made: Session = _new(Session)
    _set(made, "id", session.id)
    _set(made, "created_at", session.created_at)
    _set(made, "messages", session.messages)
    _set(made, "metadata", session.metadata)
    _set(made, "runtime_state", session.runtime_state)
    set_written(made, group, updated_at, 0, lineage)
    return made


def with_values(
    session: Session,
    messages: list[Message],
    metadata: dict[str, Any],
    runtime_state: dict[str, Any],
) -> Session:
    """A new Session: every field of ``session`` but these three values; no validators run."""
    made: Session = _new(Session)
    for name in _SCALARS:
        _set(made, name, getattr(session, name))
    _set(made, "messages", messages)
    _set(made, "metadata", metadata)
    _set(made, "runtime_state", runtime_state)
    return made


def set_written(
    session: Session,
    group: Authoritative,
    updated_at: datetime,
    revision: int,
    lineage: Lineage | None,
) -> None:
    """Set what a write made of ``session`` (the store's checked values; no validators run)."""
    _set(session, "title", group.title)
    _set(session, "title_version", group.title_version)
    _set(session, "pinned", group.pinned)
    _set(session, "metadata_version", group.metadata_version)
    _set(session, "updated_at", updated_at)
    _set(session, "revision", revision)
    _set(session, "forked_from", None if lineage is None else lineage.forked_from)
    _set(session, "forked_from_revision", None if lineage is None else lineage.forked_from_revision)


def own_messages(prior: list[Message], incoming: list[Message]) -> list[Message]:
    """``prior`` if ``incoming`` starts with its very objects, else copies of it.

    Two callers never share a Message object: a checkpoint following another
    caller's save in one batch gets the persisted messages as new objects.
    """
    if len(incoming) >= len(prior) and all(map(operator.is_, incoming, prior)):
        return prior
    return list(map(copy_message, prior))


def json_copy_of(value: Any) -> Any:
    """A deep copy of a JSON value: its dicts and lists new (and plain), all else shared.

    Exact, whatever the value holds: a value not checked yet (a nested one
    changed in place since its save) is copied as it is, for the write's
    check to refuse, never converted on the way (an encoder would write
    NaN as null).
    """
    # Strings, numbers and None are immutable: shared as they are.
    if isinstance(value, dict):
        return {key: json_copy_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return list(map(json_copy_of, value))
    return value


def copy_message(message: Message) -> Message:
    """A deep copy of a checked message, without running its validators again."""
    copy: Message = _new(Message)
    _set(copy, "id", message.id)
    _set(copy, "role", message.role)
    _set(copy, "content", json_copy_of(message.content))
    _set(copy, "created_at", message.created_at)
    _set(copy, "extra", json_copy_of(message.extra))
    _set(copy, "_stamp", edit_mark())
    return copy


def group_of(current: Session | Head | None) -> Authoritative | None:
    if isinstance(current, Head):
        return current.group
    return None if current is None else Authoritative.of(current)
