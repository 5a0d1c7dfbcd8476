"""Table-driven tests for the strategies: inputs per cycle -> expected proposals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from control_helpers import T0, image, spec

from hems.control.config import ControlConfig, EvSurplusConfig
from hems.control.model import BatteryCommand, EvCommand, PvCommand
from hems.control.strategies import (
    EvHysteresis,
    EvSession,
    Override,
    changed,
    propose,
    ramp,
)
from hems.core.capabilities import BatteryMode
from hems.core.capabilities import EvState as S
from hems.core.flex import FlexInstruction
from hems.core.plan import PlanSlot

SP = BatteryMode.POWER_SETPOINT


def slot(targets=None, imp=0.0, exp=0.0, switches=None, price_export=0.05, curtail=0.0):
    return PlanSlot(
        start=T0 - timedelta(minutes=5),
        duration_s=1800,
        price_import_per_kwh=0.2,
        price_export_per_kwh=price_export,
        grid_import_w=imp,
        grid_export_w=exp,
        targets_w=targets or {},
        switches=switches or {},
        pv_curtail_w=curtail,
    )


@pytest.mark.parametrize(
    ("name", "img", "slot_", "cfg", "want"),
    [
        (
            "self-consumption: import covered",
            image(grid_w=1000, batt=(0, 50)),
            None,
            ControlConfig(strategy="self-consumption"),
            BatteryCommand(SP, -1000),
        ),
        (
            "self-consumption: export absorbed",
            image(grid_w=-2000, batt=(500, 50)),
            None,
            ControlConfig(strategy="self-consumption"),
            BatteryCommand(SP, 2500),
        ),
        (
            "self-consumption: clamped to max",
            image(grid_w=-9000, batt=(0, 50)),
            None,
            ControlConfig(strategy="self-consumption"),
            BatteryCommand(SP, 5000),
        ),
        (
            "plan missing: self-consumption",
            image(grid_w=800, batt=(0, 50)),
            None,
            ControlConfig(strategy="plan"),
            BatteryCommand(SP, -800),
        ),
        (
            "plan: grid charge corrected for the kettle",
            image(grid_w=3800, batt=(3000, 50)),
            slot({"bat": 3000}, imp=3500),
            ControlConfig(),
            BatteryCommand(SP, 2700),
        ),
        (
            "plan: a planned charge never turns into a discharge",
            image(grid_w=6000, batt=(3000, 50)),
            slot({"bat": 3000}, imp=500),
            ControlConfig(),
            BatteryCommand(SP, 0),
        ),
        (
            "plan: planned discharge keeps planned export",
            image(grid_w=-1000, batt=(-2000, 80)),
            slot({"bat": -2000}, exp=1500),
            ControlConfig(),
            BatteryCommand(SP, -2500),
        ),
        (
            "plan: hold only charges from surplus",
            image(grid_w=2000, batt=(0, 50)),
            slot({"bat": 0}, imp=500),
            ControlConfig(),
            BatteryCommand(SP, 0),
        ),
        (
            "plan: cloud shrinks a PV charge",
            image(grid_w=1500, batt=(2000, 50)),
            slot({"bat": 2000}),
            ControlConfig(),
            BatteryCommand(SP, 500),
        ),
    ],
)
def test_battery_strategy(name, img, slot_, cfg, want) -> None:
    p = propose(img, spec(ev=False), cfg, slot_, {}, {}, {}, None)
    got = p.commands["bat"]
    assert got.mode is want.mode, name
    assert got.power_w == pytest.approx(want.power_w, abs=1), name


@pytest.mark.parametrize(
    ("plan_w", "modes", "want"),
    [
        (3000, {BatteryMode.NORMAL, BatteryMode.FORCE_CHARGE}, BatteryMode.FORCE_CHARGE),
        (0, {BatteryMode.NORMAL, BatteryMode.HOLD_DISCHARGE}, BatteryMode.HOLD_DISCHARGE),
        (-2000, {BatteryMode.NORMAL, BatteryMode.FORCE_CHARGE}, BatteryMode.NORMAL),
    ],
)
def test_battery_modes_without_setpoint(plan_w, modes, want) -> None:
    p = propose(
        image(grid_w=0),
        spec(ev=False, modes=frozenset(modes)),
        ControlConfig(),
        slot({"bat": plan_w}),
        {},
        {},
        {},
        None,
    )
    assert p.commands["bat"].mode is want


PV_ONLY = ControlConfig(
    ev_strategy="pv-only",
    strategy="plan",
    ev_surplus=EvSurplusConfig(start_delay_s=60, stop_delay_s=120),
)

# (t_s, grid_w, ev_power_w, expected current) for one charger, PV-only, 230 V, min 6 A.
PV_ONLY_DAY = [
    (0, -500, 0, 0.0),  # 500 W surplus < 1380 W minimum: stay off
    (10, -1500, 0, 0.0),  # above the threshold: timer starts
    (40, -1500, 0, 0.0),  # 30 s: not yet
    (70, -1600, 0, 6.9),  # 60 s above: start with the surplus (1600 W = 6.9 A)
    (80, 100, 1600, 6.5),  # the car takes it; 1500 W surplus
    (90, 1000, 1600, 6.0),  # cloud: surplus 600 W, kept at minimum, stop timer starts
    (150, 1000, 1380, 6.0),  # 60 s below: still charging
    (209, 1000, 1380, 6.0),  # 119 s
    (211, 1000, 1380, 0.0),  # 121 s below: stop
    (220, -3000, 0, 0.0),  # sun again: the start timer restarts from zero
    (285, -3000, 0, 13.0),  # started after 65 s: 3000 W = 13.0 A
]


def test_pv_only_hysteresis_day() -> None:
    mem: dict[str, EvHysteresis] = {}
    for t_s, grid_w, ev_w, want_a in PV_ONLY_DAY:
        img = image(
            grid_w=grid_w,
            ev=(ev_w, S.CHARGING if ev_w else S.PLUGGED, 0, 1),
            batt=(0, 50),
            at_s=t_s,
        )
        p = propose(img, spec(battery=False), PV_ONLY, None, {}, {}, mem, None)
        cmd = p.commands["ev"]
        assert cmd.current_a == pytest.approx(want_a, abs=0.1), t_s


def test_min_pv_gives_minimum_without_surplus_and_more_with_it() -> None:
    cfg = ControlConfig(ev_strategy="min-pv")
    p = propose(
        image(grid_w=500, ev=(0, S.PLUGGED, 0, 1)), spec(battery=False), cfg, None, {}, {}, {}, None
    )
    assert p.commands["ev"] == EvCommand(6.0, 1)
    p = propose(
        image(grid_w=-2000, ev=(1380, S.CHARGING, 6, 1)),
        spec(battery=False),
        cfg,
        None,
        {},
        {},
        {},
        None,
    )
    assert p.commands["ev"].current_a == pytest.approx(14.6, abs=0.1)


def test_nothing_plugged_means_no_offer() -> None:
    p = propose(
        image(grid_w=-5000, ev=(0, S.AVAILABLE, 0, 1)),
        spec(battery=False),
        ControlConfig(ev_strategy="fast"),
        None,
        {},
        {},
        {},
        None,
    )
    assert p.commands["ev"].current_a == 0


def test_phase_switching_waits_for_its_timer_and_the_charger_delay() -> None:
    cfg = ControlConfig(ev_strategy="min-pv", ev_surplus=EvSurplusConfig(phase_switch_delay_s=120))
    site = spec(battery=False, ev_phases=(1, 3), ev_delay_s=300)
    mem: dict[str, EvHysteresis] = {}
    seq = [
        (0, -5000, 1),
        (60, -5000, 1),
        (121, -5000, 3),
        (200, 3000, 3),
        (330, 3000, 3),
        (430, 3000, 1),
    ]
    for t_s, grid_w, want_phases in seq:
        img = image(grid_w=grid_w, ev=(0, S.PLUGGED, 0, 1), at_s=t_s)
        p = propose(img, site, cfg, None, {}, {}, mem, None)
        assert p.commands["ev"].phases == want_phases, t_s
    # 3-phase at 5000 W surplus: 7.2 A per phase


def test_pv_only_stop_is_not_judged_inside_the_random_start_delay() -> None:
    cfg = ControlConfig(
        ev_strategy="pv-only", ev_surplus=EvSurplusConfig(start_delay_s=0, stop_delay_s=10)
    )
    site = spec(battery=False, ev_delay_s=600)
    mem: dict[str, EvHysteresis] = {}
    propose(
        image(grid_w=-2000, ev=(0, S.PLUGGED, 0, 1), at_s=0), site, cfg, None, {}, {}, mem, None
    )
    assert mem["ev"].charging
    # Cloud while the charger still holds back its random delay: keep the offer.
    for t_s in (100, 200, 300, 590):
        p = propose(
            image(grid_w=500, ev=(0, S.PLUGGED, 6, 1), at_s=t_s), site, cfg, None, {}, {}, mem, None
        )
        assert p.commands["ev"].current_a >= 6, t_s
    for t_s in (601, 612):
        p = propose(
            image(grid_w=500, ev=(0, S.PLUGGED, 6, 1), at_s=t_s), site, cfg, None, {}, {}, mem, None
        )
    assert p.commands["ev"].current_a == 0


def test_departure_forces_fast_charging() -> None:
    cfg = ControlConfig(ev_strategy="pv-only")
    # 20 kWh in 5 h at 3.68 kW max + 30 min margin: needs to start now
    session = {"ev": EvSession(20000, T0 + timedelta(hours=5, minutes=30))}
    p = propose(
        image(grid_w=500, ev=(0, S.PLUGGED, 0, 1)),
        spec(battery=False),
        cfg,
        None,
        {},
        session,
        {},
        None,
        {"ev": 0.0},
    )
    assert p.commands["ev"] == EvCommand(16, 1)
    far = {"ev": EvSession(20000, T0 + timedelta(hours=12))}
    p = propose(
        image(grid_w=500, ev=(0, S.PLUGGED, 0, 1)),
        spec(battery=False),
        cfg,
        None,
        {},
        far,
        {},
        None,
        {"ev": 0.0},
    )
    assert p.commands["ev"].current_a == 0


def test_a_car_at_its_target_soc_is_held_at_zero_in_every_mode() -> None:
    """`ev_full`: the car reached its target SoC; nothing, not even a session that needs
    fast charging by departure, gives it current (the owner's override still does)."""
    img = image(grid_w=-5000, ev=(0, S.PLUGGED, 0, 1))  # 5 kW surplus
    urgent = {"ev": EvSession(20000, T0 + timedelta(hours=5, minutes=30))}
    for mode in ("fast", "min-pv", "pv-only", "plan"):
        cfg = ControlConfig(ev_strategy=mode)
        args = (img, spec(battery=False), cfg, slot({"ev": 7000}), {}, urgent, {}, None)
        assert propose(*args, {"ev": 0.0}).commands["ev"].current_a > 0, mode
        held = propose(*args, {"ev": 0.0}, None, frozenset({"ev"}))
        assert held.commands["ev"].current_a == 0, mode
    override = {"ev": Override("ev", 3680.0, T0 + timedelta(hours=1))}
    p = propose(img, spec(battery=False), ControlConfig(), None, override, {}, {}, None, None,
                None, frozenset({"ev"}))  # fmt: skip
    assert p.commands["ev"].current_a == 16


def test_plan_ev_target_and_overrides() -> None:
    cfg = ControlConfig()
    s = slot({"ev": 7000, "bat": 0}, imp=7000, switches={"boiler": True})
    site = spec(ev_phases=(1, 3), load=True)
    p = propose(image(grid_w=0, ev=(0, S.PLUGGED, 0, 1)), site, cfg, s, {}, {}, {}, None)
    assert p.commands["ev"].phases == 3
    assert p.commands["ev"].current_a == pytest.approx(10.1, abs=0.1)
    assert p.commands["boiler"].on is True
    overrides = {
        "ev": Override("ev", 0.0, T0 + timedelta(hours=1)),
        "bat": Override("bat", -1500.0, T0 + timedelta(hours=1)),
        "boiler": Override("boiler", False, T0 - timedelta(seconds=1)),  # expired
    }
    p = propose(image(grid_w=0, ev=(0, S.PLUGGED, 0, 1)), site, cfg, s, overrides, {}, {}, None)
    assert p.commands["ev"].current_a == 0
    assert p.commands["bat"] == BatteryCommand(SP, -1500)
    assert p.commands["boiler"].on is True


def test_flex_events_steer_the_battery() -> None:
    cfg = ControlConfig(strategy="self-consumption")
    end = T0 + timedelta(hours=1)
    cap = FlexInstruction(event_id="e1", modification=0, start=T0, end=end, import_cap_w=0,
                          baseline_w=2000)  # fmt: skip
    floor = FlexInstruction(event_id="e2", modification=0, start=T0, end=end,
                            export_floor_w=1000, baseline_w=500)  # fmt: skip
    up = FlexInstruction(event_id="e3", modification=0, start=T0, end=end, turn_up_floor_w=3000)
    img = image(grid_w=1500, batt=(0, 50))
    p = propose(img, spec(ev=False), cfg, None, {}, {}, {}, cap)
    assert p.commands["bat"].power_w == pytest.approx(-1500)
    p = propose(img, spec(ev=False), cfg, None, {}, {}, {}, floor)
    assert p.commands["bat"].power_w == pytest.approx(-2500)
    # A turn-up floor is the plan's to follow, not a live target: self-consumption as usual.
    p = propose(img, spec(ev=False), cfg, None, {}, {}, {}, up)
    assert p.commands["bat"].power_w == pytest.approx(
        propose(img, spec(ev=False), cfg, None, {}, {}, {}, None).commands["bat"].power_w
    )


def test_negative_export_price_curtails_towards_zero_export() -> None:
    s = slot({"bat": 5000}, price_export=-0.05)
    img = image(grid_w=-2000, batt=(5000, 100), pv=(6000, 100))
    p = propose(img, spec(ev=False), ControlConfig(), s, {}, {}, {}, None)
    assert p.commands["pv"].limit_pct == pytest.approx(100 * 4000 / 6000, abs=0.5)


@pytest.mark.parametrize(
    ("cmd", "last", "dt", "want"),
    [
        (BatteryCommand(SP, 5000), BatteryCommand(SP, 0), 1.0, BatteryCommand(SP, 2000)),
        (BatteryCommand(SP, -5000), BatteryCommand(SP, 0), 0.5, BatteryCommand(SP, -1000)),
        (BatteryCommand(SP, 5000), None, 1.0, BatteryCommand(SP, 5000)),
        (EvCommand(16, 1), EvCommand(6, 1), 1.0, EvCommand(6 + 2000 / 230, 1)),
        (EvCommand(6, 1), EvCommand(16, 1), 1.0, EvCommand(6, 1)),  # decreases are not ramped
        (PvCommand(10), PvCommand(100), 1.0, PvCommand(10)),
    ],
)
def test_ramp(cmd, last, dt, want) -> None:
    assert ramp(cmd, last, dt, 2000, 230) == want


@pytest.mark.parametrize(
    ("cmd", "last", "want"),
    [
        (BatteryCommand(SP, 1030), BatteryCommand(SP, 1000), False),
        (BatteryCommand(SP, 1100), BatteryCommand(SP, 1000), True),
        (BatteryCommand(BatteryMode.IDLE), BatteryCommand(SP, 0), True),
        (EvCommand(6.1, 1), EvCommand(6.0, 1), False),
        (EvCommand(0, 1), EvCommand(6.0, 1), True),
        (PvCommand(99), PvCommand(100), True),
        (PvCommand(51), PvCommand(50), False),
    ],
)
def test_deadband(cmd, last, want) -> None:
    assert changed(cmd, last, 50, 2, 230) is want
