"""LP-and-round: a primal heuristic that often proves optimality without branch and bound.

On these models the LP relaxation's bound is almost always within the MIP gap of the
optimum (measured: on every benchmark instance the root node closes the gap), and HiGHS
spends most of its time finding an incumbent (sub-MIPs at the root). So: solve the LP
relaxation, round its integer columns by each group's own rule (`model.Rounding`), fix them
and re-solve the LP over the continuous columns (a hot start from the relaxation's basis).
That plan is feasible for the MIP; when its cost is within the gap tolerance of the LP bound
it is as good as what HiGHS would return (same criterion: |cost − bound| <= gap·|cost|), and
we are done. Otherwise it seeds HiGHS as its first incumbent.
"""

from __future__ import annotations

import numpy as np

from hems.planning.optimiser.model import INTEGER, SEMI_CONTINUOUS, ModelArrays, Rounding


def _runs_ok(on: np.ndarray, min_on: int) -> bool:
    edges = np.diff(np.concatenate(([0], on.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return bool(np.all(ends - starts >= min_on))


def _blocks(values: np.ndarray, need: int, min_on: int) -> np.ndarray | None:
    """`need` ones in runs of at least `min_on`, maximising the sum of `values` over them.

    The `need` largest values first (exact when the LP is integral there); if that breaks a
    run, a dynamic programme over (slot, ones so far, current run length capped at min_on).
    """
    n = values.size
    if need <= 0:
        return np.zeros(n, dtype=bool)
    if need > n:
        return None
    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(-values, kind="stable")[:need]] = True
    if min_on <= 1 or _runs_ok(chosen, min_on):
        return chosen
    neg = -np.inf
    best = np.full((min_on + 1, need + 1), neg)  # [run length, ones] -> best value
    best[0, 0] = 0.0
    history = np.empty((n, min_on + 1, need + 1))
    for k in range(n):
        v = values[k]
        new = np.full_like(best, neg)
        new[0] = np.maximum(best[0], best[min_on])
        new[1, 1:] = best[0, :-1] + v
        for r in range(2, min_on + 1):
            new[r, 1:] = best[r - 1, :-1] + v
        new[min_on, 1:] = np.maximum(new[min_on, 1:], best[min_on, :-1] + v)
        if min_on == 1:
            new[1, 1:] = np.maximum(best[0, :-1], best[1, :-1]) + v
        best = new
        history[k] = best
    end = (0, need) if best[0, need] >= best[min_on, need] else (min_on, need)
    if not np.isfinite(best[end]):
        return None
    r, c = end
    out = np.zeros(n, dtype=bool)
    for k in range(n - 1, -1, -1):
        prev = history[k - 1] if k else None
        if r == 0:
            if prev is not None and prev[min_on, c] > prev[0, c]:
                r = min_on
            continue
        out[k] = True
        c -= 1
        if r == min_on and prev is not None and prev[min_on, c] >= prev[min_on - 1, c]:
            r = min_on
        else:
            r -= 1
    return out


def _value(x: np.ndarray, a: np.ndarray, minus: np.ndarray | None) -> np.ndarray:
    return x[a] if minus is None else x[a] - x[minus]


def _apply(rule: Rounding, x: np.ndarray, dual: np.ndarray | None, fixed: np.ndarray) -> bool:
    if rule.kind == "prefer":
        assert rule.a is not None and rule.b is not None
        fixed[rule.cols] = _value(x, rule.a, rule.a_minus) >= _value(x, rule.b, rule.b_minus)
    elif rule.kind == "on_if":
        # Any power at all: on (min..max); the re-solve moves energy between on-slots.
        assert rule.a is not None
        fixed[rule.cols] = (_value(x, rule.a, rule.a_minus) > 1e-6).astype(float)
    elif rule.kind == "one_of":
        fixed[rule.cols] = 0.0
        if rule.cols.size:
            fixed[rule.cols[int(np.argmax(x[rule.cols]))]] = 1.0
    else:
        values = x[rule.cols]
        if dual is not None and rule.rows is not None:
            # −(marginal cost of the load's energy in the slot); the LP value breaks ties.
            values = -dual[rule.rows] * rule.power_w + 1e-9 * values
        on = _blocks(values, rule.need, rule.min_on)
        if on is None:
            return False
        fixed[rule.cols] = on.astype(float)
    return True


def rounded_bounds(
    m: ModelArrays,
    x: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    integer: np.ndarray,
    dual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Column bounds with every integer column fixed and every semi-continuous column either
    off (0) or on (lb..ub); None when a rule finds no rounding. With `dual` (the LP's row
    duals), block loads go where the marginal price is lowest instead of where the LP put
    them."""
    fixed = np.round(x)  # the default rule, for integer columns no group claims
    for rule in m.rounding:
        if not _apply(rule, x, dual, fixed):
            return None
    lb2, ub2 = lb.copy(), ub.copy()
    is_int = integer == INTEGER
    lb2[is_int] = ub2[is_int] = np.clip(fixed[is_int], lb[is_int], ub[is_int])
    sc = integer == SEMI_CONTINUOUS
    # Any power at all: on (min..max); the re-solve moves energy between on-slots.
    on = x[sc] > 1e-6
    lb2[sc] = np.where(on, lb[sc], 0.0)
    ub2[sc] = np.where(on, ub[sc], 0.0)
    return lb2, ub2
