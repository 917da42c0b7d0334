"""Workload 1: uncontended save latency of one session, against the physical floor."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Literal

from sessionactors import Session

from .config import Config
from .data import make_message, make_session, text, whole_session_bytes
from .designs import CLASSIC, DESIGNS, OURS, Counters, open_design
from .harness import KB, add_counters, counter_delta, floor_write, fresh_dir, median, settle, turns
from .results import FloorLatency, LatencyResult, SaveLatency

FLOOR = "floor"

# What each save changes first (outside the timing), and how the description says it:
# "turn" adds one message, as an agent loop saving after each turn does;
# "unchanged" saves the session as it is; "rewrite" assigns a new content to
# the first message, so a design that appends new messages must rewrite them all.
LATENCY_VARIANTS = {
    "turn": "one new message before each save",
    "unchanged": "saved unchanged",
    "rewrite": "the first message's content assigned anew before each save",
}


def change(session: Session, variant: str, step: int) -> None:
    """Change ``session`` as the variant's ``step``-th save wants it."""
    if variant == "turn":
        session.messages.append(make_message(len(session.messages)))
    elif variant == "rewrite":
        session.messages[0].content = text(step, 1450)
    elif variant != "unchanged":
        raise ValueError(f"unknown variant {variant!r}")


async def latency_once(
    design: str,
    root: Path,
    config: Config,
    variant: str,
    durability: Literal["fsync", "flush"] = "fsync",
) -> tuple[list[float], Counters]:
    """One design's timed saves in a fresh store, and its counters' delta."""
    session = make_session("latency", config.latency_messages)
    async with open_design(design, root, durability=durability) as (store, counters):
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
    """The floor's timed writes of the same session, changed the same way."""
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


async def measure_latency(config: Config, base: Path, variant: str) -> LatencyResult:
    """Workload 1 in one variant: both designs and the floor, taking turns round by round."""
    samples: dict[str, list[float]] = {OURS: [], CLASSIC: [], FLOOR: []}
    totals: dict[str, Counters] = {OURS: {}, CLASSIC: {}}
    # One untimed pass first: thread cache, imports, the page cache.
    for design in DESIGNS:
        await latency_once(design, fresh_dir(base, f"warm-{design}"), config, variant)
    settle(base / f"warm-{OURS}")
    settle(base / f"warm-{CLASSIC}")
    for round_index in range(config.latency_rounds):
        for who in turns(round_index, [OURS, CLASSIC, FLOOR]):
            root = fresh_dir(base, f"latency-{who}")
            if who == FLOOR:
                samples[who] += floor_once(root, config, variant)
            else:
                got, delta = await latency_once(who, root, config, variant)
                samples[who] += got
                add_counters(totals[who], delta)
            settle(root)
    medians = {who: median(values) for who, values in samples.items()}
    size = len(whole_session_bytes(make_session("latency", config.latency_messages)))
    return LatencyResult(
        description=(
            f"uncontended saves of one {config.latency_messages}-message session "
            f"({size / KB:.0f} KB), one caller, {LATENCY_VARIANTS[variant]}; floor: the whole "
            "session's bytes written durably (temp file, fsync, rename, directory fsync)"
        ),
        variant=variant,
        session_bytes=size,
        sessionactors=SaveLatency(
            value=medians[OURS], samples_s=tuple(samples[OURS]), counters=totals[OURS]
        ),
        classic=SaveLatency(
            value=medians[CLASSIC], samples_s=tuple(samples[CLASSIC]), counters=totals[CLASSIC]
        ),
        floor=FloorLatency(value=medians[FLOOR], samples_s=tuple(samples[FLOOR])),
        ratio_vs_classic=medians[OURS] / medians[CLASSIC],
        ratio_vs_floor=medians[OURS] / medians[FLOOR],
        classic_vs_floor=medians[CLASSIC] / medians[FLOOR],
    )
