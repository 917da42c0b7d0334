"""What a transcript's messages held when written: what tells a nested value changed in place.

A message's stamp tells a field assigned (``message.content = ...``), not a
dict or list inside it changed in place (``message.extra["k"] = 1``). Only
a comparison with the values written can tell that, so an actor keeps them.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs

from ._model import Message

__all__ = ["WrittenValues"]

#: What is kept of every empty dict or list: it is never handed out, so never changed.
_EMPTY_DICT: dict[str, Any] = {}
_EMPTY_LIST: list[Any] = []


def _kept(value: Any) -> Any:
    """``value`` as it is now, to compare with later: a JSON value's containers copied.

    Its strings and numbers are immutable, so they are shared rather than
    copied: what is kept costs the containers alone. Unlike
    ``_planned.json_copy_of``, every empty dict or list is one shared
    object: kept values are never handed out, and most extras are empty.
    """
    if isinstance(value, dict):
        return {key: _kept(item) for key, item in value.items()} if value else _EMPTY_DICT
    if isinstance(value, list):
        return list(map(_kept, value)) if value else _EMPTY_LIST
    return value


def _any_container(values: list[Any]) -> bool:
    """Whether any of ``values`` is a dict or a list (or a subclass of one)."""
    return any(issubclass(kind, (dict, list)) for kind in set(map(type, values)))


@attrs.define
class WrittenValues:
    """Each message's ``extra`` and ``content`` as written (or read), in transcript order.

    ``contents`` is None while no message's content is a dict or a list:
    a string or a number changes only by an assignment, which the stamp
    tells, so only the extras (always a dict) need comparing then.
    """

    extras: list[Any]
    contents: list[Any] | None

    @classmethod
    def of(cls, messages: list[Message]) -> WrittenValues:
        """The values of ``messages`` as they are now."""
        contents = [message.content for message in messages]
        extras = [_kept(message.extra) for message in messages]
        return cls(extras, list(map(_kept, contents)) if _any_container(contents) else None)

    def moved(self, messages: list[Message], changes: list[int]) -> list[int]:
        """Positions of the written transcript, but ``changes``, whose values in ``messages`` moved.

        ``messages`` starts with the written transcript but at ``changes``
        (its messages or equal copies, no field assigned since). The
        messages between two of ``changes`` compare as one list, in C: a
        string compares by identity, an extra or a content by value.
        """
        count = len(self.extras)
        head = messages[:count]
        # Each list of values now beside the one written. (A comprehension
        # reads an attribute faster than map with an attrgetter.)
        pairs = [([message.extra for message in head], self.extras)]
        if self.contents is not None:
            pairs.append(([message.content for message in head], self.contents))

        def same(start: int, stop: int) -> bool:
            if start == 0 and stop == count:  # the usual case: no slices to copy
                return all(now == then for now, then in pairs)
            return all(now[start:stop] == then[start:stop] for now, then in pairs)

        moved: list[int] = []
        bounds = [-1, *sorted(changes), count]
        for after, stop in itertools.pairwise(bounds):
            if not same(after + 1, stop):
                moved += [index for index in range(after + 1, stop) if not same(index, index + 1)]
        return moved

    def after(self, messages: list[Message], rewritten: list[int]) -> WrittenValues:
        """The values once ``messages`` is written over this transcript.

        Those of ``messages`` at the positions ``rewritten`` and after this
        transcript; these elsewhere (the messages there are as written).
        """
        count = len(self.extras)
        added = messages[count:]
        extras = self.extras + [_kept(message.extra) for message in added]
        for index in rewritten:
            extras[index] = _kept(messages[index].extra)
        if self.contents is not None:
            contents = self.contents + [_kept(message.content) for message in added]
            for index in rewritten:
                contents[index] = _kept(messages[index].content)
            return WrittenValues(extras, contents)
        touched = [messages[index].content for index in rewritten]
        touched += [message.content for message in added]
        if not _any_container(touched):
            return WrittenValues(extras, None)
        # The first content that is a container: all of them are kept from now on
        # (the untouched ones are immutable, as written).
        return WrittenValues(extras, [_kept(message.content) for message in messages])
