"""The figures each workload produces, as frozen attrs values, and the converter that writes them.

Field names are the JSON keys (``sessionactors`` and ``classic`` are the
designs' names in ``designs.py``); every value is a median unless it says
otherwise.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from .designs import CLASSIC, CLASSIC_UNLOCKED, FLOOR, OURS, Counters


@attrs.frozen(kw_only=True)
class SaveLatency:
    """One design's uncontended saves: the median and every sample, in seconds per save."""

    value: float
    samples_s: tuple[float, ...]
    counters: Counters


@attrs.frozen(kw_only=True)
class FloorLatency:
    """The physical floor's writes: the median and every sample, in seconds per write."""

    value: float
    samples_s: tuple[float, ...]


@attrs.frozen(kw_only=True)
class LatencyResult:
    """Workload 1 in one variant: both designs and the floor, and their ratios."""

    description: str
    variant: str
    unit: str = "s per save"
    session_bytes: int
    sessionactors: SaveLatency
    classic: SaveLatency
    floor: FloorLatency
    ratio_vs_classic: float
    ratio_vs_floor: float
    classic_vs_floor: float

    def counters_by_design(self) -> dict[str, Counters]:
        """Each design's counters, summed over all rounds."""
        return {OURS: self.sessionactors.counters, CLASSIC: self.classic.counters}


@attrs.frozen(kw_only=True)
class Rate:
    """One design's throughput: the median rate, and each round's elapsed time and rate."""

    value: float
    elapsed_s: tuple[float, ...]
    ops_per_s: tuple[float, ...]
    counters: Counters


@attrs.frozen(kw_only=True)
class ThroughputResult:
    """Workloads 2 to 4: operations per second of each design, and their ratio.

    ``ratio`` is the ratio of the medians; ``paired_ratios`` each round's own
    ratio (classic's elapsed time over ours), to see the spread behind it.

    Many sessions (workload 3) only, in the same rounds, as evidence (no
    target): ``floor``, the durable work alone of a store keeping one
    directory and one log file per session (``floor_store.FloorStore``);
    ``floor_vs_classic`` and ``ratio_vs_floor`` (ours over the floor) the
    medians' ratios, ``paired_floor_ratios`` each round's classic elapsed
    time over the floor's. Left out of the JSON where the floor did not run.
    """

    unit: str = "operations per s"
    operations: int
    sessionactors: Rate
    classic: Rate
    # Token usage only (written as "classic-unlocked-appends"): for reference.
    classic_unlocked: Rate | None = None
    ratio: float
    paired_ratios: tuple[float, ...]
    ratio_vs_unlocked: float | None = None
    floor: Rate | None = None
    floor_vs_classic: float | None = None
    ratio_vs_floor: float | None = None
    paired_floor_ratios: tuple[float, ...] | None = None
    description: str

    def counters_by_design(self) -> dict[str, Counters]:
        """Each design's counters (and the floor's, if it ran), summed over all rounds."""
        counters = {OURS: self.sessionactors.counters, CLASSIC: self.classic.counters}
        if self.classic_unlocked is not None:
            counters[CLASSIC_UNLOCKED] = self.classic_unlocked.counters
        if self.floor is not None:
            counters[FLOOR] = self.floor.counters
        return counters


@attrs.frozen(kw_only=True)
class LiveMemory:
    """Workload 5a for one design: memory held per live actor (classic: per lock).

    ``value`` is the larger of the tracemalloc and RSS deltas, per session.
    """

    count: int
    held: int
    live_actors: int
    traced_bytes: int
    rss_delta_bytes: int
    traced_per_item: float
    rss_per_item: float
    value: float
    elapsed_s: float


@attrs.frozen(kw_only=True)
class ChurnMemory:
    """Workload 5b for one design: RSS after many session ids came and went.

    ``delta_bytes`` is the RSS at the end less the RSS after the warm-up;
    ``value`` is the RSS at the end. The allocated blocks count Python
    objects still alive: flat when nothing is kept per session, whatever the
    allocator does with RSS.
    """

    count: int
    wave: int
    warm_up_waves: int
    idle_timeout_s: float
    rss_initial_bytes: int
    rss_start_bytes: int
    rss_peak_bytes: int
    rss_end_bytes: int
    rss_checkpoints: tuple[tuple[int, int], ...]
    delta_bytes: int
    delta_from_initial_bytes: int
    allocated_blocks_start: int
    allocated_blocks_end: int
    value: int
    live_actors_at_end: int
    actors_started: int
    locks_at_end: int
    elapsed_s: float
    wait_idle_s: float


Figures = TypeVar("Figures", LiveMemory, ChurnMemory)


