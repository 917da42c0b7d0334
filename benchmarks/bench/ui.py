"""Part two, for a UI: listing pages, the index's cost to a save, watch latency, update_session.

All on the file store with ``durability="fsync"`` unless said, each measured
beside its baseline (or floor) in the same run; every figure is a median
unless it says p99 (nearest rank).

1. Pages of ``list_sessions(limit=50)`` at 100,000 sessions, warm (the index
   built and a first call made): the first page, ``pinned=True`` (1% of
   sessions pinned), ``title_contains=`` matching 1% of titles, and, for
   reference, one matching none. Baseline: the full scan of part one,
   ``sessionactors.storage.files.list_summaries(root)`` in a worker thread.
   The rounds take turns: the pages' calls, then one scan. The root is made
   once with ``durability="flush"`` and many tasks, and kept in the cache
   directory (``benchmarks/results/cache/``, ignored by git) for the next
   runs; ``--quick`` makes 2,000 sessions in the scratch directory.
2. A durable save adding one message to a 200-message session with the
   listing index, against the same without it (``ListingIndex.publish``
   made a no-op): two stores open at once, their saves alternating one by
   one, so what the machine does meanwhile weighs on both alike.
3. Watch latency: a child process (``bench/ui_child.py``) makes durable
   one-message saves 5 ms apart and records ``time.monotonic()`` as each
   returns; this process's ``store.watch`` records when each revision
   arrives. On files, on PostgreSQL when a server can be reached, and the
   floor: the child appends a line to a file and this process wakes on
   inotify (no store, no index). The runs take turns.
4. 64 trio tasks incrementing one counter in ``runtime_state`` with
   ``update_session``, against the classic way: a lock file
   (``fcntl.flock``), read the session's JSON file, change it, write it back
   (temporary file, fsync, rename, directory fsync), 64 tasks each in a
   worker thread (``trio.to_thread``). Throughput of each, in turns.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

import sessionactors
from sessionactors import Message, Session, SessionStore, SessionSummary, open_store
from sessionactors.storage.files import list_summaries
from sessionactors.storage.files.generations import FORMAT
from sessionactors.storage.files.index import INDEX_DIR, ListingIndex

from .config import Config
from .data import EPOCH, make_message, make_session, whole_session_bytes
from .designs import CLASSIC, OURS, Counters
from .harness import (
    KB,
    Progress,
    add_counters,
    counter_delta,
    fresh_dir,
    median,
    orders,
    percentile,
    settle,
    turns,
)
from .results import (
    Calls,
    CounterUpdates,
    IndexCost,
    Listing,
    Rate,
    SaveLatency,
    Ui,
    WatchLatency,
)

#: Where the 100,000-session root is kept between runs (``benchmarks/results/`` is ignored by git).
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "results" / "cache"
#: Bump when the sessions the listing root is made of change: an older cache is made again.
RECIPE = 1
_READY = "ready.json"
_BENCHMARKS = Path(__file__).resolve().parent.parent
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# 1: the listing root's sessions: 1% pinned, 1% with the word in their title.
TITLE_WORD = "Refactor"
TITLE_QUERY = "refactor"  # casefolded by the store
NO_MATCH_QUERY = "no title holds this"
_BUILD_TASKS = 256
FIRST, PINNED, TITLE, NO_MATCH, SCAN = "first", "pinned", "title", "no-match", "scan"
PAGE_KINDS = (FIRST, PINNED, TITLE, NO_MATCH)
PAGES = "pages"

# 2: the save with and without the index.
WITH_INDEX, WITHOUT_INDEX = "with-index", "without-index"

# 3: watch latency.
FILES, POSTGRES, FLOOR = "files", "postgresql", "floor"
WATCH_SESSION = "watched"
_WATCH_MESSAGES = 10

# 4: the counter.
COUNTER_SESSION = "counter"
COUNTER = "counter"


def counters(store: SessionStore) -> Counters:
    """The store's ``statistics()`` now, as a dict."""
    return dict(attrs.asdict(store.statistics()))


