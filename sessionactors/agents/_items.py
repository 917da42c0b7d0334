"""The mapping between the Agents SDK's items and the session's messages.

README's "With the OpenAI Agents SDK" shows it as a table.

An item (``TResponseInputItem``: a JSON object) is one message, whole:

* ``id``: a fresh random id (32 hex digits, 128 random bits), unique across
  processes, so a checkpoint appends each item exactly once whoever else adds
  at the same time;
* ``role``: the item's ``"role"`` if it is a string, else its ``"type"``, else
  ``"item"`` (for a reader of the session; the item itself is in ``content``);
* ``content``: a copy of the item, read back equal (the store refuses, with
  nothing written, an item that is not plain JSON rather than convert it);
* ``created_at``: when it was added (UTC); ``extra``: empty.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime, timezone
from typing import Any

from .._model import Message

__all__ = ["item_of", "message_of"]


def message_of(item: Any, *, added_at: datetime | None = None) -> Message:
    """The message holding ``item``: a copy, so changing the item afterwards changes nothing."""
    role = item.get("role") if isinstance(item, dict) else None
    if not isinstance(role, str):
        kind = item.get("type") if isinstance(item, dict) else None
        role = kind if isinstance(kind, str) else "item"
    return Message(
        # random's generator: seeded from the OS once per process (and anew
        # in a forked child), it costs no system call per item, as uuid4 does.
        id=f"{random.getrandbits(128):032x}",
        role=role,
        content=copy.deepcopy(item),
        created_at=added_at or datetime.now(timezone.utc),
    )


def item_of(message: Message) -> Any:
    """The item a message holds (the message was loaded for this call: the caller owns it)."""
    return message.content
