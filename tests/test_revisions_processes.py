"""Revisions in commit order across processes: several children saving one session at once.

Runs on the file store and PostgreSQL (processes share no memory store).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

import sessionactors
from sessionactors import Session

CHILD = Path(__file__).parent / "children" / "revision_child.py"
CHILDREN = 4
SAVES = 25


@pytest.mark.parametrize("backend", ["file", "postgres"])
async def test_revisions_are_numbered_in_commit_order_across_processes(
    location: str | Path, tmp_path: Path
) -> None:
    async with sessionactors.open_store(location, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    names = [f"p{n}" for n in range(CHILDREN)]
    outputs = {name: tmp_path / f"{name}.out" for name in names}
    processes = []
    try:
        for name in names:
            with outputs[name].open("wb") as out:
                processes.append(
                    await trio.lowlevel.open_process(
                        [
                            sys.executable,
                            str(CHILD),
                            name,
                            str(location),
                            "s",
                            str(SAVES),
                            str(barrier),
                        ],
                        stdout=out,
                    )
                )
        with trio.fail_after(60):
            while len(list(barrier.glob("ready-*"))) < CHILDREN:
                assert all(p.returncode is None for p in processes), "a child died"
                await trio.sleep(0.01)
            (barrier / "go").touch()
            for process in processes:
                await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
    assert all(process.returncode == 0 for process in processes)

    by_revision: dict[int, tuple[str, int]] = {}
    for name in names:
        got = json.loads(outputs[name].read_text())
        revisions = [revision for revision, _ in got]
        # One process's saves are one caller's: each is a later revision.
        assert revisions == sorted(revisions) and len(set(revisions)) == SAVES, got
        for revision, step in got:
            assert revision not in by_revision, (revision, name, by_revision.get(revision))
            by_revision[revision] = (name, step)
    total = CHILDREN * SAVES
    assert sorted(by_revision) == list(range(2, total + 2))  # every write once, no gap

    async with sessionactors.open_store(location, durability="flush", history=1000) as store:
        history = await store.session_history("s")
        assert [entry.revision for entry in history] == list(range(total + 1, 0, -1))
        for revision, (name, step) in by_revision.items():
            loaded = await store.load_session("s", revision=revision)
            assert loaded is not None
            assert loaded.metadata == {"writer": name, "step": step}
            assert [m.id for m in loaded.messages] == [f"{name}-{step}"]
            assert loaded.revision == revision