def calls(samples: list[float]) -> Calls:
    """Timed calls: their median, p99 and samples."""
    return Calls(value=median(samples), p99=percentile(samples, 99), samples_s=tuple(samples))


# --- 1: pages of list_sessions against the full scan ---


def listing_title(number: int) -> str:
    """Session ``number``'s title: 1 in 100 holds :data:`TITLE_WORD`."""
    if number % 100 == 37:
        return f"{TITLE_WORD} the parser, part {number}"
    return f"Session {number}"


def listing_pinned(number: int) -> bool:
    """Whether session ``number`` is pinned: 1 in 100."""
    return number % 100 == 71


def listing_session(number: int) -> Session:
    """A small session (two short messages) of the listing root."""
    return Session(
        id=f"ui-{number:06d}",
        title=listing_title(number),
        created_at=EPOCH,
        messages=[
            Message(id="m0", role="user", content=f"question {number}: how do I list sessions?"),
            Message(id="m1", role="assistant", content="with list_sessions(limit=50)"),
        ],
        metadata={"model": "model-large"},
        runtime_state={"turn": 1},
    )


async def build_listing_root(root: Path, count: int, progress: Progress) -> None:
    """``count`` sessions under ``root`` (1% pinned), saved with "flush" by many tasks at once."""
    made = 0

    async def maker(store: SessionStore, first: int) -> None:
        nonlocal made
        for number in range(first, count, _BUILD_TASKS):
            await store.save_runtime_session(listing_session(number))
            if listing_pinned(number):
                await store.set_pinned(f"ui-{number:06d}", True)
            made += 1
            if made % 10_000 == 0:
                progress(f"ui 1: {made:,} of {count:,} sessions made")

    async with open_store(root, durability="flush", idle_timeout=0.05) as store:
        async with trio.open_nursery() as nursery:
            for first in range(min(_BUILD_TASKS, count)):
                nursery.start_soon(maker, store, first)
        # The index's first listing reads every session once (it reconciles):
        # untimed, here, so the cached root is ready as it is.
        await store.list_sessions(limit=1)


