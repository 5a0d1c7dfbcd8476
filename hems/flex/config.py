"""Config of the flexibility events and baselines.

Example (config/demo.yaml):

    flex:
      enabled: true
      baseline_method: dfs          # elexon-bl01 | dfs | pjm-high-4-of-5 | caiso-10-of-10
      baseline_adjustment: null     # null = preset default; true / false switch it
      settlement: preset            # or positive_only / net
      meter_device_id: smart-meter  # the meter whose meter_intervals are used
      calendar: {country: GB, subdivision: ENG, holiday_set: auto, extra_holidays: []}
      policy:
        opt_out_if_ev_cannot_reach_target: true
        respect_battery_reserve: true
        max_event_duration_h: 4
        min_import_cap_w: 500
        max_import_cap_w: 13800
        max_export_floor_w: 3680
      offers: {enabled: false, horizon_h: 6, sizes_w: [500, 1000, 2000, 4000]}
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hems.core.configbase import DeviceId, Strict
from hems.flex.calendar import LEGACY_REGIONS, HolidaySet, WorkingDayCalendar, check_region
from hems.flex.presets import PRESETS

# The presets of US wholesale markets: their rules leave out the NERC holidays (PJM Manual 11
# §10 names them; CAISO's 10-in-10 leaves out weekends and holidays, taken here as the same
# NERC days, the off-peak holidays of the Western Interconnection).
NERC_METHODS = frozenset({"pjm-high-4-of-5", "caiso-10-of-10"})


class CalendarConfig(Strict):
    """Which days are holidays for the baselines (non-working days, like weekends)."""

    country: str | None = Field(
        default="GB",
        description="ISO 3166-1 alpha-2 code (python-holidays); null = weekends only",
    )
    subdivision: str | None = Field(
        default="ENG",
        description="part of the country: GB needs ENG, WLS, SCT or NIR; US a state "
        "(optional); null when only country is given",
    )
    holiday_set: Literal["auto", "public", "nerc"] = Field(
        default="auto",
        description="public holidays, or NERC (US); auto = NERC for US with a PJM/CAISO method",
    )
    extra_holidays: list[dt.date] = Field(
        default_factory=list, description="more non-working days (YYYY-MM-DD)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "region" in data:  # older configs: region: england-and-wales | scotland | ...
            region = data.pop("region")
            if "country" in data or "subdivision" in data:
                raise ValueError("region: give either region or country/subdivision, not both")
            if region not in LEGACY_REGIONS:
                raise ValueError(f"region: unknown {region!r}, one of {sorted(LEGACY_REGIONS)}")
            data["country"], data["subdivision"] = LEGACY_REGIONS[region]
        elif "country" in data and "subdivision" not in data:
            data["subdivision"] = None  # the default ENG belongs to the default GB only
        return data

    @model_validator(mode="after")
    def _known(self) -> CalendarConfig:
        fixed = "public" if self.holiday_set == "auto" else self.holiday_set
        country, subdivision = check_region(self.country, self.subdivision, fixed)
        # Store the package's spelling (upper case) without re-running validation.
        object.__setattr__(self, "country", country)
        object.__setattr__(self, "subdivision", subdivision)
        return self

    def resolved_set(self, method_name: str) -> HolidaySet:
        if self.holiday_set != "auto":
            return self.holiday_set
        if self.country == "US" and method_name in NERC_METHODS:
            return "nerc"
        return "public"

    def calendar(self, method_name: str) -> WorkingDayCalendar:
        """The working-day calendar the baselines of `method_name` use."""
        return WorkingDayCalendar(
            self.country,
            self.subdivision,
            holiday_set=self.resolved_set(method_name),
            extra=self.extra_holidays,
        )


class PolicyConfig(Strict):
    """When an event is accepted, clamped or opted out of."""

    opt_out_if_ev_cannot_reach_target: bool = True
    respect_battery_reserve: bool = Field(
        default=True, description="opt out if the event would take a battery below its reserve"
    )
    max_event_duration_h: float = Field(default=4.0, gt=0, le=48)
    min_import_cap_w: float = Field(
        default=500.0, ge=0, le=100000, description="caps below this are raised to it [W]"
    )
    max_import_cap_w: float | None = Field(
        default=None, ge=0, le=1e6, description="caps above this are lowered [W]; None = fuse"
    )
    max_export_floor_w: float | None = Field(
        default=None, ge=0, le=1e6, description="export floors above this are lowered [W]; "
        "None = the export limit",
    )  # fmt: skip
    min_notice_s: float = Field(default=0.0, ge=0, le=86400, description="opt out if shorter")
    owner_may_opt_out: bool = Field(
        default=True, description="the owner may opt out of an accepted event from the page"
    )
    owner_opt_out_before_s: float = Field(
        default=0.0,
        ge=0,
        le=86400,
        description="until this long before the start (0: until the event ends)",
    )

    @model_validator(mode="after")
    def _order(self) -> PolicyConfig:
        if self.max_import_cap_w is not None and self.max_import_cap_w < self.min_import_cap_w:
            raise ValueError("max_import_cap_w: must be >= min_import_cap_w")
        return self


class OfferConfig(Strict):
    enabled: bool = False
    horizon_h: float = Field(default=6.0, gt=0, le=48, description="periods offered ahead [h]")
    sizes_w: list[float] = Field(
        default_factory=lambda: [500.0, 1000.0, 2000.0, 4000.0],
        description="turn-down and turn-up steps tried per period [W], ascending",
    )
    interval_s: float = Field(default=1800.0, ge=60, le=86400)

    @field_validator("sizes_w")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if not value or any(v <= 0 for v in value) or value != sorted(value):
            raise ValueError("must be positive and ascending")
        return value


class FlexConfig(Strict):
    enabled: bool = False
    baseline_method: str = Field(default="dfs", description="preset name, see hems baseline")
    baseline_adjustment: bool | None = Field(
        default=None, description="in-day adjustment on/off; None = the preset's default"
    )
    settlement: Literal["preset", "positive_only", "net"] = "preset"
    quantity: Literal["import", "export", "net_import"] = "import"
    meter_device_id: DeviceId | None = Field(
        default=None, description="meter whose half-hourly intervals are used"
    )
    use_estimated_intervals: bool = Field(
        default=True, description="count meter periods the meter area interpolated"
    )
    report_delay_s: float = Field(
        default=1800.0, ge=0, le=7 * 86400, description="wait after an event for meter data"
    )
    report_give_up_s: float = Field(
        default=3 * 86400.0, gt=0, description="report with gaps marked after this long"
    )
    check_interval_s: float = Field(default=300.0, ge=1, le=86400)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    offers: OfferConfig = Field(default_factory=OfferConfig)

    @field_validator("baseline_method")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown method {value!r}, one of {sorted(PRESETS)}")
        return value

    @model_validator(mode="after")
    def _calendar_fits_method(self) -> FlexConfig:
        c = self.calendar
        try:
            check_region(c.country, c.subdivision, c.resolved_set(self.baseline_method))
        except ValueError as exc:
            auto = " (holiday_set auto with this method)" if c.holiday_set == "auto" else ""
            raise ValueError(f"calendar.{exc}{auto}") from None
        return self
