"""What an actor knows of its session's transcript: the messages it last wrote or read.

It lets a save write only its new messages and the ones it changed, and
spares checking again the messages it shares with what was written,
without reading storage.
"""

from __future__ import annotations

import operator
from typing import Any

import attrs

from ._model import Message, edit_mark, edited_since
from ._steps import Version
from ._written_values import WrittenValues

__all__ = ["KnownTranscript", "TranscriptMemory"]

_stamp_of = operator.attrgetter("_stamp")


def _unedited(messages: list[Message], mark: int) -> bool:
    """Whether none of ``messages`` had a field assigned since ``mark`` was taken."""
    return not edited_since(mark) or max(map(_stamp_of, messages), default=0) <= mark


#: How many copies of a transcript one actor remembers (cleared when full), and
#: how many messages they may hold in all: a copy keeps its caller's objects
#: alive, so an actor remembers fewer copies of a longer transcript.
_COPIES_KEPT = 256
_COPIES_MESSAGES = 32_768


@attrs.define
class KnownTranscript:
    """A transcript as this actor last wrote or read it, to spot an unchanged prefix.

    ``version`` names that transcript on storage (the file backend: its
    journal, counted size and message count); the planner trusts it
    only while storage still shows that version. ``messages`` holds the very
    Message objects, so none can be replaced by another at the same address;
    every stamp below ``mark`` means none had a field assigned since.

    ``values``: what the messages held when written or read, which tells
    a nested dict or list changed in place since (no stamp does).

    ``copies``: other callers' lists found equal to ``messages`` (each task
    holding its own copy of the session), by the id of their first message,
    with the mark taken when they were found equal. A list saved again holds
    the very objects of its copy, which compare in C by identity, so it costs
    a pointer comparison a message, not an ``__eq__``; a copy none of whose
    messages had a field assigned since is equal to the transcript still.
    """

    version: tuple[Any, ...]
    messages: list[Message]
    mark: int
    values: WrittenValues
    copies: dict[int, tuple[list[Message], int]] = attrs.Factory(dict)

    def prefix(self, messages: list[Message]) -> int:
        """The known transcript's length if ``messages`` starts with it, else 0.

        It starts with it when no known message had a field assigned since
        and ``messages`` begins with those very objects or with equal ones
        (another caller's copy). Identical objects compare in C without
        calling ``__eq__``, so the common case costs a pointer comparison a
        message, and so does a copy found equal before.
        """
        count = len(self.messages)
        if len(messages) < count or not self.unchanged():
            return 0
        head = messages[:count]
        if not head or head[0] is self.messages[0]:
            return count if head == self.messages else 0
        found = self.copies.get(id(head[0]))
        if found is not None and _unedited(*found) and head == found[0]:
            return count
        if head != self.messages:
            return 0
        self.add_copy(head, edit_mark())
        return count

    def changes(self, messages: list[Message]) -> list[int] | None:
        """The positions of the known transcript where ``messages`` holds another message now.

        ``[]`` when ``messages`` starts with the known transcript. None when
        it is shorter, or changes more than half of it (writing it all is
        then about as cheap). A position is changed unless its known message
        had no field assigned since and ``messages`` holds it there (or an
        equal copy).
        """
        count = len(self.messages)
        if self.prefix(messages) == count:
            return []
        if len(messages) < count:
            return None
        mark = self.mark
        most = count // 2
        changed: list[int] = []
        for index, (mine, known) in enumerate(zip(messages[:count], self.messages, strict=True)):
            if known._stamp > mark or (mine is not known and mine != known):
                if len(changed) == most:
                    return None
                changed.append(index)
        return changed

    def add_copy(self, messages: list[Message], mark: int) -> None:
        kept = min(_COPIES_KEPT, max(1, _COPIES_MESSAGES // max(1, len(messages))))
        if len(self.copies) >= kept:
            self.copies.clear()
        self.copies[id(messages[0])] = (messages, mark)

    def carry_copies(self, before: KnownTranscript) -> None:
        """``before`` held this very transcript: its copies, and its messages, are copies of it."""
        self.copies = before.copies
        if before.messages and before.messages[0] is not self.messages[0]:
            self.add_copy(before.messages, before.mark)

    def unchanged(self) -> bool:
        """Whether no known message had a field assigned since it was written or read."""
        return _unedited(self.messages, self.mark)

    def persisted(self, incoming: list[Message]) -> list[Message] | None:
        """For a checkpoint: ``incoming``'s own objects for the known transcript.

        None when ``incoming`` does not start with it, or holds a value of it
        changed in place; the planner then reads the persisted transcript.
        Either way no caller gets another's objects.
        """
        count = len(self.messages)
        if self.prefix(incoming) != count or self.values.moved(incoming, []):
            return None
        return list(incoming[:count])


@attrs.define
class TranscriptMemory:
    """What one actor last wrote or read of its session's transcript (None: nothing trusted).

    It spares checking and re-writing the messages a save shares with it:
    see :class:`KnownTranscript`. It is trusted for writing only
    while the storage shows the same version.
    """

    known: KnownTranscript | None = None

    def to_check(self, messages: list[Message]) -> tuple[list[int], int]:
        """What of ``messages`` was not checked when written: positions, and where the rest starts.

        The messages known unchanged since they were written were checked
        then; all of them (``([], 0)``) when little of the transcript is known.
        """
        changes = None if self.known is None else self.known.changes(messages)
        if changes is None:
            return [], 0
        assert self.known is not None
        return changes, len(self.known.messages)

    def current(self, version: Version | None) -> KnownTranscript | None:
        """The known transcript if it is the one persisted at ``version``."""
        known = self.known
        if known is None or version is None or known.version != version:
            return None
        return known

    def remember(
        self,
        version: Version | None,
        messages: list[Message],
        mark: int,
        *,
        values: WrittenValues | None = None,
        same_as: KnownTranscript | None = None,
    ) -> None:
        """``messages`` are persisted at ``version``.

        ``values``: what they held when written, taken before the write
        (their caller may change them meanwhile); None: what they hold now.
        ``same_as``: what was known, equal to them.
        """
        if version is None:
            self.known = None
            return
        if values is None:
            values = WrittenValues.of(messages)
        self.known = KnownTranscript(version, list(messages), mark, values)
        if same_as is not None:
            self.known.carry_copies(same_as)

    def forget(self) -> None:
        self.known = None
