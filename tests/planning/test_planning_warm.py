"""Warm starts between replans: the previous plan, shifted by the elapsed slots, is the
first candidate incumbent; the result is the same plan quality as a cold solve."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from hems.planning.config import PlannerConfig
from hems.planning.optimiser import optimise
from hems.planning.optimiser.model import build
from hems.planning.optimiser.warm import plan_hint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from planner_instances import after_one_slot, instance

GAP = PlannerConfig().mip_rel_gap


def small(seed: int):
    return instance(seed, step_min=30)


def test_hint_is_the_previous_plan_shifted_by_one_slot() -> None:
    p = small(1)
    plan = optimise(p).plan
    nxt = after_one_slot(p, plan)
    _m, cols, _f = build(nxt)
    x = plan_hint(nxt, cols, _m.n_cols, plan)
    assert x is not None
    for t in range(nxt.n_slots - 1):  # slot t of the new problem is slot t+1 of the plan
        assert x[cols.grid_import[t]] == plan.slots[t + 1].grid_import_w
        assert x[cols.grid_export[t]] == plan.slots[t + 1].grid_export_w
        net = plan.slots[t + 1].targets_w["battery"]
        ch, dis, _soc = cols.battery["battery"]
        assert x[ch[t]] - x[dis[t]] == pytest.approx(net)
    last = nxt.n_slots - 1  # beyond the old horizon: unknown, left to the LP
    assert np.isnan(x[cols.grid_import[last]])


def test_a_plan_from_elsewhere_gives_no_hint() -> None:
    p = small(2)
    plan = optimise(p).plan
    later = p.model_copy(update={"start": p.start + timedelta(days=3)})
    _m, cols, _f = build(later)
    assert plan_hint(later, cols, _m.n_cols, plan) is None


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_warm_replan_is_as_good_as_a_cold_one(seed: int) -> None:
    p = small(seed)
    first = optimise(p).plan
    nxt = after_one_slot(p, first)
    cold = optimise(nxt, time_limit_s=30)
    warm = optimise(nxt, time_limit_s=30, warm_start=first)
    assert cold.plan.status == warm.plan.status == "optimal"
    slack = GAP * max(abs(cold.objective), abs(warm.objective)) + 1e-6
    assert abs(warm.objective - cold.objective) <= slack
