"""Plan extraction: turn the solver's column values into a `hems.core.plan.Plan`.

A time-shared slot (timeshare.py) with both phases gives two `PlanSlot`s, its import phase
then its export phase, each with its own length, powers and the SoC at its end; the control
loop follows them by time (`Plan.slot_at`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from hems.core.plan import Plan, PlanSlot
from hems.planning.optimiser.model import Columns, Share, SlotFrame
from hems.planning.optimiser.timeshare import PHASE_NOISE_S
from hems.planning.problem import Problem

_EPS_W = 1e-3  # solver noise below a milliwatt is zero


def _clean(v: float) -> float:
    return 0.0 if abs(v) < _EPS_W else round(float(v), 3)


@dataclass(slots=True)
class _Slot:
    """One slot's (or phase's) values before they become a PlanSlot."""

    grid_import_w: float = 0.0
    grid_export_w: float = 0.0
    pv_used_w: float = 0.0
    battery_w: dict[str, float] | None = None
    soc_wh: dict[str, float] | None = None
    ev_w: dict[str, float] | None = None
    load_level: dict[str, float] | None = None


def split_phases(share: Share | None, x: np.ndarray) -> dict[int, tuple[int, float, float]]:
    """slot → (local index, θ, length [s]) for each time-shared slot with both phases."""
    if share is None:
        return {}
    out: dict[int, tuple[int, float, float]] = {}
    for k, t in enumerate(share.slots):
        th = float(np.clip(x[share.theta[k]], 0.0, 1.0))
        length = float(share.length_s[k])
        if th * length > PHASE_NOISE_S and (1.0 - th) * length > PHASE_NOISE_S:
            out[int(t)] = (k, th, length)
    return out


def _part_index(share: Share | None) -> dict[tuple[str, str], np.ndarray]:
    """(kind, id) → import-phase part column per local shared slot (−1: none)."""
    if share is None:
        return {}
    out: dict[tuple[str, str], np.ndarray] = {}
    for name, (r, part, _whole) in share.parts.items():
        idx = np.full(share.slots.size, -1, dtype=np.int64)
        idx[r] = part
        out[name] = idx
    return out


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
    split = split_phases(cols.share, x)
    parts = _part_index(cols.share)
    imp_all, exp_all = x[cols.grid_import], x[cols.grid_export]
    # Net out import and export in the same whole slot (a wash at equal prices); a split
    # slot imports in one phase and exports in the other, each billed at its own price.
    net = imp_all - exp_all
    imp = np.where(np.isin(np.arange(f.n), list(split)), imp_all, np.clip(net, 0.0, None))
    exp = np.where(np.isin(np.arange(f.n), list(split)), exp_all, np.clip(-net, 0.0, None))
    pv_used = x[cols.pv_used]
    spec = {b.id: b for b in p.batteries}
    ev_power: dict[str, np.ndarray] = {}
    for eid, slots, pw, _short in cols.ev:
        power = ev_power.setdefault(eid, np.zeros(f.n))
        if slots.size:
            power[slots] += x[pw]
    load_level: dict[str, np.ndarray] = {}
    for lid, slots, on, _power_w in cols.loads:
        level = load_level.setdefault(lid, np.zeros(f.n))
        if slots.size:
            level[slots] = x[on]
    load_power = {lid: power_w for lid, _s, _on, power_w in cols.loads}

    def whole(t: int) -> _Slot:
        return _Slot(
            grid_import_w=float(imp[t]),
            grid_export_w=float(exp[t]),
            pv_used_w=float(pv_used[t]),
            battery_w={
                bid: float(x[ch[t]] - x[dis[t]]) for bid, (ch, dis, _s) in cols.battery.items()
            },
            soc_wh={bid: float(x[soc[t]]) for bid, (_c, _d, soc) in cols.battery.items()},
            ev_w={eid: float(v[t]) for eid, v in ev_power.items()},
            load_level={lid: float(v[t]) for lid, v in load_level.items()},
        )

    def part(name: tuple[str, str], k: int) -> float:
        idx = parts.get(name)
        return float(x[idx[k]]) if idx is not None and idx[k] >= 0 else 0.0

    def phases(t: int, k: int, th: float) -> tuple[_Slot, _Slot]:
        """The import phase's and the export phase's powers (a part over its share)."""
        w = whole(t)
        assert w.battery_w is not None and w.soc_wh is not None
        assert w.ev_w is not None and w.load_level is not None
        a, b = th, 1.0 - th
        first = _Slot(grid_import_w=float(imp_all[t]) / a, pv_used_w=part(("pv", ""), k) / a)
        second = _Slot(
            grid_export_w=float(exp_all[t]) / b,
            pv_used_w=(w.pv_used_w - part(("pv", ""), k)) / b,
        )
        first.battery_w, second.battery_w, first.soc_wh = {}, {}, {}
        second.soc_wh = dict(w.soc_wh)
        for bid, (ch, dis, soc) in cols.battery.items():
            ch_i, dis_i = part(("ch", bid), k), part(("dis", bid), k)
            first.battery_w[bid] = (ch_i - dis_i) / a
            second.battery_w[bid] = (float(x[ch[t]] - x[dis[t]]) - ch_i + dis_i) / b
            s = spec[bid]
            prev = float(x[soc[t - 1]]) if t > 0 else s.initial_soc_pct / 100.0 * s.capacity_wh
            first.soc_wh[bid] = prev + f.dt_h * (
                s.charge_efficiency * ch_i - dis_i / s.discharge_efficiency
            )
        first.ev_w = {eid: part(("ev", eid), k) / a for eid in w.ev_w}
        second.ev_w = {eid: (v - part(("ev", eid), k)) / b for eid, v in w.ev_w.items()}
        first.load_level = {lid: part(("load", lid), k) / a for lid in w.load_level}
        second.load_level = {
            lid: (v - part(("load", lid), k)) / b for lid, v in w.load_level.items()
        }
        return first, second

    def plan_slot(t: int, v: _Slot, start: datetime, duration_s: float) -> PlanSlot:
        assert v.battery_w is not None and v.soc_wh is not None
        assert v.ev_w is not None and v.load_level is not None
        targets = {bid: _clean(w) for bid, w in v.battery_w.items()}
        for eid, w in v.ev_w.items():
            targets[eid] = _clean(targets.get(eid, 0.0) + w)
        switches: dict[str, bool] = {}
        for lid, level in v.load_level.items():
            # Binary in a MILP plan; fractional only in the LP-relaxation fallback, where
            # the power keeps the balance exact and the switch is rounded.
            switches[lid] = bool(level > 0.5)
            targets[lid] = _clean(load_power[lid] * level)
        return PlanSlot(
            start=start,
            duration_s=duration_s,
            price_import_per_kwh=float(f.import_price[t]),
            price_export_per_kwh=float(f.export_price[t]),
            grid_import_w=_clean(v.grid_import_w),
            grid_export_w=_clean(v.grid_export_w),
            targets_w=targets,
            soc_pct={
                bid: round(wh / spec[bid].capacity_wh * 100.0, 3) for bid, wh in v.soc_wh.items()
            },
            switches=switches,
            pv_curtail_w=_clean(f.pv_w[t] - v.pv_used_w),
        )

    out: list[PlanSlot] = []
    for t in range(f.n):
        if t not in split:
            out.append(plan_slot(t, whole(t), p.slot_start(t), p.step_s))
            continue
        k, th, length = split[t]
        # Slot 0 of a mid-slot replan: both phases in what is left of it, import first.
        start = p.slot_start(t) + timedelta(seconds=p.step_s - length)
        first, second = phases(t, k, th)
        # Durations from the (microsecond) boundaries: the phases tile the slot exactly.
        mid = start + timedelta(seconds=th * length)
        end = p.slot_start(t + 1)
        out.append(plan_slot(t, first, start, (mid - start).total_seconds()))
        out.append(plan_slot(t, second, mid, (end - mid).total_seconds()))
    cost = float(np.sum((f.import_price * imp - f.export_price * exp) * f.dt_h / 1000.0))
    return Plan(
        created_at=created_at,
        slots=tuple(out),
        cost=round(cost, 6),
        status=status,
        notes=tuple(notes),
    )
