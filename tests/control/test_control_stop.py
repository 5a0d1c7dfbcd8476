"""When the control loop stops, each device it commanded is left safe without hems: the
battery in its own mode, the charger in its safe state, PV uncurtailed; within a bound."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from control_helpers import T0, FakeBattery, FakeCharger, FakeLoad, FakePv

import hems.control.loop as loop_module
from hems.control.config import ControlConfig, DeviceControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import ManualClock
from hems.core.readings import Quantity as Q
from hems.core.readings import Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState

LIMITS = LimitsConfig(fuse_a=60, phases=1, export_limit_w=3680, battery_reserve_pct=10)


class SafeCharger(FakeCharger):
    """A charger adapter with its own configured safe state (as OcppCharger has)."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, state=EvState.CHARGING)
        self.safe_states = 0

    async def apply_safe_state(self) -> None:
        self.safe_states += 1
        await self.set_limit(6.0, 1)


class Site:
    def __init__(self, cfg: ControlConfig, **fakes: object) -> None:
        self.clock = ManualClock(T0)
        self.state = SiteState(self.clock, stale_after_s=10)
        self.bat = fakes.get("bat") or FakeBattery()
        self.ev = fakes.get("ev") or FakeCharger(state=EvState.CHARGING)
        self.ev2 = SafeCharger("ev2")
        self.pv = FakePv()
        self.load = FakeLoad()
        devs = ControlledDevices()
        devs.add_battery(self.bat, max_charge_w=5000, max_discharge_w=5000)
        devs.add_charger(self.ev, min_current_a=6, max_current_a=16)
        devs.add_charger(self.ev2, min_current_a=6, max_current_a=16)
        devs.add_pv(self.pv, rated_w=6000)
        devs.add_load(self.load, power_w=2000)
        roles = {"grid": Role.GRID, "bat": Role.BATTERY, "ev": Role.EV, "ev2": Role.EV}
        for d, role in {**roles, "pv": Role.PV, "boiler": Role.LOAD}.items():
            self.state.register_device(d, role)
        self.loop = ControlLoop(cfg, LIMITS, self.state, devs, self.clock, lambda: None)

    def publish(self, grid_w: float) -> None:
        now = self.clock.now()
        values = {
            "grid": {Q.POWER_W: grid_w},
            "bat": {Q.POWER_W: 0.0, Q.SOC_PCT: 50.0},
            "ev": {Q.POWER_W: 1400.0},
            "ev2": {Q.POWER_W: 1400.0},
            "pv": {Q.POWER_W: 5000.0},
        }
        for d, qs in values.items():
            self.state.publish(Reading(d, q, v, now) for q, v in qs.items())


def _cfg(**kw: object) -> ControlConfig:
    return ControlConfig(strategy="self-consumption", ev_strategy="min-pv", **kw)  # type: ignore[arg-type]


async def _run_then_stop(site: Site) -> int:
    """Run three cycles, stop; the load's writes before the stop."""
    task = asyncio.create_task(site.loop.run())
    for _ in range(3):
        site.publish(grid_w=-3000)
        await asyncio.sleep(0.01)
        await site.clock.advance(1.0)
    await asyncio.sleep(0.01)
    load_writes = len(site.load.calls)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return load_writes


async def test_stop_hands_every_commanded_device_back() -> None:
    site = Site(_cfg())
    site.loop.set_battery_mode("bat", BatteryMode.FORCE_CHARGE, T0 + timedelta(hours=1), 3000)
    load_writes = await _run_then_stop(site)
    # While running: forced charging, both EVs offered current, PV commanded.
    assert (BatteryMode.FORCE_CHARGE, 3000.0) in site.bat.calls
    assert any(a >= 6 for a, _ in site.ev.calls) and site.pv.calls
    # After the stop: each written once more, to a state that needs no hems.
    assert site.bat.calls[-1] == (BatteryMode.NORMAL, 0.0)
    assert site.ev.calls[-1][0] == 0.0  # charger_stale: pause (no adapter safe state)
    assert site.ev2.safe_states == 1 and site.ev2.calls[-1] == (6.0, 1)
    assert site.pv.calls[-1] == 100.0
    assert len(site.load.calls) == load_writes  # a switchable load keeps its last state


async def test_minimum_fallback_for_a_charger_without_its_own_safe_state() -> None:
    cfg = _cfg().with_devices({"ev": DeviceControlConfig(charger_stale="minimum")})
    site = Site(cfg)
    await _run_then_stop(site)
    assert site.ev.calls[-1][0] == 6.0


async def test_a_battery_without_normal_mode_is_left_as_it_is() -> None:
    modes = frozenset({BatteryMode.POWER_SETPOINT, BatteryMode.IDLE})
    site = Site(_cfg(), bat=FakeBattery(modes=modes))
    await _run_then_stop(site)
    assert site.bat.calls and all(m is not BatteryMode.NORMAL for m, _ in site.bat.calls)


async def test_a_hanging_device_does_not_hold_up_the_stop(monkeypatch) -> None:
    monkeypatch.setattr(loop_module, "STOP_TIMEOUT_S", 0.2)
    bat = FakeBattery()
    site = Site(_cfg(), bat=bat)
    task = asyncio.create_task(site.loop.run())
    site.publish(grid_w=-3000)
    await asyncio.sleep(0.01)
    await site.clock.advance(1.0)
    await asyncio.sleep(0.01)
    assert bat.calls
    bat.delay_s = 30.0  # the next write never finishes in time
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2.0
    assert site.pv.calls[-1] == 100.0  # the others were written meanwhile
