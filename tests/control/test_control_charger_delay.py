"""A charger that may delay a reduction (GB randomised delay) is not counted on for the fuse.

The guard still tells it to reduce, but sheds the next step in the order at once, so the fuse
is restored within its 2 s deadline by the battery (or the loads) instead.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from control_helpers import T0, FakeBattery, FakeCharger, FakePv, image, spec

from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.guard import apply_guard
from hems.control.loop import ControlLoop
from hems.control.model import BatteryCommand, EvCommand, LoadCommand, PvCommand
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import ManualClock
from hems.core.readings import Quantity as Q
from hems.core.readings import Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState

SP = BatteryMode.POWER_SETPOINT
LIM = LimitsConfig(fuse_a=60, phases=1, voltage_v=230, export_limit_w=3680, battery_reserve_pct=10)
EV_W = 3680.0


def _with_delay(img, delay_s):
    return replace(img, evs={"ev": replace(img.evs["ev"], response_delay_s=delay_s)})


# 15000 W on a 60 A fuse with 1 A margin: 13570 W allowed, 1430 W to shed.
OVER = image(grid_w=15000, ev=(EV_W, EvState.CHARGING, 16, 1), batt=(2000, 50))
PROPOSED = {"ev": EvCommand(16, 1), "bat": BatteryCommand(SP, 2000)}


@pytest.mark.parametrize(
    ("name", "spec_delay_s", "image_delay_s", "want_bat_w"),
    [
        ("prompt charger: the EV alone is shed", 0.0, None, 2000),
        ("600 s delay: the battery sheds too, at once", 600.0, None, 570),
        ("delay reported this cycle beats the spec", 0.0, 600.0, 570),
        ("demand-side response: no delay, the EV is counted on", 600.0, 0.0, 2000),
        ("a delay within the 2 s deadline is counted on", 1.5, None, 2000),
    ],
)
def test_slow_charger_reduction_is_not_counted_on(
    name, spec_delay_s, image_delay_s, want_bat_w
) -> None:
    img = OVER if image_delay_s is None else _with_delay(OVER, image_delay_s)
    res = apply_guard(img, spec(ev_delay_s=spec_delay_s), LIM, ControlConfig(), PROPOSED)
    assert res.commands["ev"] == EvCommand(9.7, 1), name  # still told to reduce
    assert res.commands["bat"].power_w == pytest.approx(want_bat_w, abs=1), name
    if want_bat_w != 2000:
        ev_note = next(i for i in res.interventions if i.device_id == "ev")
        assert "not counted on" in ev_note.reason


def test_slow_charger_then_deferrable_loads_are_shed() -> None:
    img = image(grid_w=15000, ev=(EV_W, EvState.CHARGING, 16, 1), load=(2000, True, False))
    site = spec(ev_delay_s=600, load=True)
    proposed = {"ev": EvCommand(16, 1), "bat": BatteryCommand(SP, 0), "boiler": LoadCommand(True)}
    res = apply_guard(img, site, LIM, ControlConfig(), proposed)
    assert res.commands["boiler"] == LoadCommand(False)


def test_slow_charger_is_not_counted_on_for_export_either() -> None:
    # 5000 W export; the EV is offered 16 A more but may take 600 s to start: curtail now.
    img = image(grid_w=-5000, ev=(0, EvState.PLUGGED, 0, 1), batt=(5000, 100), pv=(6000, 100))
    proposed = {"ev": EvCommand(16, 1), "bat": BatteryCommand(SP, 5000), "pv": PvCommand(100)}
    fast = apply_guard(img, spec(), LIM, ControlConfig(), proposed)
    assert fast.commands["pv"] == PvCommand(100)
    slow = apply_guard(img, spec(ev_delay_s=600), LIM, ControlConfig(), proposed)
    assert slow.commands["pv"].limit_pct < 100


class GbCharger(FakeCharger):
    """Follows a new limit only after its randomised delay, unless the change is DSR."""

    def __init__(self) -> None:
        super().__init__(state=EvState.CHARGING)
        self.asked_dsr: list[bool] = []

    def expected_response_delay_s(self, dsr: bool = False) -> float:
        self.asked_dsr.append(dsr)
        return 0.0 if dsr else 600.0


async def test_fuse_restored_within_2_s_by_the_battery_while_the_charger_delays() -> None:
    clock = ManualClock(T0)
    state = SiteState(clock, stale_after_s=10)
    bat, ev = FakeBattery(), GbCharger()
    devs = ControlledDevices()
    devs.add_battery(bat, max_charge_w=5000, max_discharge_w=5000)
    devs.add_charger(ev, min_current_a=6, max_current_a=16)
    devs.add_pv(FakePv(), rated_w=6000)
    for d, role in (("grid", Role.GRID), ("bat", Role.BATTERY), ("ev", Role.EV), ("pv", Role.PV)):
        state.register_device(d, role)
    cfg = ControlConfig(strategy="self-consumption", ev_strategy="fast", cycle_s=1.0)
    loop = ControlLoop(cfg, LIM, state, devs, clock, lambda: None)
    # The owner charges the battery at 3 kW from the grid while the car charges at 16 A.
    loop.set_override("bat", 3000.0, T0 + timedelta(hours=1))
    fuse_w = LIM.fuse_a * LIM.voltage_v
    house_w, bat_w, grid_seen = 500.0, 3000.0, []
    for t_s in range(12):
        if t_s == 5:
            house_w = 9000.0  # oven and kettle: 15680 W, over the 13800 W fuse
        if bat.calls:
            bat_w = bat.calls[-1][1]  # the battery follows at once
        grid_w = house_w + EV_W + bat_w  # the car keeps its 16 A: its delay is 600 s
        grid_seen.append(grid_w)
        state.publish(
            [
                Reading("grid", Q.POWER_W, grid_w, clock.now()),
                Reading("bat", Q.POWER_W, bat_w, clock.now()),
                Reading("bat", Q.SOC_PCT, 50.0, clock.now()),
                Reading("ev", Q.POWER_W, EV_W, clock.now()),
                Reading("pv", Q.POWER_W, 0.0, clock.now()),
            ]
        )
        await loop.step()
        await clock.advance(1.0)
    over = [g > fuse_w for g in grid_seen]
    assert over[5] and not any(over[6:]), grid_seen  # one reading over, then restored
    assert loop.fuse_tracker.longest_s <= 1.0
    assert ev.calls[-1][0] < 16  # the charger was still told to reduce
    assert bat.calls[-1][1] <= 3000 - (grid_seen[5] - 59 * 230) + 1
    assert ev.asked_dsr and not any(ev.asked_dsr)  # no aggregator event: not DSR
