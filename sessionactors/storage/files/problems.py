"""What ``sessionactors verify`` reports: problems, their severity and their safe repairs."""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

from .layout import LOG_FILE, SESSION_FILE

__all__ = ["Problem", "Repair", "SessionDir", "SessionReport", "Severity"]


class Severity(enum.Enum):
    """How bad a problem is."""

    #: A file the library cannot read, or values it would not write.
    DAMAGE = "damage"
    #: What an interrupted write (a crash, a full disk) left: readers ignore
    #: it and the session's next write clears it; ``--repair`` may too.
    LEFTOVER = "leftover"


class Repair(enum.Enum):
    """The repairs ``--repair`` may make; every other problem is only reported."""

    TRUNCATE_TORN_TAIL = "cut off"
    TRUNCATE_UNCOUNTED = "cut back to the counted size"
    REMOVE_TEMP_FILE = "removed"
    REMOVE_ORPHAN_JOURNAL = "orphan removed"
    CLEAR_OLDER_SLOT = "made absent; the newer slot is kept"
    CUT_LOG_TAIL = "cut back to the last whole commit"
    REMOVE_UNNEEDED_GENERATION = "removed; no kept revision needs it"
    REMOVE_UNNEEDED_LINK = "link removed; the other session's file is as it was"
    REMOVE_OLDER_FORMAT = "removed; the log holds the session"
    REMOVE_STRAY_USAGE = "removed, and its directory if nothing else is in it"
    REMOVE_ABANDONED_DIRECTORY = "removed, with the leftovers in it"


@attrs.frozen
class Problem:
    """One thing wrong in a store.

    Attributes:
        path: the file or directory at fault.
        message: what is wrong, for a person.
        repair: the safe repair, or None if it can only be reported.
        transient: a writer in the middle of its work looks like this for an
            instant, so the problem is confirmed under the session's lock.
        severity: damage, or a leftover of an interrupted write.
    """

    path: Path
    message: str
    repair: Repair | None = None
    transient: bool = False
    severity: Severity = Severity.DAMAGE


@attrs.frozen
class SessionDir:
    """One directory of the store, as the checks see it."""

    root: Path
    name: str
    #: The store's ``history``, if known: the newest revisions a log must keep.
    history: int | None = None

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def session_path(self) -> Path:
        return self.path / SESSION_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE


@attrs.frozen
class SessionReport:
    """What verifying one directory found and, with ``repair``, fixed.

    Attributes:
        problems: the problems that remain.
        repaired: the problems that were repaired.
    """

    problems: list[Problem]
    repaired: list[Problem]
