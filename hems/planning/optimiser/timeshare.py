"""Time-shared slots: where export pays more than import, a slot is split into an import
phase then an export phase instead of a binary choosing one of them.

GB half-hourly settlement bills each period's import and export registers separately, so a
slot whose first θ of its length imports and whose rest exports is billed import × price_i
− export × price_e exactly as the slot's convex hull of the two modes prices it (model.py,
add_grid_exclusivity): every power x of the slot is split into its import-phase part x_I
<= ub·θ and the rest x − x_I <= ub·(1 − θ), the phase powers being x_I/θ and (x − x_I)/(1 −
θ). With θ continuous that is the model of the two phases, once what holds per phase is
stated per phase (this module):

- the battery's SoC after the import phase within its bounds;
- where charging and discharging at once may pay (model.burn_slots), a charge/discharge
  binary per phase (the slot's own would forbid charging in one phase and discharging in
  the other, which is the point);
- the EV's minimum power per phase (two on/off binaries, each phase's "on" being θ·b);
- `battery_to_ev: false` per phase.

A phase shorter than `Problem.min_phase_s` is not followed well (the control loop runs every
1 s, a battery takes seconds to ramp): the optimiser (`_min_phase` in __init__.py) rounds
each such share to no phase or to at least the minimum (`short_phase_fixes`) and re-solves
with every integer column fixed (an LP), until no phase is short.
"""

from __future__ import annotations

import numpy as np

from hems.planning.optimiser import model
from hems.planning.optimiser.model import (
    Columns,
    FloatArray,
    IntArray,
    ModelArrays,
    Rounding,
    Share,
    SlotFrame,
)
from hems.planning.problem import Problem

PHASE_NOISE_S = 1e-3  # a phase shorter than a millisecond is solver noise: no phase


def shared_slots(
    p: Problem, f: SlotFrame, elapsed_s: float, whole: IntArray | None
) -> tuple[IntArray, FloatArray]:
    """The slots to time-share and each one's length [s] (slot 0: what is left of it).

    Where export pays more than import and both directions are physically possible, as for
    the exclusivity binary; not in slots of a flexibility event with a net floor (its
    aggregator may meter the floor within the period); not where two minimum phases do not
    fit (the binary stays)."""
    imp_ub, exp_ub = model.grid_bounds_w(f)
    length_s = np.full(f.n, p.step_s)
    length_s[0] = p.step_s - min(max(elapsed_s, 0.0), p.step_s)
    ok = (f.export_price > f.import_price) & (imp_ub > 0) & (exp_ub > 0)
    ok &= (f.export_floor_w <= 0) & ~np.isfinite(f.import_floor_w)
    ok &= length_s >= 2.0 * p.min_phase_s
    ok &= p.time_share
    if model.EV_SEMI_CONTINUOUS:  # a semi-continuous column bounds the slot, not a phase
        for e in p.evs:
            if e.min_power_w > 0:
                ok[model.slots_between(p, e.arrival, e.departure)] = False
    if whole is not None:
        ok[whole] = False
    slots = np.flatnonzero(ok).astype(np.int32)
    return slots, length_s[slots]