def _read_ready(path: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found


async def listing_root(
    config: Config, base: Path, cache: Path | None, progress: Progress
) -> tuple[Path, bool, float | None]:
    """The listing root: from the cache if it holds one of this recipe, else made now.

    Returns the root, whether it came from the cache, and how long making it took.
    """
    wanted = {"sessions": config.ui_sessions, "format": FORMAT, "recipe": RECIPE}
    if cache is None:
        home = fresh_dir(base, "ui-listing")
    else:
        home = cache / f"ui-listing-{config.ui_sessions}-format{FORMAT}-recipe{RECIPE}"
        ready = _read_ready(home / _READY)
        if ready is not None and all(ready.get(key) == value for key, value in wanted.items()):
            progress(f"ui 1: the {config.ui_sessions:,}-session root from the cache, {home}")
            return home / "root", True, None
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
    progress(f"ui 1: making {config.ui_sessions:,} sessions (durability flush) in {home}")
    started = time.perf_counter()
    await build_listing_root(home / "root", config.ui_sessions, progress)
    built = time.perf_counter() - started
    if cache is not None:
        ready_record = {
            **wanted,
            "sessionactors": sessionactors.__version__,
            "built_s": built,
            "built_at": datetime.now(timezone.utc).isoformat(),
        }
        (home / _READY).write_text(json.dumps(ready_record, indent=2) + "\n", encoding="utf-8")
    return home / "root", False, built


def _index_bytes(root: Path) -> int:
    directory = root / INDEX_DIR
    return sum(path.stat().st_size for path in directory.glob("index.sqlite3*"))


def _expected(kind: str, sessions: int, size: int) -> int:
    """How many summaries a page of ``kind`` holds in a root of ``sessions``."""
    matching = {
        FIRST: sessions,
        PINNED: sum(map(listing_pinned, range(sessions))),
        TITLE: sum(TITLE_QUERY in listing_title(number).casefold() for number in range(sessions)),
        NO_MATCH: 0,
    }[kind]
    return min(size, matching)


def _check_page(kind: str, page: list[SessionSummary], expected: int) -> None:
    """A page is what was asked for: full, newest first, every summary passing its filter."""
    if len(page) != expected:
        raise AssertionError(f"{kind} page: {len(page)} summaries, not {expected}")
    keys = [(summary.updated_at, summary.id) for summary in page]
    if keys != sorted(keys, reverse=True):
        raise AssertionError(f"{kind} page out of order")
    if kind == PINNED and not all(summary.pinned for summary in page):
        raise AssertionError("pinned page holds an unpinned session")
    if kind == TITLE and not all(TITLE_QUERY in summary.title.casefold() for summary in page):
        raise AssertionError("title page holds a title without the word")


async def _page(store: SessionStore, kind: str, size: int) -> list[SessionSummary]:
    if kind == FIRST:
        return await store.list_sessions(limit=size)
    if kind == PINNED:
        return await store.list_sessions(limit=size, pinned=True)
    if kind == TITLE:
        return await store.list_sessions(limit=size, title_contains=TITLE_QUERY)
    return await store.list_sessions(limit=size, title_contains=NO_MATCH_QUERY)


async def measure_listing(
    config: Config, base: Path, cache: Path | None, progress: Progress
) -> Listing:
    """Part two, 1: the pages and the full scan, taking turns round by round."""
    root, cached, built = await listing_root(config, base, cache, progress)
    size = config.ui_page_size
    samples: dict[str, list[float]] = {kind: [] for kind in (*PAGE_KINDS, SCAN)}
    expected = {kind: _expected(kind, config.ui_sessions, size) for kind in PAGE_KINDS}
    progress("ui 1: pages of 50 against the full scan")
    async with open_store(root, durability="fsync") as store:
        # Warm: the index built (a first call reconciles it if need be) and
        # a first call of each page made.
        for kind in PAGE_KINDS:
            for _ in range(2):
                _check_page(kind, await _page(store, kind, size), expected[kind])
        settle()
        for round_index in range(config.ui_list_rounds):
            for what in orders(round_index, [PAGES, SCAN]):
                if what == SCAN:
                    started = time.perf_counter()
                    summaries, errors = await trio.to_thread.run_sync(list_summaries, root)
                    samples[SCAN].append(time.perf_counter() - started)
                    if len(summaries) != config.ui_sessions or errors:
                        raise AssertionError(
                            f"scan: {len(summaries)} summaries, {len(errors)} errors"
                        )
                    del summaries
                else:
                    for _ in range(config.ui_page_calls):
                        for kind in PAGE_KINDS:
                            started = time.perf_counter()
                            page = await _page(store, kind, size)
                            samples[kind].append(time.perf_counter() - started)
                            _check_page(kind, page, expected[kind])
                settle()
    scan = median(samples[SCAN])
    index_bytes = _index_bytes(root)
    if cache is None:
        settle(root.parent)
    return Listing(
        description=(
            f"list_sessions(limit={size}) on the file store at {config.ui_sessions:,} sessions "
            f"(1% pinned, 1% with {TITLE_WORD!r} in their title), warm: index built and a "
            f"first call made; {config.ui_page_calls} calls of each page a round, "
            f"{config.ui_list_rounds} rounds; baseline: the full scan of part one, "
            "sessionactors.storage.files.list_summaries(root) in a worker thread, once a round"
        ),
        sessions=config.ui_sessions,
        pinned=_expected(PINNED, config.ui_sessions, config.ui_sessions),
        title_matches=_expected(TITLE, config.ui_sessions, config.ui_sessions),
        page_size=size,
        first_page=calls(samples[FIRST]),
        pinned_page=calls(samples[PINNED]),
        title_page=calls(samples[TITLE]),
        no_match_page=calls(samples[NO_MATCH]),
        full_scan=calls(samples[SCAN]),
        ratio_vs_scan=median(samples[FIRST]) / scan,
        pinned_ratio_vs_scan=median(samples[PINNED]) / scan,
        title_ratio_vs_scan=median(samples[TITLE]) / scan,
        index_bytes=index_bytes,
        cached=cached,
        built_s=built,
    )


# --- 2: a durable save with the index and without it ---


class PublishSwitch:
    """``ListingIndex.publish`` as it is, or a no-op (a store without its index), save by save.

    The switch is the class's attribute, set before each save: one save is
    in flight at a time, and ``publish`` runs inside it. ``skipped`` counts
    the calls that did nothing. :meth:`restore` puts the real one back.
    """

    def __init__(self) -> None:
        self.original = ListingIndex.publish
        self.skipped = 0

        def no_publish(index: ListingIndex, *args: object) -> None:
            self.skipped += 1

        self._no_publish: Callable[..., None] = no_publish

    def set(self, *, index: bool) -> None:
        ListingIndex.publish = self.original if index else self._no_publish  # type: ignore[method-assign]

    def restore(self) -> None:
        ListingIndex.publish = self.original  # type: ignore[method-assign]


@contextlib.contextmanager
def publish_switch() -> Iterator[PublishSwitch]:
    switch = PublishSwitch()
    try:
        yield switch
    finally:
        switch.restore()


async def _save_round(
    base: Path, config: Config, round_index: int, switch: PublishSwitch
) -> tuple[dict[str, list[float]], dict[str, Counters]]:
    """Two stores, one with the index and one without, their saves alternating one by one."""
    samples: dict[str, list[float]] = {WITH_INDEX: [], WITHOUT_INDEX: []}
    deltas: dict[str, Counters] = {}
    sessions = {who: make_session("indexed", config.ui_save_messages) for who in samples}
    roots = {who: fresh_dir(base, f"index-{who}") for who in samples}
    async with (
        open_store(roots[WITH_INDEX], durability="fsync") as with_index,
        open_store(roots[WITHOUT_INDEX], durability="fsync") as without_index,
    ):
        stores = {WITH_INDEX: with_index, WITHOUT_INDEX: without_index}
        for who, store in stores.items():  # exists: every timed save appends
            switch.set(index=who == WITH_INDEX)
            await store.save_runtime_session(sessions[who])
        gc.collect()
        before = {who: counters(store) for who, store in stores.items()}
        skipped = switch.skipped
        for save_index in range(config.ui_save_count):
            for who in orders(round_index + save_index, [WITH_INDEX, WITHOUT_INDEX]):
                session = sessions[who]
                session.messages.append(make_message(len(session.messages)))
                switch.set(index=who == WITH_INDEX)
                started = time.perf_counter()
                await stores[who].save_runtime_session(session)
                samples[who].append(time.perf_counter() - started)
        switch.restore()
        deltas = {who: counter_delta(before[who], counters(store)) for who, store in stores.items()}
    if switch.skipped - skipped != config.ui_save_count:
        raise AssertionError(f"{switch.skipped - skipped} calls of publish skipped, not every save")
    for root in roots.values():
        settle(root)
    return samples, deltas


async def measure_index_cost(config: Config, base: Path) -> IndexCost:
    """Part two, 2: saves with and without the index, alternating save by save."""
    samples: dict[str, list[float]] = {WITH_INDEX: [], WITHOUT_INDEX: []}
    totals: dict[str, Counters] = {WITH_INDEX: {}, WITHOUT_INDEX: {}}
    paired: list[float] = []
    with publish_switch() as switch:
        await _save_round(base, config, 0, switch)  # untimed: thread cache, page cache
        for round_index in range(config.ui_save_rounds):
            got, deltas = await _save_round(base, config, round_index, switch)
            for who, values in got.items():
                samples[who] += values
                add_counters(totals[who], deltas[who])
            paired.append(median(got[WITH_INDEX]) / median(got[WITHOUT_INDEX]))
    medians = {who: median(values) for who, values in samples.items()}
    size = len(whole_session_bytes(make_session("indexed", config.ui_save_messages)))
    return IndexCost(
        description=(
            f"durable saves (fsync) adding one message to a {config.ui_save_messages}-message "
            f"session ({size / KB:.0f} KB), one caller, {config.ui_save_count} per store and "
            f"round, {config.ui_save_rounds} rounds; two stores open at once on two roots, "
            "their saves alternating one by one (which goes first alternating too); "
            "without: ListingIndex.publish a no-op during that store's saves"
        ),
        messages=config.ui_save_messages,
        session_bytes=size,
        with_index=SaveLatency(
            value=medians[WITH_INDEX],
            samples_s=tuple(samples[WITH_INDEX]),
            counters=totals[WITH_INDEX],
        ),
        without_index=SaveLatency(
            value=medians[WITHOUT_INDEX],
            samples_s=tuple(samples[WITHOUT_INDEX]),
            counters=totals[WITHOUT_INDEX],
        ),
        ratio=medians[WITH_INDEX] / medians[WITHOUT_INDEX],
        paired_ratios=tuple(paired),
    )


# --- 3: watch latency, from another process's returned write to its delivery ---


def _child_command(mode: str, target: str, session_id: str, config: Config) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.ui_child",
        mode,
        target,
        session_id,
        str(config.ui_watch_writes),
        str(config.ui_watch_interval),
    ]


