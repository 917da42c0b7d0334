"""open_store and SessionStore for asyncio: the trio store's methods as asyncio awaitables."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .._errors import StoreClosedError
from .._model import Session, SessionSummary
from .._options import DEFAULT_HISTORY, Durability
from .._stats import StoreStatistics
from .._store import SessionStore as TrioSessionStore
from .._util import NoPublicConstructor
from .._values import copy_for_save, encode_record
from ._calls import Call, refuse_another_loop
from ._runs import MODES, Mode, TrioRun, enter_run, leave_run
from ._side import StoreSide
from ._watch import OpenWatch, watch_changes

__all__ = ["SessionStore", "open_store"]

T = TypeVar("T")


def _given(**options: Any) -> dict[str, Any]:
    """The keyword arguments the caller gave (None is every one's default, so it is left out).

    Leaving them out lets a method forward to a trio store that does not
    take the argument yet, as long as it is not used.
    """
    return {name: value for name, value in options.items() if value is not None}


class SessionStore(metaclass=NoPublicConstructor):
    """A session store for asyncio code; made by :func:`sessionactors.aio.open_store` only.

    Each method is the trio store's method of the same name, with the same
    arguments, behaviour and errors, as an asyncio awaitable: the call runs
    as a task of the trio run beside the loop, and its value or exception
    (the very object, never wrapped) comes back to the awaiting task.

    Cancelling an awaiting task keeps the store's promise: a call cancelled
    before its actor took it has no effect; one whose batch is running is
    waited for, so it took full effect (on the caller's objects too) when
    ``CancelledError`` lands.
    """

    def __init__(self, run: TrioRun, side: StoreSide, store: TrioSessionStore) -> None:
        self._run = run
        self._side = side
        self._store = store
        self._closed = False

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._closed:
            raise StoreClosedError("the store is closed")
        refuse_another_loop(self._run)
        call = Call(self._run, fn, args)
        self._side.submit(call)
        return await call.wait()

    def _method(self, name: str, **options: Any) -> Callable[..., Awaitable[Any]]:
        """The trio store's method ``name``, with the keyword arguments given.

        Raises:
            AttributeError: the trio store has no such method (yet).
        """
        method: Callable[..., Awaitable[Any]] = getattr(self._store, name)
        given = _given(**options)
        return partial(method, **given) if given else method

    @property
    def root(self) -> Path | str:
        """The directory this store keeps its sessions in (a PostgreSQL store: its URL)."""
        return self._store.root

    def statistics(self) -> StoreStatistics:
        """The store's counters now (not async); see :class:`sessionactors.StoreStatistics`."""
        return self._store.statistics()

    # --- part one ---

    async def save_runtime_session(self, session: Session) -> None:
        """Persist a full snapshot, keeping the UI's metadata if it is newer.

        See :meth:`sessionactors.SessionStore.save_runtime_session`. As
        there, what is saved is ``session`` as it stood at the call (checked
        and copied then), and ``session`` is updated in place before this
        returns.
        """
        await self._save(self._store.save_runtime_session, session, transcript_back=False)

    async def checkpoint_runtime_session(self, session: Session) -> None:
        """Like :meth:`save_runtime_session`, but the transcript never shrinks.

        See :meth:`sessionactors.SessionStore.checkpoint_runtime_session`;
        ``session.messages`` is replaced in place by the merged transcript.
        """
        await self._save(self._store.checkpoint_runtime_session, session, transcript_back=True)

    async def _checkpoint_new(self, session: Session) -> None:
        """The trio store's ``_checkpoint_new``: ``session.messages`` stay as they are."""
        await self._save(self._store._checkpoint_new, session, transcript_back=False)

    async def _save(
        self,
        save: Callable[[Session], Awaitable[None]],
        session: Session,
        *,
        transcript_back: bool,
    ) -> None:
        # The trio store checks and copies a session when its call starts,
        # which here is a crossing later: other asyncio tasks could change
        # ``session`` in between. So the same check and copy is made now,
        # and the trio store saves the copy; what it sets on the copy is
        # then set on ``session``, as the trio store sets it on its caller's.
        try:
            stand_in = copy_for_save(session)
        except Exception:
            # Refused: let the trio store refuse it, so the error (and which
            # of several is raised first) is exactly the trio store's.
            await self._call(save, session)
            return
        at_call = attrs.asdict(stand_in, recurse=False)
        try:
            await self._call(save, stand_in)
        finally:
            # Also when cancelled: a call cancelled while its batch ran took
            # full effect, on the caller's object too, by the time this runs.
            written = {
                name: value
                for name, value in attrs.asdict(stand_in, recurse=False).items()
                if name != "messages" and value is not at_call[name]
            }
            if written:  # the trio store sets at least updated_at on a write
                for name, value in written.items():
                    setattr(session, name, value)
                if transcript_back:
                    session.messages[:] = stand_in.messages

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None:
        """Append one record to the session's token-usage log.

        See :meth:`sessionactors.SessionStore.append_token_usage_record`. A
        ``Mapping`` is encoded at the call, as there: changing it afterwards
        does not change what is appended.
        """
        line: Any = record  # the trio store takes the encoded line (bytes) as well
        if isinstance(record, Mapping):
            with contextlib.suppress(Exception):  # refused: the trio store raises its own error
                line = encode_record(record)
        await self._call(self._store.append_token_usage_record, session_id, line)

    async def read_token_usage(self, session_id: str) -> list[dict[str, Any]]:
        """Every complete token-usage record of the session, in append order."""
        return await self._call(self._store.read_token_usage, session_id)

    async def load_session(self, session_id: str, *, revision: int | None = None) -> Session | None:
        """The persisted session (at ``revision``, if given), or None if there is none."""
        result: Session | None = await self._call(
            self._method("load_session", revision=revision), session_id
        )
        return result

    async def _load_tail(self, session_id: str, count: int) -> Session | None:
        """The trio store's ``_load_tail``: the session with its last ``count`` messages."""
        result: Session | None = await self._call(self._store._load_tail, session_id, count)
        return result

    async def list_sessions(
        self,
        *,
        limit: int | None = None,
        before: SessionSummary | None = None,
        pinned: bool | None = None,
        title_contains: str | None = None,
    ) -> list[SessionSummary]:
        """Summaries of the readable sessions, newest ``updated_at`` first."""
        result: list[SessionSummary] = await self._call(
            self._method(
                "list_sessions",
                limit=limit,
                before=before,
                pinned=pinned,
                title_contains=title_contains,
            )
        )
        return result

    async def delete_session(self, session_id: str, *, if_revision: int | None = None) -> bool:
        """Remove the session and its log; True if it existed (see the trio store)."""
        result: bool = await self._call(
            self._method("delete_session", if_revision=if_revision), session_id
        )
        return result

    async def set_title(
        self, session_id: str, title: str, *, if_metadata_version: int | None = None
    ) -> Session:
        """UI edit: rename the session; returns the session as persisted."""
        result: Session = await self._call(
            self._method("set_title", if_metadata_version=if_metadata_version), session_id, title
        )
        return result

    async def set_pinned(
        self, session_id: str, pinned: bool, *, if_metadata_version: int | None = None
    ) -> Session:
        """UI edit: pin or unpin the session; returns the session as persisted."""
        result: Session = await self._call(
            self._method("set_pinned", if_metadata_version=if_metadata_version),
            session_id,
            pinned,
        )
        return result

    # --- part two (forwarded by name: the trio store gains them as they land) ---

    async def session_history(self, session_id: str, *, limit: int | None = None) -> list[Any]:
        """The session's kept revisions (``Revision`` values), newest first."""
        result: list[Any] = await self._call(
            self._method("session_history", limit=limit), session_id
        )
        return result

    async def rewind_session(self, session_id: str, revision: int) -> Session:
        """A new revision whose transcript and state are those of ``revision``."""
        result: Session = await self._call(self._method("rewind_session"), session_id, revision)
        return result

    async def fork_session(
        self,
        source_id: str,
        new_id: str,
        *,
        revision: int | None = None,
        title: str | None = None,
    ) -> Session:
        """A new session ``new_id`` made from ``source_id`` (at ``revision``)."""
        result: Session = await self._call(
            self._method("fork_session", revision=revision, title=title), source_id, new_id
        )
        return result

    async def update_session(self, session_id: str, fn: Callable[[Session], object]) -> Session:
        """Atomic read-modify-write: ``fn`` changes the persisted session in place.

        ``fn`` runs in a worker thread of the trio store: it must be quick and
        must not call the store.
        """
        result: Session = await self._call(self._method("update_session"), session_id, fn)
        return result

    async def export_session(self, session_id: str) -> bytes:
        """The session and its token-usage log as one self-contained archive."""
        result: bytes = await self._call(self._method("export_session"), session_id)
        return result

    async def import_session(self, data: bytes | str, *, session_id: str | None = None) -> Session:
        """Create a session from an archive of :meth:`export_session`."""
        result: Session = await self._call(
            self._method("import_session", session_id=session_id), data
        )
        return result

    def watch(
        self, session_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """Changes to one session (or every one), as an asyncio async iterator.

        ``async with store.watch() as changes: async for change in changes``;
        leaving the block stops the watch. The trio store's watch runs in one
        trio task for the whole block; each ``__anext__`` asks it for the
        next change, so a slow asyncio watcher slows no writer (the trio
        watch decides what it skips), and a cancelled ``__anext__`` loses no
        change: the next one receives it.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        open_watch: OpenWatch = self._store.watch
        return watch_changes(self._run, self._side, open_watch, session_id)


@asynccontextmanager
async def open_store(
    root: str | os.PathLike[str],
    *,
    durability: Durability = "fsync",
    idle_timeout: float = 30.0,
    mailbox_size: int = 256,
    max_threads: int | None = None,
    drain_timeout: float | None = None,
    history: int = DEFAULT_HISTORY,
    mode: Mode = "thread",
) -> AsyncIterator[SessionStore]:
    """Open a session store on ``root`` for asyncio code.

    The arguments are :func:`sessionactors.open_store`'s, with the same
    meaning and checks (a bad one raises ``ValueError`` as it does there);
    the actors still run on trio, in a trio run beside the asyncio loop.
    Leaving the block answers every call already made, then closes the trio
    store; once it returns, no thread or task of the store is left.

    Args:
        root: a directory, a ``postgresql://`` URL or ``memory://``.
        durability: ``"fsync"`` or ``"flush"``.
        idle_timeout: seconds an actor waits for a message before it retires.
        mailbox_size: messages an actor's mailbox holds (backpressure beyond).
        max_threads: worker threads the store uses at once.
        drain_timeout: seconds leaving the block waits for accepted calls.
        history: revisions kept loadable per session (at least 1).
        mode: how trio runs beside asyncio. ``"thread"`` (the default): in a
            thread of its own; each call crosses to it and back (about 190 us
            per call here, README's "From asyncio"), and the store keeps working while
            the loop runs other code. ``"guest"``: as a guest of this loop
            (``trio.lowlevel.start_guest_run``), on the loop's thread in
            slices the loop schedules, with its I/O waits in a helper thread
            (about 320 us per call: each wake-up of trio crosses that thread).
            Either way a caller's ``Session`` is copied at the call and
            updated in place on the loop's thread only. The stores of one
            loop share one trio run per mode.

    Raises:
        ValueError: a bad argument (nothing is opened).
        RuntimeError: ``mode="guest"`` where a trio run is already active in
            this thread (trio allows one run per thread; ``"thread"`` works).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    options: dict[str, Any] = {
        "durability": durability,
        "idle_timeout": idle_timeout,
        "mailbox_size": mailbox_size,
        "max_threads": max_threads,
        "drain_timeout": drain_timeout,
        "history": history,
    }
    run = await enter_run(mode)
    try:
        side = StoreSide(run, root, options)
        trio_store = await side.open()
        store = SessionStore._create(run, side, trio_store)
        try:
            yield store
        finally:
            store._closed = True
            await side.close()
    finally:
        await leave_run(run)
