"""Workload 5: memory per live actor and RSS after churn, each design in a fresh child process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .config import Config
from .designs import CLASSIC, DESIGNS, OURS
from .harness import fresh_dir
from .results import ChurnMemory, LiveMemory, MemoryResult, converter

# The child runs the same script: its hidden ``--memory-worker`` flags lead to
# ``memory_child.run_worker``. A fresh process per measurement, so what one
# measurement allocated cannot hide or inflate another.
WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "run.py"


def memory_in_child(
    kind: str, design: str, base: Path, count: int, wave: int, idle: float
) -> object:
    """The child's figures for ``kind`` ("live" or "churn") and ``design``, as decoded JSON."""
    root = fresh_dir(base, f"memory-{kind}-{design}")
    command = [
        sys.executable,
        str(WORKER_SCRIPT),
        "--memory-worker",
        kind,
        "--design",
        design,
        "--dir",
        str(root),
        "--count",
        str(count),
        "--wave",
        str(wave),
        "--idle",
        str(idle),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker {kind}/{design} failed:\n{done.stderr}")
    shutil.rmtree(root, ignore_errors=True)
    return json.loads(done.stdout)


def measure_memory(
    config: Config, base: Path
) -> tuple[MemoryResult[LiveMemory], MemoryResult[ChurnMemory]]:
    """Workloads 5a and 5b, both designs: every live measurement, then every churn one."""
    live = {
        design: converter.structure(
            memory_in_child("live", design, base, config.live_actors, config.live_wave, 3600.0),
            LiveMemory,
        )
        for design in DESIGNS
    }
    churn = {
        design: converter.structure(
            memory_in_child(
                "churn",
                design,
                base,
                config.churn_ids,
                config.churn_wave,
                config.churn_idle_timeout,
            ),
            ChurnMemory,
        )
        for design in DESIGNS
    }
    return (
        MemoryResult(
            description=(
                f"memory per live actor with {config.live_actors:,} actors alive "
                "(classic: per trio.Lock it keeps); max of tracemalloc and RSS deltas"
            ),
            unit="bytes per session",
            sessionactors=live[OURS],
            classic=live[CLASSIC],
        ),
        MemoryResult(
            description=(
                f"RSS after {config.churn_ids:,} distinct session ids came and went "
                f"(waves of {config.churn_wave:,}, idle_timeout {config.churn_idle_timeout} s)"
            ),
            unit="bytes",
            sessionactors=churn[OURS],
            classic=churn[CLASSIC],
        ),
    )
