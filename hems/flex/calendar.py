"""Working-day calendar and settlement periods in the site's time zone.

Settlement periods are counted from local midnight, so a GB day has 48 half-hour periods,
46 on the spring clock change and 50 on the autumn one. All instants here are aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
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


def day_periods(day: date, tz: ZoneInfo, period_s: int = 1800) -> list[datetime]:
    """UTC starts of the settlement periods of local `day`, in order (46/48/50 for GB)."""
    start = datetime.combine(day, time(0), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    n = int((end - start).total_seconds()) // period_s
    return [start + timedelta(seconds=i * period_s) for i in range(n)]


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
