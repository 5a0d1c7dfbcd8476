"""The owner's controls on the live loop: a battery held in one of its own modes until an
expiry (still guarded), and a charging mode per charger that replaces the configured one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hems.control.config import ControlConfig
from hems.core.capabilities import BatteryMode, EvState
from hems.errors import BadValue
from tests.control.control_helpers import FakeBattery, FakeCharger
from tests.control.test_control_loop import Rig

IDLE, SP = BatteryMode.IDLE, BatteryMode.POWER_SETPOINT


async def test_a_battery_mode_override_holds_until_its_expiry() -> None:
    r = Rig()
    r.site(grid_w=1500, soc=60)
    r.loop.set_battery_mode("bat", IDLE, r.clock.now() + timedelta(minutes=2))
    await r.loop.step()
    assert r.bat.calls[-1][0] is IDLE  # not the self-consumption setpoint
    assert r.loop.status()["overrides"]["bat"]["mode"] == "idle"
    for _ in range(130):  # past the expiry: self-consumption again
        r.site(grid_w=1500, soc=60)
        await r.cycle()
    assert r.bat.calls[-1] == (SP, -1500)
    assert "bat" not in r.loop.status()["overrides"]


async def test_a_mode_the_battery_does_not_offer_is_refused_by_name() -> None:
    r = Rig(bat=FakeBattery(modes=frozenset({BatteryMode.NORMAL, SP})))
    with pytest.raises(BadValue, match=r"bat: mode: idle is not offered by this battery"):
        r.loop.set_battery_mode("bat", IDLE, r.clock.now() + timedelta(minutes=5))
    assert r.loop.battery_modes() == {"bat": ["normal", "power-setpoint"]}
    with pytest.raises(BadValue, match="not a controllable battery"):
        r.loop.set_battery_mode("ev", IDLE, r.clock.now() + timedelta(minutes=5))


async def test_a_forced_discharge_still_stops_at_the_reserve() -> None:
    r = Rig()
    r.site(grid_w=500, soc=10)  # at the 10 % reserve
    r.loop.set_battery_mode("bat", SP, r.clock.now() + timedelta(minutes=5), power_w=-4000)
    await r.loop.step()
    mode, power_w = r.bat.calls[-1]
    assert not (mode is SP and power_w < 0)  # the guard, not the owner, has the last word


async def test_the_owners_ev_mode_replaces_the_configured_strategy() -> None:
    r = Rig(ControlConfig(strategy="self-consumption", ev_strategy="off"),
            ev=FakeCharger(state=EvState.PLUGGED))  # fmt: skip
    r.site(grid_w=0)
    await r.loop.step()
    assert r.ev.calls[-1][0] == 0.0  # off
    r.loop.set_ev_mode("ev", "fast")
    assert r.loop.ev_mode("ev") == "fast"
    r.site(grid_w=0)
    await r.cycle()
    assert r.ev.calls[-1][0] == 16.0  # fast: the charger's maximum
    r.loop.set_ev_mode("ev", None)  # back to the configured one
    assert r.loop.ev_mode("ev") == "off"
    with pytest.raises(BadValue, match="mode: 'turbo' is not one of"):
        r.loop.set_ev_mode("ev", "turbo")  # type: ignore[arg-type]
    with pytest.raises(BadValue, match="not a charger"):
        r.loop.set_ev_mode("bat", "fast")
