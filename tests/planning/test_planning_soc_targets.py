"""Battery SoC targets: a SoC by a time, a minimum SoC per window and a pinned end SoC,
from the planner config (validated, errors naming the field) through the builder into the
model, where they are soft: met whenever they can be, else a note names the target and the
plan is kept."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hems.config import ConfigErrors, load_config
from hems.core.site import LimitsConfig
from hems.planning.builder import ProblemInputs, build_problem
from hems.planning.config import BatteryPlanConfig, PlannerConfig, SocTargetConfig
from hems.planning.optimiser import optimise
from hems.planning.problem import BatterySpec, Problem, SocTarget

LONDON = ZoneInfo("Europe/London")
T0 = datetime(2026, 6, 1, tzinfo=UTC)

CONFIG = """\
site: {id: demo, timezone: Europe/London}
planner:
  enabled: true
  soc_targets:
%s
devices:
  - {type: sunspec, id: bat, role: battery, host: 10.0.0.5,
     battery: {capacity_wh: 9500, max_charge_w: 3000, max_discharge_w: 3000}}
"""


def load(tmp_path: Path, targets: str) -> PlannerConfig:
    f = tmp_path / "c.yaml"
    f.write_text(CONFIG % targets)
    return load_config(f).planner_config()


def test_config_takes_the_three_kinds(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        '    - {device_id: bat, soc_pct: 80, by: "16:00"}\n'
        '    - {device_id: bat, min_soc_pct: 50, start: "16:00", end: "19:00"}\n'
        "    - {device_id: bat, end_soc_pct: 40}",
    )
    assert [t.soc_pct for t in cfg.soc_targets] == [80, None, None]
    assert cfg.soc_targets[1].min_soc_pct == 50 and cfg.soc_targets[2].end_soc_pct == 40


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (
            "    - {device_id: bat, soc_pct: 80}",
            "planner.soc_targets[0].by: needed with the other",
        ),
        (
            '    - {device_id: bat, soc_pct: 80, by: "16:00", end_soc_pct: 50}',
            "planner.soc_targets[0]: give exactly one of",
        ),
        (
            '    - {device_id: bat, min_soc_pct: 50, start: "16:00"}',
            "planner.soc_targets[0].end: needed with min_soc_pct",
        ),
        ('    - {device_id: bat, soc_pct: 120, by: "16:00"}', "planner.soc_targets[0].soc_pct:"),
        ('    - {device_id: bat, soc_pct: 80, by: "4pm"}', "planner.soc_targets[0].by:"),
        (
            '    - {device_id: car, soc_pct: 80, by: "16:00"}',
            "planner.soc_targets[0].device_id: 'car' is not a planned battery",
        ),
    ],
)
def test_bad_targets_name_the_field(tmp_path: Path, targets: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as exc:
        load(tmp_path, targets)
    assert any(p.startswith(expected) for p in exc.value.problems), exc.value.problems


def test_with_assets_refuses_a_target_for_an_unplanned_battery() -> None:
    cfg = PlannerConfig(soc_targets=[SocTargetConfig(device_id="x", end_soc_pct=50)])
    with pytest.raises(ValueError, match=r"soc_targets\[0\].device_id: 'x'"):
        cfg.with_assets([])


# -- builder ---------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 17, 5, tzinfo=UTC)  # 17:05 London (GMT)
START = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
N = 48
BATTERY = BatteryPlanConfig(
    device_id="bat", capacity_wh=9500, max_charge_w=3600, max_discharge_w=3600
)


def inputs(*targets: SocTargetConfig) -> ProblemInputs:
    return ProblemInputs(
        now=NOW,
        start=START,
        n_slots=N,
        step_min=30,
        import_price_per_kwh=(0.25,) * N,
        export_price_per_kwh=(0.15,) * N,
        pv_w=(0.0,) * N,
        load_w=(400.0,) * N,
        input_notes=(),
        limits=LimitsConfig(fuse_a=60, export_limit_w=3680),
        zone=LONDON,
        batteries=(BATTERY,),
        battery_soc_pct={"bat": 40.0},
        soc_targets=targets,
    )


def test_builder_places_targets_at_their_next_local_times() -> None:
    problem, _ = build_problem(
        inputs(
            SocTargetConfig(device_id="bat", soc_pct=80, by="16:00"),  # tomorrow 16:00
            # open now (17:05 is inside 16:00..19:00): from the start of the horizon
            SocTargetConfig(device_id="bat", min_soc_pct=50, start="16:00", end="19:00"),
            SocTargetConfig(device_id="bat", end_soc_pct=30, penalty_per_kwh=3),
        )
    )
    (b,) = problem.batteries
    by, window = b.soc_targets
    assert by.at == datetime(2026, 11, 28, 16, 0, tzinfo=UTC) and by.soc_pct == 80
    assert by.name == "planner.soc_targets[0]"
    assert (window.at, window.until) == (START, datetime(2026, 11, 27, 19, 0, tzinfo=UTC))
    assert b.end_soc_pct == 30 and b.end_soc_penalty_per_kwh == 3
    assert problem.version == 3


def test_a_target_beyond_the_horizon_is_left_to_a_later_plan() -> None:
    short = replace(inputs(SocTargetConfig(device_id="bat", soc_pct=80, by="16:00")), n_slots=8)
    short = replace(
        short,
        import_price_per_kwh=(0.25,) * 8,
        export_price_per_kwh=(0.15,) * 8,
        pv_w=(0.0,) * 8,
        load_w=(400.0,) * 8,
    )
    problem, _ = build_problem(short)
    assert problem.batteries[0].soc_targets == []


def test_a_problem_before_version_3_cannot_carry_targets() -> None:
    b = BatterySpec(
        id="b", capacity_wh=5000, initial_soc_pct=50, max_charge_w=1, max_discharge_w=1,
        end_soc_pct=50,
    )  # fmt: skip
    with pytest.raises(
        ValidationError, match=r"batteries\[0\].soc_targets: needs problem version 3"
    ):
        Problem(
            version=2, start=T0, import_price_per_kwh=[0.1], export_price_per_kwh=[0.0],
            batteries=[b],
        )  # fmt: skip


# -- model -------------------------------------------------------------------------------


def problem(battery: BatterySpec, n: int = 16, imp: list[float] | None = None) -> Problem:
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=imp or [0.3] * n,
        export_price_per_kwh=[0.05] * n,
        load_w=500,
        batteries=[battery],
    )


def battery(**kw: object) -> BatterySpec:
    base = {
        "id": "bat",
        "capacity_wh": 10000,
        "initial_soc_pct": 20,
        "max_charge_w": 3000,
        "max_discharge_w": 3000,
    }
    return BatterySpec(**{**base, **kw})  # type: ignore[arg-type]


def test_expensive_power_is_still_bought_to_meet_a_target() -> None:
    # Without the target the plan would only discharge (import costs 0.3, nothing to gain).
    plan = optimise(
        problem(battery(soc_targets=[SocTarget(at=T0 + timedelta(hours=3), soc_pct=80)]))
    ).plan
    assert plan.slots[5].soc_pct["bat"] >= 80 - 1e-6  # the slot ending 03:00
    assert plan.notes == ()


def test_window_floor_and_end_pin_are_kept() -> None:
    window = SocTarget(at=T0 + timedelta(hours=5), until=T0 + timedelta(hours=7), soc_pct=50)
    plan = optimise(problem(battery(initial_soc_pct=90, soc_targets=[window], end_soc_pct=30))).plan
    for k in range(9, 14):  # slots ending 05:00 … 07:00
        assert plan.slots[k].soc_pct["bat"] >= 50 - 1e-6
    assert plan.slots[-1].soc_pct["bat"] == pytest.approx(30, abs=1e-3)


def test_an_unreachable_target_is_a_note_naming_it_and_the_plan_is_kept() -> None:
    target = SocTarget(at=T0 + timedelta(hours=1), soc_pct=90, name="planner.soc_targets[0]")
    result = optimise(problem(battery(soc_targets=[target], end_soc_pct=100, max_soc_pct=95)))
    plan = result.plan
    assert plan.status == "optimal"
    assert plan.slots[1].soc_pct["bat"] == pytest.approx(20 + 2 * 3000 * 0.5 * 0.95 / 100, abs=1e-3)
    (note_target, note_end) = plan.notes
    assert note_target.startswith(
        "batteries[0].soc_targets[0] (planner.soc_targets[0]): 90% by 01:00 cannot be reached"
    )
    assert "reaches 48% at 01:00" in note_target
    assert note_end == (
        "batteries[0].end_soc_pct: 100% at the end cannot be reached; the plan ends at 95%"
    )


N_SLOTS = 12


@st.composite
def reachable(draw: st.DrawFn) -> Problem:
    """Targets below the trajectory that charges at full power from the start (capped at
    max SoC), which the grid can always supply here: so every one of them can be met."""
    cap_wh = draw(st.floats(3000, 15000))
    charge_w = draw(st.floats(500, 5000))
    soc0 = draw(st.floats(10, 90))
    max_soc = draw(st.floats(max(soc0, 60), 100))
    path = [
        min(max_soc, soc0 + 0.95 * charge_w * 0.5 * (k + 1) / cap_wh * 100) for k in range(N_SLOTS)
    ]
    targets = []
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.integers(0, N_SLOTS - 1))
        at = T0 + timedelta(minutes=30 * (k + 1))
        if draw(st.booleans()):
            until_k = draw(st.integers(k, N_SLOTS - 1))
            floor = min(path[k], draw(st.floats(0, 100)))
            targets.append(
                SocTarget(at=at, until=T0 + timedelta(minutes=30 * (until_k + 1)), soc_pct=floor)
            )
        else:
            targets.append(SocTarget(at=at, soc_pct=min(path[k], draw(st.floats(0, 100)))))
    end = path[-1] if draw(st.booleans()) else None
    imp = [draw(st.floats(-0.1, 0.5)) for _ in range(N_SLOTS)]
    b = BatterySpec(
        id="bat",
        capacity_wh=cap_wh,
        initial_soc_pct=soc0,
        max_charge_w=charge_w,
        max_discharge_w=draw(st.floats(500, 5000)),
        max_soc_pct=max_soc,
        degradation_cost_per_kwh=0.02,
        soc_targets=targets,
        end_soc_pct=end,
    )
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=imp,
        export_price_per_kwh=[min(p, draw(st.floats(-0.1, 0.3))) for p in imp],
        pv_w=[draw(st.floats(0, 4000)) for _ in range(N_SLOTS)],
        load_w=[draw(st.floats(100, 2000)) for _ in range(N_SLOTS)],
        batteries=[b],
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reachable())
def test_every_reachable_bound_is_met(p: Problem) -> None:
    plan = optimise(p, time_limit_s=30).plan
    b = p.batteries[0]
    soc = [s.soc_pct["bat"] for s in plan.slots]
    tol = 1e-3  # [%] the plan's rounding
    for t in b.soc_targets:
        k_at = round((t.at - T0).total_seconds() / 1800) - 1
        k_end = k_at if t.until is None else round((t.until - T0).total_seconds() / 1800) - 1
        for k in range(k_at, k_end + 1):
            assert soc[k] >= t.soc_pct - tol, (t, k, soc)
    if b.end_soc_pct is not None:
        assert soc[-1] == pytest.approx(b.end_soc_pct, abs=tol)
    assert not [n for n in plan.notes if "cannot be reached" in n]
