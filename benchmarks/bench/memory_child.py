"""Workload 5, the child's side: one memory measurement, in a process of its own."""

from __future__ import annotations

import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from .designs import OURS, Backend, Counters, open_design
from .harness import rss_bytes
from .results import ChurnMemory, LiveMemory, converter


async def load_wave(store: Backend, session_ids: Sequence[str]) -> None:
    """Load every session at once, one task each: each wakes its actor (classic: a lock)."""
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


async def measure_live(design: str, root: Path, count: int, wave: int) -> LiveMemory:
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
        return LiveMemory(
            count=count,
            held=stats["live_actors"] if design == OURS else stats["locks"],
            live_actors=stats.get("live_actors", 0),
            traced_bytes=traced,
            rss_delta_bytes=rss,
            traced_per_item=traced / count,
            rss_per_item=rss / count,
            value=max(traced, rss) / count,
            elapsed_s=elapsed,
        )


async def measure_churn(
    design: str, root: Path, count: int, wave: int, idle_timeout: float
) -> ChurnMemory:
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
        return ChurnMemory(
            count=count,
            wave=wave,
            warm_up_waves=warm_waves,
            idle_timeout_s=idle_timeout,
            rss_initial_bytes=rss_initial,
            rss_start_bytes=rss_start,
            rss_peak_bytes=rss_peak,
            rss_end_bytes=rss_end,
            rss_checkpoints=tuple(checkpoints),
            delta_bytes=rss_end - rss_start,
            delta_from_initial_bytes=rss_end - rss_initial,
            allocated_blocks_start=blocks_start,
            allocated_blocks_end=blocks_end,
            value=rss_end,
            live_actors_at_end=stats.get("live_actors", 0),
            actors_started=stats.get("actors_started", 0),
            locks_at_end=stats.get("locks", 0),
            elapsed_s=elapsed,
            wait_idle_s=waited,
        )


def run_worker(kind: str, design: str, root: Path, count: int, wave: int, idle: float) -> None:
    """Measure ``kind`` ("live" or "churn") and write its figures as JSON on stdout."""
    result: LiveMemory | ChurnMemory
    if kind == "live":
        result = trio.run(measure_live, design, root, count, wave)
    else:
        result = trio.run(measure_churn, design, root, count, wave, idle)
    json.dump(converter.unstructure(result), sys.stdout)
