"""Turn-up events: a soft floor on net import (FlexConstraint.import_floor_w, problem v2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hems.errors import Infeasible
from hems.planning.optimiser import optimise
from hems.planning.problem import (
    PROBLEM_VERSION,
    BatterySpec,
    FlexConstraint,
    Problem,
    problem_json_schema,
)
from hems.store.db import Database

T0 = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def battery(**kw: object) -> BatterySpec:
    base: dict[str, object] = dict(
        id="bat", capacity_wh=10000, initial_soc_pct=20, max_charge_w=3000,
        max_discharge_w=3000, charge_efficiency=1.0, discharge_efficiency=1.0,
        terminal_value_per_kwh=0.0,
    )  # fmt: skip
    base.update(kw)
    return BatterySpec(**base)  # type: ignore[arg-type]


def problem(floor_w: float, penalty: float | None = 10.0, **kw: object) -> Problem:
    base: dict[str, object] = dict(
        start=T0,
        step_min=30,
        import_price_per_kwh=[0.20, 0.20, 0.20, 0.20],
        export_price_per_kwh=[0.05] * 4,
        load_w=500.0,
        pv_w=[0.0, 2000.0, 0.0, 0.0],
        batteries=[battery()],
        events=[
            FlexConstraint(
                start=at(0.5),
                end=at(1),
                import_floor_w=floor_w,
                import_floor_penalty_per_kwh=penalty,
            )
        ],
    )
    base.update(kw)
    return Problem(**base)  # type: ignore[arg-type]


def test_turn_up_floor_is_met_by_charging_and_curtailing() -> None:
    # Slot 1 has 2000 W of PV over a 500 W load: normally 1500 W would go to the battery or
    # the grid. The aggregator wants 2500 W net import: charge at full power and use only
    # 1000 W of the PV (500 + 3000 − 1000 = 2500).
    plan = optimise(problem(2500.0)).plan
    s = plan.slots[1]
    assert s.grid_import_w - s.grid_export_w == pytest.approx(2500.0, abs=1e-3)
    assert s.targets_w["bat"] == pytest.approx(3000.0, abs=1e-3)
    assert s.pv_curtail_w == pytest.approx(1000.0, abs=1e-3)
    assert plan.status == "optimal"
    assert not any("turn-up" in n for n in plan.notes)


def test_unreachable_floor_is_soft_and_explained() -> None:
    # At most 500 W load + 3000 W battery can be taken in: 6000 W is out of reach.
    plan = optimise(problem(6000.0)).plan
    s = plan.slots[1]
    assert s.grid_import_w == pytest.approx(3500.0, abs=1e-3)
    assert plan.status == "optimal"
    assert plan.notes == (
        "events: the turn-up import floor cannot be met in 1 slot(s) between 12:30 and 13:00 "
        "(1.25 kWh short): nothing more can be switched on or charged then; the plan imports "
        "as much as it can",
    )
    # The energy cost excludes the penalty; the objective includes it (2.5 kW × 0.5 h × 10).
    result = optimise(problem(6000.0))
    assert result.objective - plan.cost == pytest.approx(12.5, abs=0.01)


def test_hard_floor_out_of_reach_names_the_events() -> None:
    with pytest.raises(Infeasible) as exc:
        optimise(problem(6000.0, penalty=None))
    assert exc.value.field == "events"


def test_a_full_battery_does_not_burn_energy_to_import_more() -> None:
    # Full battery in the event's slot (the first), lossy: charging and discharging at once
    # would lift import through the losses (by up to 3000 × (1 − 0.81) W), which one battery
    # setpoint cannot do. It must stay idle: import is the 500 W load, the floor is missed.
    lossy = battery(initial_soc_pct=100, charge_efficiency=0.9, discharge_efficiency=0.9)
    event = FlexConstraint(start=T0, end=at(0.5), import_floor_w=2000.0)
    plan = optimise(problem(0.0, batteries=[lossy], pv_w=0.0, events=[event])).plan
    s = plan.slots[0]
    assert s.targets_w["bat"] == 0.0
    assert s.soc_pct["bat"] == pytest.approx(100.0)
    assert s.grid_import_w == pytest.approx(500.0, abs=1e-3)
    assert any("turn-up import floor cannot be met in 1 slot(s)" in n for n in plan.notes)


def test_negative_floor_means_export_at_most() -> None:
    # PV 2000 W over 500 W load; export at most 500 W (floor −500): the battery takes the rest.
    plan = optimise(problem(-500.0, batteries=[battery(max_charge_w=800)])).plan
    s = plan.slots[1]
    assert s.grid_export_w == pytest.approx(500.0, abs=1e-3)
    assert s.targets_w["bat"] == pytest.approx(800.0, abs=1e-3)
    assert s.pv_curtail_w == pytest.approx(200.0, abs=1e-3)


def test_problem_version_2_and_schema() -> None:
    p = problem(2500.0)
    assert p.version == PROBLEM_VERSION >= 2
    again = Problem.model_validate_json(p.model_dump_json())
    assert again == p
    # A version-1 document still loads, but cannot carry a turn-up floor.
    v1 = json.loads(p.model_dump_json())
    v1["version"] = 1
    v1["events"] = []
    assert Problem.model_validate(v1).version == 1
    v1["events"] = [{"start": at(0.5).isoformat(), "end": at(1).isoformat(),
                     "import_floor_w": 100.0}]  # fmt: skip
    with pytest.raises(ValueError, match=r"events\[0\].import_floor_w: needs problem version 2"):
        Problem.model_validate(v1)
    schema = problem_json_schema()
    assert schema["$id"].endswith(f"problem-v{PROBLEM_VERSION}.json")
    flex = schema["$defs"]["FlexConstraint"]["properties"]
    assert "import_floor_w" in flex and "import_floor_penalty_per_kwh" in flex
    with pytest.raises(ValueError, match="import_floor_w"):
        FlexConstraint(start=T0, end=at(1), import_floor_w=float("inf"))


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


async def test_flex_link_hands_a_turn_up_event_to_the_planner(replay, db) -> None:  # type: ignore[no-untyped-def]
    """An accepted turn-up event (setpoint >= 0) reaches PlannerService as a net-import floor
    (its FlexInstruction through hems.app.links.FlexLink); a turn-down one as an import cap."""
    import httpx
    from test_planning_service import planner_cfg

    from hems.app.links import FlexLink
    from hems.core.clock import ManualClock
    from hems.core.site import LimitsConfig
    from hems.core.state import SiteState
    from hems.flex.events import FlexEvent, instruction_for
    from hems.planning.service import PlannerService

    now = datetime(2026, 11, 27, 16, 5, tzinfo=UTC)
    clock = ManualClock(now)
    state = SiteState(clock, stale_after_s=3600)
    up = FlexEvent.from_mapping(
        dict(event_id="wind-7", modification_number=0, kind="turn_up", setpoint_w=4000.0,
             start="2026-11-27T17:00:00+00:00", end="2026-11-27T18:00:00+00:00")
    )  # fmt: skip
    down = FlexEvent.from_mapping(
        dict(event_id="dfs-1", modification_number=0, kind="turn_down", setpoint_w=1500.0,
             start="2026-11-27T19:00:00+00:00", end="2026-11-27T19:30:00+00:00")
    )  # fmt: skip
    async with httpx.AsyncClient() as http:
        svc = PlannerService(planner_cfg(replay.base_url), LimitsConfig(), state, db, clock, http)
        instructions = [instruction_for(up), instruction_for(down)]
        await FlexLink(clock, svc, None).on_change([i for i in instructions if i is not None])
        plan = await svc.plan_once("test")
    assert plan is not None and svc.last_problem is not None
    events = {e.id: e for e in svc.last_problem.events}
    assert events["wind-7"].import_floor_w == 4000.0 and events["wind-7"].import_cap_w is None
    assert events["dfs-1"].import_cap_w == 1500.0 and events["dfs-1"].import_floor_w is None
    by_start = {s.start: s for s in plan.slots}
    for t in (
        datetime(2026, 11, 27, 17, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 17, 30, tzinfo=UTC),
    ):
        s = by_start[t]
        met = s.grid_import_w - s.grid_export_w >= 4000.0 - 1e-3
        assert met or any("turn-up import floor" in n for n in plan.notes)
    assert by_start[datetime(2026, 11, 27, 19, 0, tzinfo=UTC)].grid_import_w <= 1500.0 + 1e-3
