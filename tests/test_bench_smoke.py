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
# Issue 13's workloads: each store (or side) that is timed, under its JSON key.
REVISIONS = {
    "one_message_save": ("sessionactors", "history_1", "floor"),
    "session_life": ("sessionactors", "rewrites"),
    "fork": ("fork", "save"),
}


def run_quick(tmp_path: Path, *flags: str) -> tuple[str, dict[str, Any]]:
    """``run.py --quick`` with ``flags``; its stdout and its JSON document."""
    out = tmp_path / "r.json"
    command = [sys.executable, str(BENCHMARK), "--quick", "--out", str(out), "--dir", str(tmp_path)]
    done = subprocess.run(
        [*command, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    # Only its own scratch directory was used, and it is gone.
    assert not list(tmp_path.glob("sessionactors-bench-*"))
    return done.stdout, document


def check_revisions(document: dict[str, Any]) -> None:
    """Issue 13's figures are there, positive, and its targets were checked."""
    revisions = document["revisions"]
    for name, sides in REVISIONS.items():
        for side in sides:
            assert revisions[name][side]["value"] > 0, (name, side)
    save = revisions["one_message_save"]
    assert save["ratio_vs_floor"] > 0 and save["history_ratio"] > 0
    # Each timed save was one append and one fsync (format 3).
    counters = save["sessionactors"]["counters"]
    assert counters["journal_appends"] == counters["saves_requested"] == counters["fsyncs"]
    assert revisions["session_life"]["speedup"] > 0
    fork = revisions["fork"]
    assert 0 < fork["bytes_written"] < fork["session_bytes"]
    assert fork["ratio_vs_save"] > 0
    issue_13 = [target for target in document["targets"] if target["issue"] == 13]
    assert len(issue_13) == 5


def check_ui(document: dict[str, Any]) -> None:
    """Part two's figures (``bench/ui.py``) are there, positive, and its targets were checked."""
    ui = document["ui"]
    listing = ui["listing"]
    for page in ("first_page", "pinned_page", "title_page", "no_match_page", "full_scan"):
        assert 0 < listing[page]["value"] <= listing[page]["p99"], page
    assert listing["ratio_vs_scan"] > 0 and listing["pinned"] > 0 and listing["title_matches"] > 0
    cost = ui["index_cost"]
    assert cost["with_index"]["value"] > 0 and cost["without_index"]["value"] > 0
    assert cost["ratio"] > 0
    for watch in ("watch_files", "watch_floor"):
        # Every write was followed by a change (the watch's promise), timed.
        assert ui[watch]["missed"] == 0 and ui[watch]["delivered"] > 0, watch
        assert len(ui[watch]["samples_s"]) == ui[watch]["writes"], watch
    assert ui["watch_postgres"] is None or ui["watch_postgres"]["missed"] == 0
    assert ui["postgres_note"]
    counter = ui["counter"]
    assert counter["sessionactors"]["value"] > 0 and counter["classic"]["value"] > 0
    # Queued updates share fsyncs; the classic way pays two per increment.
    assert counter["fsyncs_per_increment"] < 1 and counter["classic_fsyncs_per_increment"] == 2
    ui_targets = [target for target in document["targets"] if target["issue"] == "ui"]
    assert len(ui_targets) == 6 + (ui["watch_postgres"] is not None)


def test_quick_benchmark_runs_and_reports_every_workload(tmp_path: Path) -> None:
    stdout, document = run_quick(tmp_path)
    assert "Targets (issue 4)" in stdout and "Targets (issue 13)" in stdout
    assert "For a UI (part two)" in stdout

    workloads = document["workloads"]
    for name in WORKLOADS:
        for design in DESIGNS:
            value = workloads[name][design]["value"]
            assert isinstance(value, (int, float)), (name, design, value)
            assert value > 0, (name, design, value)
    for name in WORKLOADS[:3]:
        assert workloads[name]["floor"]["value"] > 0
    # The flush save beside a bare thread hop: one hop a save, no fsync.
    flush = workloads["flush_save"]
    assert flush["sessionactors"]["value"] > 0 and flush["hop"]["value"] > 0
    assert flush["ratio_vs_hop"] > 0
    counted = flush["sessionactors"]["counters"]
    assert counted["thread_hops"] == counted["saves_requested"] > 0 and counted["fsyncs"] == 0
    assert "1d one-message save, flush" in stdout
    # Many sessions' floor, in the same rounds: the durable work alone.
    many = workloads["many_sessions"]
    assert many["floor"]["value"] > 0 and many["floor_vs_classic"] > 0
    assert many["ratio_vs_floor"] > 0
    # The first save 3 fsyncs (root, log, directory), each later save 1.
    config, floor_counters = document["meta"]["config"], many["floor"]["counters"]
    rounds, sessions = config["many_rounds"], config["many_sessions"]
    assert floor_counters["saves_requested"] == many["operations"] * rounds
    assert floor_counters["fsyncs"] == (many["operations"] + 2 * sessions) * rounds
    assert "floor (dir + file + fsyncs only)" in stdout
    # Token usage's floor: every record written once, group-committed (one
    # write and one fdatasync a batch, fewer batches than records).
    usage = workloads["token_usage"]
    assert usage["floor"]["value"] > 0 and usage["ratio_vs_floor"] > 0
    usage_counters = usage["floor"]["counters"]
    assert usage_counters["saves_requested"] == usage["operations"] * config["usage_rounds"]
    assert usage_counters["fsyncs"] == usage_counters["thread_hops"]
    assert 0 < usage_counters["fsyncs"] < usage_counters["saves_requested"]
    assert "4c same, floor (group commit only)" in stdout
    # The other throughput workloads have no floor.
    assert "floor" not in workloads["contended_save"]
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
    journal = document["journal"]
    assert all(row["median_ms"] > 0 for row in journal["save_latency"].values())
    assert journal["session_life"]["journal_s"] > 0 and journal["session_life"]["rewrite_s"] > 0
    check_revisions(document)
    check_ui(document)


def test_quick_benchmark_runs_one_section_alone(tmp_path: Path) -> None:
    """``--only revisions``: issue 13's workloads alone, the other sections null."""
    stdout, document = run_quick(tmp_path, "--only", "revisions")
    assert "Targets (issue 13)" in stdout and "Targets (issue 4)" not in stdout
    assert document["workloads"] is None and document["journal"] is None
    assert document["meta"]["sections"] == ["revisions"]
    check_revisions(document)


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
    # Beside the ratios, what the actors did in the timed part alone (--quick sizes).
    counters = done.stdout.split("the actors' statistics")[1].splitlines()[1:]
    expected = {
        "hot session": "saves_requested 40,",
        "1,000 sessions": "saves_requested 150,",
        "10,000 records": "appends_requested 200,",
    }
    for workload, requested in expected.items():
        [line] = [line for line in counters if line.strip().startswith(workload)]
        assert requested in line and " batches " in line, line
