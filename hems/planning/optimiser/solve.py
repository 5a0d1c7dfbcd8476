"""Solving: hand the arrays to HiGHS' low-level API, with a time limit, a MIP gap and an
LP-relaxation fallback. Blocking; the service runs it through `asyncio.to_thread`.

First the LP-and-round heuristic (heuristic.py): LP relaxation, rounding, one re-solve.
When that plan is within the gap of the LP bound it is returned as optimal (the criterion
HiGHS itself uses); otherwise it is HiGHS' first incumbent and branch and bound finishes.
Measured on the benchmark (100 instances, 192 slots): median 25 → 7.6 ms, p95 70 → 33 ms;
87 of the 100 need no branch and bound at all. Where the rounding is not proven, the
optimiser's `strengthen` (model.add_load_hull) tightens the relaxation where it ran a
fraction of a deferrable load, and the relaxation is re-solved and rounded again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import highspy
import numpy as np

from hems.errors import SolverTimeout
from hems.planning.optimiser.heuristic import rounded_bounds
from hems.planning.optimiser.model import INTEGER, SEMI_CONTINUOUS, ModelArrays

_ABS_GAP = 1e-6  # HiGHS' default mip_abs_gap [currency]
_ROWWISE = 2  # HighsMatrixFormat: kColwise = 1, kRowwise = 2
_MINIMIZE = 1
# Without the heuristic's relaxation to fall back on, the LP still gets this long past the
# time limit (a plan from the LP beats no plan).
_LP_GRACE_S = 0.5
_SUB_MIP_HEURISTICS = (
    "mip_heuristic_run_rins",
    "mip_heuristic_run_rens",
    "mip_heuristic_run_root_reduced_cost",
)


@dataclass(frozen=True, slots=True)
class RawSolution:
    status: str  # "optimal", "feasible" (time limit hit with an incumbent), "relaxed", "infeasible"
    x: np.ndarray
    objective: float
    solve_time_s: float
    mip_gap: float


_banner_lock = threading.Lock()
_banner_done = False


def _new_highs() -> highspy.Highs:
    """HiGHS prints a banner on stdout at its first construction; keep `--json` clean."""
    global _banner_done
    with _banner_lock:
        if _banner_done:
            return highspy.Highs()
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_done = True
        return h


# Swallow the banner now, at import (daemon start-up), not later while other threads log.
_new_highs()


def _highs(time_limit_s: float, mip_rel_gap: float) -> highspy.Highs:
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    # One thread: a Pi shares its cores with the rest of the daemon.
    h.setOptionValue("threads", 1)
    # Measured on the benchmark: these models are small and presolve costs more than it saves
    # (median 60 → 34 ms on 192-slot instances).
    h.setOptionValue("presolve", "off")
    # The root LP bound is almost always within the gap of the optimum; the time goes into
    # finding an incumbent (sub-MIPs). The cheap ZI-round and shifting heuristics usually find
    # it at the root. Measured on the benchmark: p95 75 → 64 ms, max 121 → 93 ms.
    h.setOptionValue("mip_heuristic_run_zi_round", True)
    h.setOptionValue("mip_heuristic_run_shifting", True)
    return h


def _pass(h: highspy.Highs, m: ModelArrays, relax: bool) -> None:
    lb, ub, cost, integer = m.column_arrays()
    start, index, value = m.csr()
    lo = np.concatenate(m.row_lo) if m.row_lo else np.zeros(0)
    hi = np.concatenate(m.row_hi) if m.row_hi else np.zeros(0)
    integrality = integer
    if relax:
        # The relaxation of a semi-continuous column (0 or lb..ub) is 0..ub.
        lb = np.where(integer == SEMI_CONTINUOUS, 0.0, lb)
        integrality = np.zeros_like(integer)
    h.passModel(
        m.n_cols, m.n_rows, int(index.size), _ROWWISE, _MINIMIZE, float(m.offset),
        cost, lb, ub, lo, hi, start, index, value, integrality.astype(np.int32),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Start:
    """A rounded, feasible plan not (yet) proven within the gap: the MIP's first incumbent
    (x None when no rounding was feasible or time ran out), and the LP relaxation, the last
    resort when branch and bound finds nothing in time."""

    x: np.ndarray | None
    objective: float
    bound: float  # the LP relaxation's objective
    lp_x: np.ndarray
    # x is the neighbourhood's optimum (within the gap), not a plan cut short by its time
    settled: bool = False


# Valid rows to add to the model where the LP relaxation `x` leaves it weak; True when
# any were added (model.add_load_hull via the optimiser). Called at most `_STRENGTHEN_ROUNDS`
# times, and only when the rounded plan is not proven.
Strengthen = Callable[[ModelArrays, np.ndarray], bool]
# Measured (see README): a second round still closed most of what the first left on
# whole-slot families.
_STRENGTHEN_ROUNDS = 2


def _lp_and_round(
    m: ModelArrays,
    time_limit_s: float,
    mip_rel_gap: float,
    t0: float,
    hint: np.ndarray | None = None,
    strengthen: Strengthen | None = None,
) -> RawSolution | _Start | None:
    """heuristic.py: a RawSolution when the rounded plan is provably within the gap (or
    the relaxation is infeasible), else the rounded plan as a MIP start, or None. `hint`
    (warm.py: the previous plan, NaN where unknown) is rounded first, the LP filling in.
    `strengthen`: when no rounding is proven, rows it adds to `m` (valid for every integer
    plan) tighten the relaxation, which is re-solved from its last basis and rounded again;
    `m` keeps them for the rest of the solve."""
    h = _highs(time_limit_s, mip_rel_gap)
    _pass(h, m, relax=True)
    h.run()
    ms = highspy.HighsModelStatus
    if h.getModelStatus() == ms.kInfeasible:
        return RawSolution("infeasible", np.zeros(0), float("nan"), time.perf_counter() - t0, 0)
    if h.getModelStatus() != ms.kOptimal:
        return None
    best: tuple[float, np.ndarray] | None = None
    rounds = 0
    fresh = True  # x not rounded yet
    bound, x, dual = _relaxation(h)
    while True:
        lb, ub, _cost, integer = m.column_arrays()
        if time.perf_counter() - t0 >= time_limit_s:
            if best is None:
                return _Start(None, float("nan"), bound, x)  # the relaxation stands
            return _Start(best[1], best[0], bound, x)
        idx = np.arange(m.n_cols, dtype=np.int32)
        # The previous plan's choices (warm start); then round as the LP did; then by prices
        # (only once the relaxation is as tight as it gets: a tighter one rounds better).
        last = strengthen is None or rounds >= _STRENGTHEN_ROUNDS
        tries: list[tuple[np.ndarray, np.ndarray | None]] = [(x, None)] if fresh else []
        if last:
            tries.append((x, dual))
        if hint is not None and rounds == 0:
            tries.insert(0, (np.where(np.isnan(hint), x, hint), None))
        for values, use_dual in tries:
            left = time_limit_s - (time.perf_counter() - t0)
            if left <= 0:
                break  # the time limit is hard: what was found so far stands
            bounds = rounded_bounds(m, values, lb, ub, integer, use_dual)
            if bounds is None:
                continue
            h.changeColsBounds(m.n_cols, idx, bounds[0], bounds[1])
            h.setOptionValue("time_limit", left)
            h.run()  # hot start from the previous basis
            if h.getModelStatus() != ms.kOptimal:
                continue
            value = float(h.getInfo().objective_function_value)
            if best is None or value < best[0]:
                best = (value, np.asarray(h.getSolution().col_value, dtype=float))
            if _within_gap(best[0], bound, mip_rel_gap):
                rel = max(best[0] - bound, 0.0) / abs(best[0]) if best[0] else 0.0
                return RawSolution("optimal", best[1], best[0], time.perf_counter() - t0, rel)
        left = time_limit_s - (time.perf_counter() - t0)
        if last or left <= 0:
            break
        n_cols, n_rows = m.n_cols, m.n_rows
        rounds += 1
        assert strengthen is not None
        if not strengthen(m, x):
            rounds, fresh = _STRENGTHEN_ROUNDS, False  # nothing to add: prices, then done
            continue
        _add_new(h, m, n_cols, n_rows, lb, ub)
        h.setOptionValue("time_limit", left)
        h.run()  # from the relaxation's basis, the new rows basic
        if h.getModelStatus() != ms.kOptimal:
            return None  # (out of time) branch and bound from nothing
        bound, x, dual = _relaxation(h)
        if best is not None:  # the plan found so far, with the new columns filled in
            y = _extend(h, m, best[1], n_cols)
            best = None if y is None else (best[0], y)
    if best is None:
        return _Start(None, float("nan"), bound, x)
    return _Start(best[1], best[0], bound, x)


def _relaxation(h: highspy.Highs) -> tuple[float, np.ndarray, np.ndarray]:
    """(objective, column values, row duals) of the LP `h` just solved."""
    solution = h.getSolution()
    x = np.asarray(solution.col_value, dtype=float)
    dual = np.asarray(solution.row_dual, dtype=float)
    return float(h.getInfo().objective_function_value), x, dual


def _add_new(
    h: highspy.Highs, m: ModelArrays, n_cols: int, n_rows: int, lb: np.ndarray, ub: np.ndarray
) -> None:
    """Give `h` (holding the relaxation of `m` as it was with n_cols, n_rows) the columns
    and rows added since, and the old columns their own bounds back."""
    h.changeColsBounds(n_cols, np.arange(n_cols, dtype=np.int32), lb, ub)
    lb2, ub2, cost, _integer = m.column_arrays()
    k = m.n_cols - n_cols
    if k:
        h.addCols(
            k, cost[n_cols:], lb2[n_cols:], ub2[n_cols:], 0,
            np.zeros(k, np.int32), np.zeros(0, np.int32), np.zeros(0),
        )  # fmt: skip
    start, index, value = m.csr()
    lo = np.concatenate(m.row_lo)
    hi = np.concatenate(m.row_hi)
    first, end = start[n_rows], start[m.n_rows]
    h.addRows(
        m.n_rows - n_rows, lo[n_rows:], hi[n_rows:], int(end - first),
        (start[n_rows : m.n_rows] - first).astype(np.int32), index[first:end], value[first:end],
    )  # fmt: skip


def _extend(h: highspy.Highs, m: ModelArrays, x: np.ndarray, n_cols: int) -> np.ndarray | None:
    """Plan `x` (the first n_cols columns) completed for the columns added since: the
    new rows' parts are each slot's powers split by its binary, so an integer plan fills
    them in one LP with every old column fixed."""
    lb, ub, _cost, _integer = m.column_arrays()
    fix_lb, fix_ub = lb.copy(), ub.copy()
    fix_lb[:n_cols] = fix_ub[:n_cols] = x
    h.changeColsBounds(m.n_cols, np.arange(m.n_cols, dtype=np.int32), fix_lb, fix_ub)
    h.run()
    ok = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    y = np.asarray(h.getSolution().col_value, dtype=float)
    h.changeColsBounds(m.n_cols, np.arange(m.n_cols, dtype=np.int32), lb, ub)
    return y if ok else None


def _neighbourhood(
    m: ModelArrays, start: _Start, time_limit_s: float, mip_rel_gap: float, t0: float
) -> _Start:
    """A better first incumbent: the MIP over only the binaries the LP left fractional, the
    others fixed at their LP values (a RINS-like neighbourhood; its optimum is feasible for
    the whole MIP). Measured on flat export (8 instances, 192 slots): 20–66 fractional
    binaries, the plan within 0.09 % of the exact optimum where the rounded one was 0.4–22 %
    off, 0.3–2.5 s CPU. HiGHS' own sub-MIP heuristics are off inside (they cost more than
    the whole neighbourhood). At most a third of the time left."""
    lb, ub, _cost, integer = m.column_arrays()
    x = start.lp_x
    is_int = integer == INTEGER
    fixed = is_int & (np.abs(x - np.round(x)) <= 1e-6)
    if not (is_int & ~fixed).any():
        return start
    lb2, ub2 = lb.copy(), ub.copy()
    lb2[fixed] = ub2[fixed] = np.round(x[fixed])
    left = time_limit_s - (time.perf_counter() - t0)
    h = _highs(max(left / 3.0, 0.0), mip_rel_gap)
    for option in _SUB_MIP_HEURISTICS:
        h.setOptionValue(option, False)
    _pass(h, m, relax=False)
    h.changeColsBounds(m.n_cols, np.arange(m.n_cols, dtype=np.int32), lb2, ub2)
    if start.x is not None and np.all(start.x[fixed] == lb2[fixed]):
        _set_start(h, start.x)
    h.run()
    if h.getInfo().primal_solution_status != 2:  # no feasible solution in the neighbourhood
        return start
    value = float(h.getInfo().objective_function_value)
    settled = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    if start.x is not None and value >= start.objective:
        return replace(start, settled=settled)
    x_best = np.asarray(h.getSolution().col_value, dtype=float)
    return _Start(x_best, value, start.bound, x, settled)


def _within_gap(value: float, bound: float, mip_rel_gap: float) -> bool:
    """HiGHS' own test: |value − bound| <= max(gap·|value|, the absolute gap)."""
    return value - bound <= max(mip_rel_gap * abs(value), _ABS_GAP)


