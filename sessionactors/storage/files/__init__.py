"""The file storage: a directory per session under a root (see :mod:`.layout`).

Modules by job: :mod:`.layout` (names), :mod:`.durable` (opens, writes,
reads), :mod:`.lock` (the directory lock), :mod:`.snapshot` and
:mod:`.slots` (the snapshot and its two slots), :mod:`.journal` (the
messages), :mod:`.usage` (the token-usage log), :mod:`.leftovers` (what
crashed writers leave), :mod:`.directory` and :mod:`.session` (one
session's files), :mod:`.backend` (the backend and listing), and verify's
:mod:`.problems`, :mod:`.checks`, :mod:`.snapshot_checks` (formats 1 and 2),
:mod:`.log_scan`, :mod:`.log_history`, :mod:`.log_checks` and
:mod:`.log_repairs` (a log, format 3 or 4) and :mod:`.verify`.
"""

from .backend import FileBackend, list_summaries, read_summary
from .journal import encode_messages
from .layout import FORMAT, KEPT_SUFFIX, SLOT_FILES, is_journal, is_kept
from .problems import Problem, SessionReport, Severity
from .session import SessionFiles
from .slots import read_snapshot_at
from .snapshot import Snapshot, decode_snapshot, encode_head
from .snapshot_checks import is_count
from .verify import session_names, verify_session

__all__ = [
    "FORMAT",
    "KEPT_SUFFIX",
    "SLOT_FILES",
    "FileBackend",
    "Problem",
    "SessionFiles",
    "SessionReport",
    "Severity",
    "Snapshot",
    "decode_snapshot",
    "encode_head",
    "encode_messages",
    "is_count",
    "is_journal",
    "is_kept",
    "list_summaries",
    "read_snapshot_at",
    "read_summary",
    "session_names",
    "verify_session",
]
