"""The harness of the throughput workloads (2 to 4): rounds of concurrent jobs, timed.

Workloads 3 and 4 also time a floor (:class:`~.floor_store.FloorStore`) in
the same rounds: the durable work alone of a store keeping one directory and
one log file per session.
"""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from .designs import (
    CLASSIC,
    CLASSIC_UNLOCKED,
    DESIGNS,
    FLOOR,
    OURS,
    Backend,
    Counters,
    open_design,
)
from .floor_store import FloorStore
from .harness import add_counters, counter_delta, fresh_dir, median, settle, turns
from .results import Rate, ThroughputResult

Job = Callable[[Backend], Awaitable[None]]
# Fresh objects for one run: an untimed preparation, then the jobs to time.
Setup = Callable[[], tuple[Job, list[Job]]]
Target = TypeVar("Target")


FloorJob = Callable[[FloorStore], Awaitable[None]]
# Fresh jobs for one run of the floor, their bytes ready (encoded outside the
# timing), after an untimed preparation.
FloorSetup = Callable[[], tuple[FloorJob, list[FloorJob]]]


async def _all_at_once(jobs: Sequence[Callable[[Target], Awaitable[Any]]], target: Target) -> float:
    """Every job as its own task, all at once; the elapsed time."""
    gc.collect()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(job, target)
    return time.perf_counter() - start


async def timed_jobs(
    design: str, root: Path, prepare: Job, jobs: Sequence[Job]
) -> tuple[float, Counters]:
    """Run ``prepare`` (untimed), then every job as its own task; the elapsed time."""
    async with open_design(design, root) as (store, counters):
        await prepare(store)
        gc.collect()
        before = counters()
        elapsed = await _all_at_once(jobs, store)
        return elapsed, counter_delta(before, counters())


async def timed_floor(
    root: Path, prepare: FloorJob, jobs: Sequence[FloorJob]
) -> tuple[float, Counters]:
    """Run ``prepare`` (untimed), then every floor job as its own task on a fresh
    :class:`FloorStore`; the elapsed time."""
    floor = FloorStore(root)
    try:
        await prepare(floor)
        before = floor.statistics()
        elapsed = await _all_at_once(jobs, floor)
        return elapsed, counter_delta(before, floor.statistics())
    finally:
        floor.close()


async def measure_rates(
    name: str,
    rounds: int,
    operations: int,
    base: Path,
    setup: Setup,
    verify: Callable[[Path], None] | None = None,
    designs: Sequence[str] = DESIGNS,
    floor: FloorSetup | None = None,
) -> dict[str, Rate]:
    """Operations per second of each design over ``rounds`` rounds, taking turns.

    With ``floor``, the floor (:data:`FLOOR`) takes its turn too, as a design.

    Every run gets its own directory, removed only once all rounds are done:
    removing thousands of files just before a run would slow that run's file
    creation (ext4 without a journal skips recently freed inodes when it
    allocates one), a cost of the benchmark rather than of the design.
    """
    designs = [*designs, FLOOR] if floor is not None else list(designs)
    elapsed: dict[str, list[float]] = {design: [] for design in designs}
    totals: dict[str, Counters] = {design: {} for design in designs}
    roots: list[Path] = []
    for round_index in range(rounds):
        for design in turns(round_index, designs):
            root = fresh_dir(base, f"{name}-{design}-{round_index}")
            roots.append(root)
            if floor is not None and design == FLOOR:
                # Fresh jobs, their bytes encoded outside the timing.
                floor_prepare, floor_jobs = floor()
                seconds, delta = await timed_floor(root, floor_prepare, floor_jobs)
                del floor_prepare, floor_jobs
            else:
                prepare, jobs = setup()  # fresh objects for every run, outside the timing
                seconds, delta = await timed_jobs(design, root, prepare, jobs)
                del prepare, jobs
            if verify is not None:
                verify(root)
            elapsed[design].append(seconds)
            add_counters(totals[design], delta)
            settle()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    settle()
    rates = {}
    for design in designs:
        per_round = tuple(operations / seconds for seconds in elapsed[design])
        rates[design] = Rate(
            value=median(per_round),
            elapsed_s=tuple(elapsed[design]),
            ops_per_s=per_round,
            counters=totals[design],
        )
    return rates


def compare(operations: int, rates: Mapping[str, Rate], description: str) -> ThroughputResult:
    """The throughput result: sessionactors against classic (and the unlocked classic, the floor,
    where they ran)."""
    ours, classic = rates[OURS], rates[CLASSIC]
    unlocked = rates.get(CLASSIC_UNLOCKED)
    floor = rates.get(FLOOR)
    return ThroughputResult(
        operations=operations,
        sessionactors=ours,
        classic=classic,
        classic_unlocked=unlocked,
        ratio=ours.value / classic.value,
        paired_ratios=tuple(
            classic_s / ours_s
            for ours_s, classic_s in zip(ours.elapsed_s, classic.elapsed_s, strict=True)
        ),
        ratio_vs_unlocked=None if unlocked is None else ours.value / unlocked.value,
        floor=floor,
        floor_vs_classic=None if floor is None else floor.value / classic.value,
        ratio_vs_floor=None if floor is None else ours.value / floor.value,
        paired_floor_ratios=None
        if floor is None
        else tuple(
            classic_s / floor_s
            for floor_s, classic_s in zip(floor.elapsed_s, classic.elapsed_s, strict=True)
        ),
        description=description,
    )