async def _with_child(
    command: list[str],
    receive: Callable[[], Awaitable[tuple[int, float]]],
    last: int,
    timeout: float,
) -> tuple[list[tuple[int, float]], list[Any]]:
    """Run the child while ``receive()`` hands out (revision, arrival) until ``last`` arrives.

    Returns what arrived and the child's writes. Once the child has exited,
    what has not arrived yet has a few seconds more.
    """
    arrivals: list[tuple[int, float]] = []
    done: dict[str, subprocess.CompletedProcess[bytes]] = {}
    with trio.CancelScope(deadline=trio.current_time() + timeout) as watching:

        async def child() -> None:
            done["child"] = await trio.run_process(
                command, cwd=_BENCHMARKS, capture_stdout=True, capture_stderr=True, check=False
            )
            grace = 0.0 if done["child"].returncode else 5.0
            watching.deadline = min(watching.deadline, trio.current_time() + grace)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            while True:
                revision, arrived = await receive()
                arrivals.append((revision, arrived))
                if revision >= last:
                    break
            # Not cancelled: the child is let finish (it is past its last write).
    if "child" not in done:
        raise AssertionError(f"{command[3]} child did not finish in {timeout:.0f} s")
    finished = done["child"]
    if finished.returncode != 0:
        raise RuntimeError(f"watch child failed:\n{finished.stderr.decode(errors='replace')}")
    writes: list[Any] = json.loads(finished.stdout)["writes"]
    return arrivals, writes


