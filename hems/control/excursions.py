"""Limit excursions over time: how long the fuse and the export limit have been exceeded.

Measured (not predicted) grid flow is timed every cycle: a fuse overload must be corrected
within `FUSE_DEADLINE_S`, an export excursion within G100's `correct_within_s` and never
last longer than `max_excursion_s`. Each transition is journalled; an excursion that
persists escalates the guard to shedding on measurements alone.
"""

from __future__ import annotations

from hems.control.config import ControlConfig
from hems.control.guard import FUSE_DEADLINE_S, ExcursionTracker
from hems.control.journal import Journal
from hems.control.model import Intervention, ProcessImage
from hems.control.problems import Problems
from hems.core.site import LimitsConfig

TrackerStatus = dict[str, int | float | bool]


class Excursions:
    """Owns the fuse and the export excursion trackers."""

    def __init__(
        self, cfg: ControlConfig, limits: LimitsConfig, journal: Journal, problems: Problems
    ) -> None:
        self._cfg = cfg
        self._limits = limits
        self._journal = journal
        self._problems = problems
        self._fuse = ExcursionTracker(FUSE_DEADLINE_S, FUSE_DEADLINE_S)
        self._export = ExcursionTracker(cfg.g100.correct_within_s, cfg.g100.max_excursion_s)

    @property
    def fuse(self) -> ExcursionTracker:
        return self._fuse

    @property
    def export(self) -> ExcursionTracker:
        return self._export

    def track(self, image: ProcessImage) -> None:
        """Time this cycle's measured grid flow against the fuse and the export limit."""
        grid = image.grid
        if grid.power_w is None:
            return
        if grid.phase_current_a is not None:
            over_fuse = max(grid.phase_current_a) > self._limits.fuse_a
        else:
            over_fuse = grid.power_w > self._limits.import_limit_w
        ev = self._fuse.update(image.at_s, over_fuse)
        if ev is not None and ev != "late":
            self._journal.emit(
                image.at,
                Intervention("fuse-time", "", f"fuse overload {ev}", {}, {"grid_w": grid.power_w}),
                ev,
            )
        over_export = -grid.power_w > self._limits.export_limit_w
        ev = self._export.update(image.at_s, over_export)
        if ev is not None:
            self._journal.emit(
                image.at,
                Intervention(
                    "g100",
                    "",
                    f"export excursion {ev}",
                    {},
                    {"export_w": -grid.power_w, "count": self._export.count},
                ),
                ev,
            )

    def escalated(self, at_s: float) -> bool:
        """A measured fuse overload outlasts one cycle, or an export excursion a third of
        its G100 window: the guard's predictions were wrong."""
        fuse_s = self._fuse.duration_s(at_s)
        export_s = self._export.duration_s(at_s)
        if fuse_s >= self._cfg.cycle_s or export_s >= self._cfg.g100.correct_within_s / 3:
            self._problems.report(
                "escalated",
                "limit still exceeded: shedding on measurements alone",
                fuse_s=fuse_s,
                export_s=export_s,
            )
            return True
        self._problems.clear("escalated", "limits held again")
        return False


def tracker_status(t: ExcursionTracker) -> TrackerStatus:
    """One tracker's counts for `status()`."""
    return {
        "excursions": t.count,
        "late": t.late,
        "breaches": t.breaches,
        "longest_s": round(t.longest_s, 1),
        "over_now": t.since_s is not None,
    }