def _set_start(h: highspy.Highs, x: np.ndarray) -> None:
    sol = highspy.HighsSolution()
    sol.col_value = x.tolist()
    sol.value_valid = True
    h.setSolution(sol)


def solve_arrays(
    m: ModelArrays,
    time_limit_s: float,
    mip_rel_gap: float,
    *,
    round_first: bool = True,
    hint: np.ndarray | None = None,
    strengthen: Strengthen | None = None,
) -> RawSolution:
    """`round_first=False` skips the LP-and-round heuristic (tests compare both ways);
    `hint` is a warm start (warm.py); `strengthen` see `_lp_and_round` (it may add
    columns and rows to `m`; the solution has all of them)."""
    t0 = time.perf_counter()
    start = None
    if round_first and m.n_cols and np.count_nonzero(m.column_arrays()[3]):
        quick = _lp_and_round(m, time_limit_s, mip_rel_gap, t0, hint, strengthen)
        if isinstance(quick, RawSolution):
            return quick
        start = quick
    if start is not None:
        start = _neighbourhood(m, start, time_limit_s, mip_rel_gap, t0)
        if start.x is not None and _within_gap(start.objective, start.bound, mip_rel_gap):
            # The neighbourhood's plan is within the gap of the LP relaxation's bound, which
            # bounds the whole MIP: proven, as HiGHS would find at its root. Measured: 3 of
            # 24 instances of three flat-export families, 30-60 ms CPU less each.
            gap = max(start.objective - start.bound, 0.0)
            rel = gap / abs(start.objective) if start.objective else 0.0
            return RawSolution("optimal", start.x, start.objective, time.perf_counter() - t0, rel)
    h = _highs(max(time_limit_s - (time.perf_counter() - t0), 0.0), mip_rel_gap)
    _pass(h, m, relax=False)
    if start is not None and start.x is not None:
        _set_start(h, start.x)
    if start is not None and start.settled:
        # The incumbent is the neighbourhood's optimum: what is left is mostly proving the
        # bound, and HiGHS' sub-MIP heuristics only look for better plans. Measured on flat
        # export (8 instances, the neighbourhood's plan as start, CPU to prove 0.1 %):
        # 0.26 / 2.35 / 0.48 / 2.44 s on the first four where they are on took 2.54 / 4.97 /
        # 2.42 / 5.80 s (at 3 nodes, 2.3 s of 2.5 went into sub-MIPs). Not when the
        # neighbourhood was cut short: its plan was up to 3 % off, and they find better.
        for option in _SUB_MIP_HEURISTICS:
            h.setOptionValue(option, False)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    ms = highspy.HighsModelStatus
    if status == ms.kOptimal:
        return _result(h, "optimal", t0)
    if status in (ms.kInfeasible, ms.kUnboundedOrInfeasible):
        return RawSolution("infeasible", np.zeros(0), float("nan"), time.perf_counter() - t0, 0)
    if has_solution:
        return _result(h, "feasible", t0)
    if start is not None and start.x is not None:
        # HiGHS gave up (or rejected the start): the heuristic's rounded plan stands.
        gap = (start.objective - start.bound) / abs(start.objective) if start.objective else 0.0
        elapsed = time.perf_counter() - t0
        return RawSolution("feasible", start.x, start.objective, elapsed, max(gap, 0.0))
    # No integer solution in time: the LP relaxation still gives a usable schedule; the
    # one already solved when there is one (no second solve past the time limit).
    if start is not None:
        elapsed = time.perf_counter() - t0
        return RawSolution("relaxed", start.lp_x, start.bound, elapsed, 0.0)
    h2 = _highs(max(time_limit_s - (time.perf_counter() - t0), _LP_GRACE_S), mip_rel_gap)
    _pass(h2, m, relax=True)
    h2.run()
    if h2.getModelStatus() == ms.kOptimal:
        return _result(h2, "relaxed", t0)
    if h2.getModelStatus() == ms.kInfeasible:
        return RawSolution("infeasible", np.zeros(0), float("nan"), time.perf_counter() - t0, 0)
    raise SolverTimeout(
        f"no plan within {time_limit_s:g} s (HiGHS: {h.modelStatusToString(status)})"
    )


