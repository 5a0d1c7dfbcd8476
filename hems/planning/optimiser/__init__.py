"""The local MILP optimiser: `optimise(problem)` → `Result` with a `Plan`.

Split in three: `model` (pure builders filling numpy arrays, one per device), `solve`
(HiGHS low-level API, time limit, MIP gap, LP fallback) and `extract` (→ Plan). `checks`
explains infeasibility before the solver runs; `timeshare` splits the slots where export
pays more than import into an import phase and an export phase; `warm` reads the last plan.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import numpy as np

from hems.core.plan import Plan
from hems.errors import Infeasible
from hems.planning.optimiser.checks import _hhmm, check
from hems.planning.optimiser.extract import extract
from hems.planning.optimiser.model import (
    Columns,
    ModelArrays,
    Share,
    SlotFrame,
    add_load_hull,
    build,
)
from hems.planning.optimiser.solve import (
    _ABS_GAP,
    FixedLp,
    RawSolution,
    Strengthen,
    solve_arrays,
    solve_fixed,
)
from hems.planning.optimiser.timeshare import (
    add_min_phase_rows,
    min_phase_start,
    short_phase_fixes,
    short_phase_options,
)
from hems.planning.optimiser.warm import plan_hint
from hems.planning.problem import Problem
from hems.planning.result import Result  # defined without numpy: see result.py

__all__ = ["Result", "optimise"]


def optimise(
    problem: Problem,
    *,
    time_limit_s: float = 5.0,
    mip_rel_gap: float = 0.001,
    created_at: datetime | None = None,
    warm_start: Plan | None = None,
) -> Result:
    """Solve `problem`. Raises `Infeasible(field, reason)` naming the input at fault,
    `SolverTimeout` when not even the LP relaxation finished. Blocking (run in a thread).

    The plan's status is "optimal" only when its cost is proven within `mip_rel_gap` of the
    best possible (|cost − bound| <= gap·|cost|, HiGHS' own test); "feasible" when the time
    limit stopped the search first, with the gap proven in the notes. `warm_start`: the
    previous plan, whose choices are tried first where its slots overlap (warm.py).

    Where export pays more than import a slot may be split into an import phase then an
    export phase (timeshare.py): two PlanSlots, none shorter than `problem.min_phase_s`.
    `created_at` inside slot 0 (a mid-slot replan) lays slot 0's phases out over what is
    left of it, from `created_at`, import first."""
    t0 = time.perf_counter()
    notes = check(problem)
    elapsed_s = 0.0
    if created_at is not None:  # a mid-slot replan: slot 0's phases share what is left
        elapsed_s = min(max((created_at - problem.start).total_seconds(), 0.0), problem.step_s)
    m, cols, frame = build(problem, elapsed_s)
    hint = None if warm_start is None else plan_hint(problem, cols, m.n_cols, warm_start)
    raw = solve_arrays(m, time_limit_s, mip_rel_gap, hint=hint, strengthen=_load_hull(cols, frame))
    if raw.status == "infeasible":
        raise _diagnose(problem, time_limit_s, mip_rel_gap)
    if cols.share is not None:
        left_s = time_limit_s - (time.perf_counter() - t0)
        kept = _min_phase(problem, m, cols, raw, left_s, mip_rel_gap)
        if kept is None:
            # No plan with those shares rounded: the whole-slot model (binaries) instead.
            m, cols, frame = build(problem, elapsed_s, whole=np.arange(problem.n_slots))
            left_s = time_limit_s - (time.perf_counter() - t0)
            raw = solve_arrays(
                m, max(left_s, _MIN_PHASE_GRACE_S), mip_rel_gap, strengthen=_load_hull(cols, frame)
            )
            if raw.status == "infeasible":
                raise _diagnose(problem, time_limit_s, mip_rel_gap)
            notes.append(
                "solver: phases of a split slot could not be kept to the minimum "
                "length; no slot is split"
            )
        else:
            raw = kept
        raw = replace(raw, solve_time_s=time.perf_counter() - t0)
    if raw.status == "relaxed":
        notes.append("solver: no integer solution in time; LP relaxation used (on/off rounded)")
    elif raw.status == "feasible":
        why = (
            "time limit hit"
            if time.perf_counter() - t0 >= 0.95 * time_limit_s
            else f"phases under {problem.min_phase_s:g} s rounded away"
        )
        notes.append(
            f"solver: {why}; plan proven within {raw.mip_gap:.2%} of optimal "
            f"(target {mip_rel_gap:.2%})"
        )
    notes += _floor_notes(problem, cols, raw.x)
    notes += _soc_target_notes(problem, cols, raw.x)
    plan = extract(
        problem,
        frame,
        cols,
        raw.x,
        status=raw.status,
        notes=notes,
        created_at=created_at or problem.start,
    )
    _, _, _, integer = m.column_arrays()
    n_integer = int(np.count_nonzero(integer))  # binaries and semi-continuous columns
    # Plain Python numbers: the Result is pickled to the daemon, which has no numpy.
    return Result(
        plan, float(raw.objective), float(raw.solve_time_s), int(m.n_cols), int(m.n_rows), n_integer
    )


# A load's value in the LP relaxation below which (or above 1 − it) it counts as off (on).
_FRACTIONAL = 1e-4


def _load_hull(cols: Columns, frame: SlotFrame) -> Strengthen | None:
    """solve.Strengthen: model.add_load_hull in the whole slots where the relaxation runs
    a fraction of a deferrable load, each slot once. Not in time-shared slots: there the
    hull of the load alone closed almost nothing (measured on flat export: root gap 0.356 →
    0.355 %, 0.269 → 0.254 %, with the hull in every slot) while the LP grew 3-4×."""
    if not cols.loads:
        return None
    shared = cols.share.slots if cols.share is not None else np.zeros(0, np.int32)
    done = [np.zeros(slots.size, bool) for _id, slots, _on, _p in cols.loads]

    def strengthen(m: ModelArrays, x: np.ndarray) -> bool:
        where = {}
        for j, (_id, slots, on, _power_w) in enumerate(cols.loads):
            v = x[on]
            frac = (v > _FRACTIONAL) & (v < 1.0 - _FRACTIONAL) & ~done[j]
            frac &= ~np.isin(slots, shared)
            if frac.any():
                where[j] = np.flatnonzero(frac)
                done[j] |= frac
        return add_load_hull(m, frame, cols, where) > 0

    return strengthen


# The LP re-solves that round short phases away may run this long past the time limit
# (milliseconds each; a plan with phases the loop cannot follow is not an option).
_MIN_PHASE_GRACE_S = 0.5


def _min_phase(
    p: Problem,
    m: ModelArrays,
    cols: Columns,
    raw: RawSolution,
    left_s: float,
    mip_rel_gap: float,
) -> RawSolution | None:
    """`raw` with every phase shorter than `p.min_phase_s` rounded away (timeshare.py:
    each such share bounded to no phase or at least the minimum), the rest re-solved with
    every integer column fixed (an LP; if that has no plan, a MIP with only the shares
    bounded), until no phase is short: each round bounds one more share for good, so it
    ends. If the rounded plan is not within the gap and time is left, the model with the
    minimum phase exact (timeshare.add_min_phase_rows; first only in the rounded slots),
    started from it, finishes it: the rounding's gap is mostly the first solve's bound,
    which lets phases be short. The status
    and gap are against the best bound proven (the first solve's bounds the rounded plans
    too: the rounding only restricts the model). None when no plan keeps the shares."""
    assert cols.share is not None
    share = cols.share
    fixes: dict[int, tuple[float, float]] = {}
    x, relaxed = raw.x, raw.status == "relaxed"
    value = raw.objective
    t_end = time.perf_counter() + max(left_s, 0.0)
    grace_end = t_end + _MIN_PHASE_GRACE_S
    bound = raw.objective - raw.mip_gap * abs(raw.objective)
    lp = FixedLp(m, x, mip_rel_gap, relax=relaxed)

    def within_gap(v: float, b: float) -> bool:
        return v - b <= max(mip_rel_gap * abs(v), _ABS_GAP)

    while True:
        options = {
            c: o for c, o in short_phase_options(share, x, p.min_phase_s).items() if c not in fixes
        }
        if not options:
            break
        solved = None
        for choice in (0, 1):  # the nearer bounds; if no plan keeps them, the others
            trial = fixes | {c: o[choice] for c, o in options.items()}
            solved = lp.solve(trial, grace_end - time.perf_counter())
            if solved is None and not relaxed and not lp.timed_out:
                # No plan with these integer choices: a MIP with only the shares bounded.
                left = grace_end - time.perf_counter()
                solved = solve_fixed(m, x, trial, left, mip_rel_gap, fix_integers=False)
                if solved is not None:
                    lp = FixedLp(m, solved.x, mip_rel_gap, relax=False)
            if solved is not None:
                fixes = trial
                break
            if lp.timed_out:
                return None
        if solved is None:
            return None
        x, value = solved.x, solved.objective
    if not fixes:
        return raw  # no short phase
    if relaxed:
        return replace(raw, x=x, objective=value)
    exact = np.isin(share.theta, list(fixes))  # the slots whose minimum phase is modelled
    while not within_gap(value, bound) and t_end - time.perf_counter() > 0.1:
        # The minimum phase exact (two binaries per slot) first only in the slots whose
        # phases were rounded: a relaxation of the exact model, so its bound holds; its plan
        # holds when no other phase came out short, else it runs again with every slot.
        # Measured (flat export, 8 instances per family, CPU median / max): agile/flat15
        # 380 / 655 → 288 / 631 ms, tight fuse 112 / 1095 → 110 / 1536 ms (the one that
        # needs every slot pays for both solves).
        # A copy of `m` (with any rows the solve added: model.add_load_hull), not a rebuild.
        exact_m = _copy(m)
        sel = np.flatnonzero(exact)
        sub = Share(slots=share.slots[sel], theta=share.theta[sel], length_s=share.length_s[sel])
        add_min_phase_rows(exact_m, sub, p.min_phase_s)
        start = np.concatenate([x, min_phase_start(sub, x)])
        left = t_end - time.perf_counter() - 0.05  # passing the model takes a moment
        # Without HiGHS' sub-MIP heuristics: the start is the rounded plan, and what is
        # left is mostly proving the bound (measured, flat export, CPU of this solve: 662 →
        # 312 ms, 605 → 660 ms; tight fuse p95 of the whole solve 2109 → 1135 ms).
        done = solve_fixed(
            exact_m, start, {}, left, mip_rel_gap, fix_integers=False, start=start, sub_mip=False
        )
        if done is None:
            break
        y = done.x[: x.size]
        bound = max(bound, done.objective - done.mip_gap * abs(done.objective))
        short = short_phase_fixes(share, y, p.min_phase_s - 1e-6)
        if not short:
            if done.objective < value:
                x, value = y, done.objective
            break
        if exact.all():
            break
        # Every slot at once: adding only the newly short ones, round by round, took 3.3 s
        # CPU on a tight-fuse instance and proved nothing (measured).
        exact[:] = True
    gap = max(value - bound, 0.0)
    rel = gap / abs(value) if value else 0.0
    status = "optimal" if within_gap(value, bound) else "feasible"
    return replace(raw, status=status, x=x, objective=value, mip_gap=rel)


def _copy(m: ModelArrays) -> ModelArrays:
    """A copy that adding columns and rows to leaves `m` as it is (the chunks themselves
    are never changed in place)."""
    return replace(
        m,
        lb=list(m.lb), ub=list(m.ub), cost=list(m.cost), integer=list(m.integer),
        row_lo=list(m.row_lo), row_hi=list(m.row_hi), entry_row=list(m.entry_row),
        entry_col=list(m.entry_col), entry_val=list(m.entry_val), rounding=list(m.rounding),
    )  # fmt: skip


def _floor_notes(problem: Problem, cols: Columns, x: np.ndarray) -> list[str]:
    """Explain turn-up floors the plan cannot meet (the floor is soft, see model.py)."""
    if not cols.floor_short.size:
        return []
    short_w = x[cols.floor_short]
    missed = np.flatnonzero(short_w > 1.0)
    if not missed.size:
        return []
    slots = cols.floor_slots[missed]
    kwh = float(short_w[missed].sum()) * problem.step_min / 60 / 1000
    first = _hhmm(problem, problem.slot_start(int(slots[0])))
    last = _hhmm(problem, problem.slot_start(int(slots[-1]) + 1))
    return [
        f"events: the turn-up import floor cannot be met in {missed.size} slot(s) between "
        f"{first} and {last} ({kwh:.2f} kWh short): nothing more can be switched on or "
        "charged then; the plan imports as much as it can"
    ]


def _soc_target_notes(problem: Problem, cols: Columns, x: np.ndarray) -> list[str]:
    """Name each SoC target the plan cannot meet (they are soft, see model.add_soc_targets)."""
    notes: list[str] = []
    for i, b in enumerate(problem.batteries):
        _ch, _dis, soc = cols.battery[b.id]
        soc_pct = x[soc] / b.capacity_wh * 100.0
        for j, slots, short in cols.soc_short.get(b.id, []):
            short_wh = x[short]
            if float(short_wh.max(initial=0.0)) <= 1.0:  # 1 Wh: solver noise
                continue
            if j < 0:
                end_pct = float(soc_pct[int(slots[0])])
                notes.append(
                    f"batteries[{i}].end_soc_pct: {b.end_soc_pct:g}% at the end cannot be "
                    f"reached; the plan ends at {end_pct:.0f}%"
                )
                continue
            t = b.soc_targets[j]
            name = f"batteries[{i}].soc_targets[{j}]" + (f" ({t.name})" if t.name else "")
            worst = int(slots[int(np.argmax(short_wh))])
            when = _hhmm(problem, problem.slot_start(worst + 1))
            what = (
                f"{t.soc_pct:g}% by {_hhmm(problem, t.at)}"
                if t.until is None
                else f"at least {t.soc_pct:g}% from {_hhmm(problem, t.at)} to "
                f"{_hhmm(problem, t.until)}"
            )
            notes.append(
                f"{name}: {what} cannot be reached; the plan reaches {soc_pct[worst]:.0f}% at "
                f"{when} (the plan is kept)"
            )
    return notes


def _diagnose(problem: Problem, time_limit_s: float, mip_rel_gap: float) -> Infeasible:
    """The bound checks passed yet HiGHS found no plan: find which input group is at fault."""
    candidates = [
        ("events", {"events": []}, "the accepted flexibility events cannot all be met"),
        ("loads", {"loads": []}, "the deferrable loads cannot run within their windows"),
        (
            "batteries",
            {"batteries": []},
            "the battery SoC bounds / reserve cannot be kept with these limits",
        ),
    ]
    for name, change, reason in candidates:
        if not getattr(problem, name):
            continue
        relaxed = problem.model_copy(update=change)
        try:
            check(relaxed)
            m, _, _ = build(relaxed)
            raw = solve_arrays(m, time_limit_s, mip_rel_gap)
        except Infeasible:
            continue
        if raw.status != "infeasible":
            return Infeasible(name, reason)
    return Infeasible("import_cap_w", "no plan keeps every slot within the grid caps")
