"""Local wall-clock times ("HH:MM" in the site's zone): parsed once, here."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def parse_hh_mm(hh_mm: str) -> time:
    """`HH:MM` (24 h) → a naive wall-clock time; ValueError when malformed."""
    hour, minute = (int(x) for x in hh_mm.split(":"))
    return time(hour, minute)


def minute_of_day(hh_mm: str) -> int:
    at = parse_hh_mm(hh_mm)
    return at.hour * 60 + at.minute


def next_local(now: datetime, hh_mm: str, zone: ZoneInfo) -> datetime:
    """The next instant after `now` at which the local clock shows `hh_mm` (today's if still
    ahead, else tomorrow's), aware in `zone`."""
    at = parse_hh_mm(hh_mm)
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), at, zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, zone)
    return candidate
