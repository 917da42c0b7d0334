"""``benchmarks/where_time_goes.py`` sorts each sampled stack into the category README reports.

The profile itself needs py-spy (not a dependency); its sorting is plain code,
checked here on stacks as py-spy folds them (root first, ``;``-separated).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "where_time_goes.py"
LIB = "/repo/sessionactors"
# A real line of the library, read by the classifier: the call on it decides.
DIRECTORY = Path(__file__).resolve().parent.parent / "sessionactors/storage/files/directory.py"
DATASYNC = next(
    number
    for number, line in enumerate(DIRECTORY.read_text().splitlines(), 1)
    if "os.fdatasync(" in line
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("where_time_goes", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


where = _load()


def stack(*frames: str) -> str:
    return ";".join(["<module> (run.py:1)", *frames])


@pytest.mark.parametrize(
    ("frames", "category"),
    [
        ((f"_datasync ({DIRECTORY}:{DATASYNC})",), "fsync"),
        ((f"_datasync ({LIB}/storage/files/directory.py:1)",), "store logic"),
        ((f"flock_it ({LIB}/storage/files/lock.py:9)",), "locking"),
        ((f"_publish ({LIB}/storage/files/index.py:9)",), "listing index"),
        ((f"check_messages ({LIB}/_values.py:9)",), "checking"),
        ((f"encode_record ({LIB}/_values.py:9)",), "encoding"),
        ((f"_save ({LIB}/_plan.py:9)", f"prefix ({LIB}/_transcript.py:9)"), "planner"),
        ((f"_hop ({LIB}/_runner.py:9)",), "thread hop"),
        ((f"_serve ({LIB}/_actor.py:9)",), "channel"),
        (("unrolled_run (/x/trio/_core/_run.py:9)",), "event loop"),
        (("wait (/x/psycopg/connection.py:9)",), "postgres"),
        (("setup (bench/contended.py:9)", f"_save ({LIB}/_plan.py:9)"), None),
        (("run.<locals>.setup (bench/contended.py:9)", "copy_session (x.py:9)"), None),
    ],
)
def test_a_stack_goes_to_the_category_of_its_innermost_known_frame(
    frames: tuple[str, ...], category: str | None
) -> None:
    assert where.classify(stack(*frames)) == category


def test_the_table_gives_microseconds_a_call_and_shares() -> None:
    samples = {category: 0 for category in where.CATEGORIES}
    samples |= {"fsync": 300, "planner": 100}
    row = {"calls": 1000, "wall": 0.5, "samples": samples}
    text = where.table({"contended": row}, 200)
    # 300 samples at 200 Hz over 1,000 calls: 1,500 µs a call; 400 in all, 2,000.
    assert "| 1500 |" in text and "| 2000 | 500 | 400 |" in text
    assert "| contended | " in text and "| 75 |" in text  # fsync's share, in %
