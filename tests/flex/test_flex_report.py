"""Delivery report payload: stable hash of the meter data used, JSON-ready, uplink-shaped."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, date, datetime

import pytest
from flexdata import LONDON, build_data, local

from hems.flex import presets
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.meterdata import MeterData, canonical_bytes, parse_csv
from hems.flex.report import report_for_event


def data(cal: WorkingDayCalendar) -> MeterData:
    def fn(d: date, t: datetime) -> float:
        if d == date(2024, 1, 31) and t.hour == 17:
            return 0.1
        return 0.5 if cal.is_working_day(d) else 2.0

    return build_data(date(2023, 12, 1), date(2024, 1, 31), fn)


def report(d: MeterData, cal: WorkingDayCalendar, **kw):
    return report_for_event(
        d, local("2024-01-31", "17:00"), local("2024-01-31", "18:00"), presets.DFS, cal, LONDON,
        event_id="ev-1", modification_number=2, **kw,
    )  # fmt: skip


def test_canonical_form_is_documented_text() -> None:
    d = parse_csv(
        "period_start,import_kwh,export_kwh\n"
        "2024-01-31T17:30:00+00:00,0.25,\n"
        "2024-01-31T17:00:00Z,1,0.5\n"
    )
    t0 = datetime(2024, 1, 31, 17, tzinfo=UTC)
    t1 = datetime(2024, 1, 31, 17, 30, tzinfo=UTC)
    text = canonical_bytes(d, [t1, t0]).decode()
    assert text == (
        "period_start,import_kwh,export_kwh\n"
        "2024-01-31T17:00:00Z,1.000000,0.500000\n"
        "2024-01-31T17:30:00Z,0.250000,\n"
    )


def test_hash_is_stable_and_covers_exactly_the_data_used(cal: WorkingDayCalendar) -> None:
    d = data(cal)
    r1, r2 = report(d, cal), report(data(cal), cal)
    assert r1.meter_data_sha256 == r2.meter_data_sha256
    # 10 days x 48 + 6 adjustment-window periods + 2 event periods
    assert r1.meter_data.periods == 488
    # a day that was not used (a weekend) does not change the hash ...
    d.import_kwh[local("2024-01-27", "12:00").astimezone(UTC)] = 3.0
    assert report(d, cal).meter_data_sha256 == r1.meter_data_sha256
    # ... a used day does
    d.import_kwh[local("2024-01-30", "03:00").astimezone(UTC)] = 0.5001
    assert report(d, cal).meter_data_sha256 != r1.meter_data_sha256


def test_payload_is_strict_json_with_null_for_missing(cal: WorkingDayCalendar) -> None:
    d = data(cal)
    d.import_kwh[local("2024-01-31", "17:30").astimezone(UTC)] = math.nan
    p = report(d, cal).payload()
    text = json.dumps(p, allow_nan=False, sort_keys=True)  # RFC 8785 has no NaN
    assert p["schema"] == "hems.flex.delivery-report/1"
    assert p["periods"][1]["metered_kwh"] is None and p["periods"][1]["delivered_kwh"] is None
    assert p["periods"][0]["delivered_kwh"] == pytest.approx(0.4)
    assert p["total_delivered_kwh"] is None
    assert (
        hashlib.sha256(text.encode()).hexdigest()
        == hashlib.sha256(
            json.dumps(report(d, cal).payload(), allow_nan=False, sort_keys=True).encode()
        ).hexdigest()
    )


def test_payload_validates_as_the_uplink_delivery_report(cal: WorkingDayCalendar) -> None:
    from hems.uplink import messages

    payload = report(data(cal), cal).payload()
    wire = messages.DeliveryReport.model_validate(payload)
    assert wire.event_id == "ev-1" and wire.modification_number == 2
    assert wire.method == "dfs" and wire.meter_data_sha256 == payload["meter_data_sha256"]
    assert len(wire.periods) == 2
