"""The printed report: medians and ratios, the counters, coalescing, and the targets.

:func:`report` prints issue 4's workloads; :func:`revisions_report` issue 13's;
:func:`ui_report` part two's for a UI; :func:`archive_report` issue 15's.
"""

from __future__ import annotations

from collections.abc import Sequence

from .designs import CLASSIC, OURS, Counters
from .harness import KB, MB, median
from .results import (
    ArchiveMove,
    Calls,
    FlushHopResult,
    LatencyResult,
    Revisions,
    ThroughputResult,
    Ui,
    WatchLatency,
    Workloads,
)
from .targets import (
    ARCHIVE_ISSUE,
    ARCHIVE_TARGETS,
    SECONDS,
    UI,
    UI_POSTGRES_TARGETS,
    UI_TARGETS,
    Checked,
)

# Issue 17's goals for workloads 3 and 4 (sessionactors against classic): only
# said of beside their floors, not checked (their targets in ``targets.py`` are
# issue 4's, 1x and 10x).
MANY_SESSIONS_GOAL = 3.0
USAGE_GOAL = 30.0
#: What each floor does, as its rows and lines name it.
MANY_FLOOR = "dir + file + fsyncs only"
USAGE_FLOOR = "group commit only"

# The statistics() counters the counter table shows, in its column order.
COUNTERS = (
    "saves_requested",
    "snapshots_written",
    "journal_appends",
    "journal_rewrites",
    "appends_requested",
    "append_batches",
    "fsyncs",
    "bytes_written",
    "batches",
    "thread_hops",
    "max_mailbox_depth",
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s"


def _bytes(value: float) -> str:
    if abs(value) >= MB:
        return f"{value / MB:+.1f} MB" if value < 0 else f"{value / MB:.1f} MB"
    return f"{value / KB:.2f} KB"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, a rule under the first row."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _latency_row(label: str, latency: LatencyResult) -> list[str]:
    return [
        label,
        _ms(latency.sessionactors.value),
        _ms(latency.classic.value),
        f"{latency.ratio_vs_classic:.2f}x latency",
        f"floor {_ms(latency.floor.value)}: ours {latency.ratio_vs_floor:.2f}x, "
        f"classic {latency.classic_vs_floor:.2f}x",
    ]


def _flush_row(result: FlushHopResult) -> list[str]:
    counters = result.sessionactors.counters
    saves = counters.get("saves_requested", 0) or 1
    return [
        "1d one-message save, flush",
        _ms(result.sessionactors.value),
        "",
        f"{result.ratio_vs_hop:.2f}x the hop",
        f"bare to_thread round trip {_ms(result.hop.value)}; per save "
        f"{counters.get('thread_hops', 0) / saves:.2f} hops, "
        f"{counters.get('fsyncs', 0) / saves:.2f} fsyncs",
    ]


def _throughput_row(label: str, result: ThroughputResult, unit: str) -> list[str]:
    return [
        label,
        _rate(result.sessionactors.value, unit),
        _rate(result.classic.value, unit),
        f"{result.ratio:.2f}x throughput",
        f"median elapsed {median(result.sessionactors.elapsed_s):.3f} s vs "
        f"{median(result.classic.elapsed_s):.3f} s; per round "
        + " ".join(f"{ratio:.2f}x" for ratio in result.paired_ratios),
    ]


def _per_save(counters: Counters, name: str) -> float:
    return counters.get(name, 0) / (counters.get("saves_requested", 0) or 1)


def _floor_rows(result: ThroughputResult, label: str, what: str, unit: str) -> list[list[str]]:
    """A workload's floor beside the row of the stores (none if it did not run)."""
    floor = result.floor
    if floor is None or result.floor_vs_classic is None or result.ratio_vs_floor is None:
        return []
    return [
        [
            f"{label} same, floor ({what})",
            f"{result.ratio_vs_floor:.2f}x the floor",
            "",
            f"floor {result.floor_vs_classic:.2f}x classic",
            f"floor {_rate(floor.value, unit)}, median elapsed "
            f"{median(floor.elapsed_s):.3f} s; per round "
            + " ".join(f"{ratio:.2f}x" for ratio in result.paired_floor_ratios or ()),
        ]
    ]


def _floor_lines(
    result: ThroughputResult, goal: float, what: str, unit: str, above: str
) -> list[str]:
    """What a workload's floor says of a goal of ``goal`` x classic; ``above``: why, if above."""
    floor = result.floor
    if floor is None or result.floor_vs_classic is None or result.ratio_vs_floor is None:
        return []
    needed = goal * result.classic.value
    share = needed / floor.value
    verdict = f"above it: {above}" if share > 1 else "under it: not ruled out by the floor"
    return [
        f"floor ({what}): {_rate(floor.value, unit)}, "
        f"{result.floor_vs_classic:.2f}x classic: a {goal:g}x target needs "
        f"{_rate(needed, unit)}, {share:.2f}x the floor ({verdict}); "
        f"ours is {result.ratio_vs_floor:.2f}x the floor, {result.ratio:.2f}x classic",
    ]


def _many_floor_lines(result: ThroughputResult) -> list[str]:
    """What workload 3's floor says of the goal of ``MANY_SESSIONS_GOAL`` x classic."""
    lines = _floor_lines(
        result,
        MANY_SESSIONS_GOAL,
        MANY_FLOOR,
        "saves",
        "out of reach with one directory and one log per session, unless fsyncs "
        "are shared between sessions (one root fsync for several new ones)",
    )
    if not lines:
        return []
    fsyncs = ", ".join(
        f"{design} {_per_save(counted, 'fsyncs'):.2f}"
        for design, counted in result.counters_by_design().items()
    )
    return [*lines, f"fsyncs per save (many_sessions): {fsyncs}"]


def _usage_floor_lines(result: ThroughputResult) -> list[str]:
    """What workload 4's floor says of the goal of ``USAGE_GOAL`` x classic."""
    return _floor_lines(
        result,
        USAGE_GOAL,
        USAGE_FLOOR,
        "records",
        "group commit alone does not reach it on this machine: each call's wait and "
        "wake-up, each batch's hop and fdatasync cost more than the goal leaves",
    )


def _medians_table(w: Workloads) -> str:
    usage, live, churn = w.token_usage, w.memory_live.sessionactors, w.memory_churn
    size = w.uncontended_save.session_bytes / KB
    ops = w.contended_save.operations
    unlocked = usage.classic_unlocked
    assert unlocked is not None and usage.ratio_vs_unlocked is not None  # token usage runs it
    blocks = churn.sessionactors.allocated_blocks_end - churn.sessionactors.allocated_blocks_start
    rows = [
        ["workload", OURS, CLASSIC, "ratio", "note"],
        _latency_row(f"1a uncontended save {size:.0f} KB, turn", w.uncontended_save),
        _latency_row(f"1b uncontended save {size:.0f} KB, unchanged", w.uncontended_save_unchanged),
        _latency_row(f"1c uncontended save {size:.0f} KB, rewrite", w.uncontended_save_rewrite),
        _flush_row(w.flush_save),
        _throughput_row(f"2a contended, shared ({ops} saves)", w.contended_save, "saves"),
        _throughput_row(f"2b contended, copies ({ops} saves)", w.contended_save_copies, "saves"),
        _throughput_row(
            f"3 many sessions ({w.many_sessions.operations} saves)", w.many_sessions, "saves"
        ),
        *_floor_rows(w.many_sessions, "3b", MANY_FLOOR, "saves"),
        _throughput_row(f"4 token usage ({usage.operations} records)", usage, "records"),
        [
            "4b same, classic appends unlocked",
            "",
            _rate(unlocked.value, "records"),
            f"{usage.ratio_vs_unlocked:.2f}x throughput",
            "reference only: classic appends outside its lock (O_APPEND alone)",
        ],
        *_floor_rows(usage, "4c", USAGE_FLOOR, "records"),
        [
            f"5a memory per live actor ({live.count:,})",
            _bytes(live.value),
            _bytes(w.memory_live.classic.value) + " per lock",
            "",
            f"tracemalloc {_bytes(live.traced_per_item)}, RSS {_bytes(live.rss_per_item)}; "
            f"live_actors {live.live_actors:,}",
        ],
        [
            f"5b RSS after {churn.sessionactors.count:,} ids came and went",
            f"{churn.sessionactors.delta_bytes / MB:+.1f} MB",
            f"{churn.classic.delta_bytes / MB:+.1f} MB",
            "",
            f"ours: {churn.sessionactors.rss_start_bytes / MB:.1f} -> "
            f"{churn.sessionactors.rss_end_bytes / MB:.1f} MB, Python blocks {blocks:+,}, "
            f"live_actors at end {churn.sessionactors.live_actors_at_end}; "
            f"classic keeps {churn.classic.locks_at_end:,} locks",
        ],
    ]
    return _table(rows)


def _counters_table(w: Workloads) -> str:
    timed: dict[str, LatencyResult | FlushHopResult | ThroughputResult] = {
        "uncontended_save": w.uncontended_save,
        "uncontended_save_unchanged": w.uncontended_save_unchanged,
        "uncontended_save_rewrite": w.uncontended_save_rewrite,
        "flush_save": w.flush_save,
        "contended_save": w.contended_save,
        "contended_save_copies": w.contended_save_copies,
        "many_sessions": w.many_sessions,
        "token_usage": w.token_usage,
    }
    rows = [["workload (all rounds)", "design", *COUNTERS]]
    for key, result in timed.items():
        for design, counted in result.counters_by_design().items():
            rows.append([key, design, *(str(counted.get(name, "-")) for name in COUNTERS)])
    return _table(rows)


def _coalescing_lines(w: Workloads) -> list[str]:
    lines = []
    for key, result in (
        ("contended_save", w.contended_save),
        ("contended_save_copies", w.contended_save_copies),
    ):
        counted = result.sessionactors.counters
        saves, snapshots = counted["saves_requested"], counted["snapshots_written"]
        lines.append(
            f"coalescing ({key}): {saves} saves -> {snapshots} snapshot writes "
            f"({'yes' if snapshots < saves else 'NO'})"
        )
    counted = w.token_usage.sessionactors.counters
    appends, writes = counted["appends_requested"], counted["append_batches"]
    lines.append(
        f"group commit (token_usage): {appends} appends -> {writes} writes "
        f"({'yes' if writes < appends else 'NO'})"
    )
    return lines


def _targets_table(checks: Sequence[Checked]) -> str:
    rows = [["target", "figure", "limit", "result"]]
    for check in checks:
        if check.figure.startswith("bytes"):
            value, limit = _bytes(check.value), _bytes(check.limit)
        elif check.figure.startswith(SECONDS):
            value, limit = _ms(check.value), _ms(check.limit)
        else:
            value, limit = f"{check.value:.2f}x", f"{check.limit:.2f}x"
        rows.append(
            [check.name, f"{check.figure} {value}", limit, "PASS" if check.passed else "MISS"]
        )
    return _table(rows)


def report(workloads: Workloads, checks: Sequence[Checked]) -> str:
    """The table of medians and ratios, the counters, and the targets."""
    return "\n".join(
        [
            "Medians; ratios are sessionactors against classic.",
            "",
            _medians_table(workloads),
            "",
            "Coalescing and group commit (statistics() deltas):",
            "",
            _counters_table(workloads),
            "",
            *_coalescing_lines(workloads),
            *_many_floor_lines(workloads.many_sessions),
            *_usage_floor_lines(workloads.token_usage),
            "",
            "Targets (issue 4):",
            "",
            _targets_table([check for check in checks if check.issue == 4]),
        ]
    )


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _revisions_table(r: Revisions) -> str:
    save, life, fork = r.one_message_save, r.session_life, r.fork
    per_save = save.sessionactors.counters
    saves = per_save.get("saves_requested", 0) or 1
    history = " ".join(f"{ratio:.2f}x" for ratio in save.paired_history_ratios)
    rows = [
        ["workload (fsync)", OURS, "baseline", "ratio", "note"],
        [
            f"1 save adding one message, {save.messages} messages "
            f"({save.session_bytes / KB:.0f} KB)",
            _ms(save.sessionactors.value),
            f"floor {_ms(save.floor.value)}",
            f"{save.ratio_vs_floor:.2f}x the floor",
            f"floor: append {save.appended_bytes:,.0f} B + fdatasync + thread hop; "
            f"{per_save.get('fsyncs', 0) / saves:.1f} fsyncs, "
            f"{per_save.get('journal_appends', 0) / saves:.1f} log appends per save",
        ],
        [
            f"2 life of a {life.steps:,}-step session",
            _s(life.sessionactors.value),
            f"full rewrites {_s(life.rewrites.value)}",
            f"{life.speedup:.2f}x faster",
            f"rewrites wrote {life.rewrite_bytes / MB:,.0f} MB; per round "
            + " ".join(f"{ratio:.2f}x" for ratio in life.paired_speedups),
        ],
        [
            f"3 fork of a {fork.messages:,}-message session ({fork.session_bytes / MB:.1f} MB)",
            _ms(fork.fork.value),
            f"one-message save {_ms(fork.save.value)}",
            f"{fork.ratio_vs_save:.2f}x the save",
            f"a fork wrote at most {fork.bytes_written:,} B (a save {fork.bytes_per_save:,.0f} B)",
        ],
        [
            "4 the save of 1, history=100 against history=1",
            _ms(save.sessionactors.value),
            f"history=1 {_ms(save.history_1.value)}",
            f"{save.history_ratio:.2f}x",
            f"per round {history}",
        ],
    ]
    return _table(rows)


def revisions_report(revisions: Revisions, checks: Sequence[Checked]) -> str:
    """Issue 13's table of medians and ratios, and its targets."""
    return "\n".join(
        [
            "Revisions, history and forks (issue 13): medians, each against its baseline.",
            "",
            _revisions_table(revisions),
            "",
            "Targets (issue 13):",
            "",
            _targets_table([check for check in checks if check.issue == 13]),
        ]
    )


def _calls(calls: Calls | WatchLatency) -> str:
    return f"{_ms(calls.value)} (p99 {_ms(calls.p99)})"


def _verdict(checks: Sequence[Checked], name: str) -> tuple[str, str]:
    """The target column and the PASS/MISS column of the row checked by target ``name``."""
    for check in checks:
        if check.name == name:
            limit = _ms(check.limit) if check.figure.startswith(SECONDS) else f"{check.limit:g}x"
            what = "p99" if check.figure.startswith(SECONDS) else "ratio"
            sign = ">=" if check.at_least else "<="
            return f"{what} {sign} {limit}", "PASS" if check.passed else "MISS"
    return "-", ""


def _watch_row(
    label: str, watch: WatchLatency, floor: WatchLatency, verdict: tuple[str, str]
) -> list[str]:
    return [
        label,
        _calls(watch),
        f"floor {_calls(floor)}",
        f"{watch.p99 / floor.p99:,.1f}x at p99" if floor.p99 > 0 else "",
        *verdict,
        f"{watch.writes:,} writes ({_ms(watch.write_s)} each), {watch.delivered:,} changes "
        f"received, {watch.missed} missed; max {_ms(watch.max_s)}",
    ]


def _ui_table(u: Ui, checks: Sequence[Checked]) -> str:
    first, pinned, title, save, watch, counted = (target.name for target in UI_TARGETS)
    (watch_postgres,) = (target.name for target in UI_POSTGRES_TARGETS)
    listing, cost, counter = u.listing, u.index_cost, u.counter
    scan = f"full scan {_s(listing.full_scan.value)}"
    ours_counts, classic_counts = counter.sessionactors.counters, counter.classic.counters
    rows = [
        ["workload (fsync)", OURS, "baseline / floor", "ratio", "target", "result", "note"],
        [
            f"1a first page of {listing.page_size}, {listing.sessions:,} sessions",
            _calls(listing.first_page),
            scan,
            f"{1 / listing.ratio_vs_scan:,.0f}x faster",
            *_verdict(checks, first),
            f"index {listing.index_bytes / MB:.1f} MB; root "
            + ("from the cache" if listing.cached else f"made in {listing.built_s:.0f} s"),
        ],
        [
            f"1b page of pinned=True ({listing.pinned:,} pinned)",
            _calls(listing.pinned_page),
            scan,
            f"{1 / listing.pinned_ratio_vs_scan:,.0f}x faster",
            *_verdict(checks, pinned),
            "",
        ],
        [
            f"1c page of title_contains= ({listing.title_matches:,} match)",
            _calls(listing.title_page),
            scan,
            f"{1 / listing.title_ratio_vs_scan:,.0f}x faster",
            *_verdict(checks, title),
            "",
        ],
        [
            "1d page of title_contains= matching none",
            _calls(listing.no_match_page),
            scan,
            f"{listing.full_scan.value / listing.no_match_page.value:,.0f}x faster",
            "-",
            "",
            "reference only: every row of the index read",
        ],
        [
            f"2 save adding one message, {cost.messages} messages "
            f"({cost.session_bytes / KB:.0f} KB)",
            f"with index {_ms(cost.with_index.value)}",
            f"without {_ms(cost.without_index.value)}",
            f"{cost.ratio:.3f}x",
            *_verdict(checks, save),
            "per round " + " ".join(f"{ratio:.2f}x" for ratio in cost.paired_ratios),
        ],
        _watch_row(
            "3a watch, files: write to delivery",
            u.watch_files,
            u.watch_floor,
            _verdict(checks, watch),
        ),
    ]
    if u.watch_postgres is not None:
        rows.append(
            _watch_row(
                "3b watch, PostgreSQL: write to delivery",
                u.watch_postgres,
                u.watch_floor,
                _verdict(checks, watch_postgres),
            )
        )
    else:
        rows.append(["3b watch, PostgreSQL", "skipped", "", "", "", "", u.postgres_note])
    rows.append(
        [
            f"4 {counter.tasks} tasks incrementing a counter ({counter.increments:,})",
            _rate(counter.sessionactors.value, "incr"),
            f"flock + rewrite {_rate(counter.classic.value, 'incr')}",
            f"{counter.ratio:.1f}x throughput",
            *_verdict(checks, counted),
            f"fsyncs per increment {counter.fsyncs_per_increment:.3f} vs "
            f"{counter.classic_fsyncs_per_increment:.0f}; "
            f"{ours_counts.get('batches', 0):,} batches, "
            f"{ours_counts.get('thread_hops', 0):,} thread hops, "
            f"{ours_counts.get('bytes_written', 0) / MB:.1f} MB vs "
            f"{classic_counts.get('bytes_written', 0) / MB:.1f} MB written; per round "
            + " ".join(f"{ratio:.1f}x" for ratio in counter.paired_ratios),
        ]
    )
    return _table(rows)


def ui_report(ui: Ui, checks: Sequence[Checked]) -> str:
    """Part two's table for a UI: each workload beside its baseline, its target and result."""
    return "\n".join(
        [
            "For a UI (part two): medians (p99 where shown), each beside its baseline or floor.",
            "",
            _ui_table(ui, [check for check in checks if check.issue == UI]),
            "",
            ui.postgres_note,
        ]
    )


def _archive_table(a: ArchiveMove, checks: Sequence[Checked]) -> str:
    (target,) = (target.name for target in ARCHIVE_TARGETS)
    cp = f"cp -r {_ms(a.cp.value)}"
    rounds = len(a.export_then_import.samples_s) or 1
    written = a.counters.get("bytes_written", 0) / rounds
    fsyncs = a.counters.get("fsyncs", 0) / rounds
    rows = [
        ["workload (fsync)", OURS, "baseline, same run", "ratio", "target", "result", "note"],
        [
            f"export + import, {a.messages:,} messages, {a.usage_records:,} usage records",
            _ms(a.export_then_import.value),
            cp,
            f"{a.ratio_vs_cp:.1f}x cp",
            *_verdict(checks, target),
            "per round " + " ".join(f"{ratio:.0f}x" for ratio in a.paired_ratios),
        ],
        [
            "the same against a durable copy",
            "",
            f"cp -r + fsync {_ms(a.durable_cp.value)}",
            f"{a.ratio_vs_durable_cp:.1f}x",
            "-",
            "",
            f"{a.durable_cp_fsyncs} fsyncs: each copied file and directory, and the parent",
        ],
        [
            "export_session alone",
            _ms(a.export_session.value),
            cp,
            f"{a.export_session.value / a.cp.value:.1f}x",
            "-",
            "",
            f"encode_archive (worker thread) {_ms(a.encode.value)}; the rest (the store's "
            f"read, the trips) about {_ms(a.export_session.value - a.encode.value)}",
        ],
        [
            "import_session alone",
            _ms(a.import_session.value),
            cp,
            f"{a.import_session.value / a.cp.value:.1f}x",
            "-",
            "",
            f"decode_archive (worker thread) {_ms(a.decode.value)}; the rest (the store's "
            f"write, the trips) about {_ms(a.import_session.value - a.decode.value)}; "
            f"{fsyncs:.0f} fsyncs, {written / MB:.1f} MB written",
        ],
        [
            "load_session of the same session",
            _ms(a.load_session.value),
            cp,
            f"{a.load_ratio_vs_cp:.1f}x",
            "-",
            "",
            "what an import that returns the Session costs at least",
        ],
        [
            f"{a.messages:,} Message(**d) from ready dicts",
            _ms(a.build_messages.value),
            cp,
            f"{a.build_ratio_vs_cp:.1f}x",
            "-",
            "",
            "the objects alone: no JSON, no checks but the class's",
        ],
        [
            "a child process doing nothing (true)",
            "",
            _ms(a.spawn.value),
            f"{a.spawn.value / a.cp.value:.2f}x",
            "-",
            "",
            "part of the cp baseline",
        ],
    ]
    return _table(rows)


def archive_report(archive: ArchiveMove, checks: Sequence[Checked]) -> str:
    """Issue 15's table: export and import against cp -r, and what bounds them."""
    return "\n".join(
        [
            "Moving a session (issue 15): medians, against cp -r of its directory in the same run.",
            "",
            _archive_table(archive, [check for check in checks if check.issue == ARCHIVE_ISSUE]),
            "",
            f"archive {archive.archive_bytes:,} B; the session's directory "
            f"{archive.directory_bytes:,} B in {archive.directory_files} files "
            f"(archive {archive.archive_ratio:.2f}x); median message {archive.message_bytes:.0f} B",
        ]
    )
