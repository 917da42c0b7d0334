"""The library's exceptions: few, each with one precise meaning."""

from __future__ import annotations

import os


class SessionStoreError(Exception):
    """Base class of every error this library raises itself."""


class SessionNotFoundError(SessionStoreError, KeyError):
    """The operation needs a persisted session and there is none with this id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        # KeyError would repr() the argument; say what happened instead.
        return f"no session {self.session_id!r}"


class InvalidSessionIdError(SessionStoreError, ValueError):
    """A session id that cannot name a directory safely; nothing was touched."""


class CorruptSessionError(SessionStoreError):
    """A file of the store cannot be decoded. The file is kept as it is.

    Attributes:
        path: the file that could not be decoded.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


class UnsupportedFormatError(CorruptSessionError):
    """A session file written in a newer format than this version understands.

    It is refused rather than misread, and kept as it is.
    """


class SessionExistsError(SessionStoreError, FileExistsError):
    """A session with this id exists already (a fork's or an import's new id); nothing was made."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} exists already")
        self.session_id = session_id


class RevisionNotFoundError(SessionStoreError, LookupError):
    """The session has no such revision kept: never written, or dropped from its history."""

    def __init__(self, session_id: str, revision: int, reason: str) -> None:
        super().__init__(f"session {session_id!r} has no revision {revision}: {reason}")
        self.session_id = session_id
        self.revision = revision


class VersionConflictError(SessionStoreError):
    """A precondition failed; nothing written.

    An edit's ``if_metadata_version`` is not the persisted
    ``metadata_version``, or a delete's ``if_revision`` not the latest revision.

    Attributes:
        expected: the version the caller named.
        current: the version persisted now.
    """

    def __init__(
        self, session_id: str, *, expected: int, current: int, of: str = "metadata_version"
    ) -> None:
        super().__init__(f"session {session_id!r} is at {of} {current}, not {expected}")
        self.session_id = session_id
        self.expected = expected
        self.current = current


class StoreClosedError(SessionStoreError):
    """The store's ``async with`` block has been left; it accepts no more calls."""


class ActorCrashedError(SessionStoreError):
    """A session's actor failed unexpectedly (a bug) before answering.

    The store replaces the actor on the next call; ``__cause__`` holds the
    original exception.
    """


class LockBusy(Exception):
    """Internal: a session's lock, asked for without waiting, is held elsewhere now."""
