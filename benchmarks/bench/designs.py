"""The designs under test (sessionactors and the classic port) behind one interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
from classic import ClassicStore

from sessionactors import Session, open_store

OURS = "sessionactors"
CLASSIC = "classic"
# For reference only: the classic design with appends outside the session lock,
# relying on O_APPEND alone (each record still has its own write and fsync).
CLASSIC_UNLOCKED = "classic-unlocked-appends"
DESIGNS = (OURS, CLASSIC)
# Many sessions only, as evidence: the durable work alone of a store with one
# directory and one log file per session (``floor_store.FloorStore``), not a store.
FLOOR = "floor"

Counters = dict[str, int]


class Backend(Protocol):
    """What the workloads call: the part of the API both designs have."""

    async def save_runtime_session(self, session: Session) -> None: ...

    async def append_token_usage_record(
        self, session_id: str, record: str | Mapping[str, Any]
    ) -> None: ...

    async def load_session(self, session_id: str) -> Session | None: ...


@asynccontextmanager
async def open_design(
    design: str,
    root: Path,
    *,
    idle_timeout: float = 30.0,
    durability: Literal["fsync", "flush"] = "fsync",
) -> AsyncIterator[tuple[Backend, Callable[[], Counters]]]:
    """The design's store on ``root`` (durability "fsync" unless said), a function reading
    its counters. Classic has "fsync" only."""
    if design == OURS:
        async with open_store(root, durability=durability, idle_timeout=idle_timeout) as store:
            yield store, lambda: dict(attrs.asdict(store.statistics()))
    elif design in (CLASSIC, CLASSIC_UNLOCKED) and durability == "fsync":
        classic = ClassicStore(root, durability="fsync", lock_appends=design == CLASSIC)
        yield classic, lambda: dict(attrs.asdict(classic.statistics()))
    else:
        raise ValueError(f"unknown design {design!r}")
