"""Baselines over holiday weeks beyond the years a hand-written table would cover (2028),
with the calendar taken from the flex config as the service takes it."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hems.flex import presets
from hems.flex.baselines import compute_baseline
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.config import FlexConfig
from hems.store.rollup import settlement_periods

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


def history(first: date, last: date, tz: ZoneInfo, kwh_on) -> dict[datetime, float]:  # type: ignore[no-untyped-def]
    """Every settlement period of local days first..last: kwh_on(day) in each."""
    out: dict[datetime, float] = {}
    day = first
    while day <= last:
        for t in settlement_periods(day, tz):
            out[t] = kwh_on(day)
        day += timedelta(days=1)
    return out


def at(day: date, hh: int, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hh), tz)


def gb_christmas_2028(day: date) -> float:
    if day in (date(2028, 12, 25), date(2028, 12, 26)):
        return 9.0  # Christmas Day and Boxing Day (Mon, Tue)
    return 5.0 if day.weekday() >= 5 else 1.0


def test_bl01_working_day_after_christmas_2028_leaves_the_holidays_out() -> None:
    cfg = FlexConfig.model_validate({"baseline_method": "elexon-bl01"})  # GB, ENG by default
    cal = cfg.calendar.calendar(cfg.baseline_method)
    series = history(date(2028, 10, 20), date(2028, 12, 27), LONDON, gb_christmas_2028)
    m = presets.method("elexon-bl01", adjustment=False)
    day = date(2028, 12, 27)  # Wednesday, a working day
    r = compute_baseline(series, at(day, 17, LONDON), at(day, 18, LONDON), m, cal, LONDON)
    assert r.selection.day_type == "working"
    assert date(2028, 12, 25) not in r.selection.used
    assert date(2028, 12, 26) not in r.selection.used
    assert r.selection.used[:2] == (date(2028, 12, 22), date(2028, 12, 21))
    assert [p.baseline_kwh for p in r.periods] == [1.0, 1.0]  # only working days (1.0 each)
    # Without holidays the two 9.0 days would be working days and lift the mean:
    # (2 × 9.0 + 8 × 1.0) / 10 = 2.6.
    plain = compute_baseline(
        series, at(day, 17, LONDON), at(day, 18, LONDON), m, WorkingDayCalendar(None, None), LONDON
    )
    assert [p.baseline_kwh for p in plain.periods] == pytest.approx([2.6, 2.6])


def test_bl01_on_boxing_day_2028_uses_non_working_days() -> None:
    cal = FlexConfig().calendar.calendar("elexon-bl01")
    series = history(date(2028, 10, 20), date(2028, 12, 26), LONDON, gb_christmas_2028)
    m = presets.method("elexon-bl01", adjustment=False)
    day = date(2028, 12, 26)
    r = compute_baseline(series, at(day, 17, LONDON), at(day, 18, LONDON), m, cal, LONDON)
    assert r.selection.day_type == "non-working"
    # The 4 most recent non-working days: Christmas Day, Sun 24, Sat 23, Sun 17 December.
    assert r.selection.used == (
        date(2028, 12, 25), date(2028, 12, 24), date(2028, 12, 23), date(2028, 12, 17),
    )  # fmt: skip
    assert r.periods[0].baseline_kwh == pytest.approx((9.0 + 3 * 5.0) / 4)


def test_pjm_cbl_the_day_after_thanksgiving_2028_leaves_it_out() -> None:
    cfg = FlexConfig.model_validate(
        {"baseline_method": "pjm-high-4-of-5", "calendar": {"country": "US"}}
    )
    cal = cfg.calendar.calendar(cfg.baseline_method)
    assert cal.label == "US NERC holidays"
    usage = {  # the five weekdays before Friday 24 Nov, Thanksgiving (Thu 23) the highest
        date(2028, 11, 23): 9.0,
        date(2028, 11, 22): 1.0,
        date(2028, 11, 21): 1.1,
        date(2028, 11, 20): 1.2,
        date(2028, 11, 17): 1.3,
        date(2028, 11, 16): 1.4,
    }
    series = history(date(2028, 10, 1), date(2028, 11, 24), NEW_YORK, lambda d: usage.get(d, 0.8))
    m = presets.method("pjm-high-4-of-5", adjustment=False)
    day = date(2028, 11, 24)
    r = compute_baseline(series, at(day, 14, NEW_YORK), at(day, 15, NEW_YORK), m, cal, NEW_YORK)
    assert date(2028, 11, 23) not in r.selection.used
    # Pool: 22, 21, 20, 17, 16 Nov; the highest 4 of them: 16, 17, 20, 21 Nov.
    assert sorted(r.selection.used) == [
        date(2028, 11, 16), date(2028, 11, 17), date(2028, 11, 20), date(2028, 11, 21),
    ]  # fmt: skip
    assert r.periods[0].baseline_kwh == pytest.approx((1.4 + 1.3 + 1.2 + 1.1) / 4)
    # On Thanksgiving itself the event is a holiday event: weekend-and-holiday days only.
    thanksgiving = date(2028, 11, 23)
    h = compute_baseline(
        series, at(thanksgiving, 14, NEW_YORK), at(thanksgiving, 15, NEW_YORK), m, cal, NEW_YORK
    )
    assert h.selection.day_type == "non-working"
    assert all(d.weekday() >= 5 for d in h.selection.used)
