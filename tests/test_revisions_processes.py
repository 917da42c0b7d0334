"""Revisions in commit order across processes: several children saving one session at once.

Runs on the file store and PostgreSQL (processes share no memory store).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_children import run_together

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
    names = [f"p{n}" for n in range(CHILDREN)]
    commands = {name: [str(CHILD), name, str(location), "s", str(SAVES)] for name in names}
    outputs = await run_together(commands, tmp_path)

    by_revision: dict[int, tuple[str, int]] = {}
    for name in names:
        got = json.loads(outputs[name])
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
