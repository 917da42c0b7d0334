"""The root's listing index: a cache of every session's summary, and the root's change feed.

``<root>/.sessionactors/index.sqlite3`` (SQLite in WAL mode, through the
standard library) holds one row a session: its summary, the keys a page is
ordered and filtered by (``updated_at`` in microseconds, ``id``, ``pinned``,
the casefolded title), and for watchers the latest revision, its kind and
``seq`` numbers, one more per change of the root, taken in the change's own
transaction. A deleted session keeps its row, marked deleted, so a watcher
learns of the delete, until :data:`DELETES_KEPT_FOR` more changes of the root
came and every open watch has read past it (each notes in ``watches`` how far
it read, every :data:`NOTE_SEEN_EVERY` changes): the next delete then removes it.

It is only a cache, never the truth: every write updates it under the
session's lock once the session is written (without an fsync: the index is
rebuilt, never trusted, after a crash), and every summary a page returns is
first compared with the session's own files; a row that disagrees is
corrected and the page read again. What could leave a row behind without
the page noticing (a store killed between its write and the index, a
store of an older version) is caught by :mod:`.writers` (a store that died
holding a registration makes the next listing reconcile every row with the
files) or by deleting the index; a missing, truncated or garbled index is
rebuilt from the files by the call that finds it so.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson

from ..._errors import CorruptSessionError
from ..._listing import ListQuery, order_key
from ..._model import Change, SessionSummary, converter
from .writers import WRITERS_TABLE, Writer, dead_writers, forget_writers

__all__ = [
    "DELETES_KEPT_FOR",
    "INDEX_DIR",
    "INDEX_FILE",
    "NOTE_SEEN_EVERY",
    "IndexChanges",
    "ListingIndex",
    "ReadEntry",
    "changes_of",
]

logger = logging.getLogger(__name__)

#: The directory of the root the index lives in; no session may have this id.
INDEX_DIR = ".sessionactors"
INDEX_FILE = "index.sqlite3"
_SCHEMA = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: Rounds of correcting rows a page makes before it takes what the files say as it is.
_ROUNDS = 3
#: How many changes of the root a deleted session's row outlives, for the watches
#: (about 400 bytes each): what a root that deletes many sessions keeps of them.
DELETES_KEPT_FOR = 10_000
#: A watch notes how far it read once it read this many changes further: a
#: write a watch makes now and then, never one per read.
NOTE_SEEN_EVERY = 1_000
#: The most deleted rows one delete removes.
_PRUNED_AT_ONCE = 100

#: Reads one session's summary and latest kind from its files (None: no session).
ReadEntry = Callable[[str], "tuple[SessionSummary, str] | None"]

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        updated_us INTEGER NOT NULL,
        pinned INTEGER NOT NULL,
        title_fold TEXT NOT NULL,
        summary BLOB NOT NULL,
        revision INTEGER NOT NULL,
        kind TEXT NOT NULL,
        deleted INTEGER NOT NULL,
        rev_seq INTEGER NOT NULL,
        usage_seq INTEGER NOT NULL,
        seq INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS by_time ON sessions (deleted, updated_us DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS by_seq ON sessions (seq)",
    # The deleted sessions' rows alone, oldest first: a delete removes the old ones.
    "CREATE INDEX IF NOT EXISTS deleted_by_seq ON sessions (seq) WHERE deleted = 1",
    WRITERS_TABLE,
    # How far each open watch has read (a watch is a writer too: its row goes
    # with the writer's when its process is found gone).
    "CREATE TABLE IF NOT EXISTS watches (id TEXT PRIMARY KEY, seen INTEGER NOT NULL) WITHOUT ROWID",
)


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _encode(summary: SessionSummary) -> bytes:
    return orjson.dumps(converter.unstructure(summary))


def _decode(blob: bytes) -> SessionSummary | None:
    try:
        return converter.structure(orjson.loads(blob), SessionSummary)
    except Exception:  # a garbled row: the files say what it should be
        return None


def changes_of(row: tuple[Any, ...], after: int) -> list[tuple[int, Change]]:
    """The changes a row of :meth:`ListingIndex.changes` shows since ``seq`` ``after``."""
    session_id, revision, kind, deleted, rev_seq, usage_seq = row[:6]
    found: list[tuple[int, Change]] = []
    if rev_seq > after:
        if deleted:
            found.append((rev_seq, Change(session_id, "delete", None)))
        else:
            found.append((rev_seq, Change(session_id, kind, revision)))
    if usage_seq > after and not deleted:
        found.append((usage_seq, Change(session_id, "usage", None)))
    found.sort(key=lambda pair: pair[0])
    return found


@attrs.frozen
class IndexChanges:
    """What :meth:`ListingIndex.changes` read, in one transaction."""

    epoch: str  # a new one each time the index is built anew (seq numbers start again)
    rows: list[tuple[Any, ...]]  # see changes_of
    # Deleted sessions' rows up to this seq are gone: a reader that had not
    # seen that far may have missed a delete.
    pruned: int
    last: int  # the index's latest seq: the rows read cover every change up to it


class _Broken(Exception):
    """The index file cannot be used as it is: it is removed and built again."""


class ListingIndex:
    """The root's index; one per store, used from its worker threads (a connection each)."""

    def __init__(self, root: Path, read_entry: ReadEntry, list_ids: Callable[[], list[str]]):
        self.root = root
        self.directory = root / INDEX_DIR
        self.path = str(self.directory / INDEX_FILE)
        self._read_entry = read_entry
        self._list_ids = list_ids
        # Every open connection, and those no thread uses now, with the inode
        # of the file each opened. A connection is any thread's in turn: worker
        # threads come and go, so one kept per thread would pile up.
        self._connections: list[sqlite3.Connection] = []
        self._idle: list[tuple[sqlite3.Connection, int]] = []
        self._closed = False  # no connection is kept once the index is closed
        self._mutex = threading.Lock()
        # Registered by this store's first write into each index file (by its
        # inode), so a store that only reads leaves nothing behind and one
        # that writes is noticed if it dies.
        self._writer = Writer()
        self._registered_in: int | None = None
        # The thread a publish runs on while its hold's fsync runs on the
        # hold's own (made at the first such publish, ended by close).
        self._beside: concurrent.futures.ThreadPoolExecutor | None = None

    # -- connections --

    def _open(self) -> sqlite3.Connection:
        if not self.directory.is_dir():
            self.directory.mkdir(exist_ok=True)
        if _lost_its_header(self.path):
            # A new connection would wait for a WAL lock that never comes.
            raise sqlite3.DatabaseError("the index file lost its header")
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        try:
            # Small pages: a publish rewrites a few (the row's, its two
            # indexes'), and the WAL bytes it writes, though never synced,
            # slowed the save's own fsync (4 KB pages: 1.13x a save without
            # the index; 1 KB: 1.07x). Only a new file takes it.
            conn.execute("PRAGMA page_size=1024")
            conn.execute("PRAGMA journal_mode=WAL")
            # A cache: after a power loss it is checked, so no write waits for a sync.
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _TABLES:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA,))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (uuid.uuid4().hex,))
            schema = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
            conn.execute("COMMIT")
            # SQLite keeps no checksums: bytes garbled where a page still parses
            # would hide rows. Checked once a connection (a thread, a store).
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the index fails its quick_check")
        except BaseException:
            conn.close()
            raise
        if schema != _SCHEMA:
            conn.close()
            raise _Broken(f"schema {schema}, not {_SCHEMA}")
        with self._mutex:
            self._connections.append(conn)
        return conn

    def _inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _lease(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """A connection to the index file as it is now, and that file's inode.

        An idle connection to it is taken if there is one (those to a file
        since replaced are closed). It is handed back for the next use, its
        transaction rolled back if the block left one open, unless the block
        found the file damaged.
        """
        inode = self._inode()
        lease: tuple[sqlite3.Connection, int] | None = None
        with self._mutex:
            stale = [conn for conn, opened_on in self._idle if opened_on != inode]
            self._idle = [entry for entry in self._idle if entry[1] == inode]
            if self._idle:
                lease = self._idle.pop()
        for conn in stale:
            self._drop(conn)
        if lease is None:
            conn = self._open()
            try:
                lease = conn, os.stat(self.path).st_ino
            except OSError:
                self._drop(conn)
                raise
        try:
            yield lease
        except BaseException as exc:
            if isinstance(exc, sqlite3.DatabaseError) and not _not_damage(exc):
                self._drop(lease[0])
                raise
            with contextlib.suppress(sqlite3.Error):
                if lease[0].in_transaction:
                    lease[0].execute("ROLLBACK")
            self._hand_back(lease)
            raise
        self._hand_back(lease)

    def _hand_back(self, lease: tuple[sqlite3.Connection, int]) -> None:
        with self._mutex:
            if not self._closed and lease[0] in self._connections:
                self._idle.append(lease)
                return
        self._drop(lease[0])

    def _drop(self, conn: sqlite3.Connection) -> None:
        with self._mutex:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        with self._mutex:
            beside, self._beside = self._beside, None
        if beside is not None:
            beside.shutdown(wait=True)
        if self._registered_in is not None and self._inode() == self._registered_in:
            with contextlib.suppress(sqlite3.Error, OSError, _Broken), self._using() as conn:
                self._writer.remove(conn)
        with self._mutex:
            connections, self._connections = self._connections, []
            self._idle = []
            self._closed = True
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def register(self) -> None:
        """Register this store in the index file before its first write to the root.

        Never raises: a root the store cannot write makes the write itself fail.
        """
        try:
            with self._damage_removed(), self._lease() as (conn, inode):
                if inode != self._registered_in:
                    self._writer.add(conn)
                    self._registered_in = inode
        except (_Broken, sqlite3.Error, OSError) as exc:
            logger.debug("cannot register in %s: %s", self.directory, exc)

    def _remove(self) -> None:
        """Remove a broken index file (with its WAL): the next use builds a new one."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + suffix)

    @contextlib.contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """A connection; an index found damaged is removed (and the error raised as _Broken)."""
        with self._damage_removed(), self._lease() as (conn, _):
            yield conn

    @contextlib.contextmanager
    def _damage_removed(self) -> Iterator[None]:
        """Remove the index file if the block finds it damaged (raising _Broken).

        What SQLite tells of the file's surroundings (a lock held, a file it
        cannot open for want of descriptors, a full disk, an I/O error) is
        raised as it is: the file may well be sound, and other processes use it.
        Text that is not UTF-8 is damage: SQLite hands back the bytes a page
        holds, and bytes garbled where the page still parses come out so.
        """
        try:
            yield
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if isinstance(exc, sqlite3.DatabaseError) and _not_damage(exc):
                raise
            logger.warning("listing index %s is damaged (%s); building it again", self.path, exc)
            self._remove()
            raise _Broken(str(exc)) from exc

    # -- writes --

    def publish(
        self, session_id: str, summary: SessionSummary | None, kind: str | None, usage: bool
    ) -> None:
        """Record what a hold of ``session_id``'s lock changed; never raises for the index."""
        try:
            with self._using() as conn:
                _publish(conn, self.root, session_id, summary, kind, usage)
                if kind == "delete":
                    self._remove_if_unused(conn)
        except (_Broken, sqlite3.Error, OSError) as exc:
            # The write is done and durable; the index is a cache: the next
            # listing reconciles it with the files (a removed one is built again).
            logger.warning("the listing index missed a change of %r: %s", session_id, exc)
            self._distrust()

    def publish_beside(
        self, session_id: str, summary: SessionSummary | None, kind: str | None, usage: bool
    ) -> concurrent.futures.Future[None]:
        """:meth:`publish` on a thread of the index's own; the hold waits for it before it ends.

        A hold whose appends an fsync makes durable at its end would pay for
        the fsync and then for the publish; side by side, it pays for the
        longer of the two (the fsync, by far). The publish is still done
        before the session's lock is let go, so its order is the commits'.
        """
        with self._mutex:
            if self._beside is None:
                self._beside = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="sessionactors index"
                )
            beside = self._beside
        try:
            return beside.submit(self.publish, session_id, summary, kind, usage)
        except RuntimeError:  # closed meanwhile: done here, as it was before
            self.publish(session_id, summary, kind, usage)
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done

    def _distrust(self) -> None:
        """Make the next listing reconcile every row: one change may be missing."""
        try:
            with self._lease() as (conn, _):
                conn.execute("PRAGMA busy_timeout = 1000")
                try:
                    conn.execute("DELETE FROM meta WHERE key = 'complete'")
                finally:
                    conn.execute("PRAGMA busy_timeout = 60000")
        except (_Broken, sqlite3.Error, OSError):
            self._remove()

    def _remove_if_unused(self, conn: sqlite3.Connection) -> None:
        """Once the root holds no session and nobody else uses the index, remove it.

        A root whose sessions are all deleted is left as the store found it
        (the directory ``.sessionactors`` included). Another store or watch
        still registered keeps it, so no watch loses the feed it reads.
        """
        if conn.execute("SELECT 1 FROM sessions WHERE deleted = 0 LIMIT 1").fetchone():
            return
        others = [
            row[0]
            for row in conn.execute("SELECT id FROM writers WHERE id != ?", (self._writer.id,))
        ]
        if set(others) - set(dead_writers(conn)) or any(map(self._holds_session, self._list_ids())):
            return
        self._remove()
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    def absent(self, session_ids: list[str]) -> list[str]:
        """Those of ``session_ids`` the root's files hold no session of (unreadable: held)."""
        return [session_id for session_id in session_ids if not self._holds_session(session_id)]

    def _holds_session(self, session_id: str) -> bool:
        try:
            return self._read_entry(session_id) is not None
        except (CorruptSessionError, OSError):
            return True  # unreadable, but a session's, perhaps

    def add_watch(self) -> tuple[Writer, str, int]:
        """Register a watch (so the index is not removed under it, nor the rows it has not
        read); with the epoch and seq now."""
        watch = Writer()
        epoch, seen = self._register_watch(watch, None)
        return watch, epoch, seen

    def note_seen(self, watch: Writer, epoch: str, seen: int) -> None:
        """The watch has read every change up to ``seen`` of the index of ``epoch`` (registered
        anew in an index built anew); never raises: until noted, the rows after its last
        note stay. In another index (built anew since) nothing is noted."""
        with contextlib.suppress(sqlite3.Error, OSError, _Broken):
            self._register_watch(watch, (epoch, seen))

    def _register_watch(self, watch: Writer, read: tuple[str, int] | None) -> tuple[str, int]:
        """``watch`` registered as having read every change up to a seq of an epoch (None:
        the latest of this one); the index's epoch and that seq, in one transaction."""
        with self._using() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                epoch = str(
                    conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
                )
                seen = _last_seq(conn) if read is None else read[1]
                if read is None or read[0] == epoch:
                    watch.add(conn)
                    conn.execute("INSERT OR REPLACE INTO watches VALUES (?, ?)", (watch.id, seen))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        return epoch, seen

    def remove_watch(self, watch: Writer) -> None:
        with contextlib.suppress(sqlite3.Error, OSError, _Broken), self._using() as conn:
            watch.remove(conn)
            conn.execute("DELETE FROM watches WHERE id = ?", (watch.id,))

    # -- reads --

    def page(self, query: ListQuery) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        """A page of summaries, each as the session's files show it when read."""
        if not os.path.exists(self.path) and not self._list_ids():
            return [], []  # no session: no index made for nothing
        for attempt in range(2):
            try:
                with self._using() as conn:
                    if self._needs_reconcile(conn):
                        self.reconcile(conn)
                    return self._page(conn, query)
            except _Broken:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _needs_reconcile(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT value FROM meta WHERE key = 'complete'").fetchone()
        if row is None or dead_writers(conn):
            return True
        if _stored_root_mtime(conn) != _root_mtime(self.root):
            # A directory came or went that no write of this version told of
            # (a store of an older version): take in the sessions without a row.
            self._adopt_strangers(conn)
        return False

    def _adopt_strangers(self, conn: sqlite3.Connection) -> None:
        mtime = _root_mtime(self.root)
        known = {row[0] for row in conn.execute("SELECT id FROM sessions")}
        fixes: list[tuple[str, tuple[SessionSummary, str] | None]] = []
        unreadable = []
        for session_id in self._list_ids():
            if session_id in known:
                continue
            try:
                entry = self._read_entry(session_id)
            except (CorruptSessionError, OSError):
                unreadable.append(session_id)
                continue
            if entry is not None:
                fixes.append((session_id, entry))
        conn.execute("BEGIN IMMEDIATE")
        try:
            _correct(conn, fixes, in_transaction=True)
            for session_id in unreadable:
                _unreadable_row(conn, session_id)
            _store_root_mtime(conn, mtime)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _page(
        self, conn: sqlite3.Connection, query: ListQuery
    ) -> tuple[list[SessionSummary], list[CorruptSessionError]]:
        sql, args = _page_sql(query)
        for round_ in range(_ROUNDS):
            last = round_ == _ROUNDS - 1
            page: list[SessionSummary] = []
            errors: list[CorruptSessionError] = []
            fixes: list[tuple[str, tuple[SessionSummary, str] | None]] = []
            for session_id, blob in conn.execute(sql, args):
                indexed = _decode(blob)
                try:
                    entry = self._read_entry(session_id)
                except CorruptSessionError as exc:
                    errors.append(exc)
                    continue
                except OSError as exc:
                    where = exc.filename if isinstance(exc.filename, str) else session_id
                    errors.append(CorruptSessionError(where, f"cannot be read: {exc}"))
                    continue
                if entry is None or entry[0] != indexed:
                    fixes.append((session_id, entry))
                    if not last or entry is None or not query.admits(entry[0]):
                        continue
                    indexed = entry[0]
                assert indexed is not None
                page.append(indexed)
                if query.limit is not None and len(page) >= query.limit:
                    break
            if fixes:
                _correct(conn, fixes)
            if not fixes or last:
                page.sort(key=order_key, reverse=True)
                return page, errors
        raise AssertionError("unreachable")  # pragma: no cover

    def reconcile(self, conn: sqlite3.Connection | None = None) -> None:
        """Make every row agree with the files: read every session (after a crash, or anew)."""
        if conn is None:
            with self._using() as conn:
                self.reconcile(conn)
            return
        dead = dead_writers(conn)
        mtime = _root_mtime(self.root)  # before the scan: a change during it is seen next time
        # Every row's seq, the deleted ones' too: a delete during the scan moves
        # its session's (or makes a row), which the files read before it predate.
        before = dict(conn.execute("SELECT id, seq FROM sessions"))
        last = _last_seq(conn)
        found: dict[str, tuple[SessionSummary, str] | None] = {}
        unreadable: list[str] = []
        for session_id in self._list_ids():
            try:
                found[session_id] = self._read_entry(session_id)
            except (CorruptSessionError, OSError):
                unreadable.append(session_id)  # a page reports it when it meets its row
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = dict(conn.execute("SELECT id, seq FROM sessions"))
            indexed = {
                row[0]: row[1]
                for row in conn.execute("SELECT id, summary FROM sessions WHERE deleted = 0")
            }
            fixes: list[tuple[str, tuple[SessionSummary, str] | None]] = []
            # Rows removed of deletes made during the scan (DELETES_KEPT_FOR
            # changes came meanwhile): a session with no row then and now may
            # have been deleted, its row made and removed since.
            unsure = _pruned(conn) > last
            for session_id, entry in found.items():
                if now.get(session_id) != before.get(session_id):
                    continue  # published while the files were read: the row is newer
                if unsure and session_id not in now:
                    continue
                if entry is not None and (
                    session_id not in indexed or _decode(indexed[session_id]) != entry[0]
                ):
                    fixes.append((session_id, entry))
            for session_id in indexed:
                gone = session_id not in found and session_id not in unreadable
                if gone and now[session_id] == before.get(session_id):
                    fixes.append((session_id, None))
            _correct(conn, fixes, in_transaction=True)
            for session_id in unreadable:
                if session_id not in indexed:
                    _unreadable_row(conn, session_id)
            forget_writers(conn, dead)
            conn.executemany("DELETE FROM watches WHERE id = ?", [(i,) for i in dead])
            _store_root_mtime(conn, mtime)
            if unsure:  # the next listing reconciles again
                conn.execute("DELETE FROM meta WHERE key = 'complete'")
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('complete', 1)")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    # -- the change feed --

    def changes(self, after: int, session_id: str | None) -> IndexChanges:
        """The index's rows changed since ``seq`` ``after``, in ``seq`` order, with its epoch.

        See :func:`changes_of` for what a row tells.
        """
        sql = (
            "SELECT id, revision, kind, deleted, rev_seq, usage_seq, updated_us, seq"
            " FROM sessions"
            " WHERE seq > ?"
        )
        args: list[Any] = [after]
        if session_id is not None:
            sql += " AND id = ?"
            args.append(session_id)
        for attempt in range(2):
            try:
                with self._using() as conn:
                    conn.execute("BEGIN")
                    try:
                        epoch = conn.execute(
                            "SELECT value FROM meta WHERE key = 'epoch'"
                        ).fetchone()[0]
                        pruned = _pruned(conn)
                        rows = conn.execute(sql + " ORDER BY seq", args).fetchall()
                        last = _last_seq(conn)
                    finally:
                        conn.execute("COMMIT")
            except _Broken:  # removed: the next read builds it anew (a new epoch)
                if attempt:
                    raise
                continue
            return IndexChanges(str(epoch), rows, pruned, last)
        raise AssertionError("unreachable")  # pragma: no cover


#: What SQLite reports of a file it may not have read at all.
#: SQLite's primary result codes that tell of a file it may not have read at
#: all (their extended codes, such as SQLITE_READONLY_DIRECTORY, included):
#: PERM, BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, FULL, CANTOPEN, PROTOCOL.
_NOT_DAMAGE = frozenset({3, 5, 6, 7, 8, 9, 10, 13, 14, 15})


def _not_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` tells of the index's surroundings, not of a damaged file.

    A connection closed under its user (a store closing during a listing)
    tells nothing of the file either.
    """
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _NOT_DAMAGE:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _root_mtime(root: Path) -> int | None:
    try:
        return os.stat(root).st_mtime_ns
    except FileNotFoundError:
        return None


def _stored_root_mtime(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'root_mtime'").fetchone()
    return None if row is None else int(row[0])


def _store_root_mtime(conn: sqlite3.Connection, mtime: int | None) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('root_mtime', ?)", (mtime,))


def _lost_its_header(path: str) -> bool:
    """A main file cut shorter than SQLite's header while its WAL is still there."""
    try:
        return os.path.getsize(path) < 100 and os.path.exists(path + "-wal")
    except FileNotFoundError:
        return False


def _page_sql(query: ListQuery) -> tuple[str, list[Any]]:
    where = ["deleted = 0"]
    args: list[Any] = []
    if query.pinned is not None:
        where.append("pinned = ?")
        args.append(int(query.pinned))
    if query.title_fold is not None:
        where.append("instr(title_fold, ?) > 0")
        args.append(query.title_fold)
    if query.before is not None:
        before_us, before_id = _micros(query.before[0]), query.before[1]
        where.append("(updated_us < ? OR (updated_us = ? AND id < ?))")
        args.extend([before_us, before_us, before_id])
    sql = (
        f"SELECT id, summary FROM sessions WHERE {' AND '.join(where)}"
        " ORDER BY updated_us DESC, id DESC"
    )
    return sql, args


def _pruned(conn: sqlite3.Connection) -> int:
    """Up to which seq deleted sessions' rows were removed (0: none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'pruned'").fetchone()
    return 0 if row is None else int(row[0])


def _last_seq(conn: sqlite3.Connection) -> int:
    # The rows' own highest seq (through the by_seq index): no counter row to
    # write, one page fewer a change. A deleted session's row is removed only
    # once newer changes came (_prune_deleted), so it never goes back.
    value: int = conn.execute("SELECT coalesce(max(seq), 0) FROM sessions").fetchone()[0]
    return value


def _next_seq(conn: sqlite3.Connection) -> int:
    """The next seq (in a write transaction, which serializes it)."""
    return _last_seq(conn) + 1


def _upsert(
    conn: sqlite3.Connection, summary: SessionSummary, kind: str, seq: int, usage: bool
) -> None:
    conn.execute(
        """INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET updated_us = excluded.updated_us,
            pinned = excluded.pinned, title_fold = excluded.title_fold,
            summary = excluded.summary, revision = excluded.revision, kind = excluded.kind,
            deleted = 0, rev_seq = excluded.rev_seq,
            usage_seq = CASE WHEN ? THEN excluded.seq ELSE usage_seq END, seq = excluded.seq""",
        (
            summary.id,
            _micros(summary.updated_at),
            int(summary.pinned),
            summary.title.casefold(),
            _encode(summary),
            summary.revision,
            kind,
            seq,
            seq if usage else 0,
            seq,
            usage,
        ),
    )


def _unreadable_row(conn: sqlite3.Connection, session_id: str) -> None:
    """A row for a session whose files cannot be read: last in every order, told to no watch.

    Its summary is empty, so every page that reaches it reads the files
    again: it reports them while they stay unreadable, and corrects the row
    once they are mended.
    """
    conn.execute(
        "INSERT OR IGNORE INTO sessions VALUES (?, ?, 0, '', x'', 0, 'save', 0, 0, 0, 0)",
        (session_id, -(2**62)),
    )


def _publish(
    conn: sqlite3.Connection,
    root: Path,
    session_id: str,
    summary: SessionSummary | None,
    kind: str | None,
    usage: bool,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        seq = _next_seq(conn)
        if kind == "delete":
            marked = conn.execute(
                "UPDATE sessions SET deleted = 1, rev_seq = ?, seq = ? WHERE id = ?",
                (seq, seq, session_id),
            )
            if not marked.rowcount:
                # An index built anew since the session was written has no row
                # of it: one marked deleted tells the watches all the same.
                conn.execute(
                    "INSERT INTO sessions VALUES (?, 0, 0, '', x'', 0, 'delete', 1, ?, 0, ?)",
                    (session_id, seq, seq),
                )
            _prune_deleted(conn, seq - DELETES_KEPT_FOR)
            _store_root_mtime(conn, _root_mtime(root))  # its directory is gone
        elif summary is not None and kind is not None:
            new = conn.execute("SELECT deleted FROM sessions WHERE id = ?", (session_id,))
            row = new.fetchone()
            _upsert(conn, summary, kind, seq, usage)
            if row is None or row[0]:
                # A directory this version made: the root's mtime moved for it
                # (a stranger's at the same instant would wait for a rebuild).
                _store_root_mtime(conn, _root_mtime(root))
        elif usage:
            conn.execute(
                "UPDATE sessions SET usage_seq = ?, seq = ? WHERE id = ? AND deleted = 0",
                (seq, seq, session_id),
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _prune_deleted(conn: sqlite3.Connection, up_to: int) -> None:
    """Remove the rows of sessions deleted at ``seq`` ``up_to`` or before (in a transaction),
    but those an open watch has not read.

    The highest ``seq`` is never among them, so ``seq`` never goes back.
    """
    watches = conn.execute("SELECT id, seen FROM watches").fetchall()
    dead = set(dead_writers(conn)) if watches else set()
    for watch_id, seen in watches:
        if watch_id not in dead:  # a watch whose process is gone keeps nothing
            up_to = min(up_to, seen)
    if up_to <= 0:
        return
    # The oldest first, a bounded number at a time: a watch that held many
    # back, once it lets go, does not make one delete hold up every writer.
    oldest = conn.execute(
        # Named: without statistics SQLite would walk every deleted row by_time.
        "SELECT rowid, seq FROM sessions INDEXED BY deleted_by_seq"
        " WHERE deleted = 1 AND seq <= ? ORDER BY seq LIMIT ?",
        (up_to, _PRUNED_AT_ONCE),
    ).fetchall()
    if oldest:
        conn.executemany("DELETE FROM sessions WHERE rowid = ?", [(row[0],) for row in oldest])
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('pruned', ?)", (oldest[-1][1],))


def _correct(
    conn: sqlite3.Connection,
    fixes: list[tuple[str, tuple[SessionSummary, str] | None]],
    *,
    in_transaction: bool = False,
) -> None:
    """Make the rows of ``fixes`` say what the files said (None: no session)."""
    if not in_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        for session_id, entry in fixes:
            seq = _next_seq(conn)
            if entry is None:
                conn.execute(
                    "UPDATE sessions SET deleted = 1, rev_seq = ?, seq = ? WHERE id = ?",
                    (seq, seq, session_id),
                )
            else:
                _upsert(conn, entry[0], entry[1], seq, usage=False)
        if not in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if not in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
