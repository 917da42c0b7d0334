"""AgentsSession: the Agents SDK's ``Session`` protocol over a ``sessionactors.aio`` store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit

from .._errors import SessionNotFoundError
from .._ids import validate_session_id
from .._model import Message, Session
from ..aio import SessionStore
from ._items import item_of, message_of

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["AgentsSession"]


class AgentsSession:
    """A conversation's items, kept as the messages of one session of an aio store.

    It satisfies the OpenAI Agents SDK's ``Session`` protocol, so
    ``Runner.run(agent, input, session=AgentsSession(store, "chat-1"))``
    reads the conversation before a turn and adds the turn's items after.
    Each item is one message (the mapping is in ``sessionactors.agents._items``
    and README's "With the OpenAI Agents SDK") and reads back equal to the item given.

    Safe with other writers, in this process or others, on the same store root:

    * ``add_items`` is one checkpoint carrying only the new items, each
      under a fresh unique message id: the store appends the messages whose
      id is not persisted, so adds from several processes interleave whole
      items and lose none. It is the store's ``_checkpoint_new``, which
      gives no transcript back: while the session's actor knows the
      persisted transcript, an add reads none of it.
    * ``get_items(limit)`` reads and decodes the latest ``limit`` messages
      only (the store's ``_load_tail``): a turn costs what it reads, not the
      conversation's length.
    * ``pop_item`` and ``clear_session`` are each one ``update_session``:
      atomic against every other writer.
    * The UI's title and pin are never clobbered (the store's merge rule).
      The session's ``metadata`` and ``runtime_state`` are written back as
      this object last read them, as any runtime save does.

    Args:
        store: an open ``sessionactors.aio`` store.
        session_id: the session holding the conversation (created by the
            first add).
        session_settings: the SDK's settings (or a dict of their fields, as
            the SDK's own sessions take); ``limit`` is the default of
            ``get_items`` (None: every item).

    Raises:
        InvalidSessionIdError: ``session_id`` cannot name a session.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.session_id = validate_session_id(session_id)
        # As the SDK's own sessions take it: a dict of its fields too.
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(session_settings)
        )
        self._store = store
        # The session's fields other than its messages, as last read: what an
        # add writes beside its items (the store keeps the persisted messages).
        self._fields: Session | None = None

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The conversation's items, oldest first; with a limit, the latest ``limit``.

        As the SDK's ``SQLiteSession``: ``limit`` None takes
        ``session_settings.limit``; 0 gives no item; a negative limit, all.
        """
        wanted = resolve_session_limit(limit, self.session_settings)
        # With a limit only the latest items are read and decoded: a turn
        # costs what it reads, not the conversation's length.
        session = await self._load(None if wanted is None or wanted < 0 else wanted)
        if session is None:
            return []
        return [item_of(message) for message in session.messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` to the conversation, durably (per the store's durability).

        Raises:
            TypeError, ValueError: an item is not plain JSON; nothing is added.
        """
        if not items:
            return
        messages = [message_of(item) for item in items]
        fields = self._fields or await self._load(0) or Session(id=self.session_id)
        await self._store._checkpoint_new(attrs.evolve(fields, messages=messages))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the conversation's last item and return it; None if there is none."""
        popped = await self._rewrite(_pop_last)
        return None if popped is None else item_of(popped)

    async def clear_session(self) -> None:
        """Remove every item of the conversation (the session's title and pin stay)."""
        await self._rewrite(_clear)

    async def _load(self, last: int | None = None) -> Session | None:
        """The session (with ``last``: holding its last ``last`` messages only)."""
        if last is None:
            session = await self._store.load_session(self.session_id)
        else:
            session = await self._store._load_tail(self.session_id, last)
        self._fields = None if session is None else attrs.evolve(session, messages=[])
        return session

    async def _rewrite(self, change: Any) -> Message | None:
        """Apply ``change`` to the persisted session atomically; what it returned (a message)."""
        removed: list[Message | None] = [None]

        def apply(session: Session) -> None:
            removed[0] = change(session)

        try:
            await self._store.update_session(self.session_id, apply)
        except SessionNotFoundError:
            return None
        return removed[0]


def _pop_last(session: Session) -> Message | None:
    return session.messages.pop() if session.messages else None


def _clear(session: Session) -> None:
    session.messages.clear()
