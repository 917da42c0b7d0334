"""Workload 4: token-usage records appended by many tasks over a few sessions.

The floor takes its turn in the same rounds (``FloorStore.group_append``):
the same records, encoded with orjson before the timing, appended by the
same tasks to the same logs, group-committed with no more than any trio
store must do to answer each call once its record is durable.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from .config import Config
from .data import make_session, usage_record
from .designs import CLASSIC, CLASSIC_UNLOCKED, OURS, Backend
from .floor_store import FloorStore
from .results import ThroughputResult
from .throughput import FloorJob, Job, compare, measure_rates

#: The log each design appends a session's records to (the floor's too).
USAGE_LOG = "token-usage.jsonl"


async def measure_token_usage(config: Config, base: Path) -> ThroughputResult:
    """Records from every task at once, each task on one session; also the unlocked classic."""
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

    def floor_setup() -> tuple[FloorJob, list[FloorJob]]:
        async def prepare(floor: FloorStore) -> None:
            for session_id in session_ids:
                await floor.open_log(session_id, USAGE_LOG)

        def job(task: int) -> FloorJob:
            session_id = session_ids[task % len(session_ids)]
            lines = [orjson.dumps(usage_record(task, seq)) + b"\n" for seq in range(per_task)]

            async def run(floor: FloorStore) -> None:
                for line in lines:
                    await floor.group_append(session_id, line)

            return run

        return prepare, [job(task) for task in range(config.usage_tasks)]

    def verify(root: Path) -> None:
        lines = 0
        for session_id in session_ids:
            with open(root / session_id / USAGE_LOG, "rb") as log:
                lines += sum(1 for _ in log)
        if lines != per_task * config.usage_tasks:
            raise AssertionError(f"{root}: {lines} records, not {per_task * config.usage_tasks}")

    operations = per_task * config.usage_tasks
    rates = await measure_rates(
        "usage",
        config.usage_rounds,
        operations,
        base,
        setup,
        verify,
        (OURS, CLASSIC, CLASSIC_UNLOCKED),
        floor=floor_setup,
    )
    return compare(
        operations,
        rates,
        f"{operations:,} token-usage records from {config.usage_tasks} "
        f"tasks over {config.usage_sessions} sessions ({per_task} appends per task); floor, in "
        "the same rounds: the same tasks and records (encoded before the timing), a call "
        "parking its task while the log is written, the one that found it idle writing all "
        "that waits, a batch in one write and one fdatasync in one thread hop (no task, "
        "channel, event or actor)",
    )
