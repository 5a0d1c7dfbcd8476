"""Delivery reports: the evidence of one event, as a plain JSON-ready payload.

The uplink signs the payload (Ed25519 over RFC 8785 JSON) and sends it on
`up/report/delivery`. RFC 8785 has no NaN, so missing values are `null`; energies are
rounded to 6 decimals (Wh resolution is 3) so the payload is stable across platforms.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from hems.flex.baselines import BaselineMethod, BaselineResult, Direction, compute_baseline
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.meterdata import CANONICAL_FORMAT, MeterData, Quantity, meter_hash

REPORT_SCHEMA = "hems.flex.delivery-report/1"


def _num(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else round(v, 6)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportPeriod(_Model):
    period_start: str  # UTC, ISO 8601 "Z"
    period_end: str
    unadjusted_baseline_kwh: float | None
    adjustment_kwh: float | None
    baseline_kwh: float | None
    metered_kwh: float | None
    delivered_kwh: float | None


class ExcludedDay(_Model):
    day: str  # local date YYYY-MM-DD
    reason: str


class ReportMethod(_Model):
    reference: str
    lookback_days: int
    adjustment: str  # none / additive / multiplicative
    settlement: str  # positive_only / net
    period_s: int


class ShadowReport(_Model):
    window_start: str
    window_end: str
    window_metered_kwh: float | None
    window_unadjusted_baseline_kwh: float | None
    ratio: float | None
    threshold_fraction: float
    load_shifting_suspected: bool


class MeterEvidence(_Model):
    format: str
    periods: int
    estimated_periods: int  # of `periods`, interpolated across a meter gap
    first_period: str | None
    last_period: str | None


class DeliveryReport(_Model):
    """Fields named as in the uplink's `up/report/delivery` model, plus the evidence."""

    schema_: str = REPORT_SCHEMA
    event_id: str | None
    modification_number: int | None
    method: str  # preset name
    method_version: str
    direction: str
    quantity: str
    timezone: str
    window_start: str
    window_end: str
    method_details: ReportMethod
    day_type: str
    days_used: list[str]  # local dates, most recent first
    days_excluded: list[str]  # local dates
    exclusions: list[ExcludedDay]  # the same days with their reasons
    problem: str | None
    adjustment_factor: float | None
    periods: list[ReportPeriod]
    total_delivered_kwh: float | None
    shadow: ShadowReport
    meter_data_sha256: str  # SHA-256 of the canonical meter data used (see meter_data)
    meter_data: MeterEvidence

    def payload(self) -> dict[str, object]:
        """The JSON-ready dict (key `schema`, not `schema_`)."""
        d = self.model_dump()
        d["schema"] = d.pop("schema_")
        return d


def build_report(
    result: BaselineResult,
    data: MeterData,
    *,
    quantity: Quantity,
    tz: ZoneInfo,
    event_id: str | None = None,
    modification_number: int | None = None,
) -> DeliveryReport:
    """Turn a computed baseline into the report payload, hashing the meter data it used."""
    m = result.method
    used = [t for t in result.data_periods if t in data.import_kwh or t in data.export_kwh]
    return DeliveryReport(
        event_id=event_id,
        modification_number=modification_number,
        direction=result.direction,
        quantity=quantity,
        timezone=tz.key,
        window_start=_iso(result.event_start),
        window_end=_iso(result.event_end),
        method=m.name,
        method_version=m.version,
        method_details=ReportMethod(
            reference=m.reference,
            lookback_days=m.lookback_days,
            adjustment=m.adjustment.kind,
            settlement=m.settlement,
            period_s=m.period_s,
        ),
        day_type=result.selection.day_type,
        days_used=[d.isoformat() for d in result.selection.used],
        days_excluded=[d.isoformat() for d, _ in result.selection.excluded],
        exclusions=[ExcludedDay(day=d.isoformat(), reason=r) for d, r in result.selection.excluded],
        problem=result.selection.problem,
        adjustment_factor=_num(result.adjustment_factor),
        periods=[
            ReportPeriod(
                period_start=_iso(p.period_start),
                period_end=_iso(p.period_start + timedelta(seconds=m.period_s)),
                unadjusted_baseline_kwh=_num(p.unadjusted_kwh),
                adjustment_kwh=_num(p.adjustment_kwh),
                baseline_kwh=_num(p.baseline_kwh),
                metered_kwh=_num(p.metered_kwh),
                delivered_kwh=_num(p.delivered_kwh),
            )
            for p in result.periods
        ],
        total_delivered_kwh=_num(result.total_delivered_kwh),
        shadow=ShadowReport(
            window_start=_iso(result.shadow.window_start),
            window_end=_iso(result.shadow.window_end),
            window_metered_kwh=_num(result.shadow.window_metered_kwh),
            window_unadjusted_baseline_kwh=_num(result.shadow.window_unadjusted_kwh),
            ratio=_num(result.shadow.ratio),
            threshold_fraction=result.shadow.threshold_fraction,
            load_shifting_suspected=result.shadow.flagged,
        ),
        meter_data_sha256=meter_hash(data, used),
        meter_data=MeterEvidence(
            format=CANONICAL_FORMAT,
            periods=len(used),
            estimated_periods=len(data.estimated.intersection(used)),
            first_period=_iso(used[0]) if used else None,
            last_period=_iso(used[-1]) if used else None,
        ),
    )


def report_for_event(
    data: MeterData,
    event_start: datetime,
    event_end: datetime,
    method: BaselineMethod,
    calendar: WorkingDayCalendar,
    tz: ZoneInfo,
    *,
    quantity: Quantity = "import",
    direction: Direction = "turn_down",
    event_days: frozenset[date] = frozenset(),
    event_id: str | None = None,
    modification_number: int | None = None,
) -> DeliveryReport:
    """Compute the baseline on `quantity` and build the report in one call."""
    result = compute_baseline(
        data.series(quantity), event_start, event_end, method, calendar, tz,
        direction=direction, event_days=event_days,
    )  # fmt: skip
    return build_report(
        result, data, quantity=quantity, tz=tz, event_id=event_id,
        modification_number=modification_number,
    )  # fmt: skip
