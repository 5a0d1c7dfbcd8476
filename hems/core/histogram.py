"""A fixed-bucket histogram of durations: the control loop fills it, /metrics reads it.

Plain counts (no library): the stage that measures stays free of the exporter, and a scrape
only copies a few integers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Upper bounds [s] for a control cycle: the HIL rig's cycles take 10–40 ms, the cycle is 1 s+.
CYCLE_BOUNDS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class DurationHistogram:
    """Counts of observations per bucket (`bounds_s` upper bounds, plus +Inf) and their sum."""

    bounds_s: tuple[float, ...] = CYCLE_BOUNDS_S
    counts: list[int] = field(default_factory=list)
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds_s) != sorted(self.bounds_s):
            raise ValueError("bounds_s: must be ascending")
        self.counts = [0] * (len(self.bounds_s) + 1)

    def observe(self, duration_s: float) -> None:
        self.counts[bisect.bisect_left(self.bounds_s, duration_s)] += 1
        self.sum_s += duration_s

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound [s], observations ≤ it) per bucket, the last bound +Inf."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound_s, n in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound_s, total))
        return out
