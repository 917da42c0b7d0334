"""Workload 2: many tasks saving the same session, holding one object or each its own copy."""

from __future__ import annotations

from pathlib import Path

from sessionactors import Session

from .config import Config
from .data import copy_session, make_session
from .designs import Backend
from .results import ThroughputResult
from .throughput import Job, compare, measure_rates


async def measure_contended(config: Config, base: Path, *, shared: bool) -> ThroughputResult:
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

    operations = config.contended_tasks * config.contended_saves
    rates = await measure_rates("contended", config.contended_rounds, operations, base, setup)
    holding = (
        "one Session object shared by all (one runtime's tasks)"
        if shared
        else "each task its own copy (as loaded separately)"
    )
    return compare(
        operations,
        rates,
        f"{config.contended_tasks} tasks saving the same {config.contended_messages}-message "
        f"session, {config.contended_saves} saves each; {holding}",
    )
