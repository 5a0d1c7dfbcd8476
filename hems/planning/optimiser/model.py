"""Model building: pure functions that fill numpy arrays for HiGHS' low-level API.

Each device adds its columns and rows to a `ModelArrays` and returns the column indices the
site balance and the plan extraction need. Nothing here calls the solver.

Units inside the model: power [W] per slot, energy [Wh], costs [currency]. A power p held for
a slot of dt_h hours costs price_per_kwh × p × dt_h / 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import numpy as np

from hems.planning.problem import BatterySpec, DeferrableLoad, EvSession, Problem, SocTarget

FloatArray = np.ndarray
IntArray = np.ndarray

# HiGHS integrality codes (HighsVarType): continuous, integer, semi-continuous.
CONTINUOUS, INTEGER, SEMI_CONTINUOUS = 0, 1, 2

# EV minimum power as HiGHS semi-continuous columns instead of on/off binaries. Off: HiGHS
# 1.16 reports "Solve error" when the LP wants a few mW of EV power (within its integrality
# tolerance, then rejected by its own semi-variable check), and it was no faster here.
EV_SEMI_CONTINUOUS = False


@dataclass(frozen=True, slots=True)
class Rounding:
    """A rounding rule for one group of integer columns, used by the LP-and-round primal
    heuristic. `prefer`: z = 1 where x[a] >= x[b] (an indicator allowing a, forbidding b);
    `on_if`: z = 1 where x[a] > 0 (an on/off switch of a semi-continuous power);
    `one_of`: the largest column is 1, the others 0; `blocks`: `need` of the columns are 1,
    in runs of at least `min_on`, placed where the LP's values are largest (or, second try,
    where the LP's marginal price of energy, the balance row's dual, is lowest)."""

    kind: Literal["prefer", "on_if", "one_of", "blocks"]
    cols: IntArray
    a: IntArray | None = None
    b: IntArray | None = None
    need: int = 0
    min_on: int = 1
    slots: IntArray | None = None  # blocks: the slot of each column
    power_w: float = 0.0  # blocks: the load's power
    rows: IntArray | None = None  # blocks: the balance row of each column (set by build)
    # prefer / on_if: columns subtracted from a and b (x[a] − x[a_minus]; timeshare.py's
    # export-phase parts, which are a whole column minus its import-phase part)
    a_minus: IntArray | None = None
    b_minus: IntArray | None = None


@dataclass(slots=True)
class ModelArrays:
    """Columns and rows accumulated as numpy chunks; `csr()` assembles the matrix."""

    lb: list[FloatArray] = field(default_factory=list)
    ub: list[FloatArray] = field(default_factory=list)
    cost: list[FloatArray] = field(default_factory=list)
    integer: list[np.ndarray] = field(default_factory=list)
    row_lo: list[FloatArray] = field(default_factory=list)
    row_hi: list[FloatArray] = field(default_factory=list)
    entry_row: list[IntArray] = field(default_factory=list)
    entry_col: list[IntArray] = field(default_factory=list)
    entry_val: list[FloatArray] = field(default_factory=list)
    n_cols: int = 0
    n_rows: int = 0
    offset: float = 0.0  # constant part of the objective
    # How to round each group of integer columns from an LP solution (see heuristic.py).
    rounding: list[Rounding] = field(default_factory=list)

    def cols(
        self,
        n: int,
        lb: float | FloatArray,
        ub: float | FloatArray,
        cost: float | FloatArray = 0.0,
        integer: bool = False,
        integrality: int | None = None,
    ) -> IntArray:
        idx = np.arange(self.n_cols, self.n_cols + n, dtype=np.int32)
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (n,)).copy())
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (n,)).copy())
        self.cost.append(np.broadcast_to(np.asarray(cost, dtype=float), (n,)).copy())
        kind = integrality if integrality is not None else (INTEGER if integer else CONTINUOUS)
        self.integer.append(np.full(n, kind, dtype=np.int32))
        self.n_cols += n
        return idx

    def rows(
        self,
        lo: float | FloatArray,
        hi: float | FloatArray,
        n: int,
        terms: list[tuple[IntArray, IntArray, float | FloatArray]],
    ) -> IntArray:
        """Add `n` rows lo <= Σ val·x[col] <= hi. Each term is (local row, col, val)."""
        first = self.n_rows
        self.row_lo.append(np.broadcast_to(np.asarray(lo, dtype=float), (n,)).copy())
        self.row_hi.append(np.broadcast_to(np.asarray(hi, dtype=float), (n,)).copy())
        for local, col, val in terms:
            local = np.asarray(local, dtype=np.int32)
            self.entry_row.append(local + first)
            self.entry_col.append(np.asarray(col, dtype=np.int32))
            self.entry_val.append(np.broadcast_to(np.asarray(val, dtype=float), local.shape))
        self.n_rows += n
        return np.arange(first, first + n, dtype=np.int32)

    def column_arrays(self) -> tuple[FloatArray, FloatArray, FloatArray, np.ndarray]:
        return (
            np.concatenate(self.lb) if self.lb else np.zeros(0),
            np.concatenate(self.ub) if self.ub else np.zeros(0),
            np.concatenate(self.cost) if self.cost else np.zeros(0),
            np.concatenate(self.integer) if self.integer else np.zeros(0, dtype=np.int32),
        )

    def csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        """Row-wise (start, index, value) with duplicates summed away by order only."""
        if not self.entry_row:
            return np.zeros(self.n_rows + 1, np.int32), np.zeros(0, np.int32), np.zeros(0)
        r = np.concatenate(self.entry_row)
        c = np.concatenate(self.entry_col)
        v = np.concatenate(self.entry_val)
        keep = v != 0.0
        r, c, v = r[keep], c[keep], v[keep]
        order = np.lexsort((c, r))
        r, c, v = r[order], c[order], v[order]
        counts = np.bincount(r, minlength=self.n_rows)
        start = np.zeros(self.n_rows + 1, dtype=np.int32)
        np.cumsum(counts, out=start[1:])
        return start, c.astype(np.int32), v.astype(float)


@dataclass(slots=True)
class Columns:
    """Column indices of everything the balance and the extraction need."""

    grid_import: IntArray
    grid_export: IntArray
    pv_used: IntArray
    # id → (charge, discharge, SoC) columns
    battery: dict[str, tuple[IntArray, IntArray, IntArray]] = field(default_factory=dict)
    # (charger id, slots, power columns, shortfall column)
    ev: list[tuple[str, IntArray, IntArray, int | None]] = field(default_factory=list)
    # (device id, slots, on/off columns, power_w)
    loads: list[tuple[str, IntArray, IntArray, float]] = field(default_factory=list)
    # turn-up events: slots with a soft net-import floor and their shortfall columns [W]
    floor_slots: IntArray = field(default_factory=lambda: np.zeros(0, np.int32))
    floor_short: IntArray = field(default_factory=lambda: np.zeros(0, np.int32))
    # battery id → [(target index or -1 for the end pin, slots, shortfall columns [Wh])]
    soc_short: dict[str, list[tuple[int, IntArray, IntArray]]] = field(default_factory=dict)
    # the time-shared slots (timeshare.py); None when there are none
    share: Share | None = None


@dataclass(slots=True)
class Share:
    """The slots split into an import phase then an export phase (timeshare.py): theta is
    the import phase's share of the slot's length `length_s` (slot 0 on a mid-slot replan:
    what is left of it). `parts`: per flow (kind, device id) → (local slot index, the
    import-phase part's column, the whole slot's column); kinds "pv", "ch", "dis", "ev",
    "load"."""

    slots: IntArray
    theta: IntArray
    length_s: FloatArray
    parts: dict[tuple[str, str], tuple[IntArray, IntArray, IntArray]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlotFrame:
    """Derived per-slot numbers shared by every builder."""

    dt_h: float
    n: int
    import_price: FloatArray
    export_price: FloatArray
    import_cap_w: FloatArray  # after flex events
    export_cap_w: FloatArray
    export_floor_w: FloatArray  # net export floor from flex events (0 = none)
    import_floor_w: FloatArray  # net import floor from turn-up events (-inf = none)
    import_floor_penalty: FloatArray  # [currency/kWh] below the floor; inf = hard
    pv_w: FloatArray
    load_w: FloatArray
    # Physical reach per slot: the most the site can consume (base load, every charger and
    # load that can run then, batteries charging) and generate (PV, batteries discharging).
    use_max_w: FloatArray
    gen_max_w: FloatArray
    charge_max_w: float  # all batteries together
    discharge_max_w: float
    ev_max_w: dict[str, float]


def slot_frame(p: Problem) -> SlotFrame:
    n = p.n_slots
    imp_cap = np.array(p.series("import_cap_w"), dtype=float)
    exp_cap = np.array(p.series("export_cap_w"), dtype=float)
    floor = np.zeros(n)
    up = np.full(n, -np.inf)
    up_penalty = np.zeros(n)
    for ev in p.events:
        idx = slots_between(p, ev.start, ev.end)
        if ev.import_cap_w is not None:
            imp_cap[idx] = np.minimum(imp_cap[idx], ev.import_cap_w)
        if ev.export_floor_w is not None:
            floor[idx] = np.maximum(floor[idx], ev.export_floor_w)
        if ev.import_floor_w is not None:
            # Overlapping turn-ups: the highest floor, the highest penalty (hard wins).
            up[idx] = np.maximum(up[idx], ev.import_floor_w)
            pen = ev.import_floor_penalty_per_kwh
            up_penalty[idx] = np.maximum(up_penalty[idx], np.inf if pen is None else pen)
    pv = np.array(p.series("pv_w"), dtype=float)
    load = np.array(p.series("load_w"), dtype=float)
    use_max = load + sum(b.max_charge_w for b in p.batteries)
    for e in p.evs:
        use_max[slots_between(p, e.arrival, e.departure)] += e.max_power_w
    for d in p.loads:
        use_max[slots_between(p, d.window_start, d.window_end)] += d.power_w
    gen_max = pv + sum(b.max_discharge_w for b in p.batteries)
    return SlotFrame(
        dt_h=p.step_min / 60.0,
        n=n,
        import_price=np.array(p.import_price_per_kwh, dtype=float),
        export_price=np.array(p.export_price_per_kwh, dtype=float),
        import_cap_w=imp_cap,
        export_cap_w=exp_cap,
        export_floor_w=floor,
        import_floor_w=up,
        import_floor_penalty=up_penalty,
        pv_w=pv,
        load_w=load,
        use_max_w=use_max,
        gen_max_w=gen_max,
        charge_max_w=float(sum(b.max_charge_w for b in p.batteries)),
        discharge_max_w=float(sum(b.max_discharge_w for b in p.batteries)),
        ev_max_w={e.id: e.max_power_w for e in p.evs},
    )


def slots_between(p: Problem, start: datetime, end: datetime) -> IntArray:
    """Slots lying fully inside [start, end); a start before slot 0 counts from slot 0."""
    step_s = p.step_s
    first = math.ceil((start - p.start).total_seconds() / step_s - 1e-9)
    last = math.floor((end - p.start).total_seconds() / step_s + 1e-9)  # exclusive
    first, last = max(first, 0), min(last, p.n_slots)
    return np.arange(first, max(first, last), dtype=np.int32)


# -- one builder per device ------------------------------------------------------------------


def grid_bounds_w(f: SlotFrame) -> tuple[FloatArray, FloatArray]:
    """The tightest import and export bounds per slot: the caps, and what the site can
    physically take or give. Import above the most it can consume, or export above what it
    can generate beyond its base load, happens only together with the other direction, which
    netting removes at no loss where export pays less than import, and the exclusivity
    binaries forbid elsewhere."""
    imp_ub = np.minimum(f.import_cap_w, f.use_max_w)
    exp_ub = np.minimum(f.export_cap_w, np.maximum(f.gen_max_w - f.load_w, 0.0))
    return imp_ub, exp_ub


def add_grid(m: ModelArrays, f: SlotFrame) -> tuple[IntArray, IntArray]:
    """Import and export columns (the exclusivity binaries come with `add_grid_exclusivity`,
    once the devices' columns exist)."""
    k = f.dt_h / 1000.0
    imp_ub, exp_ub = grid_bounds_w(f)
    imp = m.cols(f.n, 0.0, imp_ub, f.import_price * k)
    exp = m.cols(f.n, 0.0, exp_ub, -f.export_price * k)
    floor = np.flatnonzero(f.export_floor_w > 0)
    if floor.size:  # accepted flex event: net export at least the floor
        loc = np.arange(floor.size)
        m.rows(
            f.export_floor_w[floor],
            np.inf,
            floor.size,
            [(loc, exp[floor], 1.0), (loc, imp[floor], -1.0)],
        )
    return imp, exp


def add_import_floor(
    m: ModelArrays, f: SlotFrame, imp: IntArray, exp: IntArray
) -> tuple[IntArray, IntArray]:
    """Turn-up events: import − export + short >= floor, `short` priced at the event's
    penalty (no `short` where the floor is hard). Returns (soft slots, short columns).

    Soft because the home may not be able to absorb that much (nothing left to switch on, the
    battery full): the plan then takes as much as it can, and says so in its notes.
    """
    slots = np.flatnonzero(np.isfinite(f.import_floor_w)).astype(np.int32)
    if not slots.size:
        return slots, np.zeros(0, np.int32)
    soft = slots[np.isfinite(f.import_floor_penalty[slots])]
    short = m.cols(soft.size, 0.0, np.inf, f.import_floor_penalty[soft] * f.dt_h / 1000.0)
    loc = np.arange(slots.size)
    where = np.searchsorted(slots, soft)
    m.rows(
        f.import_floor_w[slots],
        np.inf,
        slots.size,
        [(loc, imp[slots], 1.0), (loc, exp[slots], -1.0), (where, short, 1.0)],
    )
    return soft, short


def add_pv(m: ModelArrays, f: SlotFrame, curtail_cost_per_kwh: float) -> IntArray:
    """PV actually used; the rest is curtailed at a tiny cost (constant part in offset)."""
    c = curtail_cost_per_kwh * f.dt_h / 1000.0
    m.offset += float(c * f.pv_w.sum())
    return m.cols(f.n, 0.0, f.pv_w, -c)


def battery_terminal_value(b: BatterySpec, f: SlotFrame) -> float:
    if b.end_soc_pct is not None:
        return 0.0  # a pinned end SoC replaces the value of what is left
    if b.terminal_value_per_kwh is not None:
        return b.terminal_value_per_kwh
    return max(0.0, float(np.median(f.import_price))) * b.discharge_efficiency


def burn_slots(f: SlotFrame) -> IntArray:
    """The slots where charging and discharging at once may pay (see add_battery)."""
    negative = np.flatnonzero((f.import_price < 0) | np.isfinite(f.import_floor_w))
    return np.arange(negative[-1] + 1, dtype=np.int32) if negative.size else negative


def add_battery(
    m: ModelArrays, f: SlotFrame, b: BatterySpec, shared: IntArray | None = None
) -> tuple[IntArray, IntArray, IntArray]:
    """Charge, discharge [W, AC side] and SoC at slot end [Wh].

    soc[t] = soc[t-1] + dt·(η_c·ch[t] − dis[t]/η_d). The floor is max(min_soc, reserve);
    when the battery starts below it, the floor is relaxed to the initial SoC (never
    infeasible for a state we are already in).
    """
    n, dt = f.n, f.dt_h
    soc0 = b.initial_soc_pct / 100.0 * b.capacity_wh
    lo = max(b.min_soc_pct, b.reserve_pct) / 100.0 * b.capacity_wh
    hi = b.max_soc_pct / 100.0 * b.capacity_wh
    lo, hi = min(lo, soc0), max(hi, soc0)
    # A negligible throughput cost keeps the solver from cycling at zero-price slots, where
    # charging and discharging at once would cost nothing and make the SoC meaningless.
    eps = 1e-5 * dt / 1000.0
    ch = m.cols(n, 0.0, b.max_charge_w, eps)
    dis = m.cols(n, 0.0, b.max_discharge_w, b.degradation_cost_per_kwh * dt / 1000.0 + eps)
    soc_cost = np.zeros(n)
    soc_cost[-1] = -battery_terminal_value(b, f) / 1000.0
    soc = m.cols(n, lo, hi, soc_cost)
    loc = np.arange(n)
    rhs = np.zeros(n)
    rhs[0] = soc0
    m.rows(
        rhs,
        rhs,
        n,
        [
            (loc, soc, 1.0),
            (loc[1:], soc[:-1], -1.0),
            (loc, ch, -dt * b.charge_efficiency),
            (loc, dis, dt / b.discharge_efficiency),
        ],
    )
    # Charging and discharging at once burns energy. That pays only to make room for a later
    # (or current) negative import price, so binaries are needed up to the last such slot.
    # (With a negative export price, curtailing PV does the same job at no loss.)
    # Why not elsewhere: in a slot with ch, dis > 0, lowering ch by δ and dis by η_c·η_d·δ
    # keeps every SoC unchanged and frees (1 − η_c·η_d)·δ of AC power, which lowers import
    # (price >= 0: no dearer), raises export (while below its cap) or curtails PV; the ε
    # throughput cost on ch and dis (1e-5) outweighs the curtailment cost (1e-6); if none
    # can take it, lowering both by δ leaves a higher SoC, which only hurts if a later slot
    # pays for taking energy in. So an LP optimum never burns before the last such slot.
    # A turn-up floor (import at least …) rewards extra import like a negative price does.
    # A time-shared slot has binaries per phase instead (timeshare.py), and neither room
    # row below holds there: a phase may discharge (charge) to make room for the other.
    burn = burn_slots(f)
    if shared is not None and shared.size:
        burn = np.setdiff1d(burn, shared).astype(np.int32)
    if burn.size and b.max_charge_w > 0 and b.max_discharge_w > 0:
        z = m.cols(burn.size, 0.0, 1.0, 0.0, integer=True)
        m.rounding.append(Rounding("prefer", z, a=ch[burn], b=dis[burn]))
        bl = np.arange(burn.size)
        m.rows(-np.inf, 0.0, burn.size, [(bl, ch[burn], 1.0), (bl, z, -b.max_charge_w)])
        m.rows(
            -np.inf,
            b.max_discharge_w,
            burn.size,
            [(bl, dis[burn], 1.0), (bl, z, b.max_discharge_w)],
        )
    # Where the binaries forbid charging and discharging at once, a slot's charge fits in
    # the room left above the last SoC and its discharge in what is left above the floor:
    # η_c·dt·ch[t] <= hi − soc[t−1], dt·dis[t]/η_d <= soc[t−1] − lo (implied for every
    # integer solution, not for the relaxation, which cycles within a slot at a full or
    # empty battery where export pays more than import). Measured on flat export (seeds 1,
    # 3, 4, 7, CPU to prove 0.1 % from the same start): 17.9 → 13.3 s, seed 7 proven within
    # 20 s. Only with such slots: elsewhere they only moved the LP to another vertex, and
    # one rounded plan got worse (agile/agile seed 4: 9 → 58 ms).
    if (
        burn.size
        and b.max_charge_w > 0
        and b.max_discharge_w > 0
        and bool(np.any(f.export_price > f.import_price))
    ):
        bl = np.arange(burn.size)
        prev = burn[burn > 0] - 1
        kp = bl[burn > 0]
        room_hi = np.full(burn.size, hi)
        room_lo = np.full(burn.size, -lo)
        room_hi[burn == 0] -= soc0
        room_lo[burn == 0] += soc0
        m.rows(
            -np.inf,
            room_hi,
            burn.size,
            [(bl, ch[burn], dt * b.charge_efficiency), (kp, soc[prev], 1.0)],
        )
        m.rows(
            -np.inf,
            room_lo,
            burn.size,
            [(bl, dis[burn], dt / b.discharge_efficiency), (kp, soc[prev], -1.0)],
        )
    return ch, dis, soc


def soc_target_slots(p: Problem, t: SocTarget) -> IntArray:
    """The slots whose end-of-slot SoC a target bounds: the last slot ending by `at`, or
    with `until` every slot ending in [at, until]. Empty when that is before slot 0 ends."""
    step_s = p.step_s
    if t.until is None:
        k = math.floor((t.at - p.start).total_seconds() / step_s + 1e-9) - 1
        return np.arange(k, k + 1, dtype=np.int32) if 0 <= k < p.n_slots else np.zeros(0, np.int32)
    first = math.ceil((t.at - p.start).total_seconds() / step_s - 1e-9) - 1
    last = math.floor((t.until - p.start).total_seconds() / step_s + 1e-9) - 1
    first, last = max(first, 0), min(last, p.n_slots - 1)
    return np.arange(first, max(first, last + 1), dtype=np.int32)


def add_soc_targets(
    m: ModelArrays, f: SlotFrame, p: Problem, b: BatterySpec, soc: IntArray
) -> list[tuple[int, IntArray, IntArray]]:
    """Soft SoC bounds: soc[k] + short_k >= target per bounded slot, each Wh short priced
    at the target's penalty; the end pin soc[n−1] = end ± short, both ways priced. Soft, so
    an unreachable target (above max_soc, too little time or power) still gives a plan."""
    out: list[tuple[int, IntArray, IntArray]] = []
    for j, t in enumerate(b.soc_targets):
        slots = soc_target_slots(p, t)
        if not slots.size:
            continue
        short = m.cols(slots.size, 0.0, np.inf, t.penalty_per_kwh / 1000.0)
        loc = np.arange(slots.size)
        target_wh = t.soc_pct / 100.0 * b.capacity_wh
        m.rows(target_wh, np.inf, slots.size, [(loc, soc[slots], 1.0), (loc, short, 1.0)])
        out.append((j, slots, short))
    if b.end_soc_pct is not None:
        end = np.array([f.n - 1], dtype=np.int32)
        dev = m.cols(2, 0.0, np.inf, b.end_soc_penalty_per_kwh / 1000.0)  # below, above
        zero = np.zeros(1, np.int32)
        end_wh = b.end_soc_pct / 100.0 * b.capacity_wh
        m.rows(
            end_wh,
            end_wh,
            1,
            [(zero, soc[end], 1.0), (zero, dev[:1], 1.0), (zero, dev[1:], -1.0)],
        )
        out.append((-1, np.concatenate([end, end]), dev))
    return out


def ev_target_wh(e: EvSession) -> float:
    """The energy the optimiser aims at: capped at the car's battery when known."""
    if e.battery_capacity_wh is not None:
        return min(e.energy_wh, e.battery_capacity_wh)
    return e.energy_wh


def add_ev(
    m: ModelArrays, f: SlotFrame, p: Problem, e: EvSession, shared: IntArray | None = None
) -> tuple[IntArray, IntArray, int | None]:
    """EV power in the slots it is plugged in, semi-continuous via binaries, soft target.

    p[t] = 0 or min_power <= p[t] <= max_power (semi-continuous); Σ p·dt + shortfall >=
    target, and the car is not pushed beyond the target (or one minimum-power slot, if the
    target is smaller).
    """
    slots = slots_between(p, e.arrival, e.departure)
    target = ev_target_wh(e)
    if slots.size == 0:
        return slots, np.zeros(0, np.int32), None
    n, dt = slots.size, f.dt_h
    # A negligible cost rising with time breaks the symmetry between equal-price slots
    # (Agile is half-hourly, slots may be 15 min): prefer charging earlier. Measured: halves
    # the branch-and-bound time on the benchmark instances.
    tie = 1e-9 * np.arange(n) / n
    if e.min_power_w > 0 and EV_SEMI_CONTINUOUS:
        pw = m.cols(n, e.min_power_w, e.max_power_w, tie, integrality=SEMI_CONTINUOUS)
    elif e.min_power_w > 0:
        # p = 0 or min <= p <= max with an on/off binary. The LP relaxation is already the
        # hull of {0} ∪ [min, max], i.e. [0, max]: no tighter big-M exists.
        pw = m.cols(n, 0.0, e.max_power_w, tie)
        # A time-shared slot has the minimum power per phase instead (timeshare.py).
        whole = ~np.isin(slots, shared) if shared is not None else np.ones(n, bool)
        loc = np.flatnonzero(whole)
        on = m.cols(loc.size, 0.0, 1.0, 0.0, integer=True)
        m.rounding.append(Rounding("on_if", on, a=pw[loc]))
        kl = np.arange(loc.size)
        m.rows(-np.inf, 0.0, loc.size, [(kl, pw[loc], 1.0), (kl, on, -e.max_power_w)])
        m.rows(0.0, np.inf, loc.size, [(kl, pw[loc], 1.0), (kl, on, -e.min_power_w)])
    else:
        pw = m.cols(n, 0.0, e.max_power_w, tie)
    short = int(m.cols(1, 0.0, target, e.shortfall_penalty_per_kwh / 1000.0)[0])
    zero = np.zeros(n, np.int32)
    m.rows(target, np.inf, 1, [(zero, pw, dt), (np.zeros(1, np.int32), [short], 1.0)])
    m.rows(-np.inf, max(target, e.min_power_w * dt), 1, [(zero, pw, dt)])
    return slots, pw, short


def load_run_slots(d: DeferrableLoad, step_min: int) -> int:
    return math.ceil(d.run_time_min / step_min - 1e-9)


def add_deferrable_load(
    m: ModelArrays, f: SlotFrame, p: Problem, d: DeferrableLoad
) -> tuple[IntArray, IntArray]:
    """On/off binaries in the window; exact run time; optional one block or minimum on time."""
    slots = slots_between(p, d.window_start, d.window_end)
    n = slots.size
    need = load_run_slots(d, p.step_min)
    # A single block's `on` is fixed by its start binaries (`_one_block`), so it stays
    # continuous there: branching only on the starts.
    on = m.cols(n, 0.0, 1.0, 0.0, integer=not d.contiguous)
    m.rows(float(need), float(need), 1, [(np.zeros(n, np.int32), on, 1.0)])
    min_on = math.ceil(d.min_on_min / p.step_min - 1e-9)
    if n and d.contiguous:
        _one_block(m, on, need)
    elif n and min_on > 1:
        # Minimum up time without extra binaries: on[k] - on[k-1] <= on[k+j], j < min_on.
        # A start too close to the window end has no room, so on[k+j] is 0 there.
        rl, cl, vl = [], [], []
        r = 0
        for k in range(n):
            for j in range(1, min_on):
                rl += [r, r]
                cl += [on[k], on[k + j] if k + j < n else -1]
                vl += [1.0, -1.0]
                if k > 0:
                    rl.append(r)
                    cl.append(on[k - 1])
                    vl.append(-1.0)
                r += 1
        rows, cols_, vals = np.array(rl), np.array(cl), np.array(vl)
        keep = cols_ >= 0
        m.rows(-np.inf, 0.0, r, [(rows[keep], cols_[keep], vals[keep])])
    if n and not d.contiguous:
        m.rounding.append(
            Rounding("blocks", on, need=need, min_on=max(min_on, 1), slots=slots, power_w=d.power_w)
        )
    return slots, on


def _one_block(m: ModelArrays, on: IntArray, need: int) -> None:
    """Exactly one block of `need` slots: one binary per feasible start, on[k] = Σ s[j] over
    the starts j covering k (k − need < j <= k).

    Replaces `st[k] >= on[k] − on[k−1], Σ st <= 1`, which has the same integer solutions but
    a weak LP relaxation (fractional `on` spread over the cheapest slots). Here `on` is a
    linear image of the start binaries, whose constraint matrix is an interval matrix: the
    load alone has an integral LP, so the relaxation is the convex hull of the single-block
    schedules. `on` is continuous but integral whenever the starts are; `Σ on = need` (added
    by the caller) is then implied. With no feasible start the model
    is infeasible, as before (the checks explain it first).
    """
    n = on.size
    n_starts = n - need + 1
    if n_starts <= 0:
        m.rows(1.0, 1.0, 1, [(np.zeros(0, np.int32), np.zeros(0, np.int32), 1.0)])
        return
    st = m.cols(n_starts, 0.0, 1.0, 0.0, integer=True)
    m.rounding.append(Rounding("one_of", st))
    m.rows(1.0, 1.0, 1, [(np.zeros(n_starts, np.int32), st, 1.0)])
    # Row k: on[k] − Σ_{j = max(0, k−need+1)}^{min(k, n_starts−1)} s[j] = 0.
    k = np.arange(n)
    jj = np.arange(n_starts)
    rows_s = (jj[:, None] + np.arange(need)[None, :]).ravel()  # start j covers j..j+need−1
    cols_s = np.repeat(st, need)
    m.rows(0.0, 0.0, n, [(k, on, 1.0), (rows_s, cols_s, -1.0)])


def add_grid_exclusivity(
    m: ModelArrays, f: SlotFrame, cols: Columns, shared: IntArray | None = None
) -> None:
    """A binary z per slot forbids importing and exporting at once where that would pay.

    Only where export earns more than import costs (at equal prices it is a wash and the
    extraction nets it), and only where both directions are physically possible. z = 1:
    import mode, z = 0: export mode.

    The slot's convex hull of the two modes, not big-M rows alone: every power x in the
    slot (battery charge and discharge, PV used, EV, deferrable loads) is split into its
    import-mode part x_I and the rest, x_I <= ub·z and x − x_I <= ub·(1 − z), and the import
    is what the import-mode parts leave: import = L·z + Σ consumers_I − Σ generators_I (the
    export-mode balance follows from the slot's own). The big-M rows alone let the LP
    relaxation import and export the same energy at a fractional z (charging and
    discharging at once to make room): measured, root bound 12 % below the optimum on flat
    export.
    """
    imp, exp = cols.grid_import, cols.grid_export
    imp_ub, exp_ub = grid_bounds_w(f)
    both = np.flatnonzero((f.export_price > f.import_price) & (imp_ub > 0) & (exp_ub > 0))
    if shared is not None and shared.size:
        both = np.setdiff1d(both, shared)  # time-shared instead (timeshare.py)
    if not both.size:
        return
    nb = both.size
    z = m.cols(nb, 0.0, 1.0, 0.0, integer=True)
    m.rounding.append(Rounding("prefer", z, a=imp[both], b=exp[both]))
    loc = np.arange(nb)
    index = np.full(f.n, -1, dtype=np.int32)
    index[both] = loc
    m.rows(-np.inf, 0.0, nb, [(loc, imp[both], 1.0), (loc, z, -imp_ub[both])])
    m.rows(-np.inf, exp_ub[both], nb, [(loc, exp[both], 1.0), (loc, z, exp_ub[both])])
    # (slots, columns, their upper bounds, power per unit: + consumes, − generates)
    flows: list[tuple[IntArray, IntArray, FloatArray, float]] = []
    allslots = np.arange(f.n, dtype=np.int32)
    flows.append((allslots, cols.pv_used, f.pv_w, -1.0))
    for ch, dis, _soc in cols.battery.values():
        flows.append((allslots, ch, np.full(f.n, np.nan), 1.0))
        flows.append((allslots, dis, np.full(f.n, np.nan), -1.0))
    for _id, slots, pw, _short in cols.ev:
        flows.append((slots, pw, np.full(slots.size, np.nan), 1.0))
    for _id, slots, on, power_w in cols.loads:
        flows.append((slots, on, np.ones(slots.size), power_w))
    _lb, ub_all, _c, _i = m.column_arrays()
    balance: list[tuple[IntArray, IntArray, float | FloatArray]] = [
        (loc, imp[both], 1.0),
        (loc, z, -f.load_w[both]),
    ]
    for slots, col, ub, unit in flows:
        inside = index[slots] >= 0
        if not inside.any():
            continue
        r = index[slots[inside]]
        c = col[inside]
        u = np.where(np.isnan(ub[inside]), ub_all[c], ub[inside])
        k = inside.sum()
        part = m.cols(k, 0.0, u)
        kl = np.arange(k)
        m.rows(-np.inf, 0.0, k, [(kl, part, 1.0), (kl, z[r], -u)])
        m.rows(-np.inf, u, k, [(kl, c, 1.0), (kl, part, -1.0), (kl, z[r], u)])
        m.rows(0.0, np.inf, k, [(kl, c, 1.0), (kl, part, -1.0)])
        balance.append((r, part, -unit))
    m.rows(0.0, 0.0, nb, balance)


def add_load_hull(m: ModelArrays, f: SlotFrame, cols: Columns, where: dict[int, IntArray]) -> int:
    """Deferrable load j's slot hull of "on" and "off" in the slots `where[j]` (local
    indices into its window), as add_grid_exclusivity does for import and export: every
    other power x of the slot (import, export, PV used, battery charge and discharge, EV,
    the other loads) is split into its load-on part x_on <= ub·on and the rest,
    x − x_on <= ub·(1 − on), and the load-on parts balance the slot with the load running:
    import_on + PV_on + discharge_on = (base load + power)·on + export_on + charge_on +
    EV_on + Σ other loads_on (the load-off balance follows from the slot's own). Returns
    the number of slots.

    Valid for every integer plan (on = 1: the parts are the slot's powers; on = 0: none),
    so it may be added where the LP relaxation runs a fraction of a load: there it soaks up
    surplus PV (or a cap's slack) exactly, which a whole slot at full power cannot, and
    that is most of the root gap on whole slots (the EV's and the battery's binaries close
    none of it). Added only where the LP is fractional: everywhere it makes the LP several
    times larger."""
    imp_ub, exp_ub = grid_bounds_w(f)
    _lb, ub_all, _c, _i = m.column_arrays()
    allslots = np.arange(f.n, dtype=np.int32)
    nan = np.full(f.n, np.nan)
    base: list[tuple[IntArray, IntArray, FloatArray, float]] = [
        (allslots, cols.grid_import, imp_ub, -1.0),
        (allslots, cols.grid_export, exp_ub, 1.0),
        (allslots, cols.pv_used, f.pv_w, -1.0),
    ]
    for ch, dis, _soc in cols.battery.values():
        base.append((allslots, ch, nan, 1.0))
        base.append((allslots, dis, nan, -1.0))
    for _id, slots, pw, _short in cols.ev:
        base.append((slots, pw, np.full(slots.size, np.nan), 1.0))
    total = 0
    for j, local in where.items():
        _lid, lslots, lon, power_w = cols.loads[j]
        local = np.asarray(local, dtype=np.int32)
        n = local.size
        if n == 0:
            continue
        total += n
        sl = lslots[local]
        index = np.full(f.n, -1, dtype=np.int32)
        index[sl] = np.arange(n, dtype=np.int32)
        loc = np.arange(n)
        flows = list(base)
        for k, (_o, oslots, oon, opower) in enumerate(cols.loads):
            if k != j:
                flows.append((oslots, oon, np.ones(oslots.size), opower))
        balance: list[tuple[IntArray, IntArray, float | FloatArray]] = [
            (loc, lon[local], f.load_w[sl] + power_w),
        ]
        for slots, col, ub, unit in flows:
            inside = index[slots] >= 0
            if not inside.any():
                continue
            r = index[slots[inside]]
            c = col[inside]
            u = np.where(np.isnan(ub[inside]), ub_all[c], ub[inside])
            k = int(inside.sum())
            part = m.cols(k, 0.0, u)
            kl = np.arange(k)
            z = lon[local][r]
            m.rows(-np.inf, 0.0, k, [(kl, part, 1.0), (kl, z, -u)])
            m.rows(-np.inf, u, k, [(kl, c, 1.0), (kl, part, -1.0), (kl, z, u)])
            m.rows(0.0, np.inf, k, [(kl, c, 1.0), (kl, part, -1.0)])
            balance.append((r, part, unit))
        m.rows(0.0, 0.0, n, balance)
    return total


def add_balance(m: ModelArrays, f: SlotFrame, cols: Columns) -> IntArray:
    """Per slot: PV + import + discharge = base load + export + charge + EV + loads."""
    loc = np.arange(f.n)
    terms: list[tuple[IntArray, IntArray, float | FloatArray]] = [
        (loc, cols.pv_used, 1.0),
        (loc, cols.grid_import, 1.0),
        (loc, cols.grid_export, -1.0),
    ]
    for ch, dis, _soc in cols.battery.values():
        terms += [(loc, dis, 1.0), (loc, ch, -1.0)]
    for _id, slots, pw, _short in cols.ev:
        terms.append((slots, pw, -1.0))
    for _id, slots, on, power_w in cols.loads:
        terms.append((slots, on, -power_w))
    return m.rows(f.load_w, f.load_w, f.n, terms)


def add_battery_not_to_ev(m: ModelArrays, f: SlotFrame, cols: Columns) -> None:
    """While an EV is plugged in: Σ discharge − deferrable loads <= base load, per slot.

    The control loop keeps the home battery out of the car (`control.ev_from_battery`
    false); planning the same keeps the plan and what happens alike.
    """
    ev_slots = np.unique(np.concatenate([s for _id, s, _pw, _sh in cols.ev] or [np.zeros(0)]))
    ev_slots = ev_slots.astype(np.int32)
    if ev_slots.size == 0 or not cols.battery:
        return
    index = np.full(f.n, -1, dtype=np.int32)
    index[ev_slots] = np.arange(ev_slots.size, dtype=np.int32)
    terms: list[tuple[IntArray, IntArray, float | FloatArray]] = [
        (np.arange(ev_slots.size), dis[ev_slots], 1.0) for _ch, dis, _soc in cols.battery.values()
    ]
    for _id, slots, on, power_w in cols.loads:
        inside = index[slots] >= 0
        terms.append((index[slots[inside]], on[inside], -power_w))
    m.rows(-np.inf, f.load_w[ev_slots], ev_slots.size, terms)


def build(
    p: Problem, elapsed_s: float = 0.0, whole: IntArray | None = None
) -> tuple[ModelArrays, Columns, SlotFrame]:
    """The whole MILP of `p`. `elapsed_s`: how far into slot 0 the plan starts (a mid-slot
    replan lays slot 0's phases out over what is left of it); `whole`: slots that must not
    be time-shared (the optimiser's fallback when rounded phases leave no plan)."""
    # Here, not at the top: timeshare builds on this module's types and builders.
    from hems.planning.optimiser.timeshare import add_time_share, shared_slots

    f = slot_frame(p)
    shared, length_s = shared_slots(p, f, elapsed_s, whole)
    m = ModelArrays()
    imp, exp = add_grid(m, f)
    pv = add_pv(m, f, p.curtailment_cost_per_kwh)
    cols = Columns(grid_import=imp, grid_export=exp, pv_used=pv)
    cols.floor_slots, cols.floor_short = add_import_floor(m, f, imp, exp)
    for b in p.batteries:
        cols.battery[b.id] = add_battery(m, f, b, shared)
        cols.soc_short[b.id] = add_soc_targets(m, f, p, b, cols.battery[b.id][2])
    for e in p.evs:
        slots, pw, short = add_ev(m, f, p, e, shared)
        cols.ev.append((e.id, slots, pw, short))
    for d in p.loads:
        slots, on = add_deferrable_load(m, f, p, d)
        cols.loads.append((d.id, slots, on, d.power_w))
    if not p.battery_to_ev:
        add_battery_not_to_ev(m, f, cols)
    add_grid_exclusivity(m, f, cols, shared)
    if shared.size:
        cols.share = add_time_share(m, f, p, cols, shared, length_s)
    balance = add_balance(m, f, cols)
    # Block roundings may also place a load where the LP's marginal price is lowest.
    m.rounding = [
        replace(r, rows=balance[r.slots], power_w=r.power_w) if r.slots is not None else r
        for r in m.rounding
    ]
    return m, cols, f