@attrs.frozen
class _Run:
    """One run of the watch workload: per write, its latency; changes received; writes missed."""

    latencies: list[float]
    delivered: int
    missed: int
    write_s: list[float]


def _run_of(arrivals: list[tuple[int, float]], writes: list[Any]) -> _Run:
    """Per write, from its return to the first arrival of its revision or a later one."""
    arrivals.sort()
    revisions = [revision for revision, _ in arrivals]
    # The earliest arrival of any revision at or after each index.
    earliest = [math.inf] * (len(arrivals) + 1)
    for position in range(len(arrivals) - 1, -1, -1):
        earliest[position] = min(earliest[position + 1], arrivals[position][1])
    latencies: list[float] = []
    missed = 0
    for revision, returned, _ in writes:
        position = bisect.bisect_left(revisions, revision)
        if earliest[position] == math.inf:
            missed += 1
        else:
            latencies.append(earliest[position] - returned)
    return _Run(latencies, len(arrivals), missed, [seconds for _, _, seconds in writes])


async def _watch_store(target: str, session_id: str, config: Config) -> _Run:
    """One run on a store: the parent watches, the child writes."""
    timeout = config.ui_watch_writes * (config.ui_watch_interval + 0.05) + 60
    async with open_store(target, durability="fsync") as store:
        session = make_session(session_id, _WATCH_MESSAGES)
        await store.save_runtime_session(session)
        last = session.revision + config.ui_watch_writes
        async with store.watch(session_id) as changes:
            iterator = aiter(changes)

            async def receive() -> tuple[int, float]:
                while True:
                    change = await anext(iterator)
                    arrived = time.monotonic()
                    if change.revision is not None:
                        return change.revision, arrived

            command = _child_command("store", target, session_id, config)
            arrivals, writes = await _with_child(command, receive, last, timeout)
        await store.delete_session(session_id)
    return _run_of(arrivals, writes)


