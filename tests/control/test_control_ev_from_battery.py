"""`ev_from_battery`: whether the home battery may discharge into a charging EV.

Table: image + plan slot + option -> battery command. 230 V, one 1-phase 16 A charger
(3680 W), a 5 kW battery with every mode unless said otherwise.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from control_helpers import T0, image, spec

from hems.control.config import ControlConfig
from hems.control.guard import apply_guard
from hems.control.model import BatteryCommand, EvCommand
from hems.control.strategies import propose
from hems.core.capabilities import BatteryMode
from hems.core.capabilities import EvState as S
from hems.core.plan import PlanSlot
from hems.core.site import LimitsConfig

SP = BatteryMode.POWER_SETPOINT
EV_W = 3680.0
CHARGING = (EV_W, S.CHARGING, 16.0, 1)


def slot(targets: dict[str, float], imp: float = 0.0, exp: float = 0.0) -> PlanSlot:
    return PlanSlot(
        start=T0 - timedelta(minutes=5),
        duration_s=1800,
        price_import_per_kwh=0.2,
        price_export_per_kwh=0.05,
        grid_import_w=imp,
        grid_export_w=exp,
        targets_w=targets,
    )


SELF = {"strategy": "self-consumption", "ev_strategy": "fast"}
PLAN = {"strategy": "plan", "ev_strategy": "plan"}

# name, image, slot, config, battery command with the option off (default), with it on
CASES = [
    (
        "self-consumption, no PV: the battery covers the house (500 W), not the car",
        image(grid_w=500 + EV_W, batt=(0, 60), ev=CHARGING),
        None,
        SELF,
        BatteryCommand(SP, -500),
        BatteryCommand(SP, -(500 + EV_W)),
    ),
    (
        "self-consumption, 2 kW PV under the car: PV to the car, battery idle",
        image(grid_w=500 + EV_W - 2000, batt=(0, 60), ev=CHARGING),
        None,
        SELF,
        BatteryCommand(SP, 0),
        BatteryCommand(SP, -(500 + EV_W - 2000)),
    ),
    (
        "self-consumption, 6 kW PV over the car: the rest still charges the battery",
        image(grid_w=500 + EV_W - 6000, batt=(0, 60), ev=CHARGING),
        None,
        SELF,
        BatteryCommand(SP, 6000 - 500 - EV_W),
        BatteryCommand(SP, 6000 - 500 - EV_W),
    ),
    (
        "self-consumption, the car starts while the battery charges from PV: it stops, "
        "it does not turn round",
        image(grid_w=EV_W, batt=(3000, 60), ev=CHARGING),
        None,
        SELF,
        BatteryCommand(SP, 0),
        BatteryCommand(SP, 3000 - EV_W),
    ),
    (
        "self-consumption, the car is offered current this cycle (not drawing yet)",
        image(grid_w=500, batt=(0, 60), ev=(0.0, S.PLUGGED, 0.0, 1)),
        None,
        SELF,
        BatteryCommand(SP, -500),
        BatteryCommand(SP, -(500 + EV_W)),
    ),
    (
        "self-consumption, no car: nothing changes",
        image(grid_w=500, batt=(0, 60)),
        None,
        SELF,
        BatteryCommand(SP, -500),
        BatteryCommand(SP, -500),
    ),
    (
        "plan: a planned discharge during a planned charge covers only the house",
        image(grid_w=500 + EV_W - 2000, batt=(-2000, 60), ev=CHARGING),
        slot({"bat": -2000, "ev": EV_W}, imp=500 + EV_W - 2000),
        PLAN,
        BatteryCommand(SP, -500),
        BatteryCommand(SP, -2000),
    ),
    (
        "plan: an unplanned car is not covered by the battery's plan correction",
        image(grid_w=EV_W, batt=(-500, 60), ev=CHARGING),
        slot({"bat": -500}, imp=0),
        {"strategy": "plan", "ev_strategy": "fast"},
        BatteryCommand(SP, -500),
        BatteryCommand(SP, -500 - EV_W),
    ),
    (
        "plan: a planned battery charge is kept",
        image(grid_w=3000 + EV_W, batt=(3000, 60), ev=CHARGING),
        slot({"bat": 3000, "ev": EV_W}, imp=3000 + EV_W),
        PLAN,
        BatteryCommand(SP, 3000),
        BatteryCommand(SP, 3000),
    ),
]


@pytest.mark.parametrize(
    ("name", "img", "slot_", "cfg_kw", "want_off", "want_on"), CASES, ids=[c[0] for c in CASES]
)
def test_battery_does_not_feed_the_car_unless_allowed(
    name, img, slot_, cfg_kw, want_off, want_on
) -> None:
    assert ControlConfig().ev_from_battery is False  # the documented default
    for allowed, want in ((False, want_off), (True, want_on)):
        cfg = ControlConfig(**cfg_kw, ev_from_battery=allowed)
        got = propose(img, spec(pv=False), cfg, slot_, {}, {}, {}, None).commands["bat"]
        assert got.mode is want.mode, (name, allowed)
        assert got.power_w == pytest.approx(want.power_w, abs=1), (name, allowed)


@pytest.mark.parametrize(
    ("allowed", "want"),
    [(False, BatteryMode.HOLD_DISCHARGE), (True, BatteryMode.NORMAL)],
)
def test_battery_without_setpoint_holds_its_charge_while_the_car_draws(allowed, want) -> None:
    modes = frozenset({BatteryMode.NORMAL, BatteryMode.HOLD_DISCHARGE, BatteryMode.FORCE_CHARGE})
    cfg = ControlConfig(**SELF, ev_from_battery=allowed)
    img = image(grid_w=500 + EV_W, batt=(-500, 60), ev=CHARGING)
    got = propose(img, spec(pv=False, modes=modes), cfg, None, {}, {}, {}, None)
    assert got.commands["bat"].mode is want
    # No car: the inverter's own self-consumption as before.
    img = image(grid_w=500, batt=(-500, 60))
    got = propose(img, spec(pv=False, modes=modes), cfg, None, {}, {}, {}, None)
    assert got.commands["bat"].mode is BatteryMode.NORMAL


def test_the_fuse_guard_still_discharges_the_battery() -> None:
    # The plan holds the battery while the car charges, then a 15 kW load comes on behind a
    # 60 A fuse: pausing the car is not enough, and the guard discharges the battery (its
    # shed order is final, whatever the option says).
    limits = LimitsConfig(fuse_a=60, phases=1, voltage_v=230, battery_reserve_pct=10)
    cfg = ControlConfig(**PLAN)
    img = image(grid_w=15000 + EV_W, batt=(0, 60), ev=CHARGING)
    plan = slot({"bat": 0, "ev": EV_W}, imp=500 + EV_W)
    site = spec(pv=False)
    proposal = propose(img, site, cfg, plan, {}, {}, {}, None)
    assert proposal.commands["bat"] == BatteryCommand(SP, 0)
    res = apply_guard(img, site, limits, cfg, proposal.commands)
    assert res.commands["ev"] == EvCommand(0.0, 1)
    assert res.commands["bat"].power_w == pytest.approx(-(15000 - 59 * 230), abs=1)
    assert res.grid_pred_w is not None and res.grid_pred_w <= 59 * 230 + 1
