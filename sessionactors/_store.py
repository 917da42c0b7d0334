"""open_store and SessionStore: validation, routing to actors, supervision, lifecycle."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import attrs
import trio

from ._actor import Actor
from ._archive import decode_archive, encode_archive
from ._batch import BatchTarget
from ._errors import StoreClosedError
from ._ids import validate_session_id
from ._listing import ListQuery
from ._merge import check_pinned, clean_title
from ._messages import (
    Append,
    Delete,
    Export,
    Fork,
    History,
    Import,
    Load,
    Op,
    Pin,
    ReadUsage,
    Retitle,
    Rewind,
    Save,
    Update,
)
from ._model import Change, Revision, Session, SessionSummary
from ._options import DEFAULT_HISTORY, Durability, StoreOptions, default_threads
from ._runner import BatchRunner
from ._stats import Counters, StoreStatistics
from ._util import NoPublicConstructor
from ._values import copy_for_save, encode_record
from ._watch import ChangeBuffer
from .storage import Backend, open_backend, waits_on_network

__all__ = [
    "RuntimeSessionPersistence",
    "SessionStore",
    "StoreStatistics",
    "open_store",
    "validate_session_id",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class RuntimeSessionPersistence(Protocol):
    """The port an agent runtime depends on, so it need not know the store."""

    async def save_runtime_session(self, session: Session) -> None: ...

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None: ...


@attrs.define(eq=False)
class _Route:
    send: trio.MemorySendChannel[Op]
    actor: Actor


class SessionStore(metaclass=NoPublicConstructor):
    """Persists agent sessions under one root; made by :func:`open_store` only.

    Every call about a session is a message to that session's actor, a task
    that alone touches the session's files. Calls are answered once their
    effect is durable (per the store's ``durability``).
    """

    def __init__(
        self,
        root: Path | str,
        nursery: trio.Nursery,
        *,
        backend: Backend,
        options: StoreOptions,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._root = root
        self._nursery = nursery
        self._backend = backend
        self._options = options
        self._limiter = limiter
        self._routes: dict[str, _Route] = {}
        self._stats = Counters()
        self._runner = BatchRunner(limiter, self._stats)
        self._closed = False
        self._all_exited = trio.Event()
        self._all_exited.set()
        self._watches: set[_OpenWatch] = set()

    @property
    def root(self) -> Path | str:
        """The directory this store keeps its sessions in (a PostgreSQL store: its URL)."""
        return self._root

    # --- routing and supervision ---

    def _spawn(self, session_id: str) -> _Route:
        send, receive = trio.open_memory_channel[Op](self._options.mailbox_size)
        actor = Actor(
            BatchTarget(self._backend.session(session_id), history=self._options.history),
            receive,
            idle_timeout=float(self._options.idle_timeout),
            runner=self._runner,
            stats=self._stats,
            on_exit=self._actor_exited,
        )
        route = _Route(send, actor)
        self._routes[session_id] = route
        if self._all_exited.is_set():
            self._all_exited = trio.Event()
        self._stats.actors_started += 1
        self._nursery.start_soon(actor.run, name=f"sessionactors actor {session_id!r}")
        return route

    def _actor_exited(self, actor: Actor) -> None:
        # A route is replaced only once its actor has exited, so it is this one.
        route = self._routes.pop(actor.target.session_id)
        assert route.actor is actor
        if not self._routes:
            self._all_exited.set()

    async def _call(self, session_id: str, op: Op) -> Any:
        while True:
            if self._closed:
                raise StoreClosedError("the store is closed")
            route = self._routes.get(session_id) or self._spawn(session_id)
            try:
                try:
                    route.send.send_nowait(op)  # the usual case: room in the mailbox
                except trio.WouldBlock:
                    await route.send.send(op)  # full: wait (backpressure)
            except trio.BrokenResourceError:
                continue  # that actor retired or crashed just now: use a fresh one
            except trio.ClosedResourceError:
                raise StoreClosedError("the store closed before this call was accepted") from None
            return await op.reply.wait()

    async def _close(self, drain_timeout: float | None) -> None:
        """Refuse new calls, let every actor finish what it accepted, then stop."""
        self._closed = True
        for route in list(self._routes.values()):
            route.send.close()  # the actor drains its mailbox, then exits
        with trio.move_on_after(math.inf if drain_timeout is None else drain_timeout):
            await self._all_exited.wait()
        if not self._all_exited.is_set():
            logger.warning(
                "%d actors still busy %s s after close; cancelling them",
                len(self._routes),
                drain_timeout,
            )
            for route in list(self._routes.values()):
                route.actor.cancel_scope.cancel()
            await self._all_exited.wait()
        # Watches other tasks hold open end with the store: their readers
        # would otherwise wait for changes no feed brings any more. Their
        # feeds are over before the backend closes under them.
        watches = list(self._watches)
        for watch in watches:
            watch.buffer.fail(StoreClosedError("the store closed: its watches ended with it"))
            watch.feed.cancel()
        for watch in watches:
            await watch.fed.wait()

    # --- the contract ---

    async def save_runtime_session(self, session: Session) -> None:
        """Persist a full snapshot, keeping the UI's metadata if it is newer.

        The authoritative group (title, title_version, pinned,
        metadata_version) on disk wins unless ``session.metadata_version`` is
        greater. ``session`` is updated in place to the merged values and the
        new ``updated_at``.

        Raises:
            InvalidSessionIdError: ``session.id`` cannot name a session.
            TypeError, ValueError: the session holds a value that would not
                read back equal (not plain JSON, a datetime in a DST fold or
                gap, a subclass of Session or Message), or versions its own
                verify would call damage (negative, a bool, ``title_version``
                above ``metadata_version``), even where the merge rule would
                keep the versions on disk; nothing is written. What is
                written is what was checked when the call was made: a
                change other tasks make to ``session.metadata`` or
                ``runtime_state`` meanwhile is not part of this save.
            CorruptSessionError: the persisted file cannot be decoded; it is
                kept as it is.
            OSError: the write failed; what was persisted before is unchanged.
        """
        await self._save(session, checkpoint=False)

    async def checkpoint_runtime_session(self, session: Session) -> None:
        """Like :meth:`save_runtime_session`, but the transcript never shrinks.

        Every persisted message stays, in its persisted order; messages of
        ``session`` whose id is not persisted follow, in their order.
        ``session.messages`` is updated in place to that transcript.
        """
        await self._save(session, checkpoint=True)

    async def _checkpoint_new(self, session: Session) -> None:
        """A checkpoint that leaves ``session.messages`` as they are (sessionactors.agents' adds).

        Its caller brings new messages and wants no transcript back, so
        while the actor knows the persisted transcript, nothing is read:
        the add costs its own messages, not the conversation's length.
        """
        await self._save(session, checkpoint=True, transcript_back=False)

    async def _save(
        self, session: Session, *, checkpoint: bool, transcript_back: bool = True
    ) -> None:
        if not isinstance(session, Session):
            raise TypeError(f"expected a Session, got {type(session).__name__}")
        session_id = validate_session_id(session.id)
        # Checked and copied now, in one synchronous step: whatever other
        # tasks do to ``session`` meanwhile, what the worker thread encodes
        # is what was checked. (Its new messages are checked in the batch.)
        snapshot = copy_for_save(session)
        self._stats.saves_requested += 1
        await self._call(
            session_id, Save(session, checkpoint, snapshot, transcript_back=transcript_back)
        )

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None:
        """Append one record to the session's token-usage log.

        Args:
            session_id: a persisted session.
            record: one JSON object, as a ``str`` (a trailing newline is
                allowed) or a ``Mapping``. It is stored as one compact line.

        Raises:
            ValueError: ``record`` is not one JSON object; nothing is written.
            SessionNotFoundError: no such session; nothing is created.
        """
        validate_session_id(session_id)
        line = encode_record(record)
        self._stats.appends_requested += 1
        await self._call(session_id, Append(line))

    async def read_token_usage(self, session_id: str) -> list[dict[str, Any]]:
        """Every complete token-usage record of the session, in append order.

        A last line torn by a crash is left out (and cut away before the next
        append). A session with no log, or no session at all, gives ``[]``.
        """
        validate_session_id(session_id)
        result: list[dict[str, Any]] = await self._call(session_id, ReadUsage())
        return result

    async def load_session(self, session_id: str, *, revision: int | None = None) -> Session | None:
        """The persisted session, or None if there is none.

        Args:
            revision: load the session exactly as that write left it (its
                ``revision`` included) rather than the latest.

        Raises:
            RevisionNotFoundError: ``revision`` was never written, or is no
                longer kept (see ``open_store(history=...)``).
            CorruptSessionError: the session file cannot be decoded.
        """
        validate_session_id(session_id)
        if revision is not None:
            _check_revision(revision)
        result: Session | None = await self._call(session_id, Load(revision=revision))
        return result

    async def _load_tail(self, session_id: str, count: int) -> Session | None:
        """The persisted session holding only its last ``count`` messages.

        sessionactors.agents reads with it: only those messages are decoded,
        so reading a conversation's latest turns costs them, not its length.
        """
        validate_session_id(session_id)
        if type(count) is not int or count < 0:
            raise ValueError(f"count must be an int >= 0, got {count!r}")
        result: Session | None = await self._call(session_id, Load(tail=count))
        return result

    async def session_history(self, session_id: str, *, limit: int | None = None) -> list[Revision]:
        """Every revision of the session still kept, newest first (at most ``limit``).

        Raises:
            SessionNotFoundError: no such session.
            ValueError: ``limit`` is not None or a positive int.
        """
        validate_session_id(session_id)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be None or a positive int, got {limit!r}")
        result: list[Revision] = await self._call(session_id, History(limit))
        return result

    async def rewind_session(self, session_id: str, revision: int) -> Session:
        """Write a new revision (kind ``"rewind"``) with ``revision``'s transcript and state.

        ``messages``, ``metadata`` and ``runtime_state`` become those of
        ``revision``; the authoritative group stays as it is now, so a rewind
        never undoes a UI edit. History is kept: a rewind can be undone by
        another.

        Returns:
            The session as written.

        Raises:
            SessionNotFoundError: no such session.
            RevisionNotFoundError: ``revision`` was never written or is no longer kept.
        """
        validate_session_id(session_id)
        _check_revision(revision)
        result: Session = await self._call(session_id, Rewind(revision))
        return result

    async def fork_session(
        self,
        source_id: str,
        new_id: str,
        *,
        revision: int | None = None,
        title: str | None = None,
    ) -> Session:
        """Make ``new_id`` from ``source_id`` at ``revision`` (default: its latest).

        The fork is revision 1 (kind ``"fork"``), created now, titled ``title``
        (stripped) or as the source, unpinned, with versions 0 and
        ``forked_from``/``forked_from_revision`` naming the source. The two
        sessions are independent afterwards; the token-usage log is not copied.

        Returns:
            The new session as written.

        Raises:
            SessionExistsError: ``new_id`` is taken; nothing is made.
            SessionNotFoundError: no session ``source_id``; nothing is made.
            RevisionNotFoundError: ``revision`` was never written or is no longer kept.
            ValueError: ``title`` is empty once stripped.
        """
        validate_session_id(source_id)
        validate_session_id(new_id)
        if revision is not None:
            _check_revision(revision)
        cleaned = None if title is None else clean_title(title)
        result: Session = await self._call(new_id, Fork(source_id, revision, cleaned))
        return result

    async def list_sessions(
        self,
        *,
        limit: int | None = None,
        before: SessionSummary | None = None,
        pinned: bool | None = None,
        title_contains: str | None = None,
    ) -> list[SessionSummary]:
        """Summaries in the order (``updated_at``, ``id``) descending: a page of them, or all.

        Each summary agrees with the session as :meth:`load_session` would
        return it when it was read, whatever crashed before (on files, the
        index behind a page is a cache the call checks and corrects).

        Args:
            limit: at most this many (a positive int).
            before: a summary of an earlier page (normally its last): this
                page starts strictly after it in the order.
            pinned: only sessions with this flag.
            title_contains: only sessions whose title holds this text,
                compared casefolded (``str.casefold``).

        A session whose files cannot be decoded is left out (and logged), so
        one damaged session does not hide the others.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        query = ListQuery.of(
            limit=limit, before=before, pinned=pinned, title_contains=title_contains
        )
        summaries, errors = await trio.to_thread.run_sync(
            self._backend.list_summaries, query, limiter=self._limiter
        )
        for error in errors:
            logger.warning("list_sessions skips an unreadable session: %s", error)
        return summaries

    @asynccontextmanager
    async def watch(self, session_id: str | None = None) -> AsyncIterator[AsyncIterator[Change]]:
        """Changes of one session (or of every session), as they are made, by anyone.

        ``async with store.watch(id) as changes: async for change in changes:``
        sees the writes made after the block began, by this store, other
        stores and other processes on the same root (or database). For one
        session they arrive in commit order, each revision at most once; a
        reader that falls behind may be handed a later revision without the
        ones before it, but never misses the last: once a write has returned,
        the watch receives a change with that revision or a later one (or a
        delete). A slow reader never slows a writer and holds a bounded amount
        of memory per session. Leaving the block stops the watch; so does the
        store closing, and the reader then gets :class:`StoreClosedError`
        once it has read the changes that came before.

        Raises:
            StoreClosedError: the store is closed, or closed while watching.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        if session_id is not None:
            validate_session_id(session_id)
        buffer = ChangeBuffer(session_id)
        backend = self._backend
        watch = _OpenWatch(buffer)

        async def feed(*, task_status: trio.TaskStatus[None]) -> None:
            started = False

            def now_started() -> None:
                nonlocal started
                started = True
                task_status.started()

            try:
                status = cast("trio.TaskStatus[None]", _Started(now_started))
                with watch.feed:
                    await backend.follow(session_id, buffer.put, task_status=status)
                if not started:  # ended before it began: the store closed meanwhile
                    raise StoreClosedError("the store is closed")
            except Exception as exc:
                if not started:
                    raise  # from nursery.start, as it is
                buffer.fail(exc)  # the reader gets it from its next change
            finally:
                watch.fed.set()

        body_error: BaseException | None = None
        self._watches.add(watch)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(feed)
                try:
                    yield buffer
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    body_error = exc  # raised as it is below, not wrapped by the nursery
                finally:
                    buffer.close()
                    nursery.cancel_scope.cancel()
        finally:
            self._watches.discard(watch)
        if body_error is not None:
            raise body_error

    async def delete_session(self, session_id: str, *, if_revision: int | None = None) -> bool:
        """Remove the session and its log; True if it existed.

        Args:
            if_revision: delete only if the session's latest revision is this
                one (a prune that must not delete what was written since it
                looked).

        Raises:
            VersionConflictError: ``if_revision`` is not the latest revision
                (``current``); nothing is deleted.
        """
        validate_session_id(session_id)
        if if_revision is not None:
            _check_revision(if_revision)
        result: bool = await self._call(session_id, Delete(if_revision))
        return result

    async def export_session(self, session_id: str) -> bytes:
        """The session at its latest revision and its whole token-usage log, as one archive.

        The archive (README, "The session archive") is JSON Lines, the same
        for every backend; :meth:`import_session` makes the session from it
        on any backend. The session and its records are read together.

        Raises:
            SessionNotFoundError: no such session.
        """
        validate_session_id(session_id)
        session, usage = await self._call(session_id, Export())
        return await trio.to_thread.run_sync(encode_archive, session, usage, limiter=self._limiter)

    async def import_session(self, data: bytes | str, *, session_id: str | None = None) -> Session:
        """Make a session from an archive of :meth:`export_session`: revision 1, kind "import".

        It keeps the archive's ``created_at``, ``updated_at`` and lineage and
        gets its token-usage records, in order; ``session_id`` names it
        instead of the archive's id. The archive is checked whole before
        anything is written, and the session and its records are made
        together: whatever fails or crashes, nothing is made or all of it.
        ``data`` may be a ``str`` (an archive read as text): its UTF-8 is taken.

        Returns:
            The session as written.

        Raises:
            ValueError: not an archive, or a damaged one (cut short, a line
                missing or changed, bytes after its end, a value a save
                would refuse).
            UnsupportedFormatError: an archive of a newer format version.
            SessionExistsError: the id is taken.
        """
        if session_id is not None:
            validate_session_id(session_id)
        if self._closed:  # before decoding what would not be written
            raise StoreClosedError("the store is closed")
        archive = await trio.to_thread.run_sync(decode_archive, data, limiter=self._limiter)
        session = archive.session
        if session_id is not None:
            session.id = session_id
        result: Session = await self._call(session.id, Import(session, archive.usage))
        return result

    async def set_title(
        self, session_id: str, title: str, *, if_metadata_version: int | None = None
    ) -> Session:
        """UI edit: rename the session.

        ``title`` is stripped. A change bumps ``title_version`` and
        ``metadata_version``; an unchanged title writes nothing.

        Args:
            if_metadata_version: the UI's If-Match: rename only if the
                persisted ``metadata_version`` is this one (checked first,
                under the session's serialization).

        Returns:
            The session as persisted after the edit.

        Raises:
            ValueError: ``title`` is empty once stripped.
            SessionNotFoundError: no such session.
            VersionConflictError: ``if_metadata_version`` is not the
                persisted one; nothing is written.
        """
        validate_session_id(session_id)
        clean_title(title)  # refuse a bad title before troubling the actor
        _check_version(if_metadata_version)
        result: Session = await self._call(session_id, Retitle(title, if_metadata_version))
        return result

    async def set_pinned(
        self, session_id: str, pinned: bool, *, if_metadata_version: int | None = None
    ) -> Session:
        """UI edit: pin or unpin the session; a change bumps ``metadata_version``.

        Args:
            if_metadata_version: as for :meth:`set_title`.

        Returns:
            The session as persisted after the edit.

        Raises:
            SessionNotFoundError: no such session.
            VersionConflictError: ``if_metadata_version`` is not the
                persisted one; nothing is written.
        """
        validate_session_id(session_id)
        check_pinned(pinned)
        _check_version(if_metadata_version)
        result: Session = await self._call(session_id, Pin(pinned, if_metadata_version))
        return result

    async def update_session(self, session_id: str, fn: Callable[[Session], object]) -> Session:
        """Change the persisted session with ``fn``, atomically: one revision (kind ``"update"``).

        ``fn(session)`` is given a copy of the session as persisted and changes
        it in place (``messages``, ``metadata``, ``runtime_state``). No other
        write to the session, from any task, store or process, lands between
        that read and the write. ``fn`` runs in a worker thread: it must be
        quick and must not call the store. Calls queued together are applied
        one after the other, each a revision of its own, and share one fsync.

        Returns:
            The session as ``fn`` left it, as written (or, when ``fn``
            changed nothing, as it is: nothing is written then).

        Raises:
            SessionNotFoundError: no such session.
            ValueError: ``fn`` changed the authoritative group, ``id``,
                ``created_at``, ``revision`` or the lineage; nothing written.
            TypeError, ValueError: ``fn`` left a value that would not read
                back equal; nothing written.
            Exception: whatever ``fn`` raised; nothing written.
        """
        validate_session_id(session_id)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        result: Session = await self._call(session_id, Update(fn))
        return result

    def statistics(self) -> StoreStatistics:
        """The store's counters now; see :class:`StoreStatistics`."""
        return self._stats.report(live_actors=len(self._routes))


@attrs.define(eq=False)
class _OpenWatch:
    """A watch some task holds open: what its reader is handed, and its feed."""

    buffer: ChangeBuffer
    feed: trio.CancelScope = attrs.Factory(trio.CancelScope)
    fed: trio.Event = attrs.Factory(trio.Event)  # set once the feed is over


@attrs.frozen
class _Started:
    """A ``task_status`` that calls ``started`` (for a feed that must know it started)."""

    started: Callable[[], None]


def _check_version(version: object) -> None:
    if version is None:
        return
    if type(version) is not int:
        raise TypeError(f"if_metadata_version must be an int, got {type(version).__name__}")
    if version < 0:
        raise ValueError(f"if_metadata_version must be >= 0, got {version}")


def _check_revision(revision: object) -> None:
    if type(revision) is not int:
        raise TypeError(f"revision must be an int, got {type(revision).__name__}")


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
) -> AsyncIterator[SessionStore]:
    """Open a session store on ``root``, a directory created if missing.

    Many stores, in one process or several, may open the same root at once.

    Args:
        root: the directory holding one sub-directory per session; or a
            ``postgresql://`` (or ``postgres://``) URL, for the PostgreSQL
            backend (``pip install 'sessionactors[postgres]'``): the schema is
            created or migrated on opening, and stores on any number of hosts
            may share the database.
        durability: ``"fsync"``: a call returns once its bytes are on stable
            storage. ``"flush"``: once they are handed to the OS (they
            survive a crash of the process, not a power loss). On PostgreSQL:
            ``synchronous_commit`` ``on`` and ``off`` (a server crash may lose
            the last commits, never leave one half-applied).
        idle_timeout: seconds an actor waits for a message before it retires.
        mailbox_size: messages an actor's mailbox holds; callers beyond that
            wait (backpressure) instead of growing memory.
        max_threads: worker threads this store uses at once for file work
            (on PostgreSQL, also the most connections it opens). None, the
            default, is 32 on PostgreSQL (its calls wait on the network) and
            ``min(32, os.cpu_count() + 4)`` on files, as in
            ``concurrent.futures``: file work is short system calls, and
            Python runs one thread at a time, so more threads mostly contend.
            Under load one trip to a thread serves several sessions' batches.
            Raise it for storage whose fsync is slow and gains from many at once.
        drain_timeout: on leaving the block, how many seconds actors may take
            to finish the calls they accepted before they are cancelled (and
            those calls fail with StoreClosedError); None, the default, waits
            for all of them.
        history: how many revisions of each session stay loadable (at least
            1): the newest ``history`` can always be loaded, forked from and
            rewound to; older ones may be dropped.
    """
    options = StoreOptions(
        durability=durability,
        idle_timeout=idle_timeout,
        mailbox_size=mailbox_size,
        max_threads=(
            default_threads(waits_on_network=waits_on_network(root))
            if max_threads is None
            else max_threads
        ),
        drain_timeout=drain_timeout,
        history=history,
    )
    backend, where = open_backend(root, fsync=options.fsync, max_connections=options.max_threads)
    limiter = trio.CapacityLimiter(options.max_threads)
    await backend.aopen(limiter)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            store = SessionStore._create(
                where, nursery, backend=backend, options=options, limiter=limiter
            )
            try:
                yield store
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so it reaches the caller
                # as it is rather than wrapped in an ExceptionGroup: the actors
                # never raise, so the body's error is the only one there is.
                body_error = exc
            finally:
                # Shielded: each caller already accepted gets its answer even if
                # the block is left by a cancellation.
                with trio.CancelScope(shield=True):
                    await store._close(options.drain_timeout)
    finally:
        with trio.CancelScope(shield=True):
            await backend.aclose()
    if body_error is not None:
        raise body_error
