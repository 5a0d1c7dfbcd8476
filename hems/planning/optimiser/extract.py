"""Plan extraction: turn the solver's column values into a `hems.core.plan.Plan`."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from hems.core.plan import Plan, PlanSlot
from hems.planning.optimiser.model import Columns, SlotFrame
from hems.planning.problem import Problem

_EPS_W = 1e-3  # solver noise below a milliwatt is zero


def _clean(v: float) -> float:
    return 0.0 if abs(v) < _EPS_W else round(float(v), 3)


def extract(
    p: Problem,
    f: SlotFrame,
    cols: Columns,
    x: np.ndarray,
    *,
    status: str,
    notes: list[str],
    created_at: datetime,
) -> Plan:
    # Net out import and export in the same slot (a wash at equal prices).
    net = x[cols.grid_import] - x[cols.grid_export]
    imp = np.clip(net, 0.0, None)
    exp = np.clip(-net, 0.0, None)
    pv_used = x[cols.pv_used]
    targets: list[dict[str, float]] = [{} for _ in range(f.n)]
    socs: list[dict[str, float]] = [{} for _ in range(f.n)]
    switches: list[dict[str, bool]] = [{} for _ in range(f.n)]
    spec = {b.id: b for b in p.batteries}
    for bid, (ch, dis, soc) in cols.battery.items():
        net = x[ch] - x[dis]
        for t in range(f.n):
            targets[t][bid] = _clean(net[t])
            socs[t][bid] = round(float(x[soc[t]]) / spec[bid].capacity_wh * 100.0, 3)
    for eid, slots, pw, _short in cols.ev:
        power = np.zeros(f.n)
        if slots.size:
            power[slots] = x[pw]
        for t in range(f.n):
            targets[t][eid] = _clean(targets[t].get(eid, 0.0) + power[t])
    for lid, slots, on, power_w in cols.loads:
        level = np.zeros(f.n)
        if slots.size:
            level[slots] = x[on]
        for t in range(f.n):
            # Binary in a MILP plan; fractional only in the LP-relaxation fallback, where the
            # power keeps the balance exact and the switch is rounded.
            switches[t][lid] = bool(level[t] > 0.5)
            targets[t][lid] = _clean(power_w * level[t])
    slots_out = tuple(
        PlanSlot(
            start=p.slot_start(t),
            duration_s=p.step_s,
            price_import_per_kwh=float(f.import_price[t]),
            price_export_per_kwh=float(f.export_price[t]),
            grid_import_w=_clean(imp[t]),
            grid_export_w=_clean(exp[t]),
            targets_w=targets[t],
            soc_pct=socs[t],
            switches=switches[t],
            pv_curtail_w=_clean(f.pv_w[t] - pv_used[t]),
        )
        for t in range(f.n)
    )
    cost = float(np.sum((f.import_price * imp - f.export_price * exp) * f.dt_h / 1000.0))
    return Plan(
        created_at=created_at,
        slots=slots_out,
        cost=round(cost, 6),
        status=status,
        notes=tuple(notes),
    )