def add_time_share(
    m: ModelArrays,
    f: SlotFrame,
    p: Problem,
    cols: Columns,
    shared: IntArray,
    length_s: FloatArray,
) -> Share:
    """θ per shared slot, the hull rows, and the per-phase rows listed in the docstring."""
    imp, exp = cols.grid_import, cols.grid_export
    imp_ub, exp_ub = model.grid_bounds_w(f)
    nb = shared.size
    theta = m.cols(nb, 0.0, 1.0, 0.0)
    share = Share(slots=shared, theta=theta, length_s=length_s)
    loc = np.arange(nb)
    index = np.full(f.n, -1, dtype=np.int32)
    index[shared] = loc
    # All import in the import phase, all export in the export phase, each within its cap.
    m.rows(-np.inf, 0.0, nb, [(loc, imp[shared], 1.0), (loc, theta, -imp_ub[shared])])
    m.rows(-np.inf, exp_ub[shared], nb, [(loc, exp[shared], 1.0), (loc, theta, exp_ub[shared])])
    allslots = np.arange(f.n, dtype=np.int32)
    nan = np.full(f.n, np.nan)
    # (kind, id), slots, columns, upper bounds (NaN: the column's), power per unit
    flows: list[tuple[tuple[str, str], IntArray, IntArray, FloatArray, float]] = [
        (("pv", ""), allslots, cols.pv_used, f.pv_w, -1.0)
    ]
    for bid, (ch, dis, _soc) in cols.battery.items():
        flows.append((("ch", bid), allslots, ch, nan, 1.0))
        flows.append((("dis", bid), allslots, dis, nan, -1.0))
    for eid, slots, pw, _short in cols.ev:
        flows.append((("ev", eid), slots, pw, np.full(slots.size, np.nan), 1.0))
    for lid, slots, on, power_w in cols.loads:
        flows.append((("load", lid), slots, on, np.ones(slots.size), power_w))
    _lb, ub_all, _c, _i = m.column_arrays()
    # The import phase's balance: import = θ·base load + Σ consumers_I − Σ generators_I
    # (the export phase's follows from the slot's own balance).
    balance: list[tuple[IntArray, IntArray, float | FloatArray]] = [
        (loc, imp[shared], 1.0),
        (loc, theta, -f.load_w[shared]),
    ]
    for name, slots, col, ub, unit in flows:
        inside = index[slots] >= 0
        if not inside.any():
            continue
        r, c = index[slots[inside]], col[inside]
        u = np.where(np.isnan(ub[inside]), ub_all[c], ub[inside])
        k = int(inside.sum())
        part = m.cols(k, 0.0, u)
        kl = np.arange(k)
        m.rows(-np.inf, 0.0, k, [(kl, part, 1.0), (kl, theta[r], -u)])
        m.rows(-np.inf, u, k, [(kl, c, 1.0), (kl, part, -1.0), (kl, theta[r], u)])
        m.rows(0.0, np.inf, k, [(kl, c, 1.0), (kl, part, -1.0)])
        balance.append((r, part, -unit))
        share.parts[name] = (r, part, c)
    m.rows(0.0, 0.0, nb, balance)
    _mid_soc(m, f, p, cols, share)
    _burn_per_phase(m, f, p, share)
    _ev_min_per_phase(m, p, cols, share)
    if not p.battery_to_ev:
        _battery_not_to_ev_per_phase(m, f, cols, share)
    return share


def soc_bounds_wh(b: model.BatterySpec) -> tuple[float, float, float]:
    """(initial, floor, ceiling) as model.add_battery has them."""
    soc0 = b.initial_soc_pct / 100.0 * b.capacity_wh
    lo = max(b.min_soc_pct, b.reserve_pct) / 100.0 * b.capacity_wh
    hi = b.max_soc_pct / 100.0 * b.capacity_wh
    return soc0, min(lo, soc0), max(hi, soc0)


def _mid_soc(m: ModelArrays, f: SlotFrame, p: Problem, cols: Columns, share: Share) -> None:
    """The SoC after the import phase (it runs first) within the battery's bounds."""
    shared = share.slots
    nb = shared.size
    loc = np.arange(nb)
    for b in p.batteries:
        soc = cols.battery[b.id][2]
        rc, pc, _ = share.parts[("ch", b.id)]
        rd, pd, _ = share.parts[("dis", b.id)]
        soc0, lo, hi = soc_bounds_wh(b)
        prev = shared - 1
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


