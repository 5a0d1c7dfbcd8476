"""Plain data of the control loop: device specs, the process image, commands, interventions.

No I/O here. Signs as in `hems.core.readings.Quantity`: grid + import, battery + charging,
PV + producing, EV + charging, load + consuming. Phase currents are signed like grid power
(+ import).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hems.core.capabilities import BatteryMode, EvState

# -- what the loop knows about each controllable device (from config / the adapter) ---------


@dataclass(frozen=True, slots=True, kw_only=True)
class BatterySpec:
    device_id: str
    max_charge_w: float
    max_discharge_w: float  # positive number
    modes: frozenset[BatteryMode]
    phase: int | None = None  # None: a three-phase inverter, balanced; else 1..3


@dataclass(frozen=True, slots=True, kw_only=True)
class PvSpec:
    device_id: str
    rated_w: float
    phase: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerSpec:
    device_id: str
    min_current_a: float = 6.0
    max_current_a: float = 16.0
    phases: tuple[int, ...] = (1,)  # supported phase counts, e.g. (1, 3)
    phase: int = 1  # which phase a one-phase session uses
    response_delay_s: float = 0.0  # randomised delay of a start or rate change (not DSR) [s]

    def max_power_w(self, voltage_v: float) -> float:
        """The most it can offer: maximum current on every phase it supports [W]."""
        return self.max_current_a * voltage_v * max(self.phases)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    device_id: str
    power_w: float  # nominal draw when on
    phase: int | None = 1
    deferrable: bool = True


@dataclass(frozen=True, slots=True)
class SiteSpec:
    batteries: dict[str, BatterySpec] = field(default_factory=dict)
    pvs: dict[str, PvSpec] = field(default_factory=dict)
    chargers: dict[str, ChargerSpec] = field(default_factory=dict)
    loads: dict[str, LoadSpec] = field(default_factory=dict)


# -- the process image: one consistent snapshot per cycle (None = missing or stale) ----------


@dataclass(frozen=True, slots=True)
class GridImage:
    power_w: float | None
    phase_current_a: tuple[float, ...] | None = None  # signed, + import; None if not metered


@dataclass(frozen=True, slots=True)
class BatteryImage:
    power_w: float | None
    soc_pct: float | None
    # The range (low, high) of the device's readings since the grid meter's value changed the
    # time before last, where it differs from its own latest reading: the powers the grid
    # value may hold (a meter that updates every 10 s, the HIL rig's steps); None: only its
    # reading (hems.control.snapshot `_grid_spans`, guard `_basis_w`).
    grid_span_w: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class PvImage:
    power_w: float | None
    # last known limit (reading, else last command); after a raise the inverter has not
    # been seen following yet, the one before it (hems.control.snapshot)
    limit_pct: float = 100.0
    grid_span_w: tuple[float, float] | None = None  # see BatteryImage


@dataclass(frozen=True, slots=True)
class EvImage:
    power_w: float | None
    state: EvState | None
    offered_a: float = 0.0  # last command
    phases: int = 1  # phases of the last command
    response_delay_s: float | None = None  # how long a new limit may take now; None: spec's
    grid_span_w: tuple[float, float] | None = None  # see BatteryImage


@dataclass(frozen=True, slots=True)
class LoadImage:
    power_w: float | None
    on: bool | None  # last command or reading; None unknown
    stale: bool = False
    grid_span_w: tuple[float, float] | None = None  # see BatteryImage


@dataclass(frozen=True, slots=True)
class ProcessImage:
    at: datetime
    at_s: float  # clock.monotonic()
    voltage_v: float
    grid: GridImage
    batteries: dict[str, BatteryImage] = field(default_factory=dict)
    pvs: dict[str, PvImage] = field(default_factory=dict)
    evs: dict[str, EvImage] = field(default_factory=dict)
    loads: dict[str, LoadImage] = field(default_factory=dict)

    # A device missing from the image reads as unmeasured (every value None).
    def battery(self, device_id: str) -> BatteryImage:
        return self.batteries.get(device_id) or _NO_BATTERY

    def pv(self, device_id: str) -> PvImage:
        return self.pvs.get(device_id) or _NO_PV

    def ev(self, device_id: str) -> EvImage:
        return self.evs.get(device_id) or _NO_EV

    def load(self, device_id: str) -> LoadImage:
        return self.loads.get(device_id) or _NO_LOAD


_NO_BATTERY = BatteryImage(None, None)
_NO_PV = PvImage(None)
_NO_EV = EvImage(None, None)
_NO_LOAD = LoadImage(None, None)


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatteryCommand:
    mode: BatteryMode
    power_w: float = 0.0  # + charge, - discharge (POWER_SETPOINT); charge power (FORCE_CHARGE)

    def values(self) -> dict[str, Any]:
        return {"mode": str(self.mode), "power_w": round(self.power_w, 1)}


@dataclass(frozen=True, slots=True)
class EvCommand:
    current_a: float  # 0 = pause
    phases: int = 1

    def values(self) -> dict[str, Any]:
        return {"current_a": round(self.current_a, 2), "phases": self.phases}


@dataclass(frozen=True, slots=True)
class PvCommand:
    limit_pct: float  # 100 = no curtailment

    def values(self) -> dict[str, Any]:
        return {"limit_pct": round(self.limit_pct, 1)}


@dataclass(frozen=True, slots=True)
class LoadCommand:
    on: bool

    def values(self) -> dict[str, Any]:
        return {"on": self.on}


Command = BatteryCommand | EvCommand | PvCommand | LoadCommand


@dataclass(frozen=True, slots=True)
class Intervention:
    """One time the guard (or the loop's fail-safe) changed what would have been sent."""

    rule: str  # fuse, export, reserve, ev-min, stale, range, g100, flex, bad-input
    device_id: str  # "" for site-wide
    reason: str
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)


def command_values(cmd: Command | None) -> dict[str, Any]:
    return {} if cmd is None else cmd.values()
