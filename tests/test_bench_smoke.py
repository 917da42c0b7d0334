"""The benchmark suite still runs: ``benchmarks/run.py --quick`` end to end (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
WORKLOADS = (
    "uncontended_save",
    "uncontended_save_unchanged",
    "uncontended_save_rewrite",
    "contended_save",
    "contended_save_copies",
    "many_sessions",
    "token_usage",
    "memory_live",
    "memory_churn",
)
DESIGNS = ("sessionactors", "classic")


def test_quick_benchmark_runs_and_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--out", str(out), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Targets" in done.stdout

    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    workloads = document["workloads"]
    for name in WORKLOADS:
        for design in DESIGNS:
            value = workloads[name][design]["value"]
            assert isinstance(value, (int, float)), (name, design, value)
            assert value > 0, (name, design, value)
    for name in WORKLOADS[:3]:
        assert workloads[name]["floor"]["value"] > 0
    # The counters the table prints come from statistics(): the work was done.
    for name, field in (
        ("uncontended_save", "snapshots_written"),
        ("contended_save", "snapshots_written"),
        ("contended_save_copies", "snapshots_written"),
        ("many_sessions", "snapshots_written"),
        ("token_usage", "append_batches"),
    ):
        for design in DESIGNS:
            assert workloads[name][design]["counters"][field] > 0, (name, design)
    assert workloads["memory_churn"]["sessionactors"]["live_actors_at_end"] == 0
    assert {target["name"] for target in document["targets"]}
    # Only its own scratch directory was used, and it is gone.
    assert not list(tmp_path.glob("sessionactors-bench-*"))
    journal = document["journal"]
    assert all(row["median_ms"] > 0 for row in journal["save_latency"].values())
    assert journal["session_life"]["journal_s"] > 0 and journal["session_life"]["rewrite_s"] > 0


def test_quick_postgres_benchmark_runs(postgres_url: str) -> None:
    """``benchmarks/postgres.py --quick`` against the test server (no timing asserted)."""
    script = BENCHMARK.with_name("postgres.py")
    done = subprocess.run(
        [sys.executable, str(script), "--dsn", postgres_url, "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "classic" in done.stdout
