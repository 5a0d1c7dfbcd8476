"""Builders for control tests: process images, site specs and fake capability objects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hems.control.model import (
    BatteryImage,
    BatterySpec,
    ChargerSpec,
    EvImage,
    GridImage,
    LoadImage,
    LoadSpec,
    ProcessImage,
    PvImage,
    PvSpec,
    SiteSpec,
)
from hems.core.capabilities import BatteryMode, EvState
from hems.errors import DeviceRejected

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
ALL_MODES = frozenset(BatteryMode)


def spec(
    *,
    battery: bool = True,
    pv: bool = True,
    ev: bool = True,
    load: bool = False,
    modes: frozenset[BatteryMode] = ALL_MODES,
    ev_phases: tuple[int, ...] = (1,),
    ev_phase: int = 1,
    ev_delay_s: float = 0.0,
    batt_phase: int | None = None,
    load_phase: int | None = 1,
) -> SiteSpec:
    return SiteSpec(
        batteries={
            "bat": BatterySpec(
                device_id="bat",
                max_charge_w=5000,
                max_discharge_w=5000,
                modes=modes,
                phase=batt_phase,
            )
        }
        if battery
        else {},
        pvs={"pv": PvSpec(device_id="pv", rated_w=6000)} if pv else {},
        chargers={
            "ev": ChargerSpec(
                device_id="ev", phases=ev_phases, phase=ev_phase, response_delay_s=ev_delay_s
            )
        }
        if ev
        else {},
        loads={"boiler": LoadSpec(device_id="boiler", power_w=2000, phase=load_phase)}
        if load
        else {},
    )


def image(
    *,
    grid_w: float | None = 0.0,
    phase_a: tuple[float, ...] | None = None,
    batt: tuple[float | None, float | None] = (0.0, 50.0),
    pv: tuple[float | None, float] = (0.0, 100.0),
    ev: tuple[float | None, EvState | None, float, int] = (0.0, EvState.AVAILABLE, 0.0, 1),
    load: tuple[float | None, bool | None, bool] = (0.0, False, False),
    at_s: float = 0.0,
    voltage_v: float = 230.0,
) -> ProcessImage:
    from datetime import timedelta

    return ProcessImage(
        at=T0 + timedelta(seconds=at_s),
        at_s=at_s,
        voltage_v=voltage_v,
        grid=GridImage(grid_w, phase_a),
        batteries={"bat": BatteryImage(*batt)},
        pvs={"pv": PvImage(*pv)},
        evs={"ev": EvImage(*ev)},
        loads={"boiler": LoadImage(*load)},
    )


# -- fake capability objects with optional latency and misbehaviour ---------------------------


@dataclass
class Calls:
    log: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)


class FakeBattery:
    def __init__(
        self,
        device_id: str = "bat",
        *,
        delay_s: float = 0.0,
        modes: frozenset[BatteryMode] = ALL_MODES,
    ) -> None:
        self.device_id = device_id
        self._modes = modes
        self.delay_s = delay_s
        self.calls: list[tuple[BatteryMode, float]] = []
        self.reject = False

    @property
    def modes(self) -> frozenset[BatteryMode]:
        return self._modes

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.reject:
            raise DeviceRejected(self.device_id, "exception code 3 (illegal value)")
        self.calls.append((mode, power_w))


class FakePv:
    def __init__(self, device_id: str = "pv", *, delay_s: float = 0.0) -> None:
        self.device_id = device_id
        self.delay_s = delay_s
        self.calls: list[float] = []

    async def power_w(self) -> float:
        return 0.0

    async def set_power_limit_pct(self, limit_pct: float) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.calls.append(limit_pct)


class FakeCharger:
    def __init__(
        self,
        device_id: str = "ev",
        *,
        delay_s: float = 0.0,
        state: EvState = EvState.CHARGING,
        state_delay_s: float | None = None,
    ) -> None:
        self.device_id = device_id
        self.delay_s = delay_s
        self.state_delay_s = delay_s if state_delay_s is None else state_delay_s
        self.ev_state = state
        self.calls: list[tuple[float, int]] = []
        self.dsr_flags: list[bool] = []

    async def state(self) -> EvState:
        if self.state_delay_s:
            await asyncio.sleep(self.state_delay_s)
        return self.ev_state

    async def power_w(self) -> float:
        return 0.0

    async def session_energy_wh(self) -> float:
        return 0.0

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.calls.append((current_a, phases))
        self.dsr_flags.append(dsr)


class FakeLoad:
    def __init__(self, device_id: str = "boiler", *, delay_s: float = 0.0) -> None:
        self.device_id = device_id
        self.delay_s = delay_s
        self.on = False
        self.ignore = False  # acknowledges commands but keeps its state (a stuck relay)
        self.calls: list[bool] = []

    async def set_on(self, on: bool) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.ignore:
            self.on = on
        self.calls.append(on)

    async def is_on(self) -> bool:
        return self.on