@attrs.frozen(kw_only=True)
class MemoryResult(Generic[Figures]):
    """A memory workload: each design's figures, measured in a child process of its own."""

    description: str
    unit: str
    sessionactors: Figures
    classic: Figures


@attrs.frozen(kw_only=True)
class FlushHopResult:
    """Workload 1d: a one-message save under "flush", against a bare thread hop; the ratio."""

    description: str
    unit: str = "s per save"
    sessionactors: SaveLatency
    hop: FloorLatency
    ratio_vs_hop: float

    def counters_by_design(self) -> dict[str, Counters]:
        return {OURS: self.sessionactors.counters}


@attrs.frozen(kw_only=True)
class Workloads:
    """Every workload's result, under the key the JSON and the tables name it by."""

    uncontended_save: LatencyResult
    uncontended_save_unchanged: LatencyResult
    uncontended_save_rewrite: LatencyResult
    flush_save: FlushHopResult
    contended_save: ThroughputResult
    contended_save_copies: ThroughputResult
    many_sessions: ThroughputResult
    token_usage: ThroughputResult
    memory_live: MemoryResult[LiveMemory]
    memory_churn: MemoryResult[ChurnMemory]


@attrs.frozen(kw_only=True)
class OneMessageSave:
    """Issue 13, 1 and 4: a durable save adding one message, against its floor and history=1.

    ``sessionactors`` is the store as opened by default (``history=100``);
    ``history_1`` the same workload on a store opened with ``history=1``;
    ``floor`` one append of the bytes such a save appends, ``os.fdatasync``
    and one ``trio.to_thread.run_sync`` hop. ``paired_history_ratios`` is
    each round's own ratio of the two stores' medians.
    """

    description: str
    unit: str = "s per save"
    messages: int
    session_bytes: int
    appended_bytes: float
    sessionactors: SaveLatency
    history_1: SaveLatency
    floor: FloorLatency
    ratio_vs_floor: float
    history_ratio: float
    paired_history_ratios: tuple[float, ...]


@attrs.frozen(kw_only=True)
class LifeRuns:
    """One side of a session's life: the median and each round's seconds."""

    value: float
    runs_s: tuple[float, ...]


@attrs.frozen(kw_only=True)
class SessionLife:
    """Issue 13, 2: a session's whole life, sessionactors against durable full rewrites.

    ``speedup`` is the rewrites' median over sessionactors'; ``paired_speedups``
    each round's own.
    """

    description: str
    unit: str = "s per life"
    steps: int
    durability: str
    sessionactors: LifeRuns
    rewrites: LifeRuns
    rewrite_bytes: int
    speedup: float
    paired_speedups: tuple[float, ...]


@attrs.frozen(kw_only=True)
class Fork:
    """Issue 13, 3: forks of a long session against one-message saves of it, in one store.

    ``bytes_per_fork`` is each fork's ``statistics().bytes_written`` delta;
    ``bytes_written`` their largest.
    """

    description: str
    unit: str = "s per call"
    messages: int
    session_bytes: int
    fork: SaveLatency
    save: SaveLatency
    bytes_per_fork: tuple[int, ...]
    bytes_written: int
    bytes_per_save: float
    ratio_vs_save: float


@attrs.frozen(kw_only=True)
class Revisions:
    """Issue 13's workloads (format 3: revisions, history, forks), under their JSON keys."""

    one_message_save: OneMessageSave
    session_life: SessionLife
    fork: Fork


@attrs.frozen(kw_only=True)
class Calls:
    """Timed calls of one kind: the median (``value``), the 99th percentile and every sample."""

    value: float
    p99: float
    samples_s: tuple[float, ...]


@attrs.frozen(kw_only=True)
class Listing:
    """Part two, 1: pages of ``list_sessions`` from the index, against the full scan.

    The pages were timed with the index built and a first call made (warm);
    ``full_scan`` is ``sessionactors.storage.files.list_summaries(root)``
    in a worker thread, what part one's ``list_sessions()`` did. Each ratio is
    the page's median over the scan's. ``built_s`` is how long making the
    root took (None: it came from the cache).
    """

    description: str
    unit: str = "s per call"
    sessions: int
    pinned: int
    title_matches: int
    page_size: int
    first_page: Calls
    pinned_page: Calls
    title_page: Calls
    no_match_page: Calls
    full_scan: Calls
    ratio_vs_scan: float
    pinned_ratio_vs_scan: float
    title_ratio_vs_scan: float
    index_bytes: int
    cached: bool
    built_s: float | None