class _Tail:
    """The floor's reader: the numbers of the lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.rest = b""

    def read(self) -> list[int]:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC)
            except FileNotFoundError:
                return []
        data = self.rest + os.read(self.fd, 1 << 20)
        *lines, self.rest = data.split(b"\n")
        return [int(line) for line in lines]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


async def _watch_floor(directory: Path, config: Config) -> _Run:
    """The floor: the child appends lines to a file; this process wakes on inotify, reads them."""
    from asyncinotify import InitFlags, Inotify, Mask

    timeout = config.ui_watch_writes * (config.ui_watch_interval + 0.05) + 60
    tail = _Tail(directory / "floor.log")
    inotify = Inotify(flags=InitFlags.CLOEXEC | InitFlags.NONBLOCK, sync_timeout=0)
    try:
        inotify.add_watch(directory, Mask.MODIFY | Mask.CREATE)
        pending: list[tuple[int, float]] = []

        async def receive() -> tuple[int, float]:
            while not pending:
                await trio.lowlevel.wait_readable(inotify.fd)
                while inotify.sync_get() is not None:
                    pass
                numbers = tail.read()
                read = time.monotonic()  # every line read at one wake arrived then
                pending.extend((number, read) for number in numbers)
            return pending.pop(0)

        command = _child_command("floor", str(tail.path), "-", config)
        arrivals, writes = await _with_child(command, receive, config.ui_watch_writes, timeout)
    finally:
        inotify.close()
        tail.close()
    return _run_of(arrivals, writes)


def _schema_url(dsn: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _shown(dsn: str) -> str:
    """The URL without its password, to print."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _schema(dsn: str, schema: str, *, create: bool) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        name = sql.Identifier(schema)
        if create:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        else:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


async def postgres_schema(dsn: str | None) -> tuple[str | None, str, str | None]:
    """A fresh schema on the server, if one can be reached: its URL, a note, its name."""
    if dsn is None:
        return None, "PostgreSQL skipped: no server named (--postgres or the environment)", None
    schema = f"bench_ui_{uuid.uuid4().hex[:12]}"
    try:
        await trio.to_thread.run_sync(lambda: _schema(dsn, schema, create=True))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"PostgreSQL skipped: {_shown(dsn)} not reachable ({reason})", None
    return _schema_url(dsn, schema), f"PostgreSQL at {_shown(dsn)}, schema {schema}", schema


def _watch_result(backend: str, config: Config, runs: list[_Run]) -> WatchLatency:
    latencies = [value for run in runs for value in run.latencies]
    writes = config.ui_watch_writes * len(runs)
    what = {
        FILES: "durable one-message saves through a store on the same root",
        POSTGRES: "durable one-message saves through a store on the same database",
        FLOOR: "appends of one line to a file in a directory this process watches with "
        "inotify (no store: the signal alone, read inline)",
    }[backend]
    return WatchLatency(
        description=(
            f"{backend}: a child process makes {writes:,} {what}, "
            f"{config.ui_watch_interval * 1000:.0f} ms apart, in {len(runs)} runs; per write, "
            "from its return in the child (time.monotonic) to the arrival here of a change "
            "with that revision or a later one"
        ),
        backend=backend,
        writes=writes,
        delivered=sum(run.delivered for run in runs),
        missed=sum(run.missed for run in runs),
        interval_s=config.ui_watch_interval,
        value=median(latencies),
        p99=percentile(latencies, 99),
        max_s=max(latencies, default=float("nan")),
        samples_s=tuple(latencies),
        write_s=median([value for run in runs for value in run.write_s]),
    )


