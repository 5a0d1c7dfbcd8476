"""Warm starts between replans: the previous plan, shifted to the new slots, as a hint.

The hint is a column vector with the previous plan's powers where its slots overlap the new
problem (matched by slot start, so any number of elapsed slots is a shift) and NaN
elsewhere; the LP-and-round heuristic fills the NaNs from the LP relaxation and rounds it
by the usual rules (heuristic.py). The rounded hint is one more candidate first incumbent:
when the situation has not changed much, it is the previous (proven) plan's integer
choices, and HiGHS gets it through `setSolution`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hems.core.plan import Plan, PlanSlot
from hems.planning.optimiser.model import Columns
from hems.planning.problem import Problem


def _by_slot(p: Problem, previous: Plan) -> list[list[PlanSlot]]:
    """The previous plan's slots inside each new slot, where they tile it exactly (one
    whole slot, or a split slot's import and export phases)."""
    out: list[list[PlanSlot]] = [[] for _ in range(p.n_slots)]
    for s in previous.slots:
        k = math.floor((s.start - p.start).total_seconds() / p.step_s + 1e-9)
        if 0 <= k < p.n_slots and s.end <= p.slot_start(k + 1):
            out[k].append(s)
    for k, group in enumerate(out):
        tiles = (
            group
            and group[0].start == p.slot_start(k)
            and abs(sum(s.duration_s for s in group) - p.step_s) < 1e-3
        )
        if not tiles:
            out[k] = []
    return out


def _mean(group: list[PlanSlot], value: Callable[[PlanSlot], float | None]) -> float | None:
    """The group's value averaged over time (a split slot's phases: the slot's average)."""
    values = [value(s) for s in group]
    if any(v is None for v in values):
        return None
    total_s = sum(s.duration_s for s in group)
    return sum(v * s.duration_s for v, s in zip(values, group, strict=True)) / total_s  # type: ignore[operator]


def plan_hint(p: Problem, cols: Columns, n_cols: int, previous: Plan) -> np.ndarray | None:
    """The previous plan's powers in the new problem's columns; None when nothing overlaps.
    A split slot gives its phases' averages (its share θ is left to the LP)."""
    slots = _by_slot(p, previous)
    if not any(slots):
        return None
    x = np.full(n_cols, np.nan)
    for t, group in enumerate(slots):
        if not group:
            continue
        x[cols.grid_import[t]] = _mean(group, lambda s: s.grid_import_w)
        x[cols.grid_export[t]] = _mean(group, lambda s: s.grid_export_w)
        for bid, (ch, dis, _soc) in cols.battery.items():
            charge = _mean(group, lambda s, b=bid: _maybe(s.targets_w.get(b), 1.0))
            discharge = _mean(group, lambda s, b=bid: _maybe(s.targets_w.get(b), -1.0))
            if charge is not None and discharge is not None:
                x[ch[t]], x[dis[t]] = charge, discharge
    for eid, ev_slots, pw, _short in cols.ev:
        for k, t in enumerate(ev_slots):
            group = slots[int(t)]
            if group:
                w = _mean(group, lambda s, e=eid: s.targets_w.get(e))
                if w is not None:
                    x[pw[k]] = w
    for lid, load_slots, on, _power_w in cols.loads:
        for k, t in enumerate(load_slots):
            group = slots[int(t)]
            if group and all(lid in s.switches for s in group):
                x[on[k]] = 1.0 if group[0].switches[lid] else 0.0
    return x


def _maybe(w: float | None, sign: float) -> float | None:
    """The charging (sign 1) or discharging (−1) part of a battery's net power."""
    return None if w is None else max(sign * w, 0.0)
