"""The targets, as tables: which figure of which workload, its limit, PASS or MISS.

``TARGETS`` are issue 4's, on :class:`Workloads`; ``REVISION_TARGETS`` issue
13's, on :class:`Revisions` (format 3: revisions, history and forks);
``UI_TARGETS`` part two's for a UI, on :class:`Ui` (their ``issue`` is
``"ui"``; ``UI_POSTGRES_TARGETS`` only when PostgreSQL was measured);
``ARCHIVE_TARGETS`` issue 15's, on :class:`ArchiveMove` (moving a session).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from .harness import KB, MB
from .results import ArchiveMove, Revisions, Ui, Workloads

Figures = TypeVar("Figures", Workloads, Revisions, Ui, ArchiveMove)

THROUGHPUT_RATIO = "throughput ratio"
LATENCY_RATIO = "latency ratio"
SPEEDUP = "speedup"
#: A figure in seconds (printed in ms): its name starts with this.
SECONDS = "seconds"
UI = "ui"  # part two's targets' ``issue``
ARCHIVE_ISSUE = 15
AT_LEAST = True  # the figure must reach the limit
AT_MOST = False  # the figure must stay at or under the limit


@attrs.frozen
class Target(Generic[Figures]):
    """A target: a name, what its figure is, its limit, and how the figure is computed."""

    name: str
    figure: str
    at_least: bool
    limit: float
    measure: Callable[[Figures], float]
    issue: int | str = 4

    def check(self, figures: Figures) -> Checked:
        """This target's figure in ``figures``, and whether it met the limit."""
        value = self.measure(figures)
        passed = value >= self.limit if self.at_least else value <= self.limit
        return Checked(
            name=self.name,
            figure=self.figure,
            value=value,
            limit=self.limit,
            at_least=self.at_least,
            passed=passed,
            issue=self.issue,
        )


@attrs.frozen(kw_only=True)
class Checked:
    """A target checked against one run's figures (one entry of the JSON's ``targets``)."""

    name: str
    figure: str
    value: float
    limit: float
    at_least: bool
    passed: bool
    issue: int | str


# The uncontended and contended targets, for each variant that bears on them.
# fmt: off
TARGETS: tuple[Target[Workloads], ...] = (
    Target("contended saves >= 20x classic throughput (shared object)",
           THROUGHPUT_RATIO, AT_LEAST, 20.0, lambda w: w.contended_save.ratio),
    Target("contended saves >= 20x classic throughput (copies)",
           THROUGHPUT_RATIO, AT_LEAST, 20.0, lambda w: w.contended_save_copies.ratio),
    Target("token-usage appends >= 10x classic throughput",
           THROUGHPUT_RATIO, AT_LEAST, 10.0, lambda w: w.token_usage.ratio),
    Target("uncontended save <= 1.25x classic latency (turn)",
           LATENCY_RATIO, AT_MOST, 1.25, lambda w: w.uncontended_save.ratio_vs_classic),
    Target("uncontended save <= 1.5x physical floor (turn)",
           LATENCY_RATIO, AT_MOST, 1.5, lambda w: w.uncontended_save.ratio_vs_floor),
    Target("uncontended save <= 1.25x classic latency (rewrite)",
           LATENCY_RATIO, AT_MOST, 1.25, lambda w: w.uncontended_save_rewrite.ratio_vs_classic),
    Target("uncontended save <= 1.5x physical floor (rewrite)",
           LATENCY_RATIO, AT_MOST, 1.5, lambda w: w.uncontended_save_rewrite.ratio_vs_floor),
    Target("1,000-session load no slower than classic",
           THROUGHPUT_RATIO, AT_LEAST, 1.0, lambda w: w.many_sessions.ratio),
    Target("<= 50 KB per live actor",
           "bytes per actor", AT_MOST, 50 * KB, lambda w: w.memory_live.sessionactors.value),
    Target("RSS after retired sessions within 10 MB of start",
           "bytes", AT_MOST, 10 * MB, lambda w: abs(w.memory_churn.sessionactors.delta_bytes)),
)
# fmt: on


