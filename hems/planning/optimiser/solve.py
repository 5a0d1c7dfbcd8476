"""Solving: hand the arrays to HiGHS' low-level API, with a time limit, a MIP gap and an
LP-relaxation fallback. Blocking; the service runs it through `asyncio.to_thread`."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import highspy
import numpy as np

from hems.errors import SolverTimeout
from hems.planning.optimiser.model import ModelArrays

_ROWWISE = 2  # HighsMatrixFormat: kColwise = 1, kRowwise = 2
_MINIMIZE = 1


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
    return h


def _pass(h: highspy.Highs, m: ModelArrays, relax: bool) -> None:
    lb, ub, cost, integer = m.column_arrays()
    start, index, value = m.csr()
    lo = np.concatenate(m.row_lo) if m.row_lo else np.zeros(0)
    hi = np.concatenate(m.row_hi) if m.row_hi else np.zeros(0)
    integrality = np.zeros_like(integer) if relax else integer
    h.passModel(
        m.n_cols, m.n_rows, int(index.size), _ROWWISE, _MINIMIZE, float(m.offset),
        cost, lb, ub, lo, hi, start, index, value, integrality.astype(np.int32),
    )  # fmt: skip


def solve_arrays(m: ModelArrays, time_limit_s: float, mip_rel_gap: float) -> RawSolution:
    t0 = time.perf_counter()
    h = _highs(time_limit_s, mip_rel_gap)
    _pass(h, m, relax=False)
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
    # No integer solution in time: the LP relaxation still gives a usable schedule.
    h2 = _highs(max(time_limit_s, 1.0), mip_rel_gap)
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
