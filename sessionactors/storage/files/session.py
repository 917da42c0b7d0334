"""One session's files: the steps a planner asks for, executed durably (``SessionFiles``).

Everything here blocks; the actor calls it from a worker thread, one hop per
batch of messages. What each file is and how it is written lives in the
modules beside this one; :class:`~.directory.SessionDirectory` holds the
lock and what it knows of the slots, and this class puts the steps together.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import attrs

from ..._errors import CorruptSessionError
from ..._model import Session, structure_session
from ..protocol import Head, Stored, Version
from . import journal, slots, usage
from .directory import SessionDirectory
from .layout import SLOT_FILES, new_journal_name
from .snapshot import encode_snapshot, format1_session, version

__all__ = ["SessionFiles"]

logger = logging.getLogger(__name__)


@attrs.define
class SessionFiles(SessionDirectory):
    """The files of one session, used by that session's actor only: the planner's steps.

    What holds for every method (the lock, the descriptor, the owner check)
    is :class:`SessionDirectory`'s.
    """

    # -- reads (no lock needed: the snapshot is replaced atomically and the
    #    journal bytes it counts never change) --

    def read_head(self) -> Head | None:
        """The authoritative metadata on disk now, and the version of the transcript."""
        snapshot = self.read_snapshot()
        return None if snapshot is None else Head(snapshot.group(), version(snapshot))

    def read_session(self) -> Stored | None:
        """The persisted session, as new objects, and the version of its transcript."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_session() if present else None
        snapshot = self.read_snapshot()
        if snapshot is None:
            return None
        if snapshot.format == 1:
            return Stored(format1_session(snapshot), version(snapshot))
        messages = journal.read_journal(self._fd(), self.directory, snapshot)
        session = structure_session(snapshot.path, {**snapshot.head, "messages": messages})
        return Stored(session, version(snapshot))

    def read_usage(self) -> list[dict[str, Any]]:
        """Every complete record of the log; a torn last line is left out."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_usage() if present else []
        self.exists()  # refuses another session's directory
        return usage.read_usage(self._fd(), self.directory, self.log_path)

    # -- writes (locked) --

    def write_snapshot(
        self, session: Session, *, append_from: int | None, trusted: bool
    ) -> Version | None:
        """Persist a checked session: new messages appended, then the snapshot (locked).

        With ``append_from`` the journal the snapshot names holds the first
        ``append_from`` messages (the planner checked its version): the rest
        are appended to it. Otherwise a new journal holds them all. A journal
        it replaces whose lines do not decode is kept under a name ending in
        :data:`~.layout.KEPT_SUFFIX` (and a warning logged), not deleted.

        Returns:
            The version of the transcript now on disk.
        """
        self._sweep()
        snapshot = self.read_snapshot()
        messages = session.messages
        old_journal = snapshot.journal if snapshot is not None else None
        appending = append_from is not None and snapshot is not None
        damage: CorruptSessionError | None = None
        # Encode everything before touching a file: a value the encoder
        # refuses must leave the disk as it was.
        if appending:
            assert append_from is not None and snapshot is not None
            assert snapshot.journal is not None
            name, start = snapshot.journal, snapshot.journal_size
            lines = journal.encode_messages(messages[append_from:])
        else:
            if snapshot is not None and snapshot.journal is not None and not trusted:
                # Never sweep away a journal that disagrees with its snapshot
                # (its lines are counted), nor one whose lines do not decode:
                # that one is kept aside. (One this actor wrote or read, as
                # the snapshot counts it, agrees.)
                damage = journal.undecodable(
                    os.path.join(self.directory, snapshot.journal),
                    journal.counted_lines(self._fd(), self.directory, snapshot),
                )
            name, start = new_journal_name(), 0
            lines = journal.encode_messages(messages)
        size = start + len(lines)
        slot, seq = slots.next_slot(snapshot)
        data = encode_snapshot(session, name, size, seq)
        kept = None
        if damage is not None:
            assert old_journal is not None
            # Made durable with the new journal's name.
            kept = journal.keep(self._fd(), self.directory, old_journal)
        try:
            if appending:
                journal.append_journal(
                    self._fd(),
                    self.directory,
                    name,
                    start,
                    lines,
                    counts=self.counts,
                    sync=self._sync,
                )
            else:
                journal.write_journal(
                    self._fd(),
                    self.directory,
                    name,
                    lines,
                    counts=self.counts,
                    sync=self._sync,
                    sync_directory=self._sync_directory,
                )
            try:
                self._write_slot(slot, data)
            except BaseException:
                if not appending:  # the new journal is named by no snapshot: remove it
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=self._fd())
                raise
        except BaseException:
            if kept is not None:  # the damaged journal is still named: drop its second name
                with contextlib.suppress(OSError):
                    os.unlink(kept, dir_fd=self._fd())
            raise
        if damage is not None:
            logger.warning(
                "%s; a save replaced this journal, which is kept as %s",
                damage,
                os.path.join(self.directory, str(kept)),
            )
        if old_journal is not None and name != old_journal:
            # The old journal is no longer named. The directory was swept of
            # other leftovers on this actor's first write: remove just this one.
            if trusted:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old_journal, dir_fd=self._fd())
            else:
                self._sweep(force=True)
        return (name, size, len(messages))

    def write_metadata(self, session: Session) -> None:
        """Persist new authoritative metadata of ``session``, read just now (locked).

        The journal is left as it is: only the snapshot changes. The planner
        asks it only of a session with a version (format 2).
        """
        self._sweep()
        snapshot = self.read_snapshot()
        assert snapshot is not None and snapshot.journal is not None
        slot, seq = slots.next_slot(snapshot)
        self._write_slot(
            slot, encode_snapshot(session, snapshot.journal, snapshot.journal_size, seq)
        )

    def append_usage(self, data: bytes) -> None:
        """Append whole lines to the token-usage log in one write (locked)."""
        usage.append_usage(
            self._fd(),
            self.directory,
            data,
            counts=self.counts,
            sync=self._sync,
            sync_directory=self._sync_directory,
        )

    def delete(self) -> bool:
        """Remove the session, its journal, its log and its directory (locked).

        Kept damaged files (see :data:`~.layout.KEPT_SUFFIX`) stay, and with them the directory.

        Returns:
            Whether a session file existed.

        Raises:
            CorruptSessionError: the directory holds another session's snapshot.
        """
        slots.check_owner(self.directory, self.session_id, self._raw)
        self._forget()
        existed = False
        for name in SLOT_FILES:
            try:
                os.unlink(name, dir_fd=self._fd())
                existed = True
            except FileNotFoundError:
                pass
        self.remove_directory()
        return existed