@attrs.frozen(kw_only=True)
class IndexCost:
    """Part two, 2: a durable one-message save with the listing index, and without it.

    ``without_index`` is the same store with ``ListingIndex.publish`` made a
    no-op; ``ratio`` the medians' ratio, ``paired_ratios`` each round's own.
    """

    description: str
    unit: str = "s per save"
    messages: int
    session_bytes: int
    with_index: SaveLatency
    without_index: SaveLatency
    ratio: float
    paired_ratios: tuple[float, ...]


@attrs.frozen(kw_only=True)
class WatchLatency:
    """Part two, 3: from another process's returned write to its delivery here.

    One sample per write: the time from the write's return in the child
    (``time.monotonic()``, the machine's CLOCK_MONOTONIC) to the arrival of a
    change with that revision or a later one (what the contract promises). A
    sample can be negative: the change may come before the writer has its
    answer. ``delivered`` counts the changes received; ``missed`` the writes
    never followed by one (none, if the promise holds).
    """

    description: str
    unit: str = "s from return to delivery"
    backend: str
    writes: int
    delivered: int
    missed: int
    interval_s: float
    value: float
    p99: float
    max_s: float
    samples_s: tuple[float, ...]
    write_s: float


@attrs.frozen(kw_only=True)
class CounterUpdates:
    """Part two, 4: tasks incrementing one counter: ``update_session`` against the classic way.

    Classic: a lock file (``fcntl.flock``), read the session's JSON file,
    change it, write it back (temporary file, fsync, rename, directory
    fsync), each increment in a worker thread. ``ratio`` is the throughputs'
    (medians), ``paired_ratios`` each round's own.
    """

    description: str
    unit: str = "increments per s"
    increments: int
    tasks: int
    messages: int
    session_bytes: int
    sessionactors: Rate
    classic: Rate
    ratio: float
    paired_ratios: tuple[float, ...]
    fsyncs_per_increment: float
    classic_fsyncs_per_increment: float


@attrs.frozen(kw_only=True)
class Ui:
    """Part two's workloads for a UI, under their JSON keys.

    ``watch_postgres`` is None when no PostgreSQL server could be used;
    ``postgres_note`` says why (or which server was).
    """

    listing: Listing
    index_cost: IndexCost
    watch_files: WatchLatency
    watch_floor: WatchLatency
    watch_postgres: WatchLatency | None
    postgres_note: str
    counter: CounterUpdates


@attrs.frozen(kw_only=True)
class Timings:
    """Timed runs of one kind: the median (``value``) and every sample, in seconds."""

    value: float
    samples_s: tuple[float, ...]


@attrs.frozen(kw_only=True)
class ArchiveMove:
    """Issue 15: export and import of a long session against ``cp -r`` of its directory.

    ``export_then_import`` is both calls, timed together; ``export_session``
    and ``import_session`` each alone, in the same rounds. ``encode`` and
    ``decode`` are the store's ``encode_archive`` and ``decode_archive``
    calls inside them (the worker thread's share). ``durable_cp`` is ``cp -r``
    then ``os.fsync`` of every copied file and directory and of the
    directory the copy was made in (``durable_cp_fsyncs`` of them).
    ``load_session``, ``build_messages`` (as many ``Message(**d)`` as the
    session has, from ready values) and ``spawn`` (a child process doing
    nothing, which ``cp`` pays too) say what stops the target. ``counters``
    are the store's over the timed round trips; ``paired_ratios`` each
    round's own ratio of the round trip to ``cp``.
    """

    description: str
    unit: str = "s per call"
    messages: int
    usage_records: int
    message_bytes: float
    archive_bytes: int
    directory_bytes: int
    directory_files: int
    export_then_import: Timings
    export_session: Timings
    import_session: Timings
    encode: Timings
    decode: Timings
    cp: Timings
    durable_cp: Timings
    durable_cp_fsyncs: int
    load_session: Timings
    build_messages: Timings
    spawn: Timings
    counters: Counters
    ratio_vs_cp: float
    ratio_vs_durable_cp: float
    paired_ratios: tuple[float, ...]
    load_ratio_vs_cp: float
    build_ratio_vs_cp: float
    archive_ratio: float


converter = cattrs.Converter()
_throughput_fields = make_dict_unstructure_fn(
    ThroughputResult, converter, classic_unlocked=override(rename=CLASSIC_UNLOCKED)
)


def _unstructure_throughput(result: ThroughputResult) -> dict[str, Any]:
    # The unlocked classic's entries only where it ran (token usage), the floor's
    # only where it ran (many sessions), in field order.
    return {key: value for key, value in _throughput_fields(result).items() if value is not None}


converter.register_unstructure_hook(ThroughputResult, _unstructure_throughput)
