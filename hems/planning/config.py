"""Config of the planner (tariffs, forecasts, optimiser).

Example (config/demo.yaml):

    planner:
      enabled: true
      horizon_h: 48
      step_min: 30
      tariff:
        kind: octopus_agile
        octopus: {product_code: AGILE-24-10-01, tariff_code: E-1R-AGILE-24-10-01-C,
                  export_product_code: AGILE-OUTGOING-19-05-13,
                  export_tariff_code: E-1R-AGILE-OUTGOING-19-05-13-C}
        fallback_import_per_kwh: 0.25
        fallback_export_per_kwh: 0.15
      forecast:
        arrays: [{kwp: 4.2, tilt_deg: 35, azimuth_deg: 180}]

The batteries, EVs and deferrable loads the planner plans are not listed here: they are the
`devices[]` entries with a `battery:`, `ev:` or `load: {run_time_min: …}` section, which the
composition root hands over with `PlannerConfig.with_assets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from hems.core.assets import BatteryFacts, EvNeeds, HhMm
from hems.core.configbase import DeviceId, Strict
from hems.planning.tariff_config import (
    CarbonConfig,
    EntsoeConfig,
    NordpoolConfig,
    OctopusConfig,
    TariffConfig,
    TibberConfig,
    TouBand,
)

__all__ = [
    "BatteryPlanConfig",
    "CarbonConfig",
    "DeferrableLoadConfig",
    "EntsoeConfig",
    "EvPlanConfig",
    "ForecastConfig",
    "NordpoolConfig",
    "OctopusConfig",
    "PlannerConfig",
    "PvArrayConfig",
    "ReplanConfig",
    "TariffConfig",
    "TibberConfig",
    "TouBand",
]


class PvArrayConfig(Strict):
    kwp: float = Field(gt=0, le=1000, description="DC peak power [kWp]")
    tilt_deg: float = Field(default=35.0, ge=0, le=90)
    azimuth_deg: float = Field(
        default=180.0, ge=0, le=360, description="compass bearing: 180 = south"
    )
    loss_factor: float = Field(default=0.86, gt=0, le=1, description="system efficiency η_sys")
    gamma_per_c: float = Field(default=-0.004, ge=-0.01, le=0, description="power temp coeff")


class ForecastConfig(Strict):
    base_url: str = "https://api.open-meteo.com"
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    arrays: list[PvArrayConfig] = Field(default_factory=list)
    pv_device_ids: list[DeviceId] = Field(
        default_factory=list, description="PV meters whose history calibrates the forecast"
    )
    calibration_min: float = Field(
        default=0.5, gt=0, le=1, description="lowest PV calibration factor per hour"
    )
    calibration_max: float = Field(
        default=1.5, ge=1, le=5, description="highest PV calibration factor per hour"
    )
    calibration_days: int = Field(
        default=7, ge=1, le=30, description="days of measured PV the calibration learns from"
    )
    calibration_min_days: int = Field(
        default=3,
        ge=1,
        le=30,
        description="an hour is calibrated once it has data from this many days",
    )
    accuracy_days: int = Field(
        default=7, ge=1, le=60, description="days the forecast accuracy (MAE) is computed over"
    )
    history_days: int = Field(default=28, ge=1, le=120)
    recency_half_life_days: float = Field(default=7.0, gt=0, le=120)
    default_load_w: float = Field(default=400.0, ge=0, le=50000)

    @model_validator(mode="after")
    def _windows(self) -> ForecastConfig:
        if self.calibration_min_days > self.calibration_days:
            raise ValueError("calibration_min_days: must be <= calibration_days")
        for name in ("calibration_days", "accuracy_days"):
            if getattr(self, name) > self.history_days:
                raise ValueError(f"{name}: must be <= history_days ({self.history_days})")
        return self


class BatteryPlanConfig(BatteryFacts):
    """A battery as the planner sees it: its `devices[]` entry's `battery:` facts."""

    device_id: DeviceId
    capacity_wh: float = Field(gt=0, le=1e6, description="usable capacity [Wh]")


class EvPlanConfig(EvNeeds):
    """An EV charger as the planner sees it: the charger entry's ratings and its `ev:` needs."""

    charger_id: DeviceId
    phases: Literal[1, 3] = 1
    voltage_v: float = Field(default=230.0, gt=0, le=500)
    min_current_a: float = Field(default=6.0, ge=0, le=80)
    max_current_a: float = Field(default=32.0, gt=0, le=80)

    @model_validator(mode="after")
    def _currents(self) -> EvPlanConfig:
        if self.min_current_a > self.max_current_a:
            raise ValueError("min_current_a: must be <= max_current_a")
        return self

    @property
    def min_power_w(self) -> float:
        return self.min_current_a * self.phases * self.voltage_v

    @property
    def max_power_w(self) -> float:
        return self.max_current_a * self.phases * self.voltage_v


class DeferrableLoadConfig(Strict):
    """A load the planner schedules: a `devices[]` entry with `load: {run_time_min: …}`."""

    device_id: DeviceId
    power_w: float = Field(gt=0, le=50000)
    run_time_min: float = Field(gt=0, le=24 * 60)
    window_start: HhMm = Field(default="00:00", description="local HH:MM")
    window_end: HhMm = Field(default="00:00", description="local HH:MM; equal = all day")
    contiguous: bool = False
    min_on_min: float = Field(default=0.0, ge=0, le=24 * 60)


