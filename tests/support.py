"""Helpers the tests share, defined once: messages, and the state of a store on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sessionactors import Message


def msg(message_id: str, content: Any = None, **kwargs: Any) -> Message:
    """A user message: what most tests need of one."""
    return Message(id=message_id, role="user", content=content, **kwargs)


def session_files(root: Path | None, session_id: str) -> dict[str, bytes] | None:
    """Every file of a session's directory with its bytes; None without one (or a root).

    "Nothing was written" compares this whole state before and after, never
    one file: a write goes to whichever snapshot slot is older, a journal, or
    the log.
    """
    if root is None or not (root / session_id).is_dir():
        return None
    directory = root / session_id
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