def _burn_per_phase(m: ModelArrays, f: SlotFrame, p: Problem, share: Share) -> None:
    """Where charging and discharging at once may pay: one binary per phase."""
    burn = np.intersect1d(model.burn_slots(f), share.slots)
    if not burn.size:
        return
    sel = np.searchsorted(share.slots, burn)  # local indices of the shared burn slots
    k = sel.size
    kl = np.arange(k)
    for b in p.batteries:
        if b.max_charge_w <= 0 or b.max_discharge_w <= 0:
            continue
        rc, pc, cc = share.parts[("ch", b.id)]
        rd, pd, cd = share.parts[("dis", b.id)]
        ic, id_ = np.searchsorted(rc, sel), np.searchsorted(rd, sel)
        cmax, dmax = b.max_charge_w, b.max_discharge_w
        on_i = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        on_e = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        m.rounding.append(Rounding("prefer", on_i, a=pc[ic], b=pd[id_]))
        m.rounding.append(
            Rounding("prefer", on_e, a=cc[ic], b=cd[id_], a_minus=pc[ic], b_minus=pd[id_])
        )
        m.rows(-np.inf, 0.0, k, [(kl, pc[ic], 1.0), (kl, on_i, -cmax)])
        m.rows(-np.inf, dmax, k, [(kl, pd[id_], 1.0), (kl, on_i, dmax)])
        m.rows(-np.inf, 0.0, k, [(kl, cc[ic], 1.0), (kl, pc[ic], -1.0), (kl, on_e, -cmax)])
        m.rows(-np.inf, dmax, k, [(kl, cd[id_], 1.0), (kl, pd[id_], -1.0), (kl, on_e, dmax)])


def _ev_min_per_phase(m: ModelArrays, p: Problem, cols: Columns, share: Share) -> None:
    """Per phase: EV power 0 or within [min, max]. A phase's "on" w = θ·b (b binary) as
    exact linear rows: w <= b, w <= θ, w >= θ − 1 + b; then min·w <= x_I <= max·w (the
    export phase the same with 1 − θ and x − x_I)."""
    for e in p.evs:
        if e.min_power_w <= 0 or ("ev", e.id) not in share.parts:
            continue
        r, pi, c = share.parts[("ev", e.id)]
        k = r.size
        kl = np.arange(k)
        th = share.theta[r]
        b_i = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        b_e = m.cols(k, 0.0, 1.0, 0.0, integer=True)
        w_i = m.cols(k, 0.0, 1.0, 0.0)
        w_e = m.cols(k, 0.0, 1.0, 0.0)
        m.rounding.append(Rounding("on_if", b_i, a=pi))
        m.rounding.append(Rounding("on_if", b_e, a=c, a_minus=pi))
        lo, hi = e.min_power_w, e.max_power_w
        m.rows(-np.inf, 0.0, k, [(kl, w_i, 1.0), (kl, b_i, -1.0)])
        m.rows(-np.inf, 0.0, k, [(kl, w_i, 1.0), (kl, th, -1.0)])
        m.rows(-1.0, np.inf, k, [(kl, w_i, 1.0), (kl, th, -1.0), (kl, b_i, -1.0)])
        m.rows(0.0, np.inf, k, [(kl, pi, 1.0), (kl, w_i, -lo)])
        m.rows(-np.inf, 0.0, k, [(kl, pi, 1.0), (kl, w_i, -hi)])
        m.rows(-np.inf, 0.0, k, [(kl, w_e, 1.0), (kl, b_e, -1.0)])
        m.rows(-np.inf, 1.0, k, [(kl, w_e, 1.0), (kl, th, 1.0)])
        m.rows(0.0, np.inf, k, [(kl, w_e, 1.0), (kl, th, 1.0), (kl, b_e, -1.0)])
        m.rows(0.0, np.inf, k, [(kl, c, 1.0), (kl, pi, -1.0), (kl, w_e, -lo)])
        m.rows(-np.inf, 0.0, k, [(kl, c, 1.0), (kl, pi, -1.0), (kl, w_e, -hi)])


def _battery_not_to_ev_per_phase(m: ModelArrays, f: SlotFrame, cols: Columns, share: Share) -> None:
    """model.add_battery_not_to_ev per phase: Σ discharge − deferrable loads <= base load."""
    if not cols.battery or not cols.ev:
        return
    ev_slots = np.unique(np.concatenate([s for _id, s, _pw, _sh in cols.ev]))
    sel = np.flatnonzero(np.isin(share.slots, ev_slots)).astype(np.int32)
    if not sel.size:
        return
    k = sel.size
    index = np.full(share.slots.size, -1, dtype=np.int32)
    index[sel] = np.arange(k, dtype=np.int32)
    th = share.theta[sel]
    load = f.load_w[share.slots[sel]]
    kl = np.arange(k)
    imp_terms: list[tuple[IntArray, IntArray, float | FloatArray]] = [(kl, th, -load)]
    exp_terms: list[tuple[IntArray, IntArray, float | FloatArray]] = [(kl, th, load)]
    for kind, unit in (("dis", 1.0), ("load", -1.0)):
        for (name, dev), (r, part, whole) in share.parts.items():
            if name != kind:
                continue
            inside = index[r] >= 0
            if not inside.any():
                continue
            w = unit * (1.0 if kind == "dis" else _load_power(cols, dev))
            rr = index[r[inside]]
            imp_terms.append((rr, part[inside], w))
            exp_terms += [(rr, whole[inside], w), (rr, part[inside], -w)]
    m.rows(-np.inf, 0.0, k, imp_terms)
    m.rows(-np.inf, load, k, exp_terms)


