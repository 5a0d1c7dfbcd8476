"""What a device is and what its owner needs of it, stated once in its `devices[]` entry.

Every device entry (Modbus, meter, OCPP charger) carries these optional sections beside its
address; the composition root hands each stage the facts it needs, so a battery's power
limits or a charger's phases are written once and read by the planner and the control loop
alike:

```yaml
devices:
  - {type: sunspec, id: pv, role: pv, host: 192.168.1.20, rated_w: 3680}
  - type: sunspec
    id: battery
    role: battery
    host: 192.168.1.20
    unit_id: 2
    battery: {capacity_wh: 9500, max_charge_w: 3600, max_discharge_w: 3600}
    control: {ramp_w_per_s: 2000, battery_stale: self-consumption}
  - type: ocpp
    id: wallbox
    password: ${cred:ocpp-wallbox}
    phases: 3
    ev: {default_departure: "07:00", target_energy_wh: 20000}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from hems.core.configbase import Strict
from hems.core.readings import Role

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _check_hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise ValueError(f"must be a time HH:MM (24 h), got {value!r}")
    return value


HhMm = Annotated[str, AfterValidator(_check_hhmm)]

EvStrategy = Literal["plan", "min-pv", "pv-only", "fast", "off"]
BatteryStaleFallback = Literal["idle", "self-consumption"]
ChargerStaleFallback = Literal["pause", "minimum"]


class BatteryFacts(Strict):
    """`battery:` of a role-battery entry: its ratings and how the planner may use it.
    Without `capacity_wh` the battery is controlled but not planned; without this section
    it is measured only."""

    capacity_wh: float | None = Field(
        default=None, gt=0, le=1e6, description="usable capacity [Wh]; None: not planned"
    )
    max_charge_w: float = Field(gt=0, le=1e6)
    max_discharge_w: float = Field(gt=0, le=1e6)
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)
    min_soc_pct: float = Field(default=5.0, ge=0, le=100)
    max_soc_pct: float = Field(default=100.0, ge=0, le=100)
    degradation_cost_per_kwh: float = Field(default=0.0, ge=0, le=10)
    terminal_value_per_kwh: float | None = Field(
        default=None, ge=-10, le=10, description="None: median import price × η_discharge"
    )

    @model_validator(mode="after")
    def _soc_order(self) -> BatteryFacts:
        if self.min_soc_pct > self.max_soc_pct:
            raise ValueError("min_soc_pct: must be <= max_soc_pct")
        return self


class EvNeeds(Strict):
    """`ev:` of a charger entry: what the owner wants of the car plugged into it."""

    default_departure: HhMm = "07:00"
    target_energy_wh: float | None = Field(default=20000.0, gt=0, le=300000)
    target_soc_pct: float | None = Field(default=None, ge=0, le=100)
    battery_capacity_wh: float = Field(default=60000.0, gt=0, le=300000)
    shortfall_penalty_per_kwh: float = Field(default=2.0, ge=0, le=100)


class LoadFacts(Strict):
    """`load:` of a role-load entry (an immersion heater, a heat pump's boost): its power,
    whether the guard may shed it, and optionally a daily run the planner schedules."""

    power_w: float = Field(gt=0, le=50000, description="power when on [W]")
    deferrable: bool = Field(default=True, description="the fuse guard may switch it off")
    run_time_min: float | None = Field(
        default=None, gt=0, le=24 * 60, description="plan this much run time a day; None: no plan"
    )
    window_start: HhMm = Field(default="00:00", description="local HH:MM")
    window_end: HhMm = Field(default="00:00", description="local HH:MM; equal = all day")
    contiguous: bool = False
    min_on_min: float = Field(default=0.0, ge=0, le=24 * 60)


class ControlOptions(Strict):
    """`control:` of any controllable entry: per-device tuning of the control loop; unset
    fields use the `control:` section's defaults."""

    phase: int | None = Field(
        default=None, ge=1, le=3, description="phase of a one-phase device; unset: balanced"
    )
    ramp_w_per_s: float | None = Field(default=None, gt=0, le=100000)
    deadband_w: float | None = Field(default=None, ge=0, le=10000)
    write_timeout_s: float | None = Field(default=None, gt=0, le=10)
    battery_stale: BatteryStaleFallback | None = None
    charger_stale: ChargerStaleFallback | None = None
    ev_strategy: EvStrategy | None = None


class DeviceFacts(Strict):
    """The facts sections every device entry may carry; each is checked against the role."""

    rated_w: float | None = Field(default=None, gt=0, le=1e6, description="PV: WMax [W]")
    battery: BatteryFacts | None = None
    load: LoadFacts | None = None
    control: ControlOptions | None = None

    @model_validator(mode="after")
    def _facts_fit_role(self) -> DeviceFacts:
        role = getattr(self, "role", None)
        if self.rated_w is not None and role is not Role.PV:
            raise ValueError(f"rated_w: only for role pv (this entry is role {role})")
        if self.battery is not None and role is not Role.BATTERY:
            raise ValueError(f"battery: only for role battery (this entry is role {role})")
        if self.load is not None and role is not Role.LOAD:
            raise ValueError(f"load: only for role load (this entry is role {role})")
        return self


@dataclass(frozen=True, slots=True)
class DeviceRatings:
    """A device's power and energy ratings from its `devices[]` entry, for stages that
    describe the site (the uplink's capabilities); None: not stated for this device."""

    max_charge_w: float | None = None  # battery: section
    max_discharge_w: float | None = None  # battery: section
    rated_w: float | None = None  # PV: WMax
    load_power_w: float | None = None  # load: section, power when on
    capacity_wh: float | None = None  # battery: usable capacity
    max_power_w: float | None = None  # EV charger: max_current_a × voltage_v × phases
