"""The harness of the throughput workloads (2 to 4): rounds of concurrent jobs, timed."""

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import trio

from .designs import CLASSIC, CLASSIC_UNLOCKED, DESIGNS, OURS, Backend, Counters, open_design
from .harness import add_counters, counter_delta, fresh_dir, median, settle, turns
from .results import Rate, ThroughputResult

Job = Callable[[Backend], Awaitable[None]]
# Fresh objects for one run: an untimed preparation, then the jobs to time.
Setup = Callable[[], tuple[Job, list[Job]]]


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


async def measure_rates(
    name: str,
    rounds: int,
    operations: int,
    base: Path,
    setup: Setup,
    verify: Callable[[Path], None] | None = None,
    designs: Sequence[str] = DESIGNS,
) -> dict[str, Rate]:
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
    """The throughput result: sessionactors against classic (and the unlocked classic, if run)."""
    ours, classic = rates[OURS], rates[CLASSIC]
    unlocked = rates.get(CLASSIC_UNLOCKED)
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
        description=description,
    )
