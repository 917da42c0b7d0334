"""Issue 13: what format 3 (revisions, history, forks) costs, each against its own baseline.

All with ``durability="fsync"``, measured in the same run as the baseline
each is compared with, the runs taking turns (every order in turn, see
:func:`~.harness.orders`); every figure is a median.

1. A save adding one message to a 200-message session, against the physical
   floor of such a save: one ``write`` of the very bytes the save appended
   (read back from the session's log), ``os.fdatasync`` and one
   ``trio.to_thread.run_sync`` hop, on an open file already holding the
   session's bytes.
2. The whole life of a 2,000-step session (one new message and one save a
   step) against a writer that rewrites the whole session durably each
   step: ``benchmarks/journal.py``'s comparison, taking turns, with this
   suite's messages.
3. Forks of a 10,000-message session against one-message saves of it, in
   the same store: the bytes a fork writes (``statistics().bytes_written``)
   and its time against a save's.
4. The saves of 1 on a store opened with ``history=100`` (the default) and
   on one opened with ``history=1``, in the same rounds: what keeping
   revisions costs a save.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import attrs
import trio
from journal import session_life

from sessionactors import Session, SessionStore, open_store

from .config import Config
from .data import make_message, make_session, whole_session_bytes
from .designs import Counters
from .harness import KB, Progress, add_counters, counter_delta, fresh_dir, median, orders, settle
from .results import (
    FloorLatency,
    Fork,
    LifeRuns,
    OneMessageSave,
    Revisions,
    SaveLatency,
    SessionLife,
)

HISTORY_100 = "history=100"
HISTORY_1 = "history=1"
FLOOR = "floor"
HISTORIES = {HISTORY_100: 100, HISTORY_1: 1}
FORK = "fork"
SAVE = "save"
SOURCE_ID = "source"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def counters(store: SessionStore) -> Counters:
    """The store's ``statistics()`` now, as a dict."""
    return dict(attrs.asdict(store.statistics()))


def current_log(directory: Path) -> Path:
    """The session's one log file (format 3: ``log.<seq>.<gen>.jsonl``)."""
    found = sorted(directory.glob("log.*.jsonl"))
    if len(found) != 1:
        raise AssertionError(f"{directory}: {len(found)} log generations, expected one")
    return found[0]


async def timed_save(
    store: SessionStore, session: Session, samples: list[float], written: list[int]
) -> None:
    """Add one message to ``session`` (untimed) and save it, timed; its bytes written."""
    session.messages.append(make_message(len(session.messages)))
    before = store.statistics().bytes_written
    start = time.perf_counter()
    await store.save_runtime_session(session)
    samples.append(time.perf_counter() - start)
    written.append(store.statistics().bytes_written - before)


# --- 1 and 4: a one-message save, against its floor and history=1 ---


@attrs.frozen
class _SaveRun:
    samples: list[float]
    written: list[int]
    counters: Counters
    log: bytes  # the session's log afterwards: where the floor's bytes come from


async def saves_once(root: Path, config: Config, history: int) -> _SaveRun:
    """One store's timed one-message saves of a fresh 200-message session."""
    session = make_session("revisions", config.save_messages)
    async with open_store(root, durability="fsync", history=history) as store:
        await store.save_runtime_session(session)  # exists: every timed save appends
        gc.collect()
        before = counters(store)
        samples: list[float] = []
        written: list[int] = []
        for _ in range(config.save_count):
            await timed_save(store, session, samples, written)
        delta = counter_delta(before, counters(store))
    return _SaveRun(samples, written, delta, current_log(root / session.id).read_bytes())