def _result(h: highspy.Highs, status: str, t0: float) -> RawSolution:
    x = np.asarray(h.getSolution().col_value, dtype=float)
    info = h.getInfo()
    gap = float(info.mip_gap) if status != "relaxed" else 0.0
    if not np.isfinite(gap):
        gap = 0.0
    return RawSolution(
        status, x, float(info.objective_function_value), time.perf_counter() - t0, gap
    )


def solve_fixed(
    m: ModelArrays,
    x: np.ndarray,
    fixes: dict[int, tuple[float, float]],
    time_limit_s: float,
    mip_rel_gap: float,
    *,
    fix_integers: bool,
    relax: bool = False,
    start: np.ndarray | None = None,
    sub_mip: bool = True,
) -> RawSolution | None:
    """Re-solve with the columns in `fixes` within their (lo, hi); with `fix_integers` every
    integer column too, at its value in `x` (an LP), else a MIP started from nothing;
    `relax`: the LP relaxation (the integer columns left free and continuous); `start`: a
    MIP start (a plan feasible with the fixes); `sub_mip=False`: without HiGHS' sub-MIP
    heuristics. None when that is infeasible or finds no plan in time."""
    t0 = time.perf_counter()
    lb, ub, _cost, integer = m.column_arrays()
    lb2, ub2 = lb.copy(), ub.copy()
    if fix_integers and not relax:
        is_int = integer == INTEGER
        lb2[is_int] = ub2[is_int] = np.clip(np.round(x[is_int]), lb[is_int], ub[is_int])
        sc = integer == SEMI_CONTINUOUS  # on (lb..ub) or off (0), as x has it
        on = x[sc] > 1e-6
        lb2[sc] = np.where(on, lb[sc], 0.0)
        ub2[sc] = np.where(on, ub[sc], 0.0)
    for col, (lo, hi) in fixes.items():
        lb2[col], ub2[col] = lo, hi
    h = _highs(max(time_limit_s, 0.05), mip_rel_gap)
    if not sub_mip:
        for option in _SUB_MIP_HEURISTICS:
            h.setOptionValue(option, False)
    _pass(h, m, relax=fix_integers or relax)
    h.changeColsBounds(m.n_cols, np.arange(m.n_cols, dtype=np.int32), lb2, ub2)
    if start is not None:
        _set_start(h, start)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kOptimal:
        return _result(h, "optimal", t0)
    if h.getInfo().primal_solution_status == 2:
        return _result(h, "feasible", t0)
    return None


