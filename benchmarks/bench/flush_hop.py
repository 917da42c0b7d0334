"""Workload 1d: a one-message save under ``durability="flush"``, against a bare thread hop.

Such a save needs no fsync: what it waits for is the trip to a worker thread
and back, and the work around it (the actor, the planner, the lock, the
append, the listing index). The hop is measured alone, in the same rounds:
``await trio.to_thread.run_sync`` of a function that does nothing, the least
any save that leaves the event loop pays.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import trio

from .config import Config
from .data import make_message, make_session
from .designs import OURS, Counters, open_design
from .harness import add_counters, counter_delta, fresh_dir, median, settle, turns
from .results import FloorLatency, FlushHopResult, SaveLatency

HOP = "to_thread"


def _nothing() -> None:
    pass


async def _saves(root: Path, config: Config) -> tuple[list[float], Counters]:
    """One store's timed saves, each after one new message, and its counters' delta."""
    session = make_session("flush", config.latency_messages)
    async with open_design(OURS, root, durability="flush") as (store, counters):
        await store.save_runtime_session(session)  # the log exists: every save appends
        gc.collect()
        before = counters()
        samples = []
        for step in range(config.latency_saves):
            session.messages.append(make_message(config.latency_messages + step))
            start = time.perf_counter()
            await store.save_runtime_session(session)
            samples.append(time.perf_counter() - start)
        return samples, counter_delta(before, counters())


async def _hops(config: Config) -> list[float]:
    samples = []
    for _ in range(config.latency_saves):
        start = time.perf_counter()
        await trio.to_thread.run_sync(_nothing)
        samples.append(time.perf_counter() - start)
    return samples


async def measure_flush_hop(config: Config, base: Path) -> FlushHopResult:
    """The saves and the bare hops, taking turns round by round; medians and their ratio."""
    saves: list[float] = []
    hops: list[float] = []
    totals: Counters = {}
    await _saves(fresh_dir(base, "warm-flush"), config)  # thread cache, imports, page cache
    await _hops(config)
    for round_index in range(config.latency_rounds):
        for who in turns(round_index, [OURS, HOP]):
            if who == HOP:
                hops += await _hops(config)
                continue
            root = fresh_dir(base, "flush-save")
            got, delta = await _saves(root, config)
            saves += got
            add_counters(totals, delta)
            settle(root)
    ours, hop = median(saves), median(hops)
    return FlushHopResult(
        description=(
            f"a save adding one message to a {config.latency_messages}-message session, "
            'durability="flush", one caller; against one bare trio.to_thread.run_sync round '
            "trip of a function doing nothing, in the same rounds"
        ),
        sessionactors=SaveLatency(value=ours, samples_s=tuple(saves), counters=totals),
        hop=FloorLatency(value=hop, samples_s=tuple(hops)),
        ratio_vs_hop=ours / hop,
    )
