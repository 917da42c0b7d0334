"""What a session id may be: one that can safely name a directory, whatever the storage."""

from __future__ import annotations

import re

from ._errors import InvalidSessionIdError

__all__ = ["MAX_SESSION_ID_LENGTH", "validate_session_id"]

MAX_SESSION_ID_LENGTH = 200
# Separators and control characters (C0, DEL, C1): one search in C, as every call checks its id.
_REFUSED_CHAR = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it can safely name a directory.

    Raises:
        InvalidSessionIdError: empty, ``.`` or ``..``, holding ``/``, ``\\``,
            NUL or another control character, longer than 200 characters, or
            longer than a file name may be once encoded.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionIdError(f"session id must be a str, got {type(session_id).__name__}")
    if not session_id or session_id in (".", ".."):
        raise InvalidSessionIdError(f"session id {session_id!r} is not allowed")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionIdError(
            f"session id is {len(session_id)} characters, more than {MAX_SESSION_ID_LENGTH}"
        )
    refused = _REFUSED_CHAR.search(session_id)
    if refused is not None:
        raise InvalidSessionIdError(f"session id {session_id!r} holds {refused.group()!r}")
    try:
        encoded = session_id.encode()  # strict: a lone surrogate is refused
    except UnicodeError:
        raise InvalidSessionIdError(f"session id {session_id!r} cannot be encoded") from None
    if len(encoded) > 255:
        raise InvalidSessionIdError(f"session id {session_id!r} is too long as a file name")
    return session_id
