"""``du``: the bytes of each session's transcript, history and token usage, and the total.

On files every figure is checked against ``os.stat`` of the files the test
names itself (by their ``seq``: which generation a write made), and a
generation a fork hard-links is counted once in all, each sharer saying so.
On PostgreSQL the figures are sums of ``pg_column_size`` over the rows:
checked as a partition of every row of the tables, each counted once.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import psycopg
from cli_support import in_store, run
from support import generations, links, msg, write_format_2

from sessionactors import Session, SessionStore


async def _build(store: SessionStore) -> None:
    """``big`` with three generations (the current one based on the first), a fork of it."""
    session = Session(id="big", messages=[msg(f"m{i}", "words " * 40) for i in range(30)])
    await store.save_runtime_session(session)  # 1: generation 1
    session.messages.append(msg("m30", "appended"))
    await store.save_runtime_session(session)  # 2: appended to generation 1
    session.messages = [msg(m.id, "edited") for m in session.messages]
    await store.save_runtime_session(session)  # 3: generation 2, whole (every message changed)
    await store.rewind_session("big", 1)  # 4: generation 3, based on generation 1
    for tokens in (100, 200, 300):
        await store.append_token_usage_record("big", {"model": "m", "input_tokens": tokens})
    # Revision 1 lies in generation 1: the fork links it.
    await store.fork_session("big", "fork", revision=1)
    await store.save_runtime_session(Session(id="small", messages=[msg("s", "hi")]))


def _du(location: Path | str) -> dict[str, Any]:
    result = run("du", location, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def _size(*paths: Path) -> int:
    return sum(os.stat(path).st_size for path in paths)


def test_du_on_files_against_os_stat(tmp_path: Path) -> None:
    root = tmp_path / "store"
    in_store(root, _build)
    big, fork, small = root / "big", root / "fork", root / "small"
    first, second, third = generations(big)  # by seq: the order the writes made them
    leftover = big / ".session.json.0123456789abcdef.tmp"
    leftover.write_bytes(b"what a crash left")
    write_format_2(root / "legacy", Session(id="legacy", messages=[msg("l1", "old format")]))
    (link,) = links(fork)
    assert os.stat(link).st_ino == os.stat(first).st_ino  # the fork shares generation 1

    du = _du(root)
    rows = {row["id"]: row for row in du["sessions"]}
    assert rows["big"] == {
        "id": "big",
        "transcript": _size(third, first),  # the current generation and its base
        "history": _size(second),
        "usage": _size(big / "token-usage.jsonl"),
        "other": _size(leftover),
        "total": _size(*big.iterdir()),
        "shared": _size(first),
        "shared_with": ["fork"],
    }
    (own,) = generations(fork)
    assert rows["fork"] == {
        "id": "fork",
        "transcript": _size(own),  # its link is counted once: under big, which wrote it
        "history": 0,
        "usage": 0,
        "other": 0,
        "total": _size(own),
        "shared": _size(link),
        "shared_with": ["big"],
    }
    assert rows["small"]["transcript"] == rows["small"]["total"] == _size(*small.iterdir())
    assert rows["legacy"]["transcript"] == _size(*(root / "legacy").iterdir())
    totals = [row["total"] for row in du["sessions"]]
    assert totals == sorted(totals, reverse=True)

    # Every byte under the root once: each file by its inode, however many names it has.
    inodes: dict[tuple[int, int], int] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode):
                inodes[(info.st_dev, info.st_ino)] = info.st_size
    assert du["total"]["total"] + du["index"] == sum(inodes.values())
    assert du["total"]["total"] == sum(totals)
    assert du["index"] == _size(*(root / ".sessionactors").iterdir())


def test_du_table_says_what_is_shared(tmp_path: Path) -> None:
    root = tmp_path / "store"
    in_store(root, _build)
    result = run("du", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "SESSION",
        "TRANSCRIPT",
        "HISTORY",
        "USAGE",
        "OTHER",
        "TOTAL",
        "SHARED",
    ]
    order = [row["id"] for row in _du(root)["sessions"]]  # the largest total first
    assert order[0] == "big" and sorted(order) == ["big", "fork", "small"]
    assert [line.split()[0] for line in lines[1:5]] == [*order, "total"]
    assert all(len(line) < 80 for line in lines)
    shared = _size(generations(root / "big")[0])
    shares = {line.split()[0]: line.split()[-1] for line in lines[1:4]}
    assert shares["big"] == shares["fork"] == str(shared)
    assert f"'big' shares {shared} bytes with 'fork'" in lines
    assert f"'fork' shares {shared} bytes with 'big'" in lines
    assert "counted once" in result.stdout
    assert "the listing index (.sessionactors) takes" in result.stdout


def test_du_on_postgres_counts_every_row_once(postgres_url: str) -> None:
    in_store(postgres_url, _build)
    du = _du(postgres_url)
    assert "pg_column_size" in du["estimate"] and du["index"] is None
    rows = {row["id"]: row for row in du["sessions"]}
    assert sorted(rows) == ["big", "fork", "small"]
    assert all(row["shared"] == 0 and row["other"] == 0 for row in rows.values())
    assert rows["big"]["history"] > 0  # the revisions and transcripts before the rewind

    def size(table: str) -> dict[str, int]:
        """Per session, the sum of its rows' sizes, each taken in a scan of the whole table."""
        with psycopg.connect(postgres_url) as conn:
            found = conn.execute(
                f"SELECT {'id' if table == 'sessions' else 'session_id'},"
                f" sum(pg_column_size(t.*)) FROM sessionactors_{table} t GROUP BY 1"
            ).fetchall()
        return {session_id: int(total) for session_id, total in found}

    usage = size("token_usage")
    for session_id, row in rows.items():
        assert row["usage"] == usage.get(session_id, 0)
        assert row["total"] == row["transcript"] + row["history"] + row["usage"]
    stored = sum(sum(size(table).values()) for table in ("sessions", "revisions", "messages"))
    assert sum(row["transcript"] + row["history"] for row in rows.values()) == stored
    result = run("du", postgres_url)
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL: row sizes" in result.stdout


def test_du_of_nothing(tmp_path: Path) -> None:
    result = run("du", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"no sessions in {tmp_path}")
    result = run("du", tmp_path / "missing")
    assert result.returncode == 2
    assert "no store at" in result.stderr