def _load_power(cols: Columns, lid: str) -> float:
    return next(power_w for i, _s, _on, power_w in cols.loads if i == lid)


# -- after the solve ---------------------------------------------------------------------


def short_phase_fixes(
    share: Share, x: np.ndarray, min_phase_s: float
) -> dict[int, tuple[float, float]]:
    """θ column → its new bounds for each shared slot with a phase shorter than
    `min_phase_s`: under half of it, none (θ fixed at 0 or 1); from half of it, at least
    the minimum (m <= θ <= 1 − m, m = min_phase_s / length), whichever is nearer."""
    return {col: options[0] for col, options in short_phase_options(share, x, min_phase_s).items()}


def short_phase_options(
    share: Share, x: np.ndarray, min_phase_s: float
) -> dict[int, tuple[tuple[float, float], tuple[float, float]]]:
    """`short_phase_fixes`' bounds first, then the other choice (when the nearer one has
    no plan: a slot that needs some import cannot drop its import phase)."""
    th = x[share.theta]
    out: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}
    for k in range(th.size):
        length = float(share.length_s[k])
        imp_s, exp_s = th[k] * length, (1.0 - th[k]) * length
        m = min_phase_s / length
        if PHASE_NOISE_S < min(imp_s, exp_s) < min_phase_s:
            col = int(share.theta[k])
            inner = (m, 1.0 - m)
            end = (0.0, 0.0) if imp_s < exp_s else (1.0, 1.0)
            out[col] = (inner, end) if min(imp_s, exp_s) >= min_phase_s / 2 else (end, inner)
    return out


def add_min_phase_rows(m: ModelArrays, share: Share, min_phase_s: float) -> IntArray:
    """The minimum phase exactly: θ = 0, θ = 1 or m <= θ <= 1 − m (m = min_phase_s /
    length), with binaries a (θ > 0) and c (θ < 1): θ <= a, θ >= 1 − c, θ >= m·(a + c − 1),
    θ <= 1 − m·(a + c − 1). Two binaries per shared slot: used only to finish a plan whose
    rounded shares are not within the gap. Returns the columns [a..., c...]."""
    k = share.slots.size
    kl = np.arange(k)
    a = m.cols(k, 0.0, 1.0, 0.0, integer=True)
    c = m.cols(k, 0.0, 1.0, 0.0, integer=True)
    mm = min_phase_s / share.length_s
    th = share.theta
    m.rows(-np.inf, 0.0, k, [(kl, th, 1.0), (kl, a, -1.0)])
    m.rows(1.0, np.inf, k, [(kl, th, 1.0), (kl, c, 1.0)])
    m.rows(-np.inf, mm, k, [(kl, th, -1.0), (kl, a, mm), (kl, c, mm)])
    m.rows(-np.inf, 1.0 + mm, k, [(kl, th, 1.0), (kl, a, mm), (kl, c, mm)])
    return np.concatenate([a, c])


def min_phase_start(share: Share, x: np.ndarray) -> np.ndarray:
    """`add_min_phase_rows`' binaries for a plan without short phases."""
    th = x[share.theta] * share.length_s
    return np.concatenate(
        [(th > PHASE_NOISE_S).astype(float), (share.length_s - th > PHASE_NOISE_S).astype(float)]
    )


__all__ = [
    "add_min_phase_rows",
    "add_time_share",
    "shared_slots",
    "short_phase_fixes",
    "short_phase_options",
]