def _append_synced(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fdatasync(fd)


async def floor_once(root: Path, prefix: bytes, chunks: list[bytes]) -> list[float]:
    """The floor's timed appends: each chunk written, fdatasynced, in one thread hop.

    The file already holds ``prefix`` (the session's log before the saves),
    durably, so each append lands where the save's did.
    """
    path = root / "log.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC, 0o644)
    try:
        _append_synced(fd, prefix)
        os.fsync(fd)
        dir_fd = os.open(root, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        gc.collect()
        samples = []
        for chunk in chunks:
            start = time.perf_counter()
            await trio.to_thread.run_sync(_append_synced, fd, chunk)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        os.close(fd)


def appended_chunks(run: _SaveRun) -> tuple[bytes, list[bytes]]:
    """The log before the timed saves, and the bytes each save appended, from ``run``."""
    total = sum(run.written)
    if not 0 < total <= len(run.log):
        raise AssertionError(f"{total} bytes written, the log holds {len(run.log)}")
    prefix = run.log[: len(run.log) - total]
    chunks = []
    offset = len(prefix)
    for size in run.written:
        chunk = run.log[offset : offset + size]
        # One message record, then its commit: nothing else was written.
        if not (chunk.startswith(b"m") and chunk.endswith(b"\n") and b"\nc" in chunk):
            raise AssertionError(f"save at byte {offset} did not append a message and a commit")
        chunks.append(chunk)
        offset += size
    return prefix, chunks


async def measure_one_message_save(config: Config, base: Path) -> OneMessageSave:
    """Issue 13, 1 and 4: both stores and the floor, taking turns round by round."""
    # One untimed pass of each first (thread cache, imports, page cache); the
    # default store's also gives the floor its bytes.
    warm = await saves_once(fresh_dir(base, "warm-save"), config, HISTORIES[HISTORY_100])
    prefix, chunks = appended_chunks(warm)
    await floor_once(fresh_dir(base, "warm-floor"), prefix, chunks)
    settle(base / "warm-save")
    settle(base / "warm-floor")
    samples: dict[str, list[float]] = {HISTORY_100: [], HISTORY_1: [], FLOOR: []}
    totals: dict[str, Counters] = {HISTORY_100: {}, HISTORY_1: {}}
    written: list[int] = []
    paired: list[float] = []
    for round_index in range(config.save_rounds):
        this_round: dict[str, float] = {}
        for who in orders(round_index, [HISTORY_100, HISTORY_1, FLOOR]):
            root = fresh_dir(base, f"save-{who}")
            if who == FLOOR:
                got = await floor_once(root, prefix, chunks)
            else:
                run = await saves_once(root, config, HISTORIES[who])
                if run.written != warm.written:
                    raise AssertionError(f"{who}: saves wrote {run.written}, not {warm.written}")
                got = run.samples
                add_counters(totals[who], run.counters)
                written += run.written
            samples[who] += got
            this_round[who] = median(got)
            settle(root)
        paired.append(this_round[HISTORY_100] / this_round[HISTORY_1])
    medians = {who: median(values) for who, values in samples.items()}
    size = len(whole_session_bytes(make_session("revisions", config.save_messages)))
    appended = median(written)
    return OneMessageSave(
        description=(
            f"durable saves (fsync) adding one message to a {config.save_messages}-message "
            f"session ({size / KB:.0f} KB), {config.save_count} per store, one caller, on "
            f"stores opened with history=100 and history=1; floor: the bytes each save "
            f"appended (median {appended:,.0f} B) written to an open file, fdatasync, in one "
            "trio.to_thread.run_sync hop"
        ),
        messages=config.save_messages,
        session_bytes=size,
        appended_bytes=appended,
        sessionactors=SaveLatency(
            value=medians[HISTORY_100],
            samples_s=tuple(samples[HISTORY_100]),
            counters=totals[HISTORY_100],
        ),
        history_1=SaveLatency(
            value=medians[HISTORY_1],
            samples_s=tuple(samples[HISTORY_1]),
            counters=totals[HISTORY_1],
        ),
        floor=FloorLatency(value=medians[FLOOR], samples_s=tuple(samples[FLOOR])),
        ratio_vs_floor=medians[HISTORY_100] / medians[FLOOR],
        history_ratio=medians[HISTORY_100] / medians[HISTORY_1],
        paired_history_ratios=tuple(paired),
    )


# --- 2: a session's life against durable full rewrites ---


async def measure_session_life(config: Config, base: Path) -> SessionLife:
    """Issue 13, 2: ``benchmarks/journal.py``'s life comparison, in turns, fsync."""
    # An untimed short life of each first.
    await session_life(fresh_dir(base, "warm-life"), 20, "fsync", message=make_message)
    settle(base / "warm-life")
    life = await session_life(
        fresh_dir(base, "life"),
        config.life_steps,
        "fsync",
        rounds=config.life_rounds,
        message=make_message,
    )
    settle(base / "life")
    return SessionLife(
        description=(
            f"the whole life of a {config.life_steps:,}-step session (one new message and "
            "one durable save a step) against rewriting the whole session durably each "
            "step (temp file, fsync, rename, directory fsync), in a worker thread"
        ),
        steps=life["steps"],
        durability=life["durability"],
        sessionactors=LifeRuns(value=life["journal_s"], runs_s=tuple(life["journal_runs_s"])),
        rewrites=LifeRuns(value=life["rewrite_s"], runs_s=tuple(life["rewrite_runs_s"])),
        rewrite_bytes=life["rewrite_bytes"],
        speedup=life["speedup"],
        paired_speedups=tuple(life["paired_speedups"]),
    )


# --- 3: a fork of a long session against a one-message save of it ---


async def measure_fork(config: Config, base: Path) -> Fork:
    """Issue 13, 3: forks and one-message saves of one long session, in one store.

    Each round times ``fork_count`` forks (each a new session) and as many
    one-message saves of the source, in turns; the forks are deleted
    (untimed) at the end of the round.
    """
    root = fresh_dir(base, "fork")
    source = make_session(SOURCE_ID, config.fork_messages)
    size = len(whole_session_bytes(source))
    samples: dict[str, list[float]] = {FORK: [], SAVE: []}
    totals: dict[str, Counters] = {FORK: {}, SAVE: {}}
    fork_bytes: list[int] = []
    save_bytes: list[int] = []
    async with open_store(root, durability="fsync") as store:
        await store.save_runtime_session(source)
        # Untimed: one fork and one save first.
        await store.fork_session(SOURCE_ID, "warm-fork")
        await store.delete_session("warm-fork")
        await timed_save(store, source, [], [])
        settle()
        for round_index in range(config.fork_rounds):
            forks = [f"fork-{round_index}-{index}" for index in range(config.fork_count)]
            for what in orders(round_index, [FORK, SAVE]):
                before = counters(store)
                if what == FORK:
                    for new_id in forks:
                        written = store.statistics().bytes_written
                        start = time.perf_counter()
                        await store.fork_session(SOURCE_ID, new_id)
                        samples[FORK].append(time.perf_counter() - start)
                        fork_bytes.append(store.statistics().bytes_written - written)
                else:
                    for _ in range(config.fork_count):
                        await timed_save(store, source, samples[SAVE], save_bytes)
                add_counters(totals[what], counter_delta(before, counters(store)))
                settle()
            for new_id in forks:
                await store.delete_session(new_id)
            settle()
    settle(root)
    medians = {what: median(values) for what, values in samples.items()}
    return Fork(
        description=(
            f"forks of a {config.fork_messages:,}-message session ({size / KB:,.0f} KB) "
            f"against one-message durable saves of it, {config.fork_count} of each a round "
            "in one store, fsync; bytes from statistics().bytes_written"
        ),
        messages=config.fork_messages,
        session_bytes=size,
        fork=SaveLatency(
            value=medians[FORK], samples_s=tuple(samples[FORK]), counters=totals[FORK]
        ),
        save=SaveLatency(
            value=medians[SAVE], samples_s=tuple(samples[SAVE]), counters=totals[SAVE]
        ),
        bytes_per_fork=tuple(fork_bytes),
        bytes_written=max(fork_bytes),
        bytes_per_save=median(save_bytes),
        ratio_vs_save=medians[FORK] / medians[SAVE],
    )


async def measure_revisions(config: Config, base: Path, progress: Progress) -> Revisions:
    """Issue 13's workloads, in one trio run."""
    progress("revisions 1+4: one-message save against its floor, history=100 and history=1")
    one_message_save = await measure_one_message_save(config, base)
    progress("revisions 2: session life against durable full rewrites")
    life = await measure_session_life(config, base)
    progress("revisions 3: fork of a long session against a one-message save")
    fork = await measure_fork(config, base)
    return Revisions(one_message_save=one_message_save, session_life=life, fork=fork)
