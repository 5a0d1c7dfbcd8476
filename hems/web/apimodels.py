"""Request and response models of the v1 API (pydantic v2). The OpenAPI document is
generated from these (hems.web.api), so what is validated and what is documented agree.

Requests forbid unknown fields (a typo is an error naming it, not a silent default).
Responses allow extra fields: inside v1 a response may gain fields, never lose or change one.
Floats that are unknown are null (NaN never reaches the wire).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from hems.core.assets import EvStrategy
from hems.core.capabilities import BatteryMode
from hems.core.readings import Quantity


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow", ser_json_inf_nan="null")


# -- errors ------------------------------------------------------------------------------------
class FieldError(_Out):
    field: str = Field(description="the field at fault (dotted path), or `request`")
    reason: str


class Problem(_Out):
    """RFC 9457 problem details, with the fields at fault."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError]


# -- health ------------------------------------------------------------------------------------
class HealthReasonOut(_Out):
    code: str = Field(description="stable reason code for alerting rules")
    detail: str


class StageFailures(_Out):
    failures: int


class HealthOut(_Out):
    """200 when `ok`; 503 with the reasons otherwise. Public (monitoring probes)."""

    ok: bool
    reasons: list[HealthReasonOut]
    stale_devices: list[str]
    stage_failures: dict[str, StageFailures]


# -- site, devices, series ---------------------------------------------------------------------
class ReadingOut(_Out):
    device_id: str
    role: str
    quantity: str
    unit: str
    value: float | None
    at: str = Field(description="ISO 8601 time of the reading")
    age_s: float
    stale: bool


class StoreStatsOut(_Out):
    buffered: int
    written: int
    dropped: int
    failed_flushes: int
    last_error: str | None


class SiteOut(_Out):
    site: str
    now: str = Field(description="ISO 8601, the daemon's clock")
    summary: dict[str, float | None] = Field(
        description="the site figures by key (grid_power_w, pv_power_w, …); null when unknown"
    )
    readings: list[ReadingOut]
    store: StoreStatsOut | None


class DeviceOut(_Out):
    device_id: str
    role: str
    stale: bool
    reason: str | None = Field(description="why the device is down, when its adapter said so")


class DevicesOut(_Out):
    devices: list[DeviceOut]


class SeriesRow(_Out):
    start: str
    n: int
    mean: float | None
    min: float | None
    max: float | None
    last: float | None
    import_wh: float | None
    export_wh: float | None


class SeriesOut(_Out):
    device: str
    quantity: str
    resolution_s: int
    rows: list[SeriesRow]


class SeriesQuery(_In):
    device: str = Field(min_length=1, max_length=64, description="device id")
    quantity: Quantity = Quantity.POWER_W
    minutes: int = Field(60, ge=1, le=60 * 24 * 31, description="how far back, up to 31 days")


# -- plan --------------------------------------------------------------------------------------
class PlanSlotOut(_Out):
    start: str
    duration_s: float
    price_import_per_kwh: float | None
    price_export_per_kwh: float | None
    grid_import_w: float | None
    grid_export_w: float | None
    targets_w: dict[str, float | None]
    soc_pct: dict[str, float | None]
    switches: dict[str, bool]


class PlanBody(_Out):
    created_at: str
    status: str
    cost: float | None
    notes: list[str]
    slots: list[PlanSlotOut]


class PlanOut(_Out):
    plan: PlanBody | None = Field(description="null until the planner has made one")


# -- control -----------------------------------------------------------------------------------
class FlexLiveOut(_Out):
    event_id: str
    kind: str
    active: bool
    baseline_w: float | None
    limit_w: float | None
    delivered_w: float | None
    delivered_wh: float | None
    expected_delivery_wh: float | None


class ControlStatus(_Out):
    cycles: int
    healthy: bool
    errors: int
    last_cycle_ms: float | None
    overrides: dict[str, dict[str, Any]]
    devices: dict[str, dict[str, Any]]
    active_interventions: list[dict[str, Any]]


class ControlOut(_Out):
    status: ControlStatus
    flex: FlexLiveOut | None


class InterventionOut(_Out):
    at: str
    rule: str
    device_id: str = Field(description='"" for site-wide')
    event: str
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]


class InterventionsOut(_Out):
    interventions: list[InterventionOut] = Field(description="the latest 20, oldest first")


class OverrideIn(_In):
    target: float | bool = Field(description="W (or % for a dimmable load); true/false switches")
    minutes: float = Field(ge=1, le=24 * 60)


class OverrideOut(_Out):
    device_id: str
    target: float | bool
    expires_at: str


# -- chargers and EV sessions ------------------------------------------------------------------
class ChargerOut(_Out):
    id: str
    identity: str
    state: str
    status: str | None
    pending: bool
    faulted: str | None
    limit_a: float | None
    phases: int | None


class EvSessionOut(_Out):
    energy_wh: float | None
    departure: str
    plugged_at: str
    set_by: str
    soc_pct: float | None = None
    target_soc_pct: float | None = None


