"""Working-day calendar and settlement periods in the site's time zone.

The settlement periods of a local day come from `hems.store.rollup.settlement_periods`
(48 half hours, 46/50 on clock changes). All instants here are aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

# Bank holidays in England and Wales, as published on https://www.gov.uk/bank-holidays
# (the JSON at https://www.gov.uk/bank-holidays.json, division "england-and-wales").
# Substitute days are listed where the holiday falls on a weekend (26 Dec 2026, 25-26 Dec 2027).
_ENGLAND_AND_WALES = """
2024-01-01 2024-03-29 2024-04-01 2024-05-06 2024-05-27 2024-08-26 2024-12-25 2024-12-26
2025-01-01 2025-04-18 2025-04-21 2025-05-05 2025-05-26 2025-08-25 2025-12-25 2025-12-26
2026-01-01 2026-04-03 2026-04-06 2026-05-04 2026-05-25 2026-08-31 2026-12-25 2026-12-28
2027-01-01 2027-03-26 2027-03-29 2027-05-03 2027-05-31 2027-08-30 2027-12-27 2027-12-28
"""
BANK_HOLIDAYS: dict[str, frozenset[date]] = {
    "england-and-wales": frozenset(date.fromisoformat(d) for d in _ENGLAND_AND_WALES.split()),
    "none": frozenset(),
}
HOLIDAY_YEARS = (2024, 2027)  # first and last year the shipped lists cover


class WorkingDayCalendar:
    """Mon-Fri are working days unless they are a holiday of the configured region."""

    def __init__(self, region: str = "england-and-wales", extra: Iterable[date] = ()) -> None:
        if region not in BANK_HOLIDAYS:
            raise ValueError(f"region: unknown {region!r}, one of {sorted(BANK_HOLIDAYS)}")
        self.region = region
        self.holidays = BANK_HOLIDAYS[region] | frozenset(extra)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def day_type(self, day: date) -> str:
        """'working' or 'non-working' (weekend or holiday)."""
        return "working" if self.is_working_day(day) else "non-working"


def local_day(t: datetime, tz: ZoneInfo) -> date:
    return t.astimezone(tz).date()


def wall_clock(t: datetime, tz: ZoneInfo) -> time:
    """Local wall-clock start time of an instant (both folds of the autumn hour map alike)."""
    return t.astimezone(tz).time().replace(fold=0)


def at_wall_clock(day: date, clock: time, tz: ZoneInfo) -> datetime | None:
    """UTC instant of local `day` at `clock`, or None if that time does not exist that day.

    In the repeated autumn hour the first occurrence (fold=0) is returned.
    """
    local = datetime.combine(day, clock, tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None  # skipped by the spring clock change
    return utc
