"""The local MILP optimiser: `optimise(problem)` → `Result` with a `Plan`.

Split in three: `model` (pure builders filling numpy arrays, one per device), `solve`
(HiGHS low-level API, time limit, MIP gap, LP fallback) and `extract` (→ Plan). `checks`
explains infeasibility before the solver runs.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from hems.core.plan import Plan
from hems.errors import Infeasible
from hems.planning.optimiser.checks import _hhmm, check
from hems.planning.optimiser.extract import extract
from hems.planning.optimiser.model import Columns, build
from hems.planning.optimiser.solve import solve_arrays
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
    previous plan, whose choices are tried first where its slots overlap (warm.py)."""
    notes = check(problem)
    m, cols, frame = build(problem)
    hint = None if warm_start is None else plan_hint(problem, cols, m.n_cols, warm_start)
    raw = solve_arrays(m, time_limit_s, mip_rel_gap, hint=hint)
    if raw.status == "infeasible":
        raise _diagnose(problem, time_limit_s, mip_rel_gap)
    if raw.status == "relaxed":
        notes.append("solver: no integer solution in time; LP relaxation used (on/off rounded)")
    elif raw.status == "feasible":
        notes.append(
            f"solver: time limit hit; plan proven within {raw.mip_gap:.2%} of optimal "
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
