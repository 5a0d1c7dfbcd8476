"""The optimisation problem as plain, versioned, JSON-serialisable data.

A `Problem` is everything the optimiser needs and nothing else: it is stored with every plan
so the plan can be reproduced, it is the input of `hems optimise PROBLEM.json`, and its JSON
Schema is exported by `hems schema problem`.

Conventions
-----------
* Slot `i` covers `[start + i·step, start + (i+1)·step)`; `start` is aligned to a settlement
  period (a multiple of `step_min` past the hour).
* Per-slot series have exactly `n_slots` entries. Powers are mean powers over the slot [W],
  prices are [currency/kWh] and may be negative.
* Signs follow the readings: battery + = charging, EV + = charging, grid + = import.
* Device ids are the ids used in `Plan.targets_w`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# 1: the first format. 2: FlexConstraint.import_floor_w (turn-up events) and its penalty.
# 3: BatterySpec.soc_targets and end_soc_pct. Older documents still load unchanged (every
# addition is optional).
PROBLEM_VERSION = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SocTarget(_Model):
    """A soft lower bound on a battery's SoC: at `at` (the end of the last slot ending by
    then), or, with `until`, at the end of every slot ending in [at, until]. Each kWh
    missing costs `penalty_per_kwh`; the plan's notes name the target it misses (v3)."""

    at: datetime = Field(description="aware")
    until: datetime | None = Field(default=None, description="aware; None = at `at` only")
    soc_pct: float = Field(ge=0, le=100)
    penalty_per_kwh: float = Field(default=10.0, ge=0, description="[currency/kWh] missing")
    name: str = Field(default="", description="where it comes from, shown in notes")

    @model_validator(mode="after")
    def _order(self) -> SocTarget:
        if self.at.tzinfo is None or (self.until is not None and self.until.tzinfo is None):
            raise ValueError("at: must be timezone-aware")
        if self.until is not None and self.until < self.at:
            raise ValueError("until: must not be before at")
        return self


class BatterySpec(_Model):
    """A stationary battery. SoC is tracked in Wh at the end of each slot."""

    id: str = Field(description="device id used in the plan's targets_w")
    capacity_wh: float = Field(gt=0, description="usable capacity [Wh]")
    initial_soc_pct: float = Field(ge=0, le=100, description="SoC at the start [%]")
    max_charge_w: float = Field(ge=0, description="AC charge limit [W]")
    max_discharge_w: float = Field(ge=0, description="AC discharge limit [W]")
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)
    min_soc_pct: float = Field(default=0.0, ge=0, le=100)
    max_soc_pct: float = Field(default=100.0, ge=0, le=100)
    reserve_pct: float = Field(default=0.0, ge=0, le=100, description="backup reserve [%]")
    degradation_cost_per_kwh: float = Field(
        default=0.0, ge=0, description="cost per kWh discharged [currency/kWh]"
    )
    terminal_value_per_kwh: float | None = Field(
        default=None,
        description="value of energy left at the end [currency/kWh]; "
        "None = median import price × discharge efficiency",
    )
    soc_targets: list[SocTarget] = Field(
        default_factory=list, description="soft SoC lower bounds by a time / per window (v3)"
    )
    end_soc_pct: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="SoC pinned at the end of the horizon, soft both ways; the terminal "
        "value is then not counted (v3)",
    )
    end_soc_penalty_per_kwh: float = Field(default=10.0, ge=0, description="[currency/kWh]")

    @model_validator(mode="after")
    def _soc_order(self) -> BatterySpec:
        if self.min_soc_pct > self.max_soc_pct:
            raise ValueError("min_soc_pct: must be <= max_soc_pct")
        return self


class EvSession(_Model):
    """One plugged-in (or expected) EV session. The energy target is soft."""

    id: str = Field(description="charger device id")
    arrival: datetime = Field(description="aware; charging possible from the first slot after")
    departure: datetime = Field(description="aware; charging ends with the last full slot")
    energy_wh: float = Field(ge=0, description="energy still wanted by departure [Wh]")
    min_power_w: float = Field(
        default=0.0, ge=0, description="smallest non-zero power (6 A × phases × V) [W]"
    )
    max_power_w: float = Field(gt=0, description="largest power [W]")
    battery_capacity_wh: float | None = Field(default=None, gt=0)
    shortfall_penalty_per_kwh: float = Field(
        default=2.0, ge=0, description="cost of each kWh missing at departure [currency/kWh]"
    )

    @model_validator(mode="after")
    def _powers(self) -> EvSession:
        if self.min_power_w > self.max_power_w:
            raise ValueError("min_power_w: must be <= max_power_w")
        return self


class DeferrableLoad(_Model):
    """A load that must run `run_time_min` inside its window at fixed power."""

    id: str
    power_w: float = Field(gt=0)
    run_time_min: float = Field(gt=0)
    window_start: datetime
    window_end: datetime
    contiguous: bool = Field(default=False, description="run as one single block")
    min_on_min: float = Field(default=0.0, ge=0, description="each run lasts at least this")


