"""The asyncio benchmark still runs: ``bench/asyncio_embedding.py --quick`` end to end.

No timing is asserted (its quick figures mean nothing); only that every
design was measured and every target was checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_quick_asyncio_benchmark_measures_every_design(tmp_path: Path) -> None:
    out = tmp_path / "aio.json"
    options = ["--quick", "--out", str(out), "--dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.asyncio_embedding", *options],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Targets (issue 16)" in done.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))
    designs = {"trio", "aio-guest", "aio-thread", "thread-round-trip"}
    assert set(figures["save_latency"]["median_s"]) == designs
    assert all(value > 0 for value in figures["save_latency"]["median_s"].values())
    rates = figures["agents_sessions"]["turns_per_s"]
    assert set(rates) == {"sqlite-session", "aio-guest", "aio-thread", "floor"}
    assert all(value > 0 for value in rates.values())
    assert len(figures["targets"]) == 4
    assert not list(tmp_path.glob("sessionactors-aio-bench-*"))  # its scratch dir is gone
