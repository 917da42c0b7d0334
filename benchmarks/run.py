"""The benchmark suite of issue 4: sessionactors against the classic design, in one run.

Usage::

    python benchmarks/run.py [--quick] [--out results.json] [--dir DIR]

Both designs run in the same process, on the same filesystem (a fresh
directory under ``--dir``, default the system's temporary directory), with
``durability="fsync"``. Each workload is measured several times, the two
designs taking turns (and alternating which goes first), and the table gives
medians and their ratios. The memory workloads each run in a fresh child
process, so what one measurement allocated cannot hide or inflate another.
All figures go to a JSON file (default ``benchmarks/results/latest.json``).

The workloads (issue 4), each for both designs:

1. uncontended save latency of a 200-message (~300 KB) session, one caller,
   against the physical floor (the whole session's bytes written to a temp
   file, fsync, rename, directory fsync). Three kinds of save: a)
   ``turn``, one new message before each save (an agent loop); b)
   ``unchanged``; c) ``rewrite``, an old message's content replaced.
2. 64 tasks saving the same 200-message session, 10 saves each: a) all
   holding one Session object (one runtime's tasks); b) each its own copy.
3. 1,000 new sessions of mixed sizes, one task each saving it 5 times (a new
   message before each save after the first), all tasks at once.
4. 10,000 token-usage records from 500 tasks over 5 sessions (and, for
   reference, the classic design with its appends outside the session lock).
5. memory per live actor with 10,000 actors alive (classic: per lock kept),
   and RSS after 100,000 distinct session ids came and went.

6. saves that cost what changed (``benchmarks/journal.py``, issue 5): a save
   adding one message to sessions of 10, 1,000 and 10,000 messages, and the
   whole life of a 2,000-step session against full rewrites.

Counters from ``statistics()`` (and the classic port's own) show how many
snapshot writes, journal writes, log writes and fsyncs each design made.

``--quick`` runs a tiny version of every workload in a few seconds; the smoke
test uses it so this code cannot rot. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import attrs
import orjson
import trio
from classic import ClassicStore
from journal import print_journal_table, run_journal_benchmarks

import sessionactors
from sessionactors import Message, Session, open_store
from sessionactors._model import converter

OURS = "sessionactors"
CLASSIC = "classic"
# For reference only: the classic design with appends outside the session lock,
# relying on O_APPEND alone (each record still has its own write and fsync).
CLASSIC_UNLOCKED = "classic-unlocked-appends"
DESIGNS = (OURS, CLASSIC)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
KB = 1000
MB = 1000 * 1000


@attrs.frozen(kw_only=True)
class Config:
    """The size of every workload (issue 4's, or the tiny ``--quick`` ones)."""

    latency_rounds: int
    latency_messages: int
    latency_saves: int
    contended_rounds: int
    contended_messages: int
    contended_tasks: int
    contended_saves: int
    many_rounds: int
    many_sessions: int
    many_saves: int
    many_max_messages: int
    usage_rounds: int
    usage_records: int
    usage_tasks: int
    usage_sessions: int
    live_actors: int
    live_wave: int
    churn_ids: int
    churn_wave: int
    churn_idle_timeout: float


FULL = Config(
    latency_rounds=7,
    latency_messages=200,
    latency_saves=30,
    contended_rounds=5,
    contended_messages=200,
    contended_tasks=64,
    contended_saves=10,
    many_rounds=5,
    many_sessions=1000,
    many_saves=5,
    many_max_messages=40,
    usage_rounds=3,
    usage_records=10_000,
    usage_tasks=500,
    usage_sessions=5,
    live_actors=10_000,
    live_wave=500,
    churn_ids=100_000,
    churn_wave=1000,
    churn_idle_timeout=0.05,
)

QUICK = Config(
    latency_rounds=1,
    latency_messages=20,
    latency_saves=3,
    contended_rounds=1,
    contended_messages=20,
    contended_tasks=8,
    contended_saves=3,
    many_rounds=1,
    many_sessions=20,
    many_saves=2,
    many_max_messages=5,
    usage_rounds=1,
    usage_records=200,
    usage_tasks=20,
    usage_sessions=2,
    live_actors=200,
    live_wave=100,
    churn_ids=1000,
    churn_wave=250,
    churn_idle_timeout=0.05,
)


# --- the data ------------------------------------------------------------------------

_WORDS = (
    *("the", "agent", "reads", "a", "file", "calls", "a", "tool", "and", "writes", "what"),
    *("it", "found", "about", "the", "build", "error", "in", "the", "parser", "module"),
    *("then", "plans", "the", "next", "step", "asks", "the", "user", "to", "confirm", "runs"),
    *("the", "tests", "again", "and", "reports", "that", "every", "case", "now", "passes"),
)
_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _text(seed: int, size: int) -> str:
    words: list[str] = []
    length = 0
    index = seed
    while length < size:
        word = _WORDS[index % len(_WORDS)]
        words.append(word)
        length += len(word) + 1
        index = index * 7 + 3
    return " ".join(words)[:size]


def make_message(index: int) -> Message:
    """One message of about 1.5 KB once encoded; roles and content shapes vary."""
    created_at = _EPOCH + timedelta(seconds=index)
    kind = index % 3
    if kind == 0:
        content: Any = _text(index, 1450)
        role = "user"
    elif kind == 1:
        content = [
            {"type": "text", "text": _text(index, 1150)},
            {"type": "tool_use", "id": f"call-{index}", "input": {"path": f"src/m{index}.py"}},
        ]
        role = "assistant"
    else:
        content = {"tool_use_id": f"call-{index - 1}", "output": _text(index, 1350), "ok": True}
        role = "tool"
    return Message(
        id=f"msg-{index:05d}",
        role=role,
        content=content,
        created_at=created_at,
        extra={"input_tokens": 100 + index, "output_tokens": 20 + index % 50},
    )


def make_session(session_id: str, messages: int) -> Session:
    """A session of ``messages`` messages (about 1.5 KB each once encoded)."""
    return Session(
        id=session_id,
        title=f"Session {session_id}",
        created_at=_EPOCH,
        messages=[make_message(index) for index in range(messages)],
        metadata={"model": "model-large", "workspace": "/home/user/project"},
        runtime_state={"turn": messages, "pending_tool_calls": []},
    )


def copy_session(session: Session) -> Session:
    """A deep copy: new Session and Message objects, as a separate load would give."""
    return converter.structure(converter.unstructure(session), Session)


def usage_record(task: int, seq: int) -> dict[str, Any]:
    return {
        "model": "model-large",
        "task": task,
        "seq": seq,
        "input_tokens": 1000 + seq,
        "output_tokens": 200 + task % 100,
        "cache_read_tokens": 512,
    }


# --- the two designs behind one interface ----------------------------------------------


class Backend(Protocol):
    async def save_runtime_session(self, session: Session) -> None: ...

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None: ...

    async def load_session(self, session_id: str) -> Session | None: ...


Counters = dict[str, int]
_GAUGES = ("live_actors", "max_mailbox_depth", "locks")


@asynccontextmanager
async def open_design(
    design: str, root: Path, *, idle_timeout: float = 30.0
) -> AsyncIterator[tuple[Backend, Callable[[], Counters]]]:
    """The design's store on ``root`` and a function reading its counters."""
    if design == OURS:
        async with open_store(root, durability="fsync", idle_timeout=idle_timeout) as store:
            yield store, lambda: dict(attrs.asdict(store.statistics()))
    elif design in (CLASSIC, CLASSIC_UNLOCKED):
        classic = ClassicStore(root, durability="fsync", lock_appends=design == CLASSIC)
        yield classic, lambda: dict(attrs.asdict(classic.statistics()))
    else:
        raise ValueError(f"unknown design {design!r}")


def counter_delta(before: Counters, after: Counters) -> Counters:
    return {
        key: value if key in _GAUGES else value - before.get(key, 0) for key, value in after.items()
    }


def add_counters(total: Counters, delta: Counters) -> None:
    for key, value in delta.items():
        if key in _GAUGES:
            total[key] = max(total.get(key, 0), value)
        else:
            total[key] = total.get(key, 0) + value


def rss_bytes() -> int:
    """The process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fresh_dir(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def settle(path: Path | None = None) -> None:
    """Between two timed runs: remove ``path``, collect garbage, commit the filesystem.

    ``os.sync`` makes the kernel write back (and, on a ``discard`` mount, trim)
    what the previous run left behind now, rather than during the next run.
    """
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    gc.collect()
    os.sync()


def turns(round_index: int, items: Sequence[str]) -> list[str]:
    """The order the designs run in this round: rotated every round."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- workload 1: uncontended save latency, and the physical floor ------------------------


def floor_write(directory: Path, data: bytes) -> None:
    """The raw cost of a durable replace: temp write, fsync, rename, directory fsync."""
    temp = directory / ".floor.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / "session.json")
    dir_fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# What each save of the uncontended workload changes first (outside the timing):
# "turn" adds one message, as an agent loop saving after each turn does;
# "unchanged" saves the session as it is; "rewrite" assigns a new content to
# the first message, so a design that appends new messages must rewrite them all.
LATENCY_VARIANTS = ("turn", "unchanged", "rewrite")


def change(session: Session, variant: str, step: int) -> None:
    if variant == "turn":
        session.messages.append(make_message(len(session.messages)))
    elif variant == "rewrite":
        session.messages[0].content = _text(step, 1450)
    elif variant != "unchanged":
        raise ValueError(f"unknown variant {variant!r}")


def whole_session_bytes(session: Session) -> bytes:
    """The session as one JSON document (the classic design's file, the floor's bytes)."""
    return orjson.dumps(converter.unstructure(session))


async def latency_once(
    design: str, root: Path, config: Config, variant: str
) -> tuple[list[float], Counters]:
    session = make_session("latency", config.latency_messages)
    async with open_design(design, root) as (store, counters):
        await store.save_runtime_session(session)  # the file exists: every save is an update
        gc.collect()
        before = counters()
        samples = []
        for step in range(config.latency_saves):
            change(session, variant, step)
            start = time.perf_counter()
            await store.save_runtime_session(session)
            samples.append(time.perf_counter() - start)
        return samples, counter_delta(before, counters())


def floor_once(root: Path, config: Config, variant: str) -> list[float]:
    session = make_session("latency", config.latency_messages)
    floor_write(root, whole_session_bytes(session))
    samples = []
    for step in range(config.latency_saves):
        change(session, variant, step)
        data = whole_session_bytes(session)
        start = time.perf_counter()
        floor_write(root, data)
        samples.append(time.perf_counter() - start)
    return samples


async def workload_latency(config: Config, base: Path, variant: str) -> dict[str, Any]:
    samples: dict[str, list[float]] = {OURS: [], CLASSIC: [], "floor": []}
    totals: dict[str, Counters] = {OURS: {}, CLASSIC: {}}
    # One untimed pass first: thread cache, imports, the page cache.
    for design in DESIGNS:
        await latency_once(design, fresh_dir(base, f"warm-{design}"), config, variant)
    settle(base / f"warm-{OURS}")
    settle(base / f"warm-{CLASSIC}")
    for round_index in range(config.latency_rounds):
        for who in turns(round_index, [OURS, CLASSIC, "floor"]):
            root = fresh_dir(base, f"latency-{who}")
            if who == "floor":
                samples[who] += floor_once(root, config, variant)
            else:
                got, delta = await latency_once(who, root, config, variant)
                samples[who] += got
                add_counters(totals[who], delta)
            settle(root)
    medians = {who: median(values) for who, values in samples.items()}
    size = len(whole_session_bytes(make_session("latency", config.latency_messages)))
    what = {
        "turn": "one new message before each save",
        "unchanged": "saved unchanged",
        "rewrite": "the first message's content assigned anew before each save",
    }[variant]
    return {
        "description": (
            f"uncontended saves of one {config.latency_messages}-message session "
            f"({size / KB:.0f} KB), one caller, {what}; floor: the whole session's bytes "
            "written durably (temp file, fsync, rename, directory fsync)"
        ),
        "variant": variant,
        "unit": "s per save",
        "session_bytes": size,
        OURS: {"value": medians[OURS], "samples_s": samples[OURS], "counters": totals[OURS]},
        CLASSIC: {
            "value": medians[CLASSIC],
            "samples_s": samples[CLASSIC],
            "counters": totals[CLASSIC],
        },
        "floor": {"value": medians["floor"], "samples_s": samples["floor"]},
        "ratio_vs_classic": medians[OURS] / medians[CLASSIC],
        "ratio_vs_floor": medians[OURS] / medians["floor"],
        "classic_vs_floor": medians[CLASSIC] / medians["floor"],
    }


# --- throughput workloads: 2, 3 and 4 ------------------------------------------------


Job = Callable[[Backend], Awaitable[None]]


async def timed_jobs(
    design: str, root: Path, prepare: Job, jobs: Sequence[Job]
) -> tuple[float, Counters]:
    """Run ``prepare`` (untimed), then every job as its own task; the elapsed time."""
    async with open_design(design, root) as (store, counters):
        await prepare(store)
        gc.collect()
        before = counters()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(job, store)
        elapsed = time.perf_counter() - start
        return elapsed, counter_delta(before, counters())


async def throughput(
    name: str,
    rounds: int,
    operations: int,
    base: Path,
    setup: Callable[[], tuple[Job, list[Job]]],
    verify: Callable[[Path], None] | None = None,
    designs: Sequence[str] = DESIGNS,
) -> dict[str, Any]:
    """Operations per second of each design over ``rounds`` rounds, taking turns.

    Every run gets its own directory, removed only once all rounds are done:
    removing thousands of files just before a run would slow that run's file
    creation (ext4 without a journal skips recently freed inodes when it
    allocates one), a cost of the benchmark rather than of the design.
    """
    elapsed: dict[str, list[float]] = {design: [] for design in designs}
    totals: dict[str, Counters] = {design: {} for design in designs}
    roots: list[Path] = []
    for round_index in range(rounds):
        for design in turns(round_index, designs):
            prepare, jobs = setup()  # fresh objects for every run, outside the timing
            root = fresh_dir(base, f"{name}-{design}-{round_index}")
            roots.append(root)
            seconds, delta = await timed_jobs(design, root, prepare, jobs)
            if verify is not None:
                verify(root)
            elapsed[design].append(seconds)
            add_counters(totals[design], delta)
            del prepare, jobs
            settle()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    settle()
    result: dict[str, Any] = {"unit": "operations per s", "operations": operations}
    for design in designs:
        rates = [operations / seconds for seconds in elapsed[design]]
        result[design] = {
            "value": median(rates),
            "elapsed_s": elapsed[design],
            "ops_per_s": rates,
            "counters": totals[design],
        }
    if OURS in elapsed and CLASSIC in elapsed:
        result["ratio"] = result[OURS]["value"] / result[CLASSIC]["value"]
        # Each round's own ratio, to see the spread behind the ratio of medians.
        result["paired_ratios"] = [
            classic / ours for ours, classic in zip(elapsed[OURS], elapsed[CLASSIC], strict=True)
        ]
    return result


async def workload_contended(config: Config, base: Path, *, shared: bool) -> dict[str, Any]:
    """Many tasks saving one session: one Session object (shared) or each its own copy."""
    template = make_session("contended", config.contended_messages)

    def setup() -> tuple[Job, list[Job]]:
        if shared:
            session = copy_session(template)
            sessions = [session] * config.contended_tasks
        else:
            sessions = [copy_session(template) for _ in range(config.contended_tasks)]

        async def prepare(store: Backend) -> None:
            await store.save_runtime_session(sessions[0] if shared else copy_session(template))

        def job(session: Session) -> Job:
            async def run(store: Backend) -> None:
                for _ in range(config.contended_saves):
                    await store.save_runtime_session(session)

            return run

        return prepare, [job(session) for session in sessions]

    result = await throughput(
        "contended",
        config.contended_rounds,
        config.contended_tasks * config.contended_saves,
        base,
        setup,
    )
    holding = (
        "one Session object shared by all (one runtime's tasks)"
        if shared
        else "each task its own copy (as loaded separately)"
    )
    result["description"] = (
        f"{config.contended_tasks} tasks saving the same {config.contended_messages}-message "
        f"session, {config.contended_saves} saves each; {holding}"
    )
    return result


async def workload_many(config: Config, base: Path) -> dict[str, Any]:
    # Mixed sizes: session i starts with 1 + i % max_messages messages and is new
    # (its first save creates it); each later save follows a turn: one new message.
    sizes = [1 + index % config.many_max_messages for index in range(config.many_sessions)]
    messages = [
        make_message(index) for index in range(config.many_max_messages + config.many_saves)
    ]

    def setup() -> tuple[Job, list[Job]]:
        def job(index: int, size: int) -> Job:
            own = [attrs.evolve(message) for message in messages[: size + config.many_saves - 1]]
            session = Session(
                id=f"many-{index:05d}",
                created_at=_EPOCH,
                messages=own[:size],
                metadata={"model": "model-large"},
            )
            turns = own[size:]

            async def run(store: Backend) -> None:
                await store.save_runtime_session(session)
                for message in turns:
                    session.messages.append(message)
                    await store.save_runtime_session(session)

            return run

        async def prepare(store: Backend) -> None:
            pass

        return prepare, [job(index, size) for index, size in enumerate(sizes)]

    def verify(root: Path) -> None:
        found = sum(1 for entry in os.scandir(root) if entry.is_dir())
        if found != config.many_sessions:
            raise AssertionError(f"{root}: {found} sessions, not {config.many_sessions}")

    result = await throughput(
        "many",
        config.many_rounds,
        config.many_sessions * config.many_saves,
        base,
        setup,
        verify,
    )
    average = sum(sizes) / len(sizes)
    result["description"] = (
        f"{config.many_sessions} new sessions ({min(sizes)}-{max(sizes)} messages, "
        f"{average:.0f} on average), one task each saving it {config.many_saves} times "
        "(a new message before each save after the first), all tasks at once"
    )
    return result


async def workload_usage(config: Config, base: Path) -> dict[str, Any]:
    per_task = config.usage_records // config.usage_tasks
    session_ids = [f"usage-{index}" for index in range(config.usage_sessions)]

    def setup() -> tuple[Job, list[Job]]:
        async def prepare(store: Backend) -> None:
            for session_id in session_ids:
                await store.save_runtime_session(make_session(session_id, 2))

        def job(task: int) -> Job:
            session_id = session_ids[task % len(session_ids)]
            records = [usage_record(task, seq) for seq in range(per_task)]

            async def run(store: Backend) -> None:
                for record in records:
                    await store.append_token_usage_record(session_id, record)

            return run

        return prepare, [job(task) for task in range(config.usage_tasks)]

    def verify(root: Path) -> None:
        lines = 0
        for session_id in session_ids:
            with open(root / session_id / "token-usage.jsonl", "rb") as log:
                lines += sum(1 for _ in log)
        if lines != per_task * config.usage_tasks:
            raise AssertionError(f"{root}: {lines} records, not {per_task * config.usage_tasks}")

    result = await throughput(
        "usage",
        config.usage_rounds,
        per_task * config.usage_tasks,
        base,
        setup,
        verify,
        (OURS, CLASSIC, CLASSIC_UNLOCKED),
    )
    result["ratio_vs_unlocked"] = result[OURS]["value"] / result[CLASSIC_UNLOCKED]["value"]
    result["description"] = (
        f"{per_task * config.usage_tasks:,} token-usage records from {config.usage_tasks} "
        f"tasks over {config.usage_sessions} sessions ({per_task} appends per task)"
    )
    return result


# --- workload 5: memory, each measurement in a fresh child process ---------------------


async def load_wave(store: Backend, session_ids: Sequence[str]) -> None:
    async with trio.open_nursery() as nursery:
        for session_id in session_ids:
            nursery.start_soon(store.load_session, session_id)


async def wait_idle(counters: Callable[[], Counters], timeout: float = 60.0) -> float:
    """Wait until no actor is alive; how long that took."""
    start = time.perf_counter()
    with trio.fail_after(timeout):
        # The store offers no event for "no actor alive": poll its statistics.
        while counters().get("live_actors", 0):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return time.perf_counter() - start


async def memory_live(design: str, root: Path, count: int, wave: int) -> dict[str, Any]:
    """Memory held per live actor (per lock for the classic design) with ``count`` alive."""
    # Warm up in a store whose actors retire at once: worker threads, code paths.
    async with open_design(design, root / "warm", idle_timeout=0.05) as (store, counters):
        await load_wave(store, [f"warm-{index}" for index in range(min(wave, count))])
        await wait_idle(counters)
    async with open_design(design, root / "live", idle_timeout=3600.0) as (store, counters):
        gc.collect()
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        overhead_before = tracemalloc.get_tracemalloc_memory()
        rss_before = rss_bytes()
        start = time.perf_counter()
        ids = [f"live-{index:06d}" for index in range(count)]
        for first in range(0, count, wave):
            await load_wave(store, ids[first : first + wave])
        elapsed = time.perf_counter() - start
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        overhead = tracemalloc.get_tracemalloc_memory() - overhead_before
        rss = rss_bytes() - rss_before - overhead
        tracemalloc.stop()
        stats = counters()
        held = stats["live_actors"] if design == OURS else stats["locks"]
        return {
            "count": count,
            "held": held,
            "live_actors": stats.get("live_actors", 0),
            "traced_bytes": traced,
            "rss_delta_bytes": rss,
            "traced_per_item": traced / count,
            "rss_per_item": rss / count,
            "value": max(traced, rss) / count,
            "elapsed_s": elapsed,
        }


async def memory_churn(
    design: str, root: Path, count: int, wave: int, idle_timeout: float
) -> dict[str, Any]:
    """RSS after ``count`` distinct session ids have come and gone, in waves.

    The start is measured after a warm-up of a few waves of the same shape
    (other ids): worker threads, interpreter caches and the allocator's high
    water mark for one wave's live actors are then in place, so what the
    measured waves add is what the store keeps per session ever seen. The RSS
    before the warm-up is reported too.
    """
    warm_waves = max(3, count // wave // 20)
    async with open_design(design, root, idle_timeout=idle_timeout) as (store, counters):
        gc.collect()
        rss_initial = rss_bytes()
        for number in range(warm_waves):
            await load_wave(store, [f"warm-{number}-{index}" for index in range(wave)])
        await wait_idle(counters)
        gc.collect()
        rss_start = rss_bytes()
        blocks_start = sys.getallocatedblocks()
        rss_peak = rss_start
        checkpoints: list[tuple[int, int]] = []
        start = time.perf_counter()
        for first in range(0, count, wave):
            await load_wave(store, [f"churn-{index:07d}" for index in range(first, first + wave)])
            rss_peak = max(rss_peak, rss_bytes())
            done = first + wave
            if done * 4 % count < wave * 4:  # about every quarter
                checkpoints.append((done, rss_bytes()))
        elapsed = time.perf_counter() - start
        waited = await wait_idle(counters)
        gc.collect()
        rss_end = rss_bytes()
        blocks_end = sys.getallocatedblocks()
        stats = counters()
        return {
            "count": count,
            "wave": wave,
            "warm_up_waves": warm_waves,
            "idle_timeout_s": idle_timeout,
            "rss_initial_bytes": rss_initial,
            "rss_start_bytes": rss_start,
            "rss_peak_bytes": rss_peak,
            "rss_end_bytes": rss_end,
            "rss_checkpoints": checkpoints,
            "delta_bytes": rss_end - rss_start,
            "delta_from_initial_bytes": rss_end - rss_initial,
            # Python objects still allocated: flat when nothing is kept per
            # session, whatever the allocator does with RSS.
            "allocated_blocks_start": blocks_start,
            "allocated_blocks_end": blocks_end,
            "value": rss_end,
            "live_actors_at_end": stats.get("live_actors", 0),
            "actors_started": stats.get("actors_started", 0),
            "locks_at_end": stats.get("locks", 0),
            "elapsed_s": elapsed,
            "wait_idle_s": waited,
        }


def memory_worker(args: argparse.Namespace) -> None:
    """The child process's side: one memory measurement, as JSON on stdout."""
    root = Path(args.dir)
    if args.memory_worker == "live":
        result = trio.run(memory_live, args.design, root, args.count, args.wave)
    else:
        result = trio.run(memory_churn, args.design, root, args.count, args.wave, args.idle)
    json.dump(result, sys.stdout)


def memory_in_child(
    kind: str, design: str, base: Path, count: int, wave: int, idle: float
) -> dict[str, Any]:
    root = fresh_dir(base, f"memory-{kind}-{design}")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-worker",
        kind,
        "--design",
        design,
        "--dir",
        str(root),
        "--count",
        str(count),
        "--wave",
        str(wave),
        "--idle",
        str(idle),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker {kind}/{design} failed:\n{done.stderr}")
    shutil.rmtree(root, ignore_errors=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def workload_memory(config: Config, base: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    live: dict[str, Any] = {
        "description": (
            f"memory per live actor with {config.live_actors:,} actors alive "
            "(classic: per trio.Lock it keeps); max of tracemalloc and RSS deltas"
        ),
        "unit": "bytes per session",
    }
    churn: dict[str, Any] = {
        "description": (
            f"RSS after {config.churn_ids:,} distinct session ids came and went "
            f"(waves of {config.churn_wave:,}, idle_timeout {config.churn_idle_timeout} s)"
        ),
        "unit": "bytes",
    }
    for design in DESIGNS:
        live[design] = memory_in_child(
            "live", design, base, config.live_actors, config.live_wave, 3600.0
        )
    for design in DESIGNS:
        churn[design] = memory_in_child(
            "churn", design, base, config.churn_ids, config.churn_wave, config.churn_idle_timeout
        )
    return live, churn


# --- targets and the table ------------------------------------------------------------------


@attrs.frozen
class Target:
    name: str
    figure: str
    value: float
    limit: float
    at_least: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit


def targets(results: Mapping[str, Any]) -> list[Target]:
    """Issue 4's targets; the uncontended and contended ones for each variant that bears on them."""
    checks = []
    for key, label in (("contended_save", "shared object"), ("contended_save_copies", "copies")):
        checks.append(
            Target(
                f"contended saves >= 20x classic throughput ({label})",
                "throughput ratio",
                results[key]["ratio"],
                20.0,
                True,
            )
        )
    checks.append(
        Target(
            "token-usage appends >= 10x classic throughput",
            "throughput ratio",
            results["token_usage"]["ratio"],
            10.0,
            True,
        )
    )
    for key, label in (("uncontended_save", "turn"), ("uncontended_save_rewrite", "rewrite")):
        latency = results[key]
        checks.append(
            Target(
                f"uncontended save <= 1.25x classic latency ({label})",
                "latency ratio",
                latency["ratio_vs_classic"],
                1.25,
                False,
            )
        )
        checks.append(
            Target(
                f"uncontended save <= 1.5x physical floor ({label})",
                "latency ratio",
                latency["ratio_vs_floor"],
                1.5,
                False,
            )
        )
    checks += [
        Target(
            "1,000-session load no slower than classic",
            "throughput ratio",
            results["many_sessions"]["ratio"],
            1.0,
            True,
        ),
        Target(
            "<= 50 KB per live actor",
            "bytes per actor",
            results["memory_live"][OURS]["value"],
            50 * KB,
            False,
        ),
        Target(
            "RSS after retired sessions within 10 MB of start",
            "bytes",
            abs(results["memory_churn"][OURS]["delta_bytes"]),
            10 * MB,
            False,
        ),
    ]
    return checks


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s"


def _bytes(value: float) -> str:
    if abs(value) >= MB:
        return f"{value / MB:+.1f} MB" if value < 0 else f"{value / MB:.1f} MB"
    return f"{value / KB:.2f} KB"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


COUNTERS = (
    "saves_requested",
    "snapshots_written",
    "journal_appends",
    "journal_rewrites",
    "appends_requested",
    "append_batches",
    "fsyncs",
    "bytes_written",
    "batches",
    "thread_hops",
    "max_mailbox_depth",
)


def _latency_row(label: str, latency: Mapping[str, Any]) -> list[str]:
    return [
        label,
        _ms(latency[OURS]["value"]),
        _ms(latency[CLASSIC]["value"]),
        f"{latency['ratio_vs_classic']:.2f}x latency",
        f"floor {_ms(latency['floor']['value'])}: ours {latency['ratio_vs_floor']:.2f}x, "
        f"classic {latency['classic_vs_floor']:.2f}x",
    ]


def _throughput_row(label: str, result: Mapping[str, Any], unit: str) -> list[str]:
    return [
        label,
        _rate(result[OURS]["value"], unit),
        _rate(result[CLASSIC]["value"], unit),
        f"{result['ratio']:.2f}x throughput",
        f"median elapsed {median(result[OURS]['elapsed_s']):.3f} s vs "
        f"{median(result[CLASSIC]['elapsed_s']):.3f} s; per round "
        + " ".join(f"{ratio:.2f}x" for ratio in result["paired_ratios"]),
    ]


def report(results: Mapping[str, Any], checks: Sequence[Target]) -> str:
    """The table of medians and ratios, the counters, and the targets."""
    usage = results["token_usage"]
    live = results["memory_live"]
    churn = results["memory_churn"]
    size = results["uncontended_save"]["session_bytes"] / KB
    ops = results["contended_save"]["operations"]
    rows = [
        ["workload", OURS, CLASSIC, "ratio", "note"],
        _latency_row(f"1a uncontended save {size:.0f} KB, turn", results["uncontended_save"]),
        _latency_row(
            f"1b uncontended save {size:.0f} KB, unchanged",
            results["uncontended_save_unchanged"],
        ),
        _latency_row(
            f"1c uncontended save {size:.0f} KB, rewrite", results["uncontended_save_rewrite"]
        ),
        _throughput_row(f"2a contended, shared ({ops} saves)", results["contended_save"], "saves"),
        _throughput_row(
            f"2b contended, copies ({ops} saves)", results["contended_save_copies"], "saves"
        ),
        _throughput_row(
            f"3 many sessions ({results['many_sessions']['operations']} saves)",
            results["many_sessions"],
            "saves",
        ),
        _throughput_row(f"4 token usage ({usage['operations']} records)", usage, "records"),
        [
            "4b same, classic appends unlocked",
            "",
            _rate(usage[CLASSIC_UNLOCKED]["value"], "records"),
            f"{usage['ratio_vs_unlocked']:.2f}x throughput",
            "reference only: classic appends outside its lock (O_APPEND alone)",
        ],
        [
            f"5a memory per live actor ({live[OURS]['count']:,})",
            _bytes(live[OURS]["value"]),
            _bytes(live[CLASSIC]["value"]) + " per lock",
            "",
            f"tracemalloc {_bytes(live[OURS]['traced_per_item'])}, RSS "
            f"{_bytes(live[OURS]['rss_per_item'])}; live_actors {live[OURS]['live_actors']:,}",
        ],
        [
            f"5b RSS after {churn[OURS]['count']:,} ids came and went",
            f"{churn[OURS]['delta_bytes'] / MB:+.1f} MB",
            f"{churn[CLASSIC]['delta_bytes'] / MB:+.1f} MB",
            "",
            f"ours: {churn[OURS]['rss_start_bytes'] / MB:.1f} -> "
            f"{churn[OURS]['rss_end_bytes'] / MB:.1f} MB, Python blocks "
            f"{churn[OURS]['allocated_blocks_end'] - churn[OURS]['allocated_blocks_start']:+,}, "
            f"live_actors at end {churn[OURS]['live_actors_at_end']}; "
            f"classic keeps {churn[CLASSIC]['locks_at_end']:,} locks",
        ],
    ]
    lines = ["Medians; ratios are sessionactors against classic.", "", _table(rows), ""]

    counter_rows = [["workload (all rounds)", "design", *COUNTERS]]
    for key in (
        "uncontended_save",
        "uncontended_save_unchanged",
        "uncontended_save_rewrite",
        "contended_save",
        "contended_save_copies",
        "many_sessions",
        "token_usage",
    ):
        for design in (*DESIGNS, CLASSIC_UNLOCKED):
            if design in results[key]:
                counted = results[key][design]["counters"]
                counter_rows.append(
                    [key, design, *(str(counted.get(name, "-")) for name in COUNTERS)]
                )
    lines += ["Coalescing and group commit (statistics() deltas):", "", _table(counter_rows), ""]
    for key in ("contended_save", "contended_save_copies"):
        counted = results[key][OURS]["counters"]
        saves, snapshots = counted["saves_requested"], counted["snapshots_written"]
        lines.append(
            f"coalescing ({key}): {saves} saves -> {snapshots} snapshot writes "
            f"({'yes' if snapshots < saves else 'NO'})"
        )
    counted = usage[OURS]["counters"]
    appends, writes = counted["appends_requested"], counted["append_batches"]
    lines.append(
        f"group commit (token_usage): {appends} appends -> {writes} writes "
        f"({'yes' if writes < appends else 'NO'})"
    )
    lines += ["", "Targets (issue 4):", ""]
    target_rows = [["target", "figure", "limit", "result"]]
    for check in checks:
        if check.figure.startswith("bytes"):
            value, limit = _bytes(check.value), _bytes(check.limit)
        else:
            value, limit = f"{check.value:.2f}x", f"{check.limit:.2f}x"
        target_rows.append(
            [check.name, f"{check.figure} {value}", limit, "PASS" if check.passed else "MISS"]
        )
    lines.append(_table(target_rows))
    return "\n".join(lines)


# --- the run ----------------------------------------------------------------------------------


async def timed_workloads(
    config: Config, base: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in LATENCY_VARIANTS:
        progress(f"1/5 uncontended save latency ({variant})")
        key = "uncontended_save" if variant == "turn" else f"uncontended_save_{variant}"
        results[key] = await workload_latency(config, base, variant)
    progress("2/5 contended saves (shared object)")
    results["contended_save"] = await workload_contended(config, base, shared=True)
    progress("2/5 contended saves (copies)")
    results["contended_save_copies"] = await workload_contended(config, base, shared=False)
    progress("3/5 many sessions")
    results["many_sessions"] = await workload_many(config, base)
    progress("4/5 token-usage appends")
    results["token_usage"] = await workload_usage(config, base)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny workloads (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to make the scratch directory"
    )
    parser.add_argument("--memory-worker", choices=("live", "churn"), help=argparse.SUPPRESS)
    parser.add_argument("--design", choices=DESIGNS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--wave", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return 0

    config = QUICK if args.quick else FULL
    started = time.time()
    clock = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - clock:6.1f} s] {message}", file=sys.stderr, flush=True)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="sessionactors-bench-", dir=args.dir))
    try:
        results = trio.run(timed_workloads, config, base, progress)
        progress("5/5 memory (child processes)")
        results["memory_live"], results["memory_churn"] = workload_memory(config, base)
        progress("journal: saves that cost what changed")
        journal_dir = base / "journal"
        journal_dir.mkdir()
        journal = trio.run(partial(run_journal_benchmarks, journal_dir, quick=args.quick))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    checks = targets(results)
    progress("done")
    document = {
        "meta": {
            "quick": args.quick,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "duration_s": time.perf_counter() - clock,
            "directory": str(base),
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "trio": trio.__version__,
            "sessionactors": sessionactors.__version__,
            "config": attrs.asdict(config),
        },
        "workloads": results,
        "journal": journal,
        "targets": [{**attrs.asdict(check), "passed": check.passed} for check in checks],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(report(results, checks))
    print_journal_table(journal)
    print(f"\nfigures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