# Issue 13, with durability="fsync": each against a baseline measured in the same run.
# fmt: off
REVISION_TARGETS: tuple[Target[Revisions], ...] = (
    Target("one-message save <= 1.3x its floor (append + fdatasync + thread hop)",
           LATENCY_RATIO, AT_MOST, 1.3, lambda r: r.one_message_save.ratio_vs_floor, 13),
    Target("2,000-step session life >= 10x faster than durable full rewrites",
           SPEEDUP, AT_LEAST, 10.0, lambda r: r.session_life.speedup, 13),
    Target("fork of a 10,000-message session writes <= 64 KB",
           "bytes written", AT_MOST, 64 * KB, lambda r: r.fork.bytes_written, 13),
    Target("fork <= 3x a one-message save of that session",
           LATENCY_RATIO, AT_MOST, 3.0, lambda r: r.fork.ratio_vs_save, 13),
    Target("one-message save with history=100 <= 1.1x history=1",
           LATENCY_RATIO, AT_MOST, 1.1, lambda r: r.one_message_save.history_ratio, 13),
)
# fmt: on


# Part two, for a UI (``bench/ui.py``), durability="fsync": each beside its baseline.
# fmt: off
UI_TARGETS: tuple[Target[Ui], ...] = (
    Target("first page of 50 (warm index) <= 20 ms at p99",
           f"{SECONDS} p99", AT_MOST, 0.020, lambda u: u.listing.first_page.p99, UI),
    Target("page of pinned=True (~1% pinned) <= 100 ms at p99",
           f"{SECONDS} p99", AT_MOST, 0.100, lambda u: u.listing.pinned_page.p99, UI),
    Target("page of title_contains= (~1% match) <= 100 ms at p99",
           f"{SECONDS} p99", AT_MOST, 0.100, lambda u: u.listing.title_page.p99, UI),
    Target("durable one-message save with the index <= 1.10x without it",
           LATENCY_RATIO, AT_MOST, 1.10, lambda u: u.index_cost.ratio, UI),
    Target("watch, files: another process's write delivered <= 100 ms at p99",
           f"{SECONDS} p99", AT_MOST, 0.100, lambda u: u.watch_files.p99, UI),
    Target("64 tasks incrementing with update_session >= 20x flock + rewrite",
           THROUGHPUT_RATIO, AT_LEAST, 20.0, lambda u: u.counter.ratio, UI),
)
UI_POSTGRES_TARGETS: tuple[Target[Ui], ...] = (
    Target("watch, PostgreSQL: another process's write delivered <= 100 ms at p99",
           f"{SECONDS} p99", AT_MOST, 0.100,
           lambda u: u.watch_postgres.p99 if u.watch_postgres else float("nan"), UI),
)
# fmt: on


# Issue 15 (``bench/archive.py``), durability="fsync": against cp -r in the same run.
# fmt: off
ARCHIVE_TARGETS: tuple[Target[ArchiveMove], ...] = (
    Target("export + import of a 10,000-message session <= 3x cp -r of its directory",
           LATENCY_RATIO, AT_MOST, 3.0, lambda a: a.ratio_vs_cp, ARCHIVE_ISSUE),
)
# fmt: on


def check_targets(
    workloads: Workloads | None,
    revisions: Revisions | None = None,
    ui: Ui | None = None,
    archive: ArchiveMove | None = None,
) -> tuple[Checked, ...]:
    """Every target of the tables whose workloads ran, checked against their figures."""
    checked: list[Checked] = []
    if workloads is not None:
        checked += [target.check(workloads) for target in TARGETS]
    if revisions is not None:
        checked += [target.check(revisions) for target in REVISION_TARGETS]
    if ui is not None:
        checked += [target.check(ui) for target in UI_TARGETS]
        if ui.watch_postgres is not None:
            checked += [target.check(ui) for target in UI_POSTGRES_TARGETS]
    if archive is not None:
        checked += [target.check(archive) for target in ARCHIVE_TARGETS]
    return tuple(checked)
