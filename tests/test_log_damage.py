"""A save that replaces a damaged session it did not read: the damage is kept, history is whole.

File store only: what the log and an older format hold on disk.
"""

from __future__ import annotations

from pathlib import Path

from support import current_generation, msg, write_format_2

import sessionactors
from sessionactors import Session


async def test_a_save_over_a_format_2_session_with_a_damaged_journal_keeps_it(
    tmp_path: Path,
) -> None:
    """As format 2 did: the journal is kept aside as .corrupt and the save goes through."""
    root = tmp_path / "store"
    paths = write_format_2(root / "s", Session(id="s", messages=[msg("m1", "one")]))
    journal = paths["journal"]
    damaged = b"x" * (len(journal.read_bytes()) - 1) + b"\n"
    journal.write_bytes(damaged)
    async with sessionactors.open_store(root, durability="flush") as store:
        fresh = Session(id="s", messages=[msg("m1", "anew")])
        await store.save_runtime_session(fresh)
        assert await store.load_session("s") == fresh
        assert [r.revision for r in await store.session_history("s")] == [2]
    kept = root / "s" / f"{journal.name}.corrupt"
    assert kept.read_bytes() == damaged


async def test_a_save_over_a_damaged_generation_keeps_it_and_history_stays_loadable(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    async with sessionactors.open_store(root, durability="flush") as store:
        session = Session(id="s", messages=[msg("m1", "one")])
        await store.save_runtime_session(session)
        session.messages.append(msg("m2", "two"))
        await store.save_runtime_session(session)
    generation = current_generation(root / "s")
    data = generation.read_bytes()
    damaged = data.replace(b'"one"', b'"ONE"', 1)
    generation.write_bytes(damaged)
    async with sessionactors.open_store(root, durability="flush") as store:
        fresh = Session(id="s", messages=[msg("m1", "anew")])
        await store.save_runtime_session(fresh)  # another store's: it did not read the log
        assert fresh.revision == 3
        history = await store.session_history("s")
        assert [r.revision for r in history] == [3]
        for entry in history:
            assert await store.load_session("s", revision=entry.revision) is not None
        assert await store.load_session("s") == fresh
    assert (generation.parent / f"{generation.name}.corrupt").read_bytes() == damaged
