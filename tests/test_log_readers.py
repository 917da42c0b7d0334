"""The token-usage log is a public format: DuckDB and pandas read it as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas

from sessionactors import Session, open_store

RECORDS: list[dict[str, Any]] = [
    {"model": "m1", "input_tokens": 1200, "output_tokens": 300, "cache": {"read": 10}},
    {"model": "m2", "input_tokens": 7, "output_tokens": 0, "cost": 0.25, "ok": True},
    {"model": "m1", "input_tokens": 2**40, "output_tokens": 5, "note": 'é ✓ \n quoted "'},
]


async def _write_log(root: Path) -> Path:
    async with open_store(root, durability="flush") as store:
        await store.save_runtime_session(Session(id="s"))
        for record in RECORDS:
            await store.append_token_usage_record("s", record)
        # A pretty-printed str record is stored as one compact line too.
        await store.append_token_usage_record("s", '{\n  "model": "m3",\n  "input_tokens": 1\n}\n')
    return root / "s" / "token-usage.jsonl"


async def test_duckdb_reads_the_log(tmp_path: Path) -> None:
    log = await _write_log(tmp_path)
    rows = duckdb.sql(f"SELECT model, input_tokens FROM read_json_auto('{log}')").fetchall()
    assert rows == [("m1", 1200), ("m2", 7), ("m1", 2**40), ("m3", 1)]


async def test_pandas_reads_the_log(tmp_path: Path) -> None:
    log = await _write_log(tmp_path)
    frame = pandas.read_json(log, lines=True)
    assert list(frame["model"]) == ["m1", "m2", "m1", "m3"]
    assert list(frame["input_tokens"]) == [1200, 7, 2**40, 1]
    assert frame["note"].iloc[2] == RECORDS[2]["note"]
