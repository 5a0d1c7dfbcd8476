"""Explained infeasibility: simple bound checks run BEFORE the solver.

Each check names the input at fault. Hard problems raise `Infeasible(field, reason)`; soft
ones (an EV target that cannot be met) return a note that goes on the plan.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from hems.errors import Infeasible
from hems.planning.optimiser.model import (
    ev_target_wh,
    load_run_slots,
    slot_frame,
    slots_between,
)
from hems.planning.problem import Problem


def _kwh(wh: float) -> str:
    return f"{wh / 1000:.1f} kWh"


def _kw(w: float) -> str:
    return f"{w / 1000:.1f} kW"


def _hhmm(p: Problem, t: datetime) -> str:
    try:
        zone = ZoneInfo(p.timezone)
    except (KeyError, ValueError):  # unknown zone: show UTC rather than fail a plan
        zone = ZoneInfo("UTC")
    return t.astimezone(zone).strftime("%H:%M")


def check(p: Problem) -> list[str]:
    """Return warning notes; raise `Infeasible` naming the input when no plan can exist."""
    notes: list[str] = []
    f = slot_frame(p)
    dt_h = f.dt_h

    for i, b in enumerate(p.batteries):
        floor = max(b.min_soc_pct, b.reserve_pct)
        if b.initial_soc_pct < floor:
            notes.append(
                f"batteries[{i}].initial_soc_pct: {b.initial_soc_pct:.0f}% is below the floor "
                f"{floor:.0f}%; the floor is relaxed to the current SoC"
            )
        if b.reserve_pct > b.max_soc_pct:
            raise Infeasible(
                f"batteries[{i}].reserve_pct",
                f"reserve {b.reserve_pct:.0f}% is above max_soc_pct {b.max_soc_pct:.0f}%",
            )

    for i, e in enumerate(p.evs):
        if e.departure <= e.arrival:
            raise Infeasible(
                f"evs[{i}].departure",
                f"departure {e.departure.isoformat()} is not after arrival {e.arrival.isoformat()}",
            )
        if e.battery_capacity_wh is not None and e.energy_wh > e.battery_capacity_wh:
            notes.append(
                f"evs[{i}].energy_wh: {_kwh(e.energy_wh)} is more than the car's battery "
                f"({_kwh(e.battery_capacity_wh)}); aiming for {_kwh(e.battery_capacity_wh)}"
            )
        slots = slots_between(p, e.arrival, e.departure)
        hours = slots.size * dt_h
        # The fuse also limits the car: base load minus PV comes first.
        room_w = np.clip(f.import_cap_w[slots] + f.pv_w[slots] - f.load_w[slots], 0, None)
        room_w += sum(b.max_discharge_w for b in p.batteries)
        per_slot_w = np.minimum(room_w, e.max_power_w)
        possible_wh = float(per_slot_w.sum() * dt_h)
        target = ev_target_wh(e)
        if target > possible_wh + 1e-6:
            if slots.size and np.all(per_slot_w >= e.max_power_w - 1e-6):
                how = f"{_kw(e.max_power_w)} × {hours:g} h"
            else:
                how = f"the site's import limit over {hours:g} h"
            notes.append(
                f"evs[{i}].energy_wh: needs {_kwh(target)} by {_hhmm(p, e.departure)} but at "
                f"most {how} = {_kwh(possible_wh)} is possible"
            )

    for i, d in enumerate(p.loads):
        slots = slots_between(p, d.window_start, d.window_end)
        need = load_run_slots(d, p.step_min)
        if need > slots.size:
            raise Infeasible(
                f"loads[{i}].run_time_min",
                f"needs {d.run_time_min:g} min but the window {_hhmm(p, d.window_start)}–"
                f"{_hhmm(p, d.window_end)} inside the horizon holds "
                f"{slots.size * p.step_min} min",
            )
        if d.min_on_min > d.run_time_min:
            raise Infeasible(
                f"loads[{i}].min_on_min",
                f"minimum on time {d.min_on_min:g} min exceeds run time {d.run_time_min:g} min",
            )

    # Base load must be servable within the import cap (PV and full battery output help).
    discharge_w = sum(b.max_discharge_w for b in p.batteries)
    short_w = f.load_w - f.pv_w - discharge_w - f.import_cap_w
    bad = np.flatnonzero(short_w > 1e-6)
    if bad.size:
        t = int(bad[0])
        field = _cap_field(p, t, "import_cap_w")
        raise Infeasible(
            field,
            f"at {_hhmm(p, p.slot_start(t))} the base load {f.load_w[t]:.0f} W exceeds "
            f"import cap {f.import_cap_w[t]:.0f} W + PV {f.pv_w[t]:.0f} W + battery "
            f"{discharge_w:.0f} W",
        )
    # An export floor needs that much net export to be physically possible.
    supply_w = f.pv_w + discharge_w - f.load_w
    bad = np.flatnonzero((f.export_floor_w > 0) & (f.export_floor_w > supply_w + 1e-6))
    bad2 = np.flatnonzero(f.export_floor_w > f.export_cap_w + 1e-6)
    for idx, why in ((bad2, "export cap"), (bad, "PV + battery − base load")):
        if idx.size:
            t = int(idx[0])
            limit = f.export_cap_w[t] if why == "export cap" else supply_w[t]
            raise Infeasible(
                _cap_field(p, t, "export_floor_w"),
                f"at {_hhmm(p, p.slot_start(t))} needs {f.export_floor_w[t]:.0f} W net export "
                f"but {why} allows at most {max(limit, 0):.0f} W",
            )
    return notes


def _cap_field(p: Problem, t: int, kind: str) -> str:
    """Name the flex event that sets this slot's limit, or the problem's own series."""
    for k, ev in enumerate(p.events):
        if t in slots_between(p, ev.start, ev.end) and getattr(ev, kind, None) is not None:
            return f"events[{k}].{kind}"
    return f"{kind}[{t}]"