async def measure_watch(
    config: Config, base: Path, dsn: str | None, progress: Progress
) -> tuple[WatchLatency, WatchLatency, WatchLatency | None, str]:
    """Part two, 3: files, the floor and (when reachable) PostgreSQL, in turns."""
    url, note, schema = await postgres_schema(dsn)
    progress(f"ui 3: watch latency ({note})")
    backends = [FILES, FLOOR] + ([POSTGRES] if url is not None else [])
    runs: dict[str, list[_Run]] = {backend: [] for backend in backends}
    try:
        for round_index in range(config.ui_watch_rounds):
            for backend in orders(round_index, backends):
                if backend == FILES:
                    root = fresh_dir(base, "watch-files")
                    runs[FILES].append(await _watch_store(str(root), WATCH_SESSION, config))
                    settle(root)
                elif backend == FLOOR:
                    directory = fresh_dir(base, "watch-floor")
                    runs[FLOOR].append(await _watch_floor(directory, config))
                    settle(directory)
                else:
                    assert url is not None
                    session_id = f"{WATCH_SESSION}-{round_index}"
                    runs[POSTGRES].append(await _watch_store(url, session_id, config))
    finally:
        if schema is not None:
            assert dsn is not None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: _schema(dsn, schema, create=False))
    postgres = _watch_result(POSTGRES, config, runs[POSTGRES]) if url is not None else None
    return (
        _watch_result(FILES, config, runs[FILES]),
        _watch_result(FLOOR, config, runs[FLOOR]),
        (postgres),
        note,
    )


# --- 4: 64 tasks incrementing one counter: update_session against flock + rewrite ---


def _increment(session: Session) -> None:
    session.runtime_state[COUNTER] = session.runtime_state.get(COUNTER, 0) + 1


