"""Capability objects around the HIL home physics (hil/home.py, hil/ev.py), in process.

The loop talks to these exactly as to real adapters (the hems.core.capabilities Protocols);
`Plant.tick` advances the physics one step and publishes what the meters would report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hems.core.capabilities import BatteryMode, EvState
from hems.core.readings import Quantity as Q
from hems.core.readings import Reading, Role
from hems.core.state import SiteState
from hems.errors import DeviceUnreachable
from hil.ev import EvModel
from hil.home import Home, HomeState

REVERT_S = 60.0  # device-side revert: no command for this long -> back to its own default


class HilBattery:
    def __init__(self, plant: Plant) -> None:
        self.device_id = "bat"
        self._plant = plant
        self.dead = False
        self.last_write: datetime | None = None

    @property
    def modes(self) -> frozenset[BatteryMode]:
        return frozenset(BatteryMode)

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        if self.dead:
            raise DeviceUnreachable(self.device_id, "connection refused")
        self._plant.home.set_battery_mode(mode, power_w)
        self.last_write = self._plant.now


class HilPv:
    def __init__(self, plant: Plant) -> None:
        self.device_id = "pv"
        self._plant = plant

    async def power_w(self) -> float:
        return self._plant.home.state.pv_w

    async def set_power_limit_pct(self, limit_pct: float) -> None:
        self._plant.home.set_pv_limit_pct(None if limit_pct >= 100 else max(0.0, limit_pct))


class HilCharger:
    """A 1-phase 16 A charge point; the car takes the offer from the next step on."""

    expected_response_delay_s = 0.0

    def __init__(self, plant: Plant, ev: EvModel) -> None:
        self.device_id = "ev"
        self._plant = plant
        self.ev = ev
        self.offered_a = 0.0
        self.phases = 1
        self.session_wh = 0.0
        self.power_w_now = 0.0
        self.was_plugged = False

    async def state(self) -> EvState:
        if not self.ev.plugged(self._plant.now):
            return EvState.AVAILABLE
        if self.power_w_now > 0:
            return EvState.CHARGING
        if self.offered_a <= 0:
            return EvState.SUSPENDED_EVSE
        return EvState.SUSPENDED_EV

    async def power_w(self) -> float:
        return self.power_w_now

    async def session_energy_wh(self) -> float:
        return self.session_wh

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        self.offered_a, self.phases = current_a, phases

    def tick(self, now: datetime, dt_s: float, voltage_v: float) -> None:
        plugged = self.ev.plugged(now)
        if plugged and not self.was_plugged:
            self.session_wh = 0.0
        self.was_plugged = plugged
        if not plugged:
            self.power_w_now = 0.0
        else:
            amps, ph = self.ev.draw_a(self.offered_a, self.phases, voltage_v)
            self.power_w_now = amps * voltage_v * ph
            self.ev.step(self.power_w_now, dt_s)
            self.session_wh += self.power_w_now * dt_s / 3600.0
        split = (1.0, 0.0, 0.0) if self._plant.home.config.phases == 3 else None
        self._plant.home.set_external_load_w("ev", self.power_w_now, phase_split=split)


@dataclass
class Plant:
    home: Home
    state: SiteState
    ev: EvModel
    per_phase: bool = True  # a 3-phase home's meter reports per-phase powers
    now: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.now = self.home.state.at
        self.battery = HilBattery(self)
        self.pv = HilPv(self)
        self.charger = HilCharger(self, self.ev)
        for dev, role in (
            ("grid", Role.GRID),
            ("bat", Role.BATTERY),
            ("pv", Role.PV),
            ("ev", Role.EV),
        ):
            self.state.register_device(dev, role, stale_after_s=10)

    def tick(self, now: datetime, dt_s: float) -> HomeState:
        self.now = now
        self.charger.tick(now, dt_s, self.home.config.nominal_voltage_v)
        b = self.battery
        if b.last_write is not None and (now - b.last_write).total_seconds() > REVERT_S:
            # SunSpec-124-style revert timeout: the battery falls back by itself.
            self.home.set_battery_mode(BatteryMode.NORMAL)
            b.last_write = None
        st = self.home.step(now, dt_s)
        readings = [
            Reading("grid", Q.POWER_W, st.grid_w, now),
            Reading("grid", Q.VOLTAGE_V, st.voltage_phase_v[0], now),
            Reading("pv", Q.POWER_W, st.pv_w, now),
            Reading("ev", Q.POWER_W, self.charger.power_w_now, now),
            Reading("ev", Q.SESSION_ENERGY_WH, self.charger.session_wh, now),
        ]
        if self.home.config.phases == 3 and self.per_phase:
            readings += [
                Reading("grid", q, w, now)
                for q, w in zip(
                    (Q.POWER_L1_W, Q.POWER_L2_W, Q.POWER_L3_W), st.grid_phase_w, strict=True
                )
            ]
        if not b.dead:
            readings += [
                Reading("bat", Q.POWER_W, st.battery_w, now),
                Reading("bat", Q.SOC_PCT, st.soc_pct, now),
            ]
        self.state.publish(readings)
        return st
