"""The file store's layout: what each file of a session directory is called.

A session directory holds (format 2)::

    <root>/<id>/session.json              snapshot slot 0
    <root>/<id>/session.1.json            snapshot slot 1
    <root>/<id>/messages.<gen>.jsonl      the transcript journal: one message a line
    <root>/<id>/token-usage.jsonl         one compact JSON object a line

The snapshot holds the format number, a sequence number ``seq``, the
authoritative metadata, the timestamps, ``metadata``, ``runtime_state``, the
message count, and which journal holds the messages and how many of its bytes
count: one JSON line, then its CRC-32. It lives in two slots written in turn:
a write rewrites the older slot in place (write, cut if it was longer,
fsync) while the newer one stays whole, and readers take the whole slot
with the higher ``seq``. A
crash at any instant thus leaves the snapshot before or the new one, never a
mix, and a save costs one fsync for its snapshot: no file is made, none is
renamed, so the directory needs no fsync either. A session's first snapshot
is made whole under a temporary name and renamed into place, and the second
slot is made beside it, empty (an empty second slot reads as absent).

A save whose persisted messages are an unchanged prefix of its transcript
appends only the new messages to the journal, makes them durable, then
writes the snapshot that counts them: a crash in between leaves journal bytes
beyond the counted size, which readers ignore and the next append cuts off.
Any other change of the transcript (an edit, a removal) writes a whole new
journal under a new name and then a snapshot naming it, so the journal a
snapshot names is never modified in a way it would notice. A journal thus
holds the live transcript and nothing else, and needs no compaction.

Format 1, two lines in ``session.json`` (a head like the snapshot's and a
body holding the messages), is read as it is and replaced by format 2 on the
session's next write.

Nothing here follows a symbolic link inside the root: ``<root>/<id>`` is
opened with ``O_NOFOLLOW | O_DIRECTORY`` and every file in it relative to that
descriptor with ``O_NOFOLLOW``, so a link, a stray file or a directory where
the store expects its own is refused with :class:`CorruptSessionError` naming
it, and nothing outside the root is read, written or deleted. A damaged
journal that a save replaces is kept under a name ending in
:data:`KEPT_SUFFIX`, never deleted.
"""

from __future__ import annotations

import re
import uuid

__all__ = [
    "FORMAT",
    "JOURNAL_PREFIX",
    "JOURNAL_SUFFIX",
    "KEPT_SUFFIX",
    "LOG_FILE",
    "SESSION_FILE",
    "SLOT_FILES",
    "TEMP_SUFFIX",
    "is_journal",
    "is_kept",
    "is_temp",
    "made_by_a_writer",
    "new_journal_name",
    "temp_name",
]

FORMAT = 2
SESSION_FILE = "session.json"
#: The snapshot's two slots, written in turn (slot 0 is format 1's only file).
SLOT_FILES = (SESSION_FILE, "session.1.json")
LOG_FILE = "token-usage.jsonl"
JOURNAL_PREFIX = "messages."
JOURNAL_SUFFIX = ".jsonl"
TEMP_SUFFIX = ".tmp"
#: A damaged file the store set aside rather than delete: ``<name>.corrupt``,
#: or ``<name>.<n>.corrupt`` when that is taken. Never swept, never deleted.
KEPT_SUFFIX = ".corrupt"


def is_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file a writer makes (and may leave by crashing)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def is_journal(name: str) -> bool:
    return name.startswith(JOURNAL_PREFIX) and name.endswith(JOURNAL_SUFFIX)


#: The very names :func:`temp_name` and :func:`new_journal_name` make.
_MADE_TEMP = re.compile(r"\..+\.[0-9a-f]{32}" + re.escape(TEMP_SUFFIX), re.DOTALL)
_MADE_JOURNAL = re.compile(
    re.escape(JOURNAL_PREFIX) + r"[0-9a-f]{16}" + re.escape(JOURNAL_SUFFIX), re.DOTALL
)


def made_by_a_writer(name: str) -> bool:
    """Whether ``name`` is exactly a temporary file's or a journal's name as writers make them.

    Stricter than :func:`is_temp` and :func:`is_journal`: a directory is taken
    for one a writer left only when every name in it is such a name.
    """
    return bool(_MADE_TEMP.fullmatch(name) or _MADE_JOURNAL.fullmatch(name))


def is_kept(name: str) -> bool:
    """Whether ``name`` is a damaged file the store set aside (see :data:`KEPT_SUFFIX`)."""
    return name.endswith(KEPT_SUFFIX)


def new_journal_name() -> str:
    """A name for a new journal, which no other journal of the session has."""
    return f"{JOURNAL_PREFIX}{uuid.uuid4().hex[:16]}{JOURNAL_SUFFIX}"


def temp_name(name: str) -> str:
    """A temporary name to make the file ``name`` whole under before renaming it."""
    return f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
