"""Probe: the planner's whole-slot model with import/export time-shared within a slot (a
measurement for issue 15 item 2; the planner now time-shares by default, in
hems/planning/optimiser/timeshare.py, with a minimum phase length and per-phase EV and
battery_to_ev rows this probe does not have; the probe runs on `time_share: false`).

    nice -n 10 .venv/bin/python bench/planner_timeshare_probe.py --family "agile/flat15" --n 8

In the planner (model.add_grid_exclusivity) a binary z per slot picks import or export mode
where export pays more than import, formulated as the slot's convex hull: every power x is
split into its import-mode part x_I <= ub·z and the rest. Read with z = theta in [0, 1] as
"import mode for theta of the slot, export mode for the rest", that hull is a model of a
slot executed in two phases (phase power x_I/theta and (x − x_I)/(1 − theta)); this probe
solves it with z continuous, plus what the phases need to be exact and the planner's model
does not have:

- `--mid-soc`: the SoC after the import phase (run first) within the battery's bounds;
- `--phase-burn`: in the slots with charge/discharge binaries (model.add_battery: up to the
  last negative price) one binary per phase instead of one per slot, so the battery may
  charge in one phase and discharge in the other (the per-slot binary forbids exactly that);
  the per-slot binary is then implied and made continuous there.

Per instance it prints the whole-slot MIP (`--mip`: the planner's model at the daemon's
defaults), the time-shared solve (same solver path, `solve_arrays`), the number of
time-shared slots, the shortest phase, and checks of every phase against the hard limits
that the model states per phase (import cap, export cap, battery power, SoC at the phase
boundary) and those it does not (EV minimum power per phase, charging and discharging at
once within a phase, `battery_to_ev` false per phase). Not done here: splitting the plan
into phases (extract.py), the control loop, a minimum phase length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from planner_instances import FAMILIES, family_instance  # noqa: E402

import hems.planning.optimiser.model as model  # noqa: E402
from hems.planning.optimiser.solve import solve_arrays  # noqa: E402
from hems.planning.problem import Problem  # noqa: E402

TOL_W = 1.0  # [W], [Wh]: solver noise


@dataclass
class Hull:
    """What the probe's copy of add_grid_exclusivity built: the shared slots, z, and per
    flow (name → (local slot index, import-mode part column, whole column))."""

    both: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    z: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    parts: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )


def soc_bounds_wh(b: model.BatterySpec) -> tuple[float, float, float]:
    """(initial, floor, ceiling) as model.add_battery has them."""
    soc0 = b.initial_soc_pct / 100.0 * b.capacity_wh
    lo = max(b.min_soc_pct, b.reserve_pct) / 100.0 * b.capacity_wh
    hi = b.max_soc_pct / 100.0 * b.capacity_wh
    return soc0, min(lo, soc0), max(hi, soc0)


def hull_exclusivity(
    hull: Hull, p: Problem, mid_soc: bool
) -> Callable[[model.ModelArrays, model.SlotFrame, model.Columns], None]:
    """model.add_grid_exclusivity, recording its columns; with `mid_soc` the SoC rows."""

    def add(
        m: model.ModelArrays,
        f: model.SlotFrame,
        cols: model.Columns,
        shared: np.ndarray | None = None,
    ) -> None:
        imp, exp = cols.grid_import, cols.grid_export
        imp_ub, exp_ub = model.grid_bounds_w(f)
        both = np.flatnonzero((f.export_price > f.import_price) & (imp_ub > 0) & (exp_ub > 0))
        hull.both = both
        if not both.size:
            return
        nb = both.size
        z = m.cols(nb, 0.0, 1.0, 0.0, integer=True)
        hull.z = z
        m.rounding.append(model.Rounding("prefer", z, a=imp[both], b=exp[both]))
        loc = np.arange(nb)
        index = np.full(f.n, -1, dtype=np.int32)
        index[both] = loc
        m.rows(-np.inf, 0.0, nb, [(loc, imp[both], 1.0), (loc, z, -imp_ub[both])])
        m.rows(-np.inf, exp_ub[both], nb, [(loc, exp[both], 1.0), (loc, z, exp_ub[both])])
        allslots = np.arange(f.n, dtype=np.int32)
        nan = np.full(f.n, np.nan)
        flows = [(("pv", ""), allslots, cols.pv_used, f.pv_w, -1.0)]
        for bid, (ch, dis, _soc) in cols.battery.items():
            flows.append((("ch", bid), allslots, ch, nan, 1.0))
            flows.append((("dis", bid), allslots, dis, nan, -1.0))
        for eid, slots, pw, _short in cols.ev:
            flows.append((("ev", eid), slots, pw, np.full(slots.size, np.nan), 1.0))
        for lid, slots, on, power_w in cols.loads:
            flows.append((("load", lid), slots, on, np.ones(slots.size), power_w))
        _lb, ub_all, _c, _i = m.column_arrays()
        balance = [(loc, imp[both], 1.0), (loc, z, -f.load_w[both])]
        for name, slots, col, ub, unit in flows:
            inside = index[slots] >= 0
            if not inside.any():
                continue
            r, c = index[slots[inside]], col[inside]
            u = np.where(np.isnan(ub[inside]), ub_all[c], ub[inside])
            k = int(inside.sum())
            part = m.cols(k, 0.0, u)
            kl = np.arange(k)
            m.rows(-np.inf, 0.0, k, [(kl, part, 1.0), (kl, z[r], -u)])
            m.rows(-np.inf, u, k, [(kl, c, 1.0), (kl, part, -1.0), (kl, z[r], u)])
            m.rows(0.0, np.inf, k, [(kl, c, 1.0), (kl, part, -1.0)])
            balance.append((r, part, -unit))
            hull.parts[name] = (r, part, c)
        m.rows(0.0, 0.0, nb, balance)
        if not mid_soc:
            return
        for b in p.batteries:
            _ch, _dis, soc = cols.battery[b.id]
            rc, pc, _ = hull.parts[("ch", b.id)]
            rd, pd, _ = hull.parts[("dis", b.id)]
            soc0, lo, hi = soc_bounds_wh(b)
            prev = both - 1
            has = prev >= 0
            lo_rhs, hi_rhs = np.full(nb, lo), np.full(nb, hi)
            lo_rhs[~has] -= soc0
            hi_rhs[~has] -= soc0
            dt = f.dt_h
            m.rows(
                lo_rhs,
                hi_rhs,
                nb,
                [
                    (rc, pc, dt * b.charge_efficiency),
                    (rd, pd, -dt / b.discharge_efficiency),
                    (loc[has], soc[prev[has]], 1.0),
                ],
            )

    return add


@contextmanager
def patched(fn: object) -> Iterator[None]:
    saved = model.add_grid_exclusivity
    model.add_grid_exclusivity = fn  # type: ignore[assignment]
    try:
        yield
    finally:
        model.add_grid_exclusivity = saved


def phase_burn(m: model.ModelArrays, p: Problem, cols: model.Columns, hull: Hull) -> np.ndarray:
    """Per-phase charge/discharge binaries in the shared burn slots; returns integrality."""
    ints = np.concatenate(m.integer)
    extra = 0
    for r in list(m.rounding):
        if r.kind != "prefer" or r.a is None:
            continue
        owner = [b for b in p.batteries if np.isin(r.a, cols.battery[b.id][0]).all()]
        if not owner or not hull.both.size:
            continue
        b = owner[0]
        ch = cols.battery[b.id][0]
        bslots = np.searchsorted(ch, r.a)
        where = np.minimum(np.searchsorted(hull.both, bslots), hull.both.size - 1)
        shared = hull.both[where] == bslots
        ints[r.cols[shared]] = model.CONTINUOUS  # implied by the per-phase rows below
        rc, pc, cc = hull.parts[("ch", b.id)]
        rd, pd, cd = hull.parts[("dis", b.id)]
        sel = where[shared]
        k = sel.size
        on_i = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        on_e = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        ic, id_ = np.searchsorted(rc, sel), np.searchsorted(rd, sel)
        kl = np.arange(k)
        cmax, dmax = b.max_charge_w, b.max_discharge_w
        m.rows(-np.inf, 0.0, k, [(kl, pc[ic], 1.0), (kl, on_i, -cmax)])
        m.rows(-np.inf, dmax, k, [(kl, pd[id_], 1.0), (kl, on_i, dmax)])
        m.rows(-np.inf, 0.0, k, [(kl, cc[ic], 1.0), (kl, pc[ic], -1.0), (kl, on_e, -cmax)])
        m.rows(-np.inf, dmax, k, [(kl, cd[id_], 1.0), (kl, pd[id_], -1.0), (kl, on_e, dmax)])
        extra += 2 * k
    return np.concatenate([ints, np.full(extra, model.INTEGER, np.int32)])


def phase_checks(
    p: Problem, f: model.SlotFrame, cols: model.Columns, hull: Hull, x: np.ndarray
) -> dict[str, float]:
    """Each shared slot's two phases against the hard limits; counts of violating slots."""
    theta = x[hull.z]
    shared = (theta > 1e-6) & (theta < 1 - 1e-6)
    dur_s = np.minimum(theta, 1 - theta)[shared] * p.step_s
    out: dict[str, float] = {
        "shared": int(shared.sum()),
        "min_phase_s": float(dur_s.min()) if dur_s.size else float("nan"),
        "phases_under_60s": int((dur_s < 60).sum()),
    }

    def phases(name: tuple[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, part, c = hull.parts[name]
        th = theta[r]
        with np.errstate(divide="ignore", invalid="ignore"):
            q_i = np.where(th > 1e-9, x[part] / th, 0.0)
            q_e = np.where(th < 1 - 1e-9, (x[c] - x[part]) / (1 - th), 0.0)
        return r, q_i, q_e

    both = hull.both
    with np.errstate(divide="ignore", invalid="ignore"):
        imp_i = np.where(theta > 1e-9, x[cols.grid_import[both]] / theta, 0.0)
        exp_e = np.where(theta < 1 - 1e-9, x[cols.grid_export[both]] / (1 - theta), 0.0)
    out["over_import_cap"] = int(np.sum(imp_i > f.import_cap_w[both] + TOL_W))
    out["over_export_cap"] = int(np.sum(exp_e > f.export_cap_w[both] + TOL_W))
    bad_power = bad_mid = burn = 0
    for b in p.batteries:
        _r, ch_i, ch_e = phases(("ch", b.id))
        _r, dis_i, dis_e = phases(("dis", b.id))
        bad_power += int(np.sum(np.maximum(ch_i, ch_e) > b.max_charge_w + TOL_W))
        bad_power += int(np.sum(np.maximum(dis_i, dis_e) > b.max_discharge_w + TOL_W))
        burn += int(np.sum((np.minimum(ch_i, dis_i) > TOL_W) | (np.minimum(ch_e, dis_e) > TOL_W)))
        soc0, lo, hi = soc_bounds_wh(b)
        soc = cols.battery[b.id][2]
        prev = np.where(both > 0, x[soc[np.maximum(both - 1, 0)]], soc0)
        dt_i = theta * f.dt_h
        mid = prev + dt_i * (b.charge_efficiency * ch_i - dis_i / b.discharge_efficiency)
        bad_mid += int(np.sum(shared & ((mid > hi + TOL_W) | (mid < lo - TOL_W))))
    out["over_battery_power"] = bad_power
    out["soc_out_of_bounds_after_import_phase"] = bad_mid
    out["charge_and_discharge_in_one_phase"] = burn
    ev_low = 0
    for e in p.evs:
        if ("ev", e.id) not in hull.parts:
            continue
        _r, q_i, q_e = phases(("ev", e.id))
        floor_w = e.min_power_w - TOL_W
        low = ((q_i > TOL_W) & (q_i < floor_w)) | ((q_e > TOL_W) & (q_e < floor_w))
        ev_low += int(np.sum(low))
    out["ev_below_min_power_in_a_phase"] = ev_low
    if not p.battery_to_ev and cols.ev:
        # model.add_battery_not_to_ev, per phase: discharge − deferrable loads <= base load.
        ev_local = np.zeros(both.size, bool)
        for _id, slots, _pw, _short in cols.ev:
            ev_local |= np.isin(both, slots)
        net_i, net_e = np.zeros(both.size), np.zeros(both.size)
        for b in p.batteries:
            r, q_i, q_e = phases(("dis", b.id))
            net_i[r] += q_i
            net_e[r] += q_e
        for lid, _slots, _on, power_w in cols.loads:
            if ("load", lid) in hull.parts:
                r, q_i, q_e = phases(("load", lid))
                net_i[r] -= power_w * q_i
                net_e[r] -= power_w * q_e
        over = (np.maximum(net_i, net_e) > f.load_w[both] + TOL_W) & ev_local & shared
        out["battery_into_ev_in_a_phase"] = int(over.sum())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="agile/flat15", choices=list(FAMILIES))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=5.0, help="[s]")
    ap.add_argument("--gap", type=float, default=0.001)
    ap.add_argument("--no-mid-soc", action="store_true")
    ap.add_argument("--no-phase-burn", action="store_true")
    ap.add_argument("--mip", action="store_true", help="also the planner's whole-slot MIP")
    a = ap.parse_args()
    cpu_ms: list[float] = []
    mip_ms: list[float] = []
    for seed in range(1, a.n + 1):
        p = family_instance(seed, a.family).model_copy(update={"time_share": False})
        line = f"{a.family} seed {seed}:"
        if a.mip:
            m0, _c, _f = model.build(p)
            c0 = time.process_time()
            r0 = solve_arrays(m0, a.time_limit, a.gap)
            mip_ms.append((time.process_time() - c0) * 1000)
            line += f" MIP {r0.status} {r0.objective:.5f} ({mip_ms[-1]:.0f} ms CPU);"
        hull = Hull()
        with patched(hull_exclusivity(hull, p, mid_soc=not a.no_mid_soc)):
            m, cols, f = model.build(p)
        ints = np.concatenate(m.integer)
        if hull.z.size:
            ints[hull.z] = model.CONTINUOUS  # time-shared: theta, not a mode
            m.integer = [ints]
            if not a.no_phase_burn:
                m.integer = [phase_burn(m, p, cols, hull)]
        c0, w0 = time.process_time(), time.perf_counter()
        r = solve_arrays(m, a.time_limit, a.gap)
        cpu_ms.append((time.process_time() - c0) * 1000)
        wall = (time.perf_counter() - w0) * 1000
        line += (
            f" time-shared {r.status} {r.objective:.5f} gap {r.mip_gap:.3%} "
            f"({cpu_ms[-1]:.1f} ms CPU, {wall:.1f} ms wall)"
        )
        if hull.z.size and r.x.size:
            checks = phase_checks(p, f, cols, hull, r.x)
            line += " " + " ".join(f"{k}={v:g}" for k, v in checks.items())
        print(line, flush=True)
    print(f"time-shared CPU median {statistics.median(cpu_ms):.1f} ms, max {max(cpu_ms):.1f} ms")
    if mip_ms:
        print(f"whole-slot MIP CPU median {statistics.median(mip_ms):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
