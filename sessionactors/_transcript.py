"""What an actor knows of its session's transcript: the messages it last wrote or read.

It lets a save append only its new messages, and spares checking again
the messages it shares with what was written, without reading storage.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import attrs

from ._model import Message, edited_since
from ._steps import Version

__all__ = ["KnownTranscript", "TranscriptMemory"]

_stamp_of = operator.attrgetter("_stamp")


@attrs.define
class KnownTranscript:
    """A transcript as this actor last wrote or read it, to spot an unchanged prefix.

    ``version`` names that transcript on storage (the file backend: its
    journal, counted size and message count); the planner trusts it
    only while storage still shows that version. ``messages`` holds the very
    Message objects, so none can be replaced by another at the same address;
    every stamp below ``mark`` means none had a field assigned since.
    """

    version: tuple[Any, ...]
    messages: list[Message]
    mark: int

    def prefix(self, messages: Sequence[Message]) -> int:
        """The known transcript's length if ``messages`` starts with it, else 0.

        It starts with it when no known message had a field assigned since
        and ``messages`` begins with those very objects or with equal ones
        (another caller's copy). Identical objects compare in C without
        calling ``__eq__``, so the common case costs a pointer comparison a
        message.
        """
        count = len(self.messages)
        if len(messages) < count or not self.unchanged():
            return 0
        if messages[:count] != self.messages:
            return 0
        return count

    def unchanged(self) -> bool:
        """Whether no known message had a field assigned since it was written or read."""
        if not edited_since(self.mark):
            return True
        return max(map(_stamp_of, self.messages), default=0) <= self.mark

    def persisted(self, incoming: Sequence[Message]) -> list[Message] | None:
        """For a checkpoint: ``incoming``'s own objects for the known transcript.

        None when ``incoming`` does not start with it; the planner then reads
        the persisted transcript. Either way no caller gets another's objects.
        """
        count = len(self.messages)
        if self.prefix(incoming) != count:
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

    def checked_prefix(self, messages: Sequence[Message]) -> int:
        """How many leading ``messages`` are known unchanged since written (checked then)."""
        return 0 if self.known is None else self.known.prefix(messages)

    def current(self, version: Version | None) -> KnownTranscript | None:
        """The known transcript if it is the one persisted at ``version``."""
        known = self.known
        if known is None or version is None or known.version != version:
            return None
        return known

    def remember(self, version: Version | None, messages: list[Message], mark: int) -> None:
        self.known = None if version is None else KnownTranscript(version, list(messages), mark)

    def forget(self) -> None:
        self.known = None
