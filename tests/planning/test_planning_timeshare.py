"""Time-shared slots: where export pays more than import a slot may be split into an import
phase then an export phase (hems.planning.optimiser.timeshare). Every phase is checked
against the limits as the control loop would follow it (by time, `Plan.slot_at`)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hems.core.plan import Plan
from hems.planning.optimiser import optimise
from hems.planning.optimiser.model import build
from hems.planning.optimiser.solve import solve_arrays
from hems.planning.problem import BatterySpec, DeferrableLoad, EvSession, Problem

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from planner_instances import family_instance

T0 = datetime(2026, 6, 1, tzinfo=UTC)
TOL_W = 1.0  # [W] solver noise and the plan's rounding to 1 mW


def split_slots(p: Problem, plan: Plan) -> dict[int, list]:  # type: ignore[type-arg]
    """Slot index → the PlanSlots inside it (two where it is split)."""
    out: dict[int, list] = {}  # type: ignore[type-arg]
    for s in plan.slots:
        k = int((s.start - p.start).total_seconds() // p.step_s)
        out.setdefault(k, []).append(s)
    return out


def check_phases(p: Problem, plan: Plan, created_at: datetime | None = None) -> int:
    """Every PlanSlot within the hard limits, as a phase the loop follows; returns the
    number of split slots. Checks: the slots tile [created_at or start, end) without gaps,
    fuse and export cap, battery power and SoC bounds, the balance, EV 0 or within
    [min, max], `battery_to_ev` false, no phase of a split slot shorter than
    `min_phase_s`, and an import phase before an export phase."""
    imp_cap = p.series("import_cap_w")
    exp_cap = p.series("export_cap_w")
    pv, load = p.series("pv_w"), p.series("load_w")
    t = plan.slots[0].start
    # Slot 0 starts at its boundary, or, split on a mid-slot replan, at the replan.
    assert t == p.start or (t == created_at and plan.slots[0].end < p.slot_start(1))
    for s in plan.slots:
        assert abs((s.start - t).total_seconds()) < 1e-5, "slots must tile the horizon"
        t = s.end
    assert t == p.end
    n_split = 0
    for k, group in split_slots(p, plan).items():
        if len(group) == 2:
            n_split += 1
            first, second = group
            assert first.grid_export_w == 0 and second.grid_import_w == 0, "import first"
            assert min(first.duration_s, second.duration_s) >= p.min_phase_s - 1e-3
            assert p.export_price_per_kwh[k] > p.import_price_per_kwh[k]
        else:
            assert len(group) == 1
        for s in group:
            assert s.grid_import_w <= imp_cap[k] + TOL_W
            assert s.grid_export_w <= exp_cap[k] + TOL_W
            supply = pv[k] - s.pv_curtail_w + s.grid_import_w - s.grid_export_w
            assert supply == pytest.approx(load[k] + sum(s.targets_w.values()), abs=2 * TOL_W)
            discharge_w = 0.0
            for b in p.batteries:
                w = s.targets_w[b.id]
                assert -b.max_discharge_w - TOL_W <= w <= b.max_charge_w + TOL_W
                lo = min(max(b.min_soc_pct, b.reserve_pct), b.initial_soc_pct)
                hi = max(b.max_soc_pct, b.initial_soc_pct)
                assert lo - 0.01 <= s.soc_pct[b.id] <= hi + 0.01
                discharge_w += max(-w, 0.0)
            for e in p.evs:
                w = s.targets_w.get(e.id, 0.0)
                assert w <= TOL_W or e.min_power_w - TOL_W <= w <= e.max_power_w + TOL_W
            plugged = any(e.arrival <= s.start < e.departure for e in p.evs)
            if not p.battery_to_ev and plugged:
                loads_w = sum(s.targets_w.get(d.id, 0.0) for d in p.loads)
                assert discharge_w - loads_w <= load[k] + TOL_W
    return n_split


def billed_cost(plan: Plan) -> float:
    """What half-hourly settlement bills: each phase's import × import price − export ×
    export price."""
    return sum(
        (s.grid_import_w * s.price_import_per_kwh - s.grid_export_w * s.price_export_per_kwh)
        * s.duration_s
        / 3600.0
        / 1000.0
        for s in plan.slots
    )


def flat_problem(**kw: object) -> Problem:
    """12 h of 30-min slots, export at 15p above a cheap night import."""
    n = 24
    imp = [0.08 if k < 8 else 0.30 if 16 <= k < 20 else 0.18 for k in range(n)]
    base: dict[str, object] = dict(
        start=T0,
        step_min=30,
        import_price_per_kwh=imp,
        export_price_per_kwh=[0.15] * n,
        import_cap_w=60 * 230,
        export_cap_w=3680.0,
        pv_w=[0.0] * 8 + [3000.0] * 10 + [0.0] * 6,
        load_w=400.0,
        batteries=[
            BatterySpec(
                id="bat",
                capacity_wh=10000,
                initial_soc_pct=50,
                max_charge_w=5000,
                max_discharge_w=5000,
                charge_efficiency=0.95,
                discharge_efficiency=0.95,
                min_soc_pct=10,
            )
        ],
    )
    base.update(kw)
    return Problem(**base)  # type: ignore[arg-type]


# -- hand-checkable ----------------------------------------------------------------------


def test_a_slot_where_export_pays_more_is_split_import_first_and_billed_as_planned() -> None:
    # Night import at 8p, export at 15p: in each night slot the battery charges from the
    # grid for part of the slot and exports for the rest, which no whole slot can do.
    p = flat_problem()
    plan = optimise(p).plan
    n_split = check_phases(p, plan)
    assert n_split >= 1
    assert plan.status == "optimal"
    assert billed_cost(plan) == pytest.approx(plan.cost, abs=1e-5)
    whole = optimise(p.model_copy(update={"time_share": False})).plan
    assert all(s.duration_s == p.step_s for s in whole.slots)
    assert plan.cost <= whole.cost + 1e-6


def test_no_phase_is_shorter_than_the_minimum() -> None:
    # A long minimum phase (20 of 30 min) leaves no room for two: nothing is split.
    p = flat_problem(min_phase_s=20 * 60.0)
    plan = optimise(p).plan
    assert check_phases(p, plan) == 0
    # 6 min: splits, each phase at least 6 min.
    p = flat_problem(min_phase_s=360.0)
    plan = optimise(p).plan
    assert check_phases(p, plan) >= 1


def test_short_shares_are_rounded_and_re_solved(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the rounding the solver's shares include phases shorter than 60 s (slot
    # lengths × shares below one minute); the plan has none, and its gap is stated
    # against the unrounded bound.
    from hems.planning.optimiser import timeshare

    p = family_instance(4, "agile/flat15 no EV/loads")
    calls: list[dict[int, object]] = []
    real = timeshare.short_phase_options

    def spy(share, x, min_phase_s):  # type: ignore[no-untyped-def]
        out = real(share, x, min_phase_s)
        calls.append(out)
        return out

    monkeypatch.setattr("hems.planning.optimiser.short_phase_options", spy)
    result = optimise(p)
    assert calls and calls[0], "the unrounded solve has short phases on this instance"
    check_phases(p, result.plan)
    assert billed_cost(result.plan) == pytest.approx(result.plan.cost, abs=1e-4)


def test_a_mid_slot_replan_does_not_skip_the_import_phase() -> None:
    p = flat_problem()
    at_boundary = optimise(p).plan
    first = split_slots(p, at_boundary)[0]
    assert len(first) == 2, "slot 0 is split at the boundary"
    # 20 min into slot 0, its import phase (the first at_boundary.slots[0].duration_s) has
    # passed: the replan's slot 0 phases share the 10 min left, import first, from now.
    now = p.start + timedelta(minutes=20)
    plan = optimise(p, created_at=now).plan
    check_phases(p, plan, created_at=now)
    here = plan.slot_at(now)
    assert here is not None and here.start == now
    assert here.grid_import_w > 0 and here.grid_export_w == 0, "the import phase is ahead"
    group = split_slots(p, plan)[0]
    assert len(group) == 2 and group[1].end == p.slot_start(1)
    # 29.5 min in: no room for two 60 s phases, so slot 0 is one whole slot.
    late = optimise(p, created_at=p.start + timedelta(seconds=29.5 * 60)).plan
    assert late.slots[0].start == p.start and late.slots[0].duration_s == p.step_s


def test_ev_minimum_power_and_battery_kept_out_of_the_ev_per_phase() -> None:
    # PV 3 kW all day, import 10p, export 15p, the car plugged in all 12 h wanting 12 kWh:
    # split slots where the car charges in one phase only, each phase at least its 1.38 kW
    # (or off) and, kept out, the battery discharging at most the house's load while it is
    # plugged in.
    ev = EvSession(
        id="wb",
        arrival=T0,
        departure=T0 + timedelta(hours=12),
        energy_wh=12000,
        min_power_w=1380,
        max_power_w=7360,
        shortfall_penalty_per_kwh=1.0,
    )
    for battery_to_ev in (True, False):
        p = flat_problem(
            evs=[ev], battery_to_ev=battery_to_ev, import_price_per_kwh=[0.10] * 24, pv_w=3000.0
        )
        plan = optimise(p).plan
        assert check_phases(p, plan) >= 1
        one_phase = [
            g for g in split_slots(p, plan).values()
            if len(g) == 2 and (g[0].targets_w["wb"] > 1) != (g[1].targets_w["wb"] > 1)
        ]  # fmt: skip
        assert one_phase, "the car charges in one phase of a split slot"
        assert billed_cost(plan) == pytest.approx(plan.cost, abs=1e-5)


def test_warm_start_reads_split_slots() -> None:
    from hems.planning.optimiser.warm import plan_hint

    p = flat_problem()
    plan = optimise(p).plan
    assert any(s.duration_s < p.step_s for s in plan.slots)
    later = p.model_copy(
        update={
            "start": p.slot_start(1),
            "import_price_per_kwh": [*p.import_price_per_kwh[1:], 0.18],
            "export_price_per_kwh": [*p.export_price_per_kwh[1:], 0.15],
            "pv_w": [*p.series("pv_w")[1:], 0.0],
        }
    )
    m, cols, _f = build(later)
    hint = plan_hint(later, cols, m.n_cols, plan)
    assert hint is not None
    # Every slot the old plan had (split or whole) gives its grid powers, energy-averaged.
    old = split_slots(p, plan)
    for t in range(later.n_slots - 1):
        group = old[t + 1]
        imp_w = sum(s.grid_import_w * s.duration_s for s in group) / p.step_s
        assert hint[cols.grid_import[t]] == pytest.approx(imp_w, abs=1e-6)
    warm = optimise(later, warm_start=plan).plan
    check_phases(later, warm)


# -- properties --------------------------------------------------------------------------


@st.composite
def flat_problems(draw: st.DrawFn) -> Problem:
    n = 12
    imp = [draw(st.floats(-0.05, 0.35, allow_nan=False)) for _ in range(n)]
    cap_wh = draw(st.floats(3000, 12000))
    evs, loads = [], []
    if draw(st.booleans()):
        evs.append(
            EvSession(
                id="wb",
                arrival=T0 + timedelta(hours=draw(st.integers(0, 2))),
                departure=T0 + timedelta(hours=6),
                energy_wh=draw(st.floats(1000, 15000)),
                min_power_w=1380,
                max_power_w=7360,
                shortfall_penalty_per_kwh=1.0,
            )
        )
    if draw(st.booleans()):
        loads.append(
            DeferrableLoad(
                id="dw",
                power_w=1800,
                run_time_min=60,
                window_start=T0,
                window_end=T0 + timedelta(hours=6),
            )
        )
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=imp,
        export_price_per_kwh=[0.15] * n,
        import_cap_w=draw(st.sampled_from([40 * 230, 60 * 230])),
        export_cap_w=draw(st.sampled_from([2000.0, 3680.0])),
        pv_w=[draw(st.floats(0, 5000, allow_nan=False)) for _ in range(n)],
        load_w=[draw(st.floats(200, 1500, allow_nan=False)) for _ in range(n)],
        batteries=[
            BatterySpec(
                id="bat",
                capacity_wh=cap_wh,
                initial_soc_pct=draw(st.floats(10, 90)),
                max_charge_w=0.5 * cap_wh,
                max_discharge_w=0.5 * cap_wh,
                charge_efficiency=0.95,
                discharge_efficiency=0.95,
                min_soc_pct=10,
                reserve_pct=draw(st.floats(0, 30)),
                degradation_cost_per_kwh=0.02,
            )
        ],
        evs=evs,
        loads=loads,
        battery_to_ev=draw(st.booleans()),
        min_phase_s=draw(st.sampled_from([60.0, 300.0])),
    )


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(flat_problems(), st.sampled_from([0.0, 7.0, 20.0]))
def test_every_phase_keeps_the_limits_and_is_billed_as_planned(p: Problem, in_min: float) -> None:
    now = p.start + timedelta(minutes=in_min)
    plan = optimise(p, created_at=now).plan
    check_phases(p, plan, created_at=now)
    if in_min == 0.0:
        assert billed_cost(plan) == pytest.approx(plan.cost, abs=1e-5)


def exact_min_phase(p: Problem) -> float:
    """The exact optimum of the time-shared model with the minimum phase as a disjunction
    (θ = 0, θ = 1 or m <= θ <= 1 − m, m the minimum phase's share), gap 0."""
    m, cols, _f = build(p)
    share = cols.share
    if share is not None:
        k = share.slots.size
        kl = np.arange(k)
        a = m.cols(k, 0.0, 1.0, 0.0, integer=True)  # θ > 0
        c = m.cols(k, 0.0, 1.0, 0.0, integer=True)  # θ < 1
        mm = p.min_phase_s / share.length_s
        th = share.theta
        m.rows(-np.inf, 0.0, k, [(kl, th, 1.0), (kl, a, -1.0)])
        m.rows(1.0, np.inf, k, [(kl, th, 1.0), (kl, c, 1.0)])
        m.rows(-np.inf, mm, k, [(kl, th, -1.0), (kl, a, mm), (kl, c, mm)])  # θ >= m(a+c−1)
        m.rows(-np.inf, 1.0 + mm, k, [(kl, th, 1.0), (kl, a, mm), (kl, c, mm)])
    exact = solve_arrays(m, 120.0, 0.0)
    assert exact.status == "optimal"
    return exact.objective


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(flat_problems())
def test_a_proven_optimal_plan_is_never_beaten_by_an_exact_solve(p: Problem) -> None:
    result = optimise(p, time_limit_s=30.0)
    if result.plan.status != "optimal":
        return
    exact = exact_min_phase(p)
    slack = max(0.001 * abs(result.objective), 1e-6) + 1e-7
    assert result.objective - exact <= slack
    # ... nor by the whole-slot model's exact optimum (a restriction of the same model).
    whole = p.model_copy(update={"time_share": False})
    assert result.objective <= solve_arrays(build(whole)[0], 120.0, 0.0).objective + slack


def test_the_exact_minimum_phase_solve_first_models_only_the_rounded_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flat export, an instance whose rounded phases are not proven within the gap (the
    exact minimum-phase model runs): its first solve has the two binaries only in the slots
    whose phases were rounded, and the plan keeps every phase at least the minimum."""
    import hems.planning.optimiser as optimiser

    p = family_instance(7, "agile/flat15")
    m, cols, _f = build(p)
    assert cols.share is not None
    n_integer = int(np.count_nonzero(m.column_arrays()[3]))
    seen: list[int] = []
    real = optimiser.solve_fixed

    def spy(m2, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("sub_mip") is False:  # the exact minimum-phase solve
            seen.append(int(np.count_nonzero(m2.column_arrays()[3])))
        return real(m2, *args, **kwargs)

    monkeypatch.setattr(optimiser, "solve_fixed", spy)
    result = optimise(p, time_limit_s=30.0, mip_rel_gap=0.001)
    assert seen, "the exact minimum-phase model did not run"
    # two binaries per rounded slot, far fewer than two per shared slot
    assert n_integer < seen[0] < n_integer + cols.share.slots.size
    assert result.plan.status == "optimal"
    assert min(s.duration_s for s in result.plan.slots) >= p.min_phase_s - 1e-6
