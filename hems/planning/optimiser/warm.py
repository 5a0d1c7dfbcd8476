"""Warm starts between replans: the previous plan, shifted to the new slots, as a hint.

The hint is a column vector with the previous plan's powers where its slots overlap the new
problem (matched by slot start, so any number of elapsed slots is a shift) and NaN
elsewhere; the LP-and-round heuristic fills the NaNs from the LP relaxation and rounds it
by the usual rules (heuristic.py). The rounded hint is one more candidate first incumbent:
when the situation has not changed much, it is the previous (proven) plan's integer
choices, and HiGHS gets it through `setSolution`.
"""

from __future__ import annotations

import numpy as np

from hems.core.plan import Plan
from hems.planning.optimiser.model import Columns
from hems.planning.problem import Problem


def plan_hint(p: Problem, cols: Columns, n_cols: int, previous: Plan) -> np.ndarray | None:
    """The previous plan's powers in the new problem's columns; None when nothing overlaps."""
    by_start = {s.start: s for s in previous.slots if s.duration_s == p.step_s}
    slots = [by_start.get(p.slot_start(t)) for t in range(p.n_slots)]
    if not any(s is not None for s in slots):
        return None
    x = np.full(n_cols, np.nan)
    for t, s in enumerate(slots):
        if s is None:
            continue
        x[cols.grid_import[t]] = s.grid_import_w
        x[cols.grid_export[t]] = s.grid_export_w
        for bid, (ch, dis, _soc) in cols.battery.items():
            net = s.targets_w.get(bid)
            if net is not None:
                x[ch[t]], x[dis[t]] = max(net, 0.0), max(-net, 0.0)
    for eid, ev_slots, pw, _short in cols.ev:
        for k, t in enumerate(ev_slots):
            s = slots[int(t)]
            if s is not None and eid in s.targets_w:
                x[pw[k]] = s.targets_w[eid]
    for lid, load_slots, on, _power_w in cols.loads:
        for k, t in enumerate(load_slots):
            s = slots[int(t)]
            if s is not None and lid in s.switches:
                x[on[k]] = 1.0 if s.switches[lid] else 0.0
    return x