def _shares(total: int, tasks: int) -> list[int]:
    """``total`` increments split between ``tasks`` tasks as evenly as can be."""
    return [total // tasks + (1 if task < total % tasks else 0) for task in range(tasks)]


async def _ours_counter(root: Path, config: Config) -> tuple[float, Counters]:
    """``update_session`` from every task at once; seconds and the counters."""
    session = make_session(COUNTER_SESSION, config.ui_counter_messages)
    async with open_store(root, durability="fsync") as store:
        await store.save_runtime_session(session)
        await store.update_session(COUNTER_SESSION, _increment)  # untimed: the first

        async def task(share: int) -> None:
            for _ in range(share):
                await store.update_session(COUNTER_SESSION, _increment)

        gc.collect()
        before = counters(store)
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for share in _shares(config.ui_counter_increments, config.ui_counter_tasks):
                nursery.start_soon(task, share)
        elapsed = time.perf_counter() - started
        delta = counter_delta(before, counters(store))
        final = await store.load_session(COUNTER_SESSION)
    assert final is not None
    if final.runtime_state.get(COUNTER) != config.ui_counter_increments + 1:
        raise AssertionError(f"counter at {final.runtime_state.get(COUNTER)}: increments lost")
    return elapsed, delta


class ClassicCounter:
    """The classic read-modify-write of a session file, under a lock file (``fcntl.flock``).

    Each increment, in a worker thread: open the lock file and take its
    exclusive lock (the lock excludes other processes too), read the
    session's JSON file, change the counter (and ``updated_at``), write the
    whole file to a temporary file, fsync, rename, fsync the directory,
    close the lock file (which releases the lock).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file = directory / "session.json"
        self.lock = directory / "session.lock"
        self.fsyncs = 0
        self.bytes_written = 0

    def _replace(self, data: bytes) -> None:
        temp = self.directory / f".session.{uuid.uuid4().hex}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.file)
        dir_fd = os.open(self.directory, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.fsyncs += 2
        self.bytes_written += len(data)

    def create(self, session: Session) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._replace(whole_session_bytes(session))

    def increment(self) -> None:
        lock_fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            document = orjson.loads(self.file.read_bytes())
            state = document["runtime_state"]
            state[COUNTER] = state.get(COUNTER, 0) + 1
            document["updated_at"] = datetime.now(timezone.utc).isoformat()
            self._replace(orjson.dumps(document))
        finally:
            os.close(lock_fd)

    def value(self) -> int:
        count: int = orjson.loads(self.file.read_bytes())["runtime_state"][COUNTER]
        return count


async def _classic_counter(root: Path, config: Config) -> tuple[float, Counters]:
    """The classic increments, every task at once, each in a thread of its own."""
    counter = ClassicCounter(root / COUNTER_SESSION)
    counter.create(make_session(COUNTER_SESSION, config.ui_counter_messages))
    counter.increment()  # untimed: the first
    limiter = trio.CapacityLimiter(config.ui_counter_tasks)

    async def task(share: int) -> None:
        for _ in range(share):
            await trio.to_thread.run_sync(counter.increment, limiter=limiter)

    gc.collect()
    fsyncs, written = counter.fsyncs, counter.bytes_written
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for share in _shares(config.ui_counter_increments, config.ui_counter_tasks):
            nursery.start_soon(task, share)
    elapsed = time.perf_counter() - started
    if counter.value() != config.ui_counter_increments + 1:
        raise AssertionError(f"classic counter at {counter.value()}: increments lost")
    return elapsed, {
        "fsyncs": counter.fsyncs - fsyncs,
        "bytes_written": counter.bytes_written - written,
    }


def _rate(elapsed: list[float], operations: int, totals: Counters) -> Rate:
    rates = [operations / seconds for seconds in elapsed]
    return Rate(
        value=median(rates), elapsed_s=tuple(elapsed), ops_per_s=tuple(rates), counters=totals
    )


async def measure_counter(config: Config, base: Path) -> CounterUpdates:
    """Part two, 4: both designs, taking turns round by round."""
    runs = {OURS: _ours_counter, CLASSIC: _classic_counter}
    elapsed: dict[str, list[float]] = {OURS: [], CLASSIC: []}
    totals: dict[str, Counters] = {OURS: {}, CLASSIC: {}}
    paired: list[float] = []
    for round_index in range(config.ui_counter_rounds):
        this_round: dict[str, float] = {}
        for design in turns(round_index, [OURS, CLASSIC]):
            root = fresh_dir(base, f"counter-{design}")
            seconds, delta = await runs[design](root, config)
            elapsed[design].append(seconds)
            add_counters(totals[design], delta)
            this_round[design] = seconds
            settle(root)
        paired.append(this_round[CLASSIC] / this_round[OURS])
    operations = config.ui_counter_increments
    ours = _rate(elapsed[OURS], operations, totals[OURS])
    classic = _rate(elapsed[CLASSIC], operations, totals[CLASSIC])
    done = operations * config.ui_counter_rounds
    size = len(whole_session_bytes(make_session(COUNTER_SESSION, config.ui_counter_messages)))
    return CounterUpdates(
        description=(
            f"{config.ui_counter_tasks} trio tasks incrementing runtime_state[{COUNTER!r}] of "
            f"one {config.ui_counter_messages}-message session ({size / KB:.0f} KB), "
            f"{operations:,} increments in all, {config.ui_counter_rounds} rounds in turns, "
            "fsync; classic: flock on a lock file, read the session's JSON file, change it, "
            "temporary file + fsync + rename + directory fsync, each increment in a worker "
            "thread (trio.to_thread, one thread per task)"
        ),
        increments=operations,
        tasks=config.ui_counter_tasks,
        messages=config.ui_counter_messages,
        session_bytes=size,
        sessionactors=ours,
        classic=classic,
        ratio=ours.value / classic.value,
        paired_ratios=tuple(paired),
        fsyncs_per_increment=totals[OURS].get("fsyncs", 0) / done,
        classic_fsyncs_per_increment=totals[CLASSIC].get("fsyncs", 0) / done,
    )


async def measure_ui(
    config: Config, base: Path, progress: Progress, *, cache: Path | None, postgres: str | None
) -> Ui:
    """Part two's workloads, in one trio run."""
    listing = await measure_listing(config, base, cache, progress)
    progress("ui 2: a durable save with the listing index and without it")
    index_cost = await measure_index_cost(config, base)
    files, floor, on_postgres, note = await measure_watch(config, base, postgres, progress)
    progress("ui 4: 64 tasks incrementing with update_session against flock + rewrite")
    counter = await measure_counter(config, base)
    return Ui(
        listing=listing,
        index_cost=index_cost,
        watch_files=files,
        watch_floor=floor,
        watch_postgres=on_postgres,
        postgres_note=note,
        counter=counter,
    )
