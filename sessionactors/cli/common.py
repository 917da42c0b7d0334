"""What every command shares: exit statuses, warnings, and reading a store on a root.

A command over every session never lets one damaged or unreadable session
hide the others: the library's warnings about what it skips are counted and
printed on stderr (the command then exits 1), and ``sessions_naming_skips``
names each skipped session with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import trio

from .. import (
    CorruptSessionError,
    InvalidSessionIdError,
    RevisionNotFoundError,
    Session,
    SessionExistsError,
    SessionNotFoundError,
    SessionStore,
    SessionSummary,
    open_store,
)
from .._util import without_password
from ..storage.files import session_names

__all__ = [
    "EVERY_REVISION",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "Warnings",
    "existing_root",
    "in_store",
    "is_url",
    "load_existing",
    "sessions_naming_skips",
    "store_location",
    "usage_errors",
    "with_store",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "sessionactors"

#: The ``history`` of every store the commands open: one that keeps every
#: revision on disk, so ``history`` and ``show --revision`` see all that is
#: there, and ``rewind`` and ``fork`` never drop a revision the application's
#: own ``history`` keeps (its next write drops what that does not).
EVERY_REVISION = sys.maxsize


class UsageError(Exception):
    """The command cannot run as asked (exit status 2)."""


logger = logging.getLogger(__name__)


class Warnings(logging.Handler):
    """Prints the library's and the commands' warnings on stderr and counts them.

    A warning is a damaged file met and passed over (``list_sessions`` logs
    each session it skips); the command goes on, then exits 1.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if _held is not None:
            _held.append(record)
            return
        self.count += 1
        print(f"{PROG}: warning: {record.getMessage()}", file=sys.stderr)


#: While not None, warnings are held here instead of shown (see _held_warnings).
_held: list[logging.LogRecord] | None = None


@contextlib.contextmanager
def _held_warnings() -> Iterator[list[logging.LogRecord]]:
    """Hold back the warnings logged meanwhile: they are yielded, not shown or counted."""
    global _held
    outer, _held = _held, []
    try:
        yield _held
    finally:
        _held = outer


def _show_held(records: Iterable[logging.LogRecord]) -> None:
    """Show held warnings after all, as they were logged."""
    for record in records:
        logging.getLogger(record.name).handle(record)


def existing_root(text: str) -> Path:
    """The store's directory; it must exist (reading commands never create it)."""
    path = Path(text)
    shown = without_password(text)  # a database's URL given where a directory is wanted
    if not path.exists():
        raise UsageError(f"no store at {shown!r}: the directory does not exist")
    if not path.is_dir():
        raise UsageError(f"no store at {shown!r}: not a directory")
    return path


#: What a ROOT naming a PostgreSQL database starts with (``list`` and ``watch`` take one).
_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database rather than a directory."""
    return text.startswith(_URL_SCHEMES)


def store_location(text: str) -> Path | str:
    """A ROOT that may also be a ``postgresql://`` URL: the URL as it is, else an existing root."""
    return text if is_url(text) else existing_root(text)


def with_store(
    root: Path | str, work: Callable[[SessionStore], Awaitable[T]], *, writes: bool = False
) -> T:
    """Run ``work`` in a store opened on ``root`` (which exists already, or is a URL).

    ``writes``: ``work`` writes (a rewind, a fork), durably as an
    application's store does by default; a command that only reads needs
    no fsync.
    """
    return trio.run(partial(in_store, root, work, writes=writes))


async def in_store(
    root: Path | str, work: Callable[[SessionStore], Awaitable[T]], *, writes: bool = False
) -> T:
    """:func:`with_store`'s work, in a trio run of the caller's."""
    durability: Literal["fsync", "flush"] = "fsync" if writes else "flush"
    async with open_store(root, durability=durability, history=EVERY_REVISION) as store:
        with usage_errors(store):
            return await work(store)


@contextlib.contextmanager
def usage_errors(store: SessionStore) -> Iterator[None]:
    """A call naming what is not there (or is taken) is a usage error, said plainly.

    An invalid or unknown session id, a revision not kept, a new id taken.
    """
    try:
        yield
    except InvalidSessionIdError as exc:
        raise UsageError(f"invalid session id: {exc}") from None
    except SessionNotFoundError as exc:
        raise UsageError(no_session(store, exc.session_id)) from None
    except (RevisionNotFoundError, SessionExistsError) as exc:
        raise UsageError(str(exc)) from None


def no_session(store: SessionStore, session_id: str) -> str:
    return f"no session {session_id!r} in {os.fspath(store.root)!r}"


async def load_existing(
    store: SessionStore, session_id: str, revision: int | None = None
) -> Session:
    """The session ``session_id`` (at ``revision``); a bad or unknown one is a usage error."""
    session = await store.load_session(session_id, revision=revision)
    if session is None:
        raise UsageError(no_session(store, session_id))
    return session


def _reason(exc: BaseException) -> str:
    """Why a session could not be read, for a person: an OS error's text and its file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


async def sessions_naming_skips(
    store: SessionStore,
    *,
    limit: int | None = None,
    before: SessionSummary | None = None,
    pinned: bool | None = None,
    title_contains: str | None = None,
) -> list[SessionSummary]:
    """``list_sessions`` (a page of it), with each session it skips named on stderr, and why.

    ``list_sessions`` logs what it skips by the file at fault; which session
    that is, and why, is asked of the library again for each directory of
    the root that no listing holds (none, usually; a page's filters aside, so
    every session is listed once more to know which). A directory that holds
    no session, or whose name is no session id, is no session, and not named.
    A store that is no directory (PostgreSQL) shows the warnings as logged.
    """
    with _held_warnings() as held:
        summaries = await store.list_sessions(
            limit=limit, before=before, pinned=pinned, title_contains=title_contains
        )
    if not held:
        return summaries
    root = Path(os.fspath(store.root))
    if not await trio.Path(root).is_dir():
        _show_held(held)
        return summaries
    if limit is None and before is None and pinned is None and title_contains is None:
        listed = {summary.id for summary in summaries}
    else:
        with _held_warnings():  # the same skips again: already held
            listed = {summary.id for summary in await store.list_sessions()}
    named = 0
    for name in session_names(root):
        if name in listed:
            continue
        try:
            await store.load_session(name)
        except InvalidSessionIdError:
            continue
        except (CorruptSessionError, OSError) as exc:
            logger.warning("skipped session %r: %s", name, _reason(exc))
            named += 1
    if named < len(held):  # a skip not found again (mended meanwhile?): shown as logged
        _show_held(held)
    return summaries
