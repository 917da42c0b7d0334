"""An import killed at any instant leaves its session whole or absent (files and PostgreSQL).

A child (``children/import_child.py``) imports one archive under new ids
until it is SIGKILLed at a random instant; a fresh store then finds each id
either whole (loads equal to the archive's session, every record) or
absent (no session, no records, not listed), and every import the child
saw return whole. A session made later where a killed import left its
records (files: a log without its session) starts with none of them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import attrs
import pytest
import trio
from support import msg

import sessionactors
from sessionactors import Session

CHILD = Path(__file__).parent / "children" / "import_child.py"
TRIALS = {"file": 10, "postgres": 4}


async def make_archive() -> tuple[bytes, Session, list[dict[str, int]]]:
    """A session big enough that a kill often lands inside its import (any backend's will do)."""
    records = [{"call": i, "input_tokens": 100 + i} for i in range(4000)]
    source = Session(id="source", messages=[msg(f"m{i}", "x" * 200) for i in range(2000)])
    async with sessionactors.open_store(f"memory://import-crash-{uuid.uuid4().hex}") as store:
        await store.save_runtime_session(source)
        for record in records:
            await store.append_token_usage_record("source", record)
        data = await store.export_session("source")
    return data, source, records


def run_and_kill(location: str | Path, archive: Path, first: int, rng: random.Random) -> list[int]:
    """Start the child, kill it at a random instant; the numbers it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(location), str(archive), str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(rng.uniform(0.3, 0.9))  # the interpreter's start, then imports
    finally:
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode(errors="replace")
    return [int(line) for line in out.split()]


async def check_each(
    location: str | Path, source: Session, records: list[dict[str, int]], numbers: range
) -> tuple[int, int, int]:
    """Every id whole or absent, and each absent one can be made afresh.

    Returns:
        How many were whole, absent, and absent with leftovers (files: a
        directory, and in it maybe the records without their session).
    """
    whole = absent = left = 0
    root = location if isinstance(location, Path) else None
    async with sessionactors.open_store(location, durability="flush") as store:
        # Loaded first: each load waits for its session's lock, so a killed
        # child's transaction the server still runs (its writes go with its
        # COMMIT) is over before the listing is read.
        found = {}
        for number in numbers:
            session_id = f"imp-{number}"
            found[session_id] = (
                await store.load_session(session_id),
                await store.read_token_usage(session_id),
            )
        listed = {summary.id for summary in await store.list_sessions()}
        for session_id, (loaded, usage) in found.items():
            if loaded is None:
                absent += 1
                if root is not None and (root / session_id).exists():
                    left += 1
                assert usage == [] and session_id not in listed
                # What a kill left is no obstacle, and none of it is inherited.
                await store.save_runtime_session(Session(id=session_id))
                assert await store.read_token_usage(session_id) == []
                assert await store.delete_session(session_id)
            else:
                whole += 1
                assert attrs.evolve(loaded, id="source", revision=0) == source
                assert loaded.revision == 1 and session_id in listed
                assert usage == records
    return whole, absent, left


@pytest.mark.parametrize("target", ["file", "postgres"])
def test_an_import_killed_at_any_instant_leaves_the_session_whole_or_absent(
    target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location: str | Path = (
        tmp_path / "store" if target == "file" else request.getfixturevalue("postgres_url")
    )
    data, source, records = trio.run(make_archive)
    source.revision = 0
    archive = tmp_path / "source.jsonl"
    archive.write_bytes(data)
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    first = whole = absent = left = 0
    for _ in range(TRIALS[target]):
        acknowledged = run_and_kill(location, archive, first, rng)
        assert acknowledged == list(range(first, first + len(acknowledged))), seed
        # Every acknowledged import, and the one the kill interrupted (if any).
        numbers = range(first, first + len(acknowledged) + 1)
        found = trio.run(check_each, location, source, records, numbers)
        assert found[0] >= len(acknowledged), (seed, found)
        whole, absent, left = whole + found[0], absent + found[1], left + found[2]
        first = numbers.stop
    print(
        f"seed {seed}: {whole} imports whole, {absent} absent after {TRIALS[target]} kills,"
        f" {left} of them with leftovers"
    )
