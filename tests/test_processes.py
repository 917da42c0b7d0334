"""Several writers on one session at once: real processes, then two stores in one process.

The contract: any number of tasks, stores and processes may write the same
session at once; writes are serialized per session, UI edits are never
clobbered by stale runtime saves, and token-usage lines never interleave.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import trio
from shared_children import run_shared_children

import sessionactors
from sessionactors import Message, Session

SID = "shared"
RENAMES = 40
APPENDS = 300

ROLES = [
    ("runtime-fresh", "rt-a"),
    ("runtime-reuse", "rt-b"),
    ("ui", "ui"),
    ("appender", "ap-1"),
    ("appender", "ap-2"),
]


def line_count(path: Path) -> int:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.count(b"\n")


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def check_final_state(
    session: Session | None, records: list[dict[str, Any]], runtimes: set[str]
) -> None:
    """The UI's last edit won, every record is there once, whole, in per-writer order."""
    assert session is not None
    assert session.title == f"t{RENAMES}"
    assert session.title_version == RENAMES
    assert session.metadata_version == RENAMES
    assert session.pinned is False
    # Whatever runtime wrote last, its snapshot is whole: no mix of two writers.
    writer, i = session.metadata["writer"], session.metadata["i"]
    assert writer in runtimes
    assert session.runtime_state == {"writer": writer, "i": i, "count": i % 17}
    assert session.messages == [
        Message(id=f"{writer}-{j}", role="assistant", content=i) for j in range(i % 17)
    ]

    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for record in records:
        assert set(record) == {"proc", "seq", "pad"}, record
        assert record["pad"] == "p" * (record["seq"] % 97), record
        seqs[record["proc"]].append(record["seq"])
    assert len(records) == 2 * APPENDS
    assert sorted(seqs) == ["ap-1", "ap-2"]
    for proc, found in seqs.items():
        assert found == list(range(APPENDS)), f"{proc}: {found[:10]}..."


async def test_processes_share_one_session_without_clobbering(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with sessionactors.open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id=SID))
    done = await run_shared_children(
        ROLES, str(root), SID, tmp_path, finite=("ui", "ap-1", "ap-2"), timeout=20
    )
    assert len(done["ui"]) == RENAMES
    assert len(done["ap-1"]) == len(done["ap-2"]) == APPENDS
    # They really overlapped: each runtime finished saves while the UI renamed
    # and while both appenders appended.
    for runtime in ("rt-a", "rt-b"):
        for other in ("ui", "ap-1", "ap-2"):
            during = [t for t in done[runtime] if done[other][0] <= t <= done[other][-1]]
            assert during, f"{runtime} saved nothing while {other} ran"
            print(f"{runtime}: {len(during)} saves while {other} ran")

    async with sessionactors.open_store(root, durability="flush") as store:
        session = await store.load_session(SID)
        records = await store.read_token_usage(SID)
    check_final_state(session, records, {"rt-a", "rt-b"})
    assert line_count(root / SID / "token-usage.jsonl") == 2 * APPENDS  # no stray lines


async def test_two_stores_in_one_process_share_one_session(tmp_path: Path) -> None:
    """The same mix through two stores on one root: the flock serializes them too."""
    root = tmp_path / "root"
    stop = trio.Event()
    saves: dict[str, int] = {"rt-a": 0, "rt-b": 0}

    async def runtime(store: sessionactors.SessionStore, name: str, reuse: bool) -> None:
        reused: Session | None = None
        i = 0
        while not stop.is_set():
            i += 1
            session = reused if reuse and reused is not None else Session(id=SID)
            session.title = f"runtime {name} {i}"
            session.messages = [
                Message(id=f"{name}-{j}", role="assistant", content=i) for j in range(i % 17)
            ]
            session.metadata = {"writer": name, "i": i}
            session.runtime_state = {"writer": name, "i": i, "count": i % 17}
            await store.save_runtime_session(session)
            assert not session.title.startswith("runtime"), session.title
            saves[name] += 1
            reused = session

    async def ui(store: sessionactors.SessionStore) -> None:
        for i in range(1, RENAMES + 1):
            session = await store.set_title(SID, f"t{i}")
            assert (session.title, session.title_version, session.metadata_version) == (
                f"t{i}",
                i,
                i,
            )
            await trio.sleep(0.002)

    async def appender(store: sessionactors.SessionStore, name: str) -> None:
        for seq in range(APPENDS):
            record = {"proc": name, "seq": seq, "pad": "p" * (seq % 97)}
            await store.append_token_usage_record(SID, record)

    async with (
        sessionactors.open_store(root, durability="flush") as first,
        sessionactors.open_store(root, durability="flush") as second,
    ):
        await first.save_runtime_session(Session(id=SID))
        with trio.fail_after(20):
            async with trio.open_nursery() as runtimes:
                runtimes.start_soon(runtime, first, "rt-a", False)
                runtimes.start_soon(runtime, second, "rt-b", True)
                async with trio.open_nursery() as writers:
                    writers.start_soon(ui, second)
                    writers.start_soon(appender, first, "ap-1")
                    writers.start_soon(appender, second, "ap-2")
                stop.set()
        assert saves["rt-a"] > 0 and saves["rt-b"] > 0
        for store in (first, second):
            check_final_state(
                await store.load_session(SID), await store.read_token_usage(SID), {"rt-a", "rt-b"}
            )
