"""One session's files: the steps a planner asks for, executed durably (``SessionFiles``).

Everything here blocks; the actor calls it from a worker thread, one hop per
batch of messages. A session is written in format 4, its log (see
:mod:`.generations` and :mod:`.log_writer`); a session of format 1 or 2 (the
snapshot slots and the journal: :mod:`.slots`, :mod:`.journal`) is read as
it is, as revision 1, and moved into a log on its next write.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ..._errors import CorruptSessionError, InvalidSessionIdError, RevisionNotFoundError
from ..._model import Revision, Session, SessionSummary, structure_session, summary_of
from ..._util import last
from ..protocol import Commit, Head, Stored, Version
from . import journal, slots, usage
from .directory import SessionDirectory
from .durable import directory_at
from .generations import (
    CommitRecord,
    Generation,
    Header,
    Listing,
    decoded_session,
    link_name,
    list_log,
    parse_gen,
    read_generation,
    read_header,
    read_tip,
    session_at,
    version_of,
)
from .index import INDEX_DIR, ListingIndex
from .layout import SLOT_FILES
from .log_tail import last_messages
from .log_writer import (
    append_records,
    commit_record,
    create_generation,
    header_record,
    new_gen_id,
)
from .records import encode_messages, encode_replacements
from .snapshot import Snapshot, format1_session, version

__all__ = ["SessionFiles"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: A rewind or a fork references its transcript where it lies unless that
#: would make a chain of bases deeper than this: then it is written whole.
MAX_DEPTH = 16
#: A generation is written anew (compacted) once its commit and replacement
#: records pass this many bytes and the bytes of its messages: so a log is at
#: most about twice its live size, and a save's cost stays bounded.
COMPACT_BYTES = 1 << 20


@attrs.frozen
class _Tip:
    """The current generation of a session and its last whole commit."""

    listing: Listing
    name: str
    header: Header
    last: CommitRecord

    @property
    def version(self) -> Version:
        return version_of(self.name, self.last)

    @property
    def next_seq(self) -> int:
        return max(seq for seq, _ in self.listing.own.values()) + 1

    def next_commit_bytes(self) -> int:
        """Commit bytes of the generation once one more commit is appended."""
        return self.last.commit_bytes + self.last.end - self.last.offset

    def compaction_due(self) -> bool:
        # The messages' bytes: the log's up to the last of them, but its
        # commits and replacements (whose bytes commit_bytes counts).
        stale = self.last.commit_bytes
        return stale > max(COMPACT_BYTES, self.last.msg_end - stale)


#: A read without the lock that meets a generation a writer removed meanwhile
#: (it made a newer one, so nothing kept needs it) reads again, from a fresh
#: listing, at most this many times.
UNLOCKED_READ_TRIES = 10


def _names(directory: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(directory))
    except OSError:
        return frozenset()


def _unlocked(read: Callable[[], _T], directory: str) -> _T:
    """``read()``, again while a writer changes the directory's files under it.

    A file gone (``FileNotFoundError``), or one a listing named and that is
    missing when followed (a base: ``CorruptSessionError``) while the
    directory's names changed, is a writer's prune, not damage: read again.
    Damage persists while the names stay the same, and is raised.
    """
    for attempt in range(UNLOCKED_READ_TRIES):
        before = _names(directory)
        try:
            return read()
        except FileNotFoundError:
            if attempt == UNLOCKED_READ_TRIES - 1:
                raise
        except CorruptSessionError:
            if attempt == UNLOCKED_READ_TRIES - 1 or _names(directory) == before:
                raise
    raise AssertionError("unreachable")


def _legacy_head(snapshot: Snapshot) -> Head:
    session = _legacy_session_head(snapshot)
    return Head.of(session, version(snapshot))


def _legacy_session_head(snapshot: Snapshot) -> Session:
    """A session of format 1 or 2 without its messages: revision 1, no lineage."""
    head = {key: value for key, value in snapshot.head.items() if key != "messages"}
    fields = {
        **head,
        "metadata": head.get("metadata", {}),
        "runtime_state": head.get("runtime_state", {}),
    }
    session = structure_session(snapshot.path, {**fields, "messages": []})
    session.revision = 1
    return session


#: How many generation headers one session's storage remembers.
_HEADERS_KEPT = 64


@attrs.define
class SessionFiles(SessionDirectory):
    """The files of one session, used by that session's actor only: the planner's steps.

    What holds for every method (the lock, the descriptor, the owner check)
    is :class:`SessionDirectory`'s.
    """

    #: The root's listing index, told of every change (None: a reader's, which tells nothing).
    index: ListingIndex | None = attrs.field(default=None, kw_only=True)
    #: Headers read, by file name: a generation's name holds its random id
    #: and its header never changes, so one read is enough (bounded: cleared
    #: when it outgrows ``_HEADERS_KEPT``).
    _headers: dict[str, Header] = attrs.field(factory=dict, init=False)

    def _header(self, name: str) -> Header:
        header = self._headers.get(name)
        if header is None:
            if len(self._headers) >= _HEADERS_KEPT:
                self._headers.clear()
            header = self._headers[name] = read_header(self._fd(), self.directory, name)
        return header

    # -- reads (no lock needed: the counted part of a generation never
    #    changes, and a new generation is renamed into place whole) --

    def _tip(self) -> _Tip | None:
        """The current generation, None when the session has no log (none, or an older format)."""
        if isinstance(self._log, _Tip) or (self._log is None and self._lock_fd is not None):
            return self._log
        listing = list_log(self._fd())
        name = listing.current
        tip = None
        if name is not None:
            header, last = read_tip(
                self._fd(), self.directory, name, self.session_id, self._headers.get(name)
            )
            self._headers.setdefault(name, header)
            tip = _Tip(listing, name, header, last)
        if self._lock_fd is not None:
            self._log = tip
        return tip

    def exists(self) -> bool:
        if self._dir_fd is None:
            with self._visiting() as present:
                return present and self.exists()
        return self._tip() is not None or super().exists()

    def read_head(self) -> Head | None:
        """The latest revision's fields but the free-form ones, and its transcript's version."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_head() if present else None
        tip = self._tip()
        if tip is not None:
            return tip.last.head(tip.name)
        snapshot = self.read_snapshot()
        return None if snapshot is None else _legacy_head(snapshot)

    def read_session(self, tail: int | None = None) -> Stored | None:
        """The latest revision (its last ``tail`` messages), as new objects, and its version."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_session(tail) if present else None
        tip = self._tip()
        if tip is None:
            return self._legacy_session(tail)
        if tail is not None:
            lines = last_messages(self._fd(), self.directory, tip.name, tip.header, tip.last, tail)
            if lines is not None:
                path = os.path.join(self.directory, tip.name)
                return Stored(decoded_session(path, tip.last, lines), tip.version)
        generation = self._generation(tip.name, tip.last.end)
        return Stored(self._session_at(tip, generation, tip.last, tail), tip.version)

    def _legacy_session(self, tail: int | None = None) -> Stored | None:
        snapshot = self.read_snapshot()
        if snapshot is None:
            return None
        if snapshot.format == 1:
            session = format1_session(snapshot)
        else:
            messages = journal.read_journal(self._fd(), self.directory, snapshot)
            session = structure_session(snapshot.path, {**snapshot.head, "messages": messages})
        session.revision = 1
        session.messages = list(last(session.messages, tail))  # an older format: read whole
        return Stored(session, version(snapshot))

    def _generation(self, name: str, end: int | None = None) -> Generation:
        return read_generation(self._fd(), self.directory, name, self.session_id, end)

    def _session_at(
        self, tip: _Tip, generation: Generation, commit: CommitRecord, tail: int | None = None
    ) -> Session:
        """The session ``commit`` left, its bases found in the listing ``tip`` was read with.

        Not a listing read again: without the lock, a writer may have made a
        generation and removed what it no longer needs meanwhile.
        """
        return session_at(self._fd(), self.directory, tip.listing, generation, commit, tail)

    def _generations(self, tip: _Tip) -> Any:
        """The generations holding this session's revisions, newest first, while they last."""
        name: str | None = tip.name
        end: int | None = tip.last.end
        while name is not None:
            try:
                generation = self._generation(name, end)
            except FileNotFoundError:
                return  # removed: its revisions are no longer kept
            yield generation
            previous = generation.header.previous
            name = None if previous is None else tip.listing.file_of(previous)
            end = None

    def read_revision(self, revision: int) -> Stored | None:
        """The session as revision ``revision`` left it, None if it is not kept."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_revision(revision) if present else None
        tip = self._tip()
        if tip is None:
            stored = self._legacy_session()
            return stored if revision == 1 else None
        for generation in self._generations(tip):
            commit = generation.commit(revision)
            if commit is not None:
                session = self._session_at(tip, generation, commit)
                return Stored(session, version_of(generation.name, commit))
            if generation.header.first <= revision:
                return None
        return None

    def read_history(self, oldest: int) -> list[Revision]:
        """The kept revisions from ``oldest`` on, newest first."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_history(oldest) if present else []
        tip = self._tip()
        if tip is None:
            head = self.read_head()
            if head is None:
                return []
            snapshot = self.read_snapshot()
            assert snapshot is not None
            session = _legacy_session_head(snapshot)
            return [
                Revision(
                    revision=1,
                    kind="save",
                    updated_at=session.updated_at,
                    message_count=snapshot.message_count,
                    title=session.title,
                    pinned=session.pinned,
                    title_version=session.title_version,
                    metadata_version=session.metadata_version,
                )
            ]
        revisions: list[Revision] = []
        for generation in self._generations(tip):
            for commit in reversed(generation.commits):
                if commit.revision >= oldest:
                    revisions.append(commit.as_revision())
            if generation.header.first <= oldest:
                break
        return revisions

    def summary(self) -> SessionSummary | None:
        """What ``list_sessions`` shows of the session (read without the lock)."""
        entry = self.listing_entry()
        return None if entry is None else entry[0]

    def listing_entry(self) -> tuple[SessionSummary, str] | None:
        """The summary and the latest revision's kind (read without the lock); None: no session."""
        return _unlocked(self._listing_entry, self.directory)

    def _listing_entry(self) -> tuple[SessionSummary, str] | None:
        with self._visiting() as present:
            if not present:
                return None
            tip = self._tip()
            if tip is not None:
                return tip.last.summary(), tip.last.data["kind"]
            snapshot = self.read_snapshot()
            if snapshot is None:
                return None
            # Revision 1, no lineage: see _legacy_session_head.
            session = _legacy_session_head(snapshot)
            return summary_of(session, message_count=snapshot.message_count), "save"

    def read_source(
        self, source_id: str, revision: int | None
    ) -> tuple[Head, Stored | None] | None:
        """Another session (a fork's source), read without its lock.

        The revision read is the one asked for, or the head's: never the
        latest at a later instant (the source may be written meanwhile), which
        would be another revision than the fork names.
        """
        if source_id == INDEX_DIR:
            raise InvalidSessionIdError(
                f"session id {source_id!r} is the file store's own (its listing index)"
            )
        source = SessionFiles(self.root, source_id, self.fsync)

        def read() -> tuple[Head, Stored | None] | None:
            head = source.read_head()
            if head is None:
                return None
            return head, source.read_revision(head.revision if revision is None else revision)

        return _unlocked(read, source.directory)

    def read_usage(self) -> list[dict[str, Any]]:
        """Every complete record of the log; a torn last line is left out."""
        if self._dir_fd is None:
            with self._visiting() as present:
                return self.read_usage() if present else []
        self.exists()  # refuses another session's directory
        return usage.read_usage(self._fd(), self.directory, self.log_path)

    # -- writes (locked) --

    def write_snapshot(
        self,
        session: Session,
        commit: Commit,
        *,
        append_from: int | None,
        trusted: bool,
        transcript_of: Version | None = None,
        replaced: tuple[int, ...] = (),
    ) -> Version:
        """Write ``session`` as a new revision (locked).

        With ``append_from`` the current generation holds the first
        ``append_from`` messages (the planner checked its version) but those
        at ``replaced``: their replacements, the rest and the commit are
        appended to it, one write and one fsync (a generation of format 3
        holds no replacement: it is written anew). With
        ``transcript_of`` (a rewind) a new generation starts from that
        transcript where it lies. Otherwise a new generation holds them all.

        Returns:
            The version of the transcript now on disk.
        """
        self._registered()
        self._sweep()
        if session.revision == 1:
            self._drop_stray_usage()
        replaces = append_from is None and not trusted and transcript_of is None
        tip = self._tip() or self._migrate(keep_damaged=replaces)
        if transcript_of is not None:
            based = self._based_generation(session, commit, tip, transcript_of)
            if based is not None:
                return based
        elif (
            append_from is not None
            and tip is not None
            and not tip.compaction_due()
            and (not replaced or tip.header.format > 3)
        ):
            return self._append(session, commit, tip, append_from, replaced)
        elif tip is not None and not trusted and self._keep_if_damaged(tip):
            # Its revisions cannot be read back: history starts again here (the
            # damaged file stays under its kept name once it is pruned).
            return self._whole_generation(session, commit, tip, chained=False)
        return self._whole_generation(session, commit, tip)

    def write_metadata(self, session: Session, commit: Commit) -> None:
        """Write a revision whose transcript is the current one (locked)."""
        self._registered()
        self._sweep()
        tip = self._tip() or self._migrate()
        assert tip is not None  # the planner read the session under this lock
        if tip.compaction_due():
            self._whole_generation(session, commit, tip)
        else:
            self._append(session, commit, tip, len(session.messages))

    def _append(
        self,
        session: Session,
        commit: Commit,
        tip: _Tip,
        append_from: int,
        replaced: tuple[int, ...] = (),
    ) -> Version:
        """Append the replacements of ``replaced``, the messages from ``append_from``, a commit."""
        data = encode_replacements(session.messages, replaced)
        # Toward compaction a replacement counts as a commit does: each leaves
        # about its size of bytes the latest transcript no longer reads.
        stale = len(data)
        data += encode_messages(session.messages[append_from:])
        msg_end = tip.last.end + len(data) if data else tip.last.msg_end
        data += commit_record(
            session,
            kind=commit.kind,
            msg_end=msg_end,
            commit_bytes=tip.next_commit_bytes() + stale,
        )
        append_records(
            self._fd(),
            self.directory,
            tip.name,
            tip.last.end,
            data,
            counts=self.counts,
            sync=self._datasync_on_release(tip.name, tip.last.end),
        )
        self._written()
        self._prune(commit.keep_from, tip)
        return (tip.name, msg_end, len(session.messages))

    def _whole_generation(
        self, session: Session, commit: Commit, tip: _Tip | None, *, chained: bool = True
    ) -> Version:
        """A new generation holding every message of ``session`` and its commit.

        ``chained``: its ``previous`` is the current generation (whose
        revisions stay in history); without, history starts with it.
        """
        gen = new_gen_id()
        data = bytearray(
            header_record(
                gen=gen,
                session_id=self.session_id,
                base=None,
                previous=None if tip is None or not chained else tip.header.gen,
                first=session.revision,
                depth=0,
            )
        )
        data += encode_messages(session.messages)
        msg_end = len(data)
        data += commit_record(session, kind=commit.kind, msg_end=msg_end, commit_bytes=0)
        name = self._create(1 if tip is None else tip.next_seq, gen, data)
        self._prune(commit.keep_from)
        return (name, msg_end, len(session.messages))

    def _based_generation(
        self, session: Session, commit: Commit, tip: _Tip | None, transcript_of: Version
    ) -> Version | None:
        """A new generation whose transcript is ``transcript_of`` where it lies (a rewind).

        None when that transcript cannot be referenced (an older format, or
        a chain of bases too deep): it is written whole instead.
        """
        base = self._base(transcript_of, tip.listing if tip is not None else None)
        if base is None or tip is None:
            return None
        gen_of_base, offset, depth = base
        gen = new_gen_id()
        data = bytearray(
            header_record(
                gen=gen,
                session_id=self.session_id,
                base=(gen_of_base, offset),
                previous=tip.header.gen,
                first=session.revision,
                depth=depth,
            )
        )
        msg_end = len(data)
        data += commit_record(session, kind=commit.kind, msg_end=msg_end, commit_bytes=0)
        name = self._create(tip.next_seq, gen, data)
        self._prune(commit.keep_from)
        return (name, msg_end, len(session.messages))

    def _base(self, transcript_of: Version, listing: Listing | None) -> tuple[str, int, int] | None:
        """``(gen, offset, depth)`` a new generation may start from, or None."""
        name, offset, _ = transcript_of
        parsed = parse_gen(name) if isinstance(name, str) else None
        if parsed is None or listing is None:
            return None
        header = read_header(self._fd(), self.directory, name)
        if header.depth + 1 > MAX_DEPTH:
            return None
        return parsed, offset, header.depth + 1

    def write_fork(
        self, session: Session, source_id: str, transcript_of: Version | None
    ) -> Version:
        """Make this session a fork of ``source_id`` at ``transcript_of`` (locked, new).

        The source's generations the transcript lies in are hard-linked into
        this directory (named by their generation id) and a generation of one
        header and one commit references them: a few hundred bytes, whatever
        the source's length. The source is not changed.
        """
        self._registered()
        self._sweep()
        self._drop_stray_usage()
        source_directory = os.path.join(self.root, source_id)
        with directory_at(source_directory) as source_fd:
            chain = None
            if source_fd is not None and transcript_of is not None:
                chain = self._link_chain(
                    source_fd, source_directory, source_id, session, transcript_of
                )
        if chain is None:
            return self._whole_generation(session, Commit("fork", 1), None)
        gen_of_base, offset, depth = chain
        gen = new_gen_id()
        data = bytearray(
            header_record(
                gen=gen,
                session_id=self.session_id,
                base=(gen_of_base, offset),
                previous=None,
                first=1,
                depth=depth,
            )
        )
        msg_end = len(data)
        data += commit_record(session, kind="fork", msg_end=msg_end, commit_bytes=0)
        name = self._create(1, gen, data)
        return (name, msg_end, len(session.messages))

    def write_import(self, session: Session, commit: Commit, data: bytes) -> Version:
        """Make this session with the token-usage lines ``data`` (locked, new).

        The records go in first and the session's generation last: until it
        is in place there is no session, and records where there is none
        are a leftover that no read returns and the next write of a new
        session removes (:meth:`_drop_stray_usage`). So a crash leaves the
        whole session or none.
        """
        self._registered()
        self._sweep()
        self._drop_stray_usage()
        if data:
            usage.write_usage(
                self._fd(),
                self.directory,
                data,
                counts=self.counts,
                sync=self._sync,
                sync_directory=self._sync_directory,
            )
        try:
            return self._whole_generation(session, commit, None)
        except BaseException:
            with contextlib.suppress(OSError):
                usage.remove_usage(self._fd())
            raise

    def _drop_stray_usage(self) -> None:
        """Remove a token-usage log where a new session is about to be made (locked).

        It is what an import or a delete that did not finish left: the new
        session must not start with another's records.
        """
        if usage.remove_usage(self._fd()):
            logger.info("%s: removed a token-usage log left without its session", self.directory)

    def _link_chain(
        self,
        source_fd: int,
        source_directory: str,
        source_id: str,
        session: Session,
        transcript_of: Version,
    ) -> tuple[str, int, int] | None:
        """Link the source's generations ``transcript_of`` lies in; ``(gen, offset, depth)``.

        None when the transcript is not in a log (an older format) or its
        chain of bases is too deep: the fork then writes it whole.
        """
        name, offset, _ = transcript_of
        top = parse_gen(name) if isinstance(name, str) else None
        if top is None:
            return None
        listing = list_log(source_fd)
        gen: str | None = top
        depth = None
        gone = RevisionNotFoundError(source_id, session.forked_from_revision or 0, "no longer kept")
        while gen is not None:
            file = listing.file_of(gen)
            if file is None:
                raise gone
            # The source's writers hold its lock, not this read: a generation
            # it no longer keeps may go at any moment, and with it the revision.
            try:
                header = read_header(source_fd, source_directory, file)
                if depth is None:
                    depth = header.depth + 1
                    if depth > MAX_DEPTH:
                        return None
                os.link(
                    file,
                    link_name(gen),
                    src_dir_fd=source_fd,
                    dst_dir_fd=self._fd(),
                    follow_symlinks=False,
                )
            except FileExistsError:
                pass  # linked already (a fork that failed before its generation was made)
            except FileNotFoundError:
                raise gone from None
            gen = None if header.base is None else header.base[0]
        assert depth is not None
        return top, offset, depth

    def _create(self, seq: int, gen: str, data: bytearray) -> str:
        # A generation made now may count on bytes appended before it.
        self._sync_appended()
        name = create_generation(
            self._fd(),
            self.directory,
            seq,
            gen,
            data,
            counts=self.counts,
            sync=self._sync,
            sync_directory=self._sync_directory,
        )
        self._written()
        return name

    def _written(self) -> None:
        self.counts.snapshots_written += 1
        self._forget()

    def _migrate(self, *, keep_damaged: bool = False) -> _Tip | None:
        """Move a session of format 1 or 2 into a log, as revision 1 (locked); None if none.

        ``keep_damaged``: the write replaces the whole session, so a damaged
        format-2 journal is kept aside (as format 2 did) and the log starts
        with this write rather than with the old session.
        """
        try:
            stored = self._legacy_session()
        except CorruptSessionError as damage:
            snapshot = self.read_snapshot()
            if not keep_damaged or snapshot is None or snapshot.journal is None:
                raise
            # Only lines that do not decode, as format 2 kept them; a journal
            # that disagrees with its snapshot (missing, short) is refused.
            path = os.path.join(self.directory, snapshot.journal)
            lines = journal.counted_lines(self._fd(), self.directory, snapshot)
            if journal.undecodable(path, lines) is None:
                raise
            kept = journal.keep(self._fd(), self.directory, snapshot.journal)
            logger.warning(
                "%s; a save replaced this journal, which is kept as %s",
                damage,
                os.path.join(self.directory, kept),
            )
            return None
        if stored is None:
            return None
        self._whole_generation(stored.session, Commit("save", 1), None)
        self._sweep(force=True)  # the slots and journal are leftovers now
        return self._tip()

    def _keep_if_damaged(self, tip: _Tip) -> bool:
        """Keep the current generation under a second name if its counted part is damaged.

        A save that did not read it (another process wrote it) is about to
        start a new generation; a damaged one must not later be pruned away.
        """
        try:
            # Every record whole, and the transcript decoded as a load would.
            self._session_at(tip, self._generation(tip.name, tip.last.end), tip.last)
        except CorruptSessionError as damage:
            # The file the damage is in, if it is one of this session's (a base of
            # the current generation, say); the current one otherwise.
            name = os.path.basename(damage.path)
            if damage.path != os.path.join(self.directory, name) or name not in tip.listing.names:
                name = tip.name
            kept = journal.keep(self._fd(), self.directory, name)
            logger.warning(
                "%s; a save started a new generation, and this one is kept as %s",
                damage,
                os.path.join(self.directory, kept),
            )
            return True
        return False

    def _prune(self, keep_from: int, appended_to: _Tip | None = None) -> None:
        """Remove the generations no kept revision needs (locked).

        Kept: every generation holding a revision from ``keep_from`` on, and
        the bases their transcripts start from (own generations or links).
        Done after the write's revision is in place: a failure here is no
        failure of the write (whose caller would write it again), so it is
        logged and everything stays, for the next write to remove.
        """
        if appended_to is not None and (
            len(appended_to.listing.own) <= 1 or appended_to.header.first > keep_from
        ):
            # An append: to the only generation, or while the one before still
            # holds kept revisions (older ones went when this one was made).
            return
        try:
            self._prune_now(keep_from)
        except (OSError, CorruptSessionError) as exc:
            logger.warning("%s: old generations not removed this time: %s", self.directory, exc)
            self._forget()

    def _prune_now(self, keep_from: int) -> None:
        listing = list_log(self._fd())
        current = listing.current
        if current is None or (len(listing.own) <= 1 and not listing.links):
            return
        needed: set[str] = set()
        bases: list[str] = []
        name: str | None = current
        while name is not None:
            header = self._header(name)
            needed.add(header.gen)
            if header.base is not None:
                bases.append(header.base[0])
            if header.first <= keep_from or header.previous is None:
                break
            name = listing.file_of(header.previous)
        while bases:
            gen = bases.pop()
            if gen in needed:
                continue
            needed.add(gen)
            file = listing.file_of(gen)
            if file is not None:
                base = self._header(file).base
                if base is not None:
                    bases.append(base[0])
        # Newest first, links last: a base is older than what it is the base
        # of, so a kill in the middle never leaves a generation whose base is
        # gone (a reader walking back through ``previous`` would take it for
        # damage); what it leaves is older generations, whole, removed next time.
        newest_first = sorted(listing.own, key=lambda gen: listing.own[gen][0], reverse=True)
        for gen in [*newest_first, *listing.links]:
            if gen not in needed:
                file = listing.file_of(gen)
                assert file is not None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file, dir_fd=self._fd())
        self._forget()

    def _registered(self) -> None:
        """Before a write: this store is registered, so the index learns if it dies mid-write."""
        if self.index is not None:
            self.index.register()

    def publish(self, summary: SessionSummary | None, kind: str | None, *, usage: bool) -> None:
        """Tell the root's index (and so its watchers) what this hold changed (locked).

        When the hold's appends wait for their fsync at its end, the index is
        written beside it, on the index's thread (see ``publish_beside``).
        """
        if self.index is None:
            return
        if self._unsynced and self._beside_sync is None:
            self._beside_sync = self.index.publish_beside(self.session_id, summary, kind, usage)
        else:
            self.index.publish(self.session_id, summary, kind, usage)

    def append_usage(self, data: bytes) -> None:
        """Append whole lines to the token-usage log in one write (locked)."""
        self._registered()
        usage.append_usage(
            self._fd(),
            self.directory,
            data,
            counts=self.counts,
            sync=self._sync,
            sync_directory=self._sync_directory,
        )

    def delete(self) -> bool:
        """Remove the session, its log, its token-usage log and its directory (locked).

        Kept damaged files (see :data:`~.layout.KEPT_SUFFIX`) stay, and with them the directory.

        Returns:
            Whether the session existed.

        Raises:
            CorruptSessionError: the directory holds another session's files.
        """
        self._registered()
        tip = self._tip()  # refuses another session's log
        slots.check_owner(self.directory, self.session_id, self._raw)
        self._forget()
        existed = tip is not None
        # The session is its current generation: the others go first, and are
        # first renamed to link names, under which every read still finds them
        # by their id (as a base, or the previous generation). Stopped before
        # the current one is removed, the session reads as it was; after, it is
        # absent. Never is an older generation current, or a base missing.
        listing = list_log(self._fd())
        for gen, (_, name) in listing.own.items():
            if name != listing.current:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(name, link_name(gen), src_dir_fd=self._fd(), dst_dir_fd=self._fd())
        if listing.current is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listing.current, dir_fd=self._fd())
        for name in list_log(self._fd()).names:  # the session is gone: what is left is litter
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._fd())
        for name in SLOT_FILES:
            try:
                os.unlink(name, dir_fd=self._fd())
                existed = True
            except FileNotFoundError:
                pass
        self.remove_directory()
        return existed