class ChargersOut(_Out):
    chargers: dict[str, ChargerOut]
    pending: list[str] = Field(description="charge-point identities waiting for acceptance")
    sessions: dict[str, EvSessionOut]
    modes: dict[str, str] = Field(description="the charging mode each charger follows now")


class EvSessionsOut(_Out):
    sessions: dict[str, EvSessionOut]


class EvModeIn(_In):
    mode: EvStrategy | Literal["default"] = Field(
        description="plan (by departure), fast, min-pv, pv-only, off; default: as configured"
    )


class EvModeOut(_Out):
    charger_id: str
    mode: str


class EvSessionIn(_In):
    """The energy wanted, or the car's SoC now and the SoC wanted (then the energy comes
    from the car's capacity)."""

    energy_kwh: float | None = Field(None, gt=0, le=200)
    soc_pct: float | None = Field(None, ge=0, le=100)
    target_soc_pct: float | None = Field(None, ge=0, le=100)
    departure: str = Field(
        min_length=5, max_length=40, description="HH:MM (local, next) or ISO 8601 with offset"
    )


class ChargerDecisionOut(_Out):
    identity: str
    decision: Literal["accepted", "rejected"]


# -- batteries ---------------------------------------------------------------------------------
class OverrideStatusOut(_Out):
    target: float | bool | None
    mode: str | None
    expires_at: str


class BatteriesOut(_Out):
    modes: dict[str, list[str]] = Field(description="the modes each controlled battery offers")
    overrides: dict[str, OverrideStatusOut]


class BatteryModeIn(_In):
    mode: BatteryMode
    minutes: float = Field(ge=1, le=24 * 60)
    power_w: float | None = Field(None, ge=-100_000, le=100_000)


class BatteryModeOut(_Out):
    device_id: str
    mode: str
    expires_at: str


# -- flexibility -------------------------------------------------------------------------------
class FlexEventOut(_Out):
    event_id: str
    modification_number: int
    kind: str
    start: str | None
    end: str | None
    status: str
    reasons: list[Any]
    received_at: str | None
    requested: dict[str, Any]
    effective: dict[str, Any]


class RejectedOut(_Out):
    reason: str
    detail: str


class FlexEventsOut(_Out):
    events: list[FlexEventOut]
    rejected: list[RejectedOut]
    live: FlexLiveOut | None = Field(description="the event control is delivering now")


class FlexReportOut(_Out):
    event_id: str
    modification_number: int
    created_at: str | None
    method: str | None
    method_version: str | None
    days_used: int
    total_delivered_kwh: float | None
    meter_data_sha256: str | None
    load_shifting_suspected: bool | None
    periods: list[dict[str, Any]]


class FlexReportsOut(_Out):
    reports: list[FlexReportOut]


class OptOutOut(_Out):
    event_id: str
    status: Literal["opted_out"]


# -- config ------------------------------------------------------------------------------------
class ConfigOut(_Out):
    config: dict[str, Any] = Field(
        description="the validated configuration as it runs; secrets show as **********"
    )
    file_sha256: str | None = Field(
        description="SHA-256 of the config file as it is on disk now (null when the daemon "
        "runs without a file); send it as `base_sha256` with PATCH so that a hand edit made "
        "in between is not overwritten"
    )


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError("must be a string, a finite number, true/false or null")


# One value of the form: a JSON scalar, one error naming the field when it is not.
ConfigValue = Annotated[
    str | int | float | bool | None,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean", "null"]}),
]


class ConfigPatchIn(_In):
    """Values for fields of the installer's config form, keyed by the field's path in the
    file as check-config names it (`limits.fuse_a`, `devices[3].ev.target_energy_wh`);
    null (or an empty string) removes the key, so the default applies. Checked by the
    same code as the form: each value as its field's type, then the whole file by
    check-config; nothing is written unless all of it passes. Comments and layout of the
    rest of the file are kept."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"changes": {"limits.fuse_a": 63}, "restart": False}]}
    )

    changes: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], ConfigValue] = (
        Field(max_length=200, description="field path -> new value (null: back to the default)")
    )
    base_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="the `file_sha256` the change was made against (from GET /config or the "
        "last PATCH); when the file on disk differs, nothing is written (409)",
    )
    restart: bool = Field(
        True,
        description="restart the daemon now when the file differs from the configuration it "
        "runs (as the installer's page does); false: the file is written, it applies at the "
        "next start",
    )


class ConfigPatchOut(_Out):
    changed: list[str] = Field(description="the fields whose value in the file changed")
    written: bool = Field(description="false when every value was the file's already")
    backup: str | None = Field(description="where the previous file was kept (`<file>.bak`)")
    restart_required: bool = Field(
        description="the file differs from the configuration the daemon runs; it applies "
        "only when the daemon starts again (no stage reloads its configuration in place)"
    )
    restarting: bool = Field(description="the daemon restarts now to run the file")
    file_sha256: str = Field(description="SHA-256 of the config file after this request")