class SocTargetConfig(Strict):
    """A soft battery SoC target (one kind per entry), beside the terminal value.

    `soc_pct` + `by`: at least this SoC at the next local `by`; `min_soc_pct` + `start` +
    `end`: at least this SoC all through the local window (the current one if open, else
    the next); `end_soc_pct`: this SoC at the end of the horizon, pinned (the terminal value
    is then not counted). Soft: when the battery cannot get there the plan still comes,
    with a note naming the target and what it reaches."""

    device_id: DeviceId = Field(description="a battery the planner plans (devices[].battery)")
    soc_pct: float | None = Field(default=None, ge=0, le=100, description="[%] by `by`")
    by: HhMm | None = Field(default=None, description="local HH:MM, with soc_pct")
    min_soc_pct: float | None = Field(
        default=None, ge=0, le=100, description="[%] all through start..end"
    )
    start: HhMm | None = Field(default=None, description="local HH:MM, with min_soc_pct")
    end: HhMm | None = Field(
        default=None, description="local HH:MM, with min_soc_pct; equal to start = all day"
    )
    end_soc_pct: float | None = Field(
        default=None, ge=0, le=100, description="[%] pinned at the end of the horizon"
    )
    penalty_per_kwh: float = Field(
        default=10.0, gt=0, le=1000, description="cost of each kWh missing [currency/kWh]"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SocTargetConfig:
        kinds = [
            self.soc_pct is not None or self.by is not None,
            self.min_soc_pct is not None or self.start is not None or self.end is not None,
            self.end_soc_pct is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                "give exactly one of: soc_pct + by, min_soc_pct + start + end, end_soc_pct"
            )
        if kinds[0] and (self.soc_pct is None or self.by is None):
            raise ValueError(f"{'by' if self.by is None else 'soc_pct'}: needed with the other")
        if kinds[1]:
            for name in ("min_soc_pct", "start", "end"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: needed with min_soc_pct, start and end")
        return self


class ReplanConfig(Strict):
    on_slot_boundary: bool = True
    forecast_error_fraction: float = Field(
        default=0.3, gt=0, le=10, description="replan when measured differs by this fraction"
    )
    forecast_error_min_w: float = Field(default=500.0, ge=0, le=1e6)
    min_interval_s: float = Field(default=30.0, ge=0, le=3600, description="debounce")
    check_interval_s: float = Field(default=30.0, gt=0, le=3600)


class PlannerConfig(Strict):
    enabled: bool = False
    horizon_h: float = Field(default=48.0, gt=0, le=96)
    step_min: Literal[15, 30] = 30
    time_limit_s: float = Field(default=5.0, gt=0, le=600)
    # A plan is labelled "optimal" only when proven within this gap of the best possible
    # cost; 0.5 % let plans up to ~0.35 % dearer than the optimum through (bench_planner.py
    # --families). When the time limit stops the search first the plan is "feasible" and its
    # notes give the gap that was proven.
    mip_rel_gap: float = Field(
        default=0.001, ge=0, le=1, description="relative MIP gap: 'optimal' is proven within it"
    )
    time_share: bool = Field(
        default=True,
        description="where export pays more than import, a slot may be split into an import "
        "phase then an export phase (billed exactly: GB half-hourly settlement meters import "
        "and export separately); false: each slot imports or exports, not both",
    )
    min_phase_s: float = Field(
        default=60.0,
        ge=10.0,
        le=900.0,
        description="shortest phase of a split slot [s]; shorter ones become none or the whole "
        "slot (the loop runs every control.cycle_s and a battery takes time to ramp)",
    )
    tariff: TariffConfig = Field(default_factory=TariffConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    replan: ReplanConfig = Field(default_factory=ReplanConfig)
    retention_days: float = Field(
        default=14.0, gt=0, le=400, description="keep stored plans and forecasts this long"
    )
    soc_targets: list[SocTargetConfig] = Field(
        default_factory=list,
        description="battery SoC targets by a time, minimum SoC per window, pinned end SoC",
    )

    @model_validator(mode="after")
    def _accuracy_kept(self) -> PlannerConfig:
        if self.forecast.accuracy_days > self.retention_days:
            raise ValueError(
                f"forecast.accuracy_days: must be <= retention_days ({self.retention_days:g}): "
                "older forecasts are deleted"
            )
        return self

    # The devices planned, from their `devices[]` entries (never from this file section).
    _batteries: tuple[BatteryPlanConfig, ...] = PrivateAttr(default=())
    _evs: tuple[EvPlanConfig, ...] = PrivateAttr(default=())
    _loads: tuple[DeferrableLoadConfig, ...] = PrivateAttr(default=())

    def with_assets(
        self,
        batteries: Sequence[BatteryPlanConfig] = (),
        evs: Sequence[EvPlanConfig] = (),
        loads: Sequence[DeferrableLoadConfig] = (),
    ) -> PlannerConfig:
        """This policy, planning these devices (a copy; the section itself is unchanged)."""
        ids = [b.device_id for b in batteries] + [e.charger_id for e in evs]
        ids += [ld.device_id for ld in loads]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"device id {dup[0]!r} is planned twice")
        planned = {b.device_id for b in batteries}
        for i, t in enumerate(self.soc_targets):
            if t.device_id not in planned:
                raise ValueError(
                    f"soc_targets[{i}].device_id: {t.device_id!r} is not a planned battery "
                    "(a devices[] entry with battery: {capacity_wh: …})"
                )
        copy = self.model_copy()
        copy._batteries, copy._evs, copy._loads = tuple(batteries), tuple(evs), tuple(loads)
        return copy

    @property
    def batteries(self) -> tuple[BatteryPlanConfig, ...]:
        return self._batteries

    @property
    def evs(self) -> tuple[EvPlanConfig, ...]:
        return self._evs

    @property
    def loads(self) -> tuple[DeferrableLoadConfig, ...]:
        return self._loads
