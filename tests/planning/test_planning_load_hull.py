"""The deferrable loads' slot hull (model.add_load_hull): valid for every integer plan (the
exact optimum does not move), never a weaker relaxation, and where the plain relaxation
runs half a load in each of two slots to soak up surplus PV it closes the whole root gap,
so the LP-and-round heuristic proves the plan without branch and bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hems.planning.optimiser import optimise, solve
from hems.planning.optimiser.model import add_load_hull, build
from hems.planning.optimiser.solve import _highs, _pass, solve_arrays
from hems.planning.problem import BatterySpec, DeferrableLoad, EvSession, Problem

T0 = datetime(2026, 6, 1, tzinfo=UTC)
N = 12  # 30-min slots


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def relaxation(m) -> float:  # type: ignore[no-untyped-def]
    h = _highs(30.0, 0.0)
    _pass(h, m, relax=True)
    h.run()
    return float(h.getInfo().objective_function_value)


def with_hull_everywhere(p: Problem):  # type: ignore[no-untyped-def]
    m, cols, f = build(p)
    add_load_hull(
        m, f, cols, {j: np.arange(s.size) for j, (_i, s, _o, _p) in enumerate(cols.loads)}
    )
    return m


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    imp = [draw(st.floats(-0.05, 0.45, allow_nan=False)) for _ in range(N)]
    flat = draw(st.booleans())
    exp = [0.15] * N if flat else [round(0.55 * p - 0.01, 4) if p > 0 else p for p in imp]
    cap_wh = draw(st.floats(2000, 8000))
    battery = BatterySpec(
        id="battery",
        capacity_wh=cap_wh,
        initial_soc_pct=draw(st.floats(10, 90)),
        max_charge_w=0.4 * cap_wh,
        max_discharge_w=0.4 * cap_wh,
        charge_efficiency=0.95,
        discharge_efficiency=0.95,
        min_soc_pct=10,
        degradation_cost_per_kwh=0.02,
    )
    evs = []
    if draw(st.booleans()):
        evs.append(
            EvSession(
                id="wallbox",
                arrival=at(1),
                departure=at(5),
                energy_wh=draw(st.floats(1000, 10000)),
                min_power_w=6 * 230,
                max_power_w=32 * 230,
                shortfall_penalty_per_kwh=1.0,
            )
        )
    loads = [
        DeferrableLoad(
            id="dishwasher",
            power_w=1800,
            run_time_min=60,
            window_start=at(0),
            window_end=at(4),
            contiguous=True,
        ),
        DeferrableLoad(
            id="immersion",
            power_w=3000,
            run_time_min=draw(st.sampled_from([30, 60, 90])),
            window_start=at(1),
            window_end=at(6),
            min_on_min=draw(st.sampled_from([0, 30, 60])),
        ),
    ]
    loads[1] = loads[1].model_copy(
        update={"min_on_min": min(loads[1].min_on_min, loads[1].run_time_min)}
    )
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=imp,
        export_price_per_kwh=exp,
        import_cap_w=draw(st.sampled_from([40 * 230, 60 * 230])),
        export_cap_w=draw(st.sampled_from([2000.0, 3680.0])),
        pv_w=[draw(st.floats(0, 5000, allow_nan=False)) for _ in range(N)],
        load_w=[draw(st.floats(200, 1500, allow_nan=False)) for _ in range(N)],
        batteries=[battery],
        evs=evs,
        loads=loads,
        time_share=draw(st.booleans()),
    )


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(problems())
def test_the_hull_keeps_the_optimum_and_never_loosens_the_relaxation(p: Problem) -> None:
    plain, hull = build(p)[0], with_hull_everywhere(p)
    exact = solve_arrays(plain, 60.0, 0.0, round_first=False)
    exact_hull = solve_arrays(hull, 60.0, 0.0, round_first=False)
    assert exact.status == exact_hull.status == "optimal"
    assert exact_hull.objective == pytest.approx(exact.objective, abs=1e-6)
    assert relaxation(hull) >= relaxation(plain) - 1e-7


def surplus_problem() -> Problem:
    """Two slots of 1.5 kW surplus PV, a 3 kW load for one slot: the plain relaxation runs
    half of it in each (no import, no export), a whole slot imports 1.5 kW."""
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=[0.30] * 4,
        export_price_per_kwh=[0.05] * 4,
        import_cap_w=60 * 230,
        export_cap_w=3680,
        pv_w=[1700, 1700, 0, 0],
        load_w=[200] * 4,
        loads=[
            DeferrableLoad(
                id="immersion", power_w=3000, run_time_min=30, window_start=at(0), window_end=at(2)
            )
        ],
    )


def test_the_hull_closes_the_gap_of_a_load_soaking_up_surplus_pv() -> None:
    p = surplus_problem()
    exact = solve_arrays(build(p)[0], 30.0, 0.0, round_first=False).objective
    # import 0.75 kWh at 0.30 in the slot it runs, export 0.75 kWh at 0.05 in the other,
    # the base load of the last two slots (0.2 kWh at 0.30)
    assert exact == pytest.approx(0.225 - 0.0375 + 0.06, abs=1e-4)
    # half a load in each sunny slot: neither import nor export there
    assert relaxation(build(p)[0]) == pytest.approx(0.06, abs=1e-4)
    assert relaxation(with_hull_everywhere(p)) == pytest.approx(exact, abs=1e-6)


def test_the_optimiser_proves_it_without_branch_and_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_branching(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("branch and bound was needed")

    monkeypatch.setattr(solve, "_neighbourhood", no_branching)
    result = optimise(surplus_problem(), mip_rel_gap=0.001)
    assert result.plan.status == "optimal"
    assert result.objective == pytest.approx(0.2475, abs=1e-4)
    on = [s.switches["immersion"] for s in result.plan.slots[:2]]
    assert sorted(on) == [False, True]
