"""What a plan expects an event to deliver, by the reports' own rule.

The delivery report counts, per settlement period, baseline − metered net import for a
turn-down (metered − baseline for a turn-up) and a period that went the wrong way as 0. The
expectation applies the same rule with the plan's net import in place of the metered one, so
the page can put the two side by side. Pure: a plan and a baseline in, kWh out.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from hems.core.plan import Plan

SETTLEMENT_PERIOD_S = 1800.0


def planned_net_import_wh(plan: Plan, start: datetime, end: datetime) -> float | None:
    """The plan's net import (import − export) over [start, end) [Wh]; None when the plan does
    not cover the whole interval."""
    covered_s, energy_wh = 0.0, 0.0
    for slot in plan.slots:
        lo, hi = max(slot.start, start), min(slot.end, end)
        overlap_s = (hi - lo).total_seconds()
        if overlap_s <= 0:
            continue
        covered_s += overlap_s
        energy_wh += (slot.grid_import_w - slot.grid_export_w) * overlap_s / 3600.0
    if covered_s + 1e-6 < (end - start).total_seconds():
        return None
    return energy_wh


def expected_delivery_kwh(
    plan: Plan,
    start: datetime,
    end: datetime,
    baseline_w: float,
    *,
    turn_up: bool = False,
    period_s: float = SETTLEMENT_PERIOD_S,
) -> float | None:
    """Expected delivery over [start, end) against a flat baseline [W], summed over periods of
    `period_s` from `start`, each clipped at 0 as in the report. None when the baseline is
    unknown or the plan does not cover the window (a part of it is already past, or it lies
    beyond the horizon)."""
    if not math.isfinite(baseline_w):
        return None
    total_kwh = 0.0
    at = start
    while at < end:
        stop = min(at + timedelta(seconds=period_s), end)
        planned_wh = planned_net_import_wh(plan, at, stop)
        if planned_wh is None:
            return None
        baseline_wh = baseline_w * (stop - at).total_seconds() / 3600.0
        delta_wh = planned_wh - baseline_wh if turn_up else baseline_wh - planned_wh
        total_kwh += max(0.0, delta_wh) / 1000.0
        at = stop
    return total_kwh
