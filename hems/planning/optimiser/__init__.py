"""The local MILP optimiser: `optimise(problem)` → `Result` with a `Plan`.

Split in three: `model` (pure builders filling numpy arrays, one per device), `solve`
(HiGHS low-level API, time limit, MIP gap, LP fallback) and `extract` (→ Plan). `checks`
explains infeasibility before the solver runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hems.core.plan import Plan
from hems.errors import Infeasible
from hems.planning.optimiser.checks import check
from hems.planning.optimiser.extract import extract
from hems.planning.optimiser.model import build
from hems.planning.optimiser.solve import solve_arrays
from hems.planning.problem import Problem

__all__ = ["Result", "optimise"]


@dataclass(frozen=True, slots=True)
class Result:
    plan: Plan
    objective: float  # energy cost + penalties − terminal value [currency]
    solve_time_s: float
    n_cols: int
    n_rows: int
    n_integer: int


def optimise(
    problem: Problem,
    *,
    time_limit_s: float = 5.0,
    mip_rel_gap: float = 0.005,
    created_at: datetime | None = None,
) -> Result:
    """Solve `problem`. Raises `Infeasible(field, reason)` naming the input at fault,
    `SolverTimeout` when not even the LP relaxation finished. Blocking (run in a thread)."""
    notes = check(problem)
    m, cols, frame = build(problem)
    raw = solve_arrays(m, time_limit_s, mip_rel_gap)
    if raw.status == "infeasible":
        raise _diagnose(problem, time_limit_s, mip_rel_gap)
    if raw.status == "relaxed":
        notes.append("solver: no integer solution in time; LP relaxation used (on/off rounded)")
    elif raw.status == "feasible":
        notes.append(f"solver: time limit hit, plan within {raw.mip_gap:.1%} of optimal")
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
    return Result(plan, raw.objective, raw.solve_time_s, m.n_cols, m.n_rows, int(integer.sum()))


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
