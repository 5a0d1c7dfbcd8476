"""Turn-up events: a net-import floor instruction (a soft floor in the planner); turn-up
offers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from hems.errors import Infeasible
from hems.flex.events import FlexEvent, build_offers, instruction_for
from hems.planning.flex import add_cap, add_floor, constraint_for
from hems.planning.optimiser import optimise
from hems.planning.problem import BatterySpec, Problem

START = datetime(2024, 1, 31, 17, tzinfo=UTC)
END = datetime(2024, 1, 31, 18, tzinfo=UTC)


def ev(**kw: object) -> FlexEvent:
    base: dict[str, object] = dict(event_id="wind-1", modification_number=2, kind="turn_up",
                                   start=START.isoformat(), end=END.isoformat())  # fmt: skip
    base.update(kw)
    return FlexEvent.from_mapping(base)


def test_turn_up_setpoint_becomes_a_soft_import_floor() -> None:
    i = instruction_for(ev(setpoint_w=3000.0))
    assert i is not None and (i.event_id, i.modification) == ("wind-1", 2)
    assert i.turn_up_floor_w == 3000.0 and i.import_cap_w is None and i.export_floor_w is None
    assert i.kind == "turn-up"
    c = constraint_for(i)
    assert c is not None and c.id == "wind-1" and c.import_floor_w == 3000.0
    assert c.import_floor_penalty_per_kwh == 10.0  # soft
    # A negative turn-up setpoint: export at most 1000 W.
    i = instruction_for(ev(setpoint_w=-1000.0))
    assert i is not None and i.turn_up_floor_w == -1000.0 and i.export_floor_w is None
    # The same setpoints in a turn-down event keep their old meaning.
    i = instruction_for(ev(kind="turn_down", setpoint_w=3000.0))
    assert i is not None and i.import_cap_w == 3000.0 and i.turn_up_floor_w is None
    i = instruction_for(ev(kind="turn_down", setpoint_w=-1000.0))
    assert i is not None and i.export_floor_w == 1000.0 and i.turn_up_floor_w is None
    # Price-only turn-up: a price, no constraint.
    i = instruction_for(ev(price_per_kwh=-0.05))
    assert i is not None and i.price_per_kwh == -0.05 and constraint_for(i) is None


def offer_problem() -> Problem:
    return Problem(
        start=datetime(2024, 1, 31, 16, tzinfo=UTC), step_min=30,
        import_price_per_kwh=[0.2, 0.3, 0.4, 0.3, 0.2, 0.2], export_price_per_kwh=[0.05] * 6,
        load_w=2000.0, import_cap_w=8000,
        batteries=[BatterySpec(id="bat", capacity_wh=4000, initial_soc_pct=50,
                               max_charge_w=3000, max_discharge_w=3000)],
    )  # fmt: skip


def test_turn_up_offers_from_re_solving_with_a_floor() -> None:
    problem = offer_problem()
    base = optimise(problem).plan
    imp = {s.start: s.grid_import_w for s in base.slots}
    exp = {s.start: s.grid_export_w for s in base.slots}
    t16, t1630 = problem.start, problem.start + timedelta(minutes=30)
    # The plan charges the battery flat out at 16:00 (5000 W import) and discharges 2000 W
    # at 16:30 (no import).
    assert imp[t16] == pytest.approx(5000.0) and imp[t1630] == pytest.approx(0.0)
    periods = [(t16, t1630), (t1630, t1630 + timedelta(minutes=30))]
    offers = build_offers(problem, imp, periods, lambda p: optimise(p).objective,
                          [1000.0, 3000.0, 6000.0], add_cap, add_floor=add_floor,
                          expected_export_w=exp)  # fmt: skip
    at16, at1630 = offers
    # 16:00: the battery already charges at its limit: nothing more can be taken in.
    assert at16.turn_up_w == 0.0 and at16.turn_up_cost is None
    # 16:30: 3000 W more is possible (discharge 2000 → charge 1000), 6000 W is not (the
    # battery's 3000 W limit). Importing at 0.30 instead of discharging costs money.
    assert at1630.turn_up_w == 3000.0
    assert at1630.turn_up_cost is not None and at1630.turn_up_cost > 0
    assert at1630.turn_down_w == 0.0  # nothing imported there to turn down
    out = json.loads(json.dumps(at1630.to_json()))
    assert out["turn_up_w"] == 3000.0 and out["turn_up_cost"] == pytest.approx(at1630.turn_up_cost)


def test_offer_floor_is_hard_and_turn_up_offers_can_be_skipped() -> None:
    problem = offer_problem()
    t = problem.start
    with pytest.raises(Infeasible):
        optimise(add_floor(problem, t, t + timedelta(minutes=30), 9000.0))
    offers = build_offers(problem, {t: 5000.0}, [(t, t + timedelta(minutes=30))],
                          lambda p: optimise(p).objective, [1000.0], add_cap,
                          add_floor=None)  # fmt: skip
    assert offers[0].turn_up_w == 0.0 and offers[0].turn_up_cost is None