class FlexConstraint(_Model):
    """An accepted flexibility event: a hard cap on import and/or floor on export (turn-down),
    and/or a floor on net import (turn-up, since problem version 2).

    `import_floor_w` asks for net grid import (import − export) of at least this much in
    every slot of the window; negative means "export at most −value". It is soft: a home
    that cannot absorb that much (nothing left to switch on, battery full) still gets a plan,
    each missing kWh costs `import_floor_penalty_per_kwh` and the plan's notes say how much
    is missing. `import_floor_penalty_per_kwh = None` makes the floor hard (used to probe
    turn-up offers: infeasible means the home cannot do it).
    """

    id: str = "event"
    start: datetime
    end: datetime
    import_cap_w: float | None = Field(default=None, ge=0)
    export_floor_w: float | None = Field(default=None, ge=0)
    import_floor_w: float | None = Field(
        default=None,
        description="turn-up: net import (import − export) at least this [W]; "
        "negative = export at most −value (v2)",
    )
    import_floor_penalty_per_kwh: float | None = Field(
        default=10.0,
        ge=0,
        description="cost of each kWh the plan stays below import_floor_w "
        "[currency/kWh]; None = hard floor (v2)",
    )

    @field_validator("import_floor_w")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class Problem(_Model):
    """One planning problem over `n_slots` slots of `step_min` minutes from `start`."""

    version: Literal[1, 2, 3] = PROBLEM_VERSION
    start: datetime = Field(description="aware, start of slot 0, on a settlement boundary")
    step_min: Literal[15, 30] = 30
    import_price_per_kwh: list[float] = Field(min_length=1)
    export_price_per_kwh: list[float] = Field(min_length=1)
    import_cap_w: list[float] | float | None = Field(
        default=None,
        description="fuse / aggregator envelope, scalar or per slot [W]; None = no cap",
    )
    export_cap_w: list[float] | float | None = Field(
        default=None, description="export limit, scalar or per slot [W]; None = no cap"
    )
    pv_w: list[float] | float = Field(default=0.0, description="PV forecast [W]")
    load_w: list[float] | float = Field(default=0.0, description="base load forecast [W]")
    batteries: list[BatterySpec] = Field(default_factory=list)
    evs: list[EvSession] = Field(default_factory=list)
    loads: list[DeferrableLoad] = Field(default_factory=list)
    events: list[FlexConstraint] = Field(default_factory=list)
    timezone: str = Field(default="UTC", description="zone used only to show times in notes")
    curtailment_cost_per_kwh: float = Field(
        default=1e-6, ge=0, description="tiny cost so PV is never thrown away for nothing"
    )
    battery_to_ev: bool = Field(
        default=True,
        description="false: while an EV is plugged in, batteries discharge at most what the "
        "rest of the house takes (control.ev_from_battery)",
    )
    time_share: bool = Field(
        default=True,
        description="where export pays more than import, a slot may be split into an import "
        "phase then an export phase (GB half-hourly settlement bills each period's import and "
        "export registers separately); false: each slot imports or exports, not both",
    )
    min_phase_s: float = Field(
        default=60.0,
        ge=1.0,
        description="shortest phase of a split slot [s]; shorter shares are rounded to none "
        "or the whole slot (the control loop runs every 1 s, batteries take time to ramp)",
    )

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> Problem:
        n = len(self.import_price_per_kwh)
        for name in ("export_price_per_kwh", "import_cap_w", "export_cap_w", "pv_w", "load_w"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != n:
                raise ValueError(f"{name}: has {len(value)} values, import_price has {n}")
            values = value if isinstance(value, list) else [0.0 if value is None else value]
            for i, v in enumerate(values):
                if math.isnan(v):
                    raise ValueError(f"{name}[{i}]: is NaN")
                if name != "export_price_per_kwh" and name.endswith("_w") and v < 0:
                    raise ValueError(f"{name}[{i}]: is negative ({v})")
        for i, v in enumerate(self.import_price_per_kwh):
            if math.isnan(v):
                raise ValueError(f"import_price_per_kwh[{i}]: is NaN")
        if self.version < 2:
            for i, ev in enumerate(self.events):
                if ev.import_floor_w is not None:
                    raise ValueError(f"events[{i}].import_floor_w: needs problem version 2")
        if self.version < 3:
            for i, b in enumerate(self.batteries):
                if b.soc_targets or b.end_soc_pct is not None:
                    raise ValueError(f"batteries[{i}].soc_targets: needs problem version 3")
        if self.start.minute % self.step_min or self.start.second or self.start.microsecond:
            raise ValueError(
                f"start: {self.start.isoformat()} is not on a {self.step_min}-min boundary"
            )
        return self

    @property
    def n_slots(self) -> int:
        return len(self.import_price_per_kwh)

    @property
    def step_s(self) -> float:
        return self.step_min * 60.0

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.step_min * self.n_slots)

    def slot_start(self, i: int) -> datetime:
        return self.start + timedelta(minutes=self.step_min * i)

    def series(self, name: str) -> list[float]:
        """A per-slot series; a scalar is repeated and None (no cap) becomes +inf."""
        value = getattr(self, name)
        if value is None:
            return [math.inf] * self.n_slots
        return (
            [float(v) for v in value] if isinstance(value, list) else [float(value)] * self.n_slots
        )


def problem_json_schema() -> dict[str, Any]:
    """JSON Schema of `Problem` (what `hems optimise` reads); wired as `hems schema problem`."""
    schema = Problem.model_json_schema()
    schema["$id"] = f"https://hems.invalid/schema/problem-v{PROBLEM_VERSION}.json"
    schema["title"] = "hems planning problem"
    return schema