class FixedLp:
    """The LP of `m` with every integer column fixed at its value in `x` (or, `relax`, the
    LP relaxation), kept between calls: each `solve` changes some columns' bounds and
    re-solves from the last basis (a hot start: milliseconds where a new LP takes tens)."""

    def __init__(self, m: ModelArrays, x: np.ndarray, mip_rel_gap: float, relax: bool) -> None:
        lb, ub, _cost, integer = m.column_arrays()
        self.lb, self.ub = lb.copy(), ub.copy()
        if not relax:
            is_int = integer == INTEGER
            self.lb[is_int] = self.ub[is_int] = np.clip(np.round(x[is_int]), lb[is_int], ub[is_int])
            sc = integer == SEMI_CONTINUOUS  # on (lb..ub) or off (0), as x has it
            on = x[sc] > 1e-6
            self.lb[sc] = np.where(on, lb[sc], 0.0)
            self.ub[sc] = np.where(on, ub[sc], 0.0)
        self.n = m.n_cols
        self.h = _highs(1.0, mip_rel_gap)
        _pass(self.h, m, relax=True)
        self.timed_out = False

    def solve(
        self, fixes: dict[int, tuple[float, float]], time_limit_s: float
    ) -> RawSolution | None:
        """None when infeasible with `fixes` (or out of time: `timed_out`)."""
        t0 = time.perf_counter()
        lb, ub = self.lb.copy(), self.ub.copy()
        for col, (lo, hi) in fixes.items():
            lb[col], ub[col] = lo, hi
        self.h.changeColsBounds(self.n, np.arange(self.n, dtype=np.int32), lb, ub)
        self.h.setOptionValue("time_limit", max(time_limit_s, 0.01))
        self.h.run()
        status = self.h.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            return _result(self.h, "optimal", t0)
        self.timed_out = status == highspy.HighsModelStatus.kTimeLimit
        return None
