"""Device capabilities: one small Protocol per thing a device can do.

Callers ask `isinstance(dev, BatteryControl)` rather than checking the brand. A device that
lacks a capability raises `NotSupported`; a device that failed raises a `DeviceError`.
Signs as in `hems.core.readings.Quantity`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable


class BatteryMode(StrEnum):
    """Documented battery modes; a device offers only those its profile lists."""

    NORMAL = "normal"  # the inverter's own self-consumption
    HOLD_DISCHARGE = "hold-discharge"  # may charge from surplus, must not discharge
    HOLD_CHARGE = "hold-charge"  # may discharge, must not charge
    FORCE_CHARGE = "force-charge"  # charge from the grid at the given power
    POWER_SETPOINT = "power-setpoint"  # follow a signed setpoint, + charge / - discharge
    IDLE = "idle"  # neither charge nor discharge


class EvState(StrEnum):
    AVAILABLE = "available"  # nothing plugged
    PLUGGED = "plugged"  # plugged, not (yet) charging
    CHARGING = "charging"
    SUSPENDED_EV = "suspended-ev"  # the car declines to draw
    SUSPENDED_EVSE = "suspended-evse"  # the charger (or we) hold it at 0
    FAULTED = "faulted"
    OFFLINE = "offline"


# A car is connected (whether it draws or not): the states a charging session lives in.
EV_PLUGGED = frozenset(
    {EvState.PLUGGED, EvState.CHARGING, EvState.SUSPENDED_EV, EvState.SUSPENDED_EVSE}
)


@runtime_checkable
class Meter(Protocol):
    device_id: str

    async def power_w(self) -> float: ...  # + import / consumption

    async def energy_import_wh(self) -> float: ...

    async def energy_export_wh(self) -> float: ...


@runtime_checkable
class PvInverter(Protocol):
    device_id: str

    async def power_w(self) -> float: ...  # + producing

    async def set_power_limit_pct(self, limit_pct: float) -> None: ...  # 100 = no curtailment


@runtime_checkable
class Battery(Protocol):
    device_id: str

    async def soc_pct(self) -> float: ...

    async def power_w(self) -> float: ...  # + charging, - discharging


@runtime_checkable
class BatteryControl(Protocol):
    device_id: str

    @property
    def modes(self) -> frozenset[BatteryMode]: ...

    async def set_mode(self, mode: BatteryMode, power_w: float = 0.0) -> None: ...


@runtime_checkable
class EvCharger(Protocol):
    device_id: str

    async def state(self) -> EvState: ...

    async def power_w(self) -> float: ...

    async def session_energy_wh(self) -> float: ...

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        """Below the minimum current: pause. `dsr`: the change serves demand-side response
        (an aggregator event), so a GB smart charger applies it without its random delay."""
        ...


@runtime_checkable
class SwitchableLoad(Protocol):
    device_id: str

    async def set_on(self, on: bool) -> None: ...

    async def is_on(self) -> bool: ...
