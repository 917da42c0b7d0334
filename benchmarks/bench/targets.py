"""Issue 4's targets, as one table: which figure of which workload, its limit, PASS or MISS."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .harness import KB, MB
from .results import Workloads

THROUGHPUT_RATIO = "throughput ratio"
LATENCY_RATIO = "latency ratio"
AT_LEAST = True  # the figure must reach the limit
AT_MOST = False  # the figure must stay at or under the limit


@attrs.frozen
class Target:
    """A target: a name, what its figure is, its limit, and how the figure is computed."""

    name: str
    figure: str
    at_least: bool
    limit: float
    measure: Callable[[Workloads], float]

    def check(self, workloads: Workloads) -> Checked:
        """This target's figure in ``workloads``, and whether it met the limit."""
        value = self.measure(workloads)
        passed = value >= self.limit if self.at_least else value <= self.limit
        return Checked(
            name=self.name,
            figure=self.figure,
            value=value,
            limit=self.limit,
            at_least=self.at_least,
            passed=passed,
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


# The uncontended and contended targets, for each variant that bears on them.
# fmt: off
TARGETS = (
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


def check_targets(workloads: Workloads) -> tuple[Checked, ...]:
    """Every target of the table, checked against ``workloads``."""
    return tuple(target.check(workloads) for target in TARGETS)
