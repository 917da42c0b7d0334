"""Workload 1d: a one-message save under ``durability="flush"``, against a bare thread hop.

Such a save needs no fsync: what it waits for is the trip to a worker thread
and back, and the work around it (the actor, the planner, the lock, the
append, the listing index). The hop is measured alone, in the same rounds:
``await trio.to_thread.run_sync`` of a function that does nothing, the least
any save that leaves the event loop pays.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from .config import Config
from .designs import OURS, Counters
from .harness import add_counters, fresh_dir, median, nothing, settle, turns
from .latency import latency_once
from .results import FloorLatency, FlushHopResult, SaveLatency

HOP = "to_thread"


async def _hops(config: Config) -> list[float]:
    samples = []
    for _ in range(config.latency_saves):
        start = time.perf_counter()
        await trio.to_thread.run_sync(nothing)
        samples.append(time.perf_counter() - start)
    return samples


async def measure_flush_hop(config: Config, base: Path) -> FlushHopResult:
    """The saves and the bare hops, taking turns round by round; medians and their ratio."""
    saves: list[float] = []
    hops: list[float] = []
    totals: Counters = {}
    # Thread cache, imports, page cache.
    await latency_once(OURS, fresh_dir(base, "warm-flush"), config, "turn", "flush")
    await _hops(config)
    for round_index in range(config.latency_rounds):
        for who in turns(round_index, [OURS, HOP]):
            if who == HOP:
                hops += await _hops(config)
                continue
            root = fresh_dir(base, "flush-save")
            got, delta = await latency_once(OURS, root, config, "turn", "flush")
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
