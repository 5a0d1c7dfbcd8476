"""Working-day calendar and settlement periods in the site's time zone.

Holidays come from the `holidays` package (python-holidays): the public holidays of a
country and, where the country has them, a subdivision (GB: ENG, WLS, SCT, NIR; US: the
states), with the substitute ("observed") days the package lists. For US wholesale-market
baselines there is also the NERC holiday set (see `nerc_holidays`).
The package is asked in a child process (`package_holidays`): it would hold 11-19 MiB of the
daemon's RSS for a few dates a year.

The settlement periods of a local day come from `hems.store.rollup.settlement_periods`
(48 half hours, 46/50 on clock changes). All instants here are aware UTC.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

HolidaySet = Literal["public", "nerc"]

# Older configs named a region instead of a country and subdivision.
LEGACY_REGIONS: dict[str, tuple[str | None, str | None]] = {
    "england-and-wales": ("GB", "ENG"),
    "scotland": ("GB", "SCT"),
    "northern-ireland": ("GB", "NIR"),
    "none": (None, None),
}

# The NERC "additional off-peak days" for the Eastern and Western Interconnections, as named
# by the holidays package's US calendar (English names, observed=False).
_NERC_NAMES = (
    "New Year's Day",
    "Memorial Day",
    "Independence Day",
    "Labor Day",
    "Thanksgiving Day",
    "Christmas Day",
)


# Countries whose package calendar without a subdivision lists only the holidays common to
# all parts, which is nobody's calendar (GB: no Easter Monday, no summer bank holiday).
_SUBDIVISION_NEEDED = frozenset({"GB"})

# The package's answer for GB's public holidays, known without asking it: loading one country
# loads all of them (holidays.countries, 8 MiB of RSS), and the daemon checks the default
# calendar (GB-ENG) even with flex off. tests/flex/test_flex_calendar.py holds this to the
# package.
_GB_SUBDIVISIONS = ("ENG", "NIR", "SCT", "WLS")


# The package is asked in a child process: importing it loads every country's module (147
# modules and 11 MiB of RSS before one country is asked, 279 and 19 MiB after), and a
# calendar needs a handful of dates a year. The child prints JSON and exits; each answer is
# kept for the process's life, so a daemon asks once per calendar and span of years.
_CHILD = """
import json, sys
import holidays
q = json.loads(sys.argv[1])
try:
    if q["ask"] == "country":
        e = holidays.country_holidays(q["country"])
        out = {"country": e.country, "subdivisions": list(e.subdivisions)}
    else:
        h = holidays.country_holidays(
            q["country"], subdiv=q["subdivision"], years=q["years"], observed=q["observed"]
        )
        out = {"days": {d.isoformat(): n for d, n in h.items()}}
except NotImplementedError:
    out = {"unknown": True}
print(json.dumps(out))
"""
_CHILD_TIMEOUT_S = 120.0
_answers: dict[str, dict[str, object]] = {}
_answers_lock = threading.Lock()


class HolidayLookupError(RuntimeError):
    """The holidays package could not be asked (its child process failed)."""


def _ask_package(query: dict[str, object]) -> dict[str, object]:
    """The child's answer to `query`, cached; raises HolidayLookupError when it fails."""
    key = json.dumps(query, sort_keys=True)
    with _answers_lock:
        if key in _answers:
            return _answers[key]
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, key],
                capture_output=True,
                text=True,
                timeout=_CHILD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HolidayLookupError(f"holidays: the package could not be asked: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise HolidayLookupError(f"holidays: the package failed ({tail})")
        answer = json.loads(done.stdout)
        _answers[key] = answer
        return answer


def package_holidays(
    country: str, subdivision: str | None, year: int, *, observed: bool = True
) -> dict[date, str]:
    """The package's holidays of `year` for a country (and subdivision): date -> name.

    Asks for the years around `year` too (a baseline's look-back crosses at most one new
    year), so one child answers a daemon's whole report."""
    span = (year - 1, year, year + 1)
    answer = _ask_package(
        {
            "ask": "days",
            "country": country,
            "subdivision": subdivision,
            "years": list(span),
            "observed": observed,
        }
    )
    days = answer["days"]
    assert isinstance(days, dict)
    out = {date.fromisoformat(k): str(v) for k, v in days.items()}
    return {d: n for d, n in out.items() if d.year == year}


def check_region(
    country: str | None, subdivision: str | None, holiday_set: HolidaySet = "public"
) -> tuple[str | None, str | None]:
    """(country, subdivision) upper-cased and checked against the holidays package.

    Raises ValueError naming the field: an unknown country, a subdivision the country does not
    have (or none for GB), a subdivision without a country, or the NERC set outside the US.
    """
    if country is None:
        if subdivision is not None:
            raise ValueError("subdivision: needs a country")
        if holiday_set == "nerc":
            raise ValueError("holiday_set: 'nerc' needs country US")
        return None, None
    code = country.strip().upper()
    if (
        holiday_set == "public"
        and code == "GB"
        and subdivision is not None
        and subdivision.strip().upper() in _GB_SUBDIVISIONS
    ):
        return code, subdivision.strip().upper()
    try:
        entity = _ask_package({"ask": "country", "country": code})
    except HolidayLookupError as exc:
        raise ValueError(f"country: {exc}") from None
    if entity.get("unknown"):
        raise ValueError(
            f"country: unknown {country!r}; an ISO 3166-1 alpha-2 code the holidays package "
            "supports, e.g. GB, US, NL, DE"
        )
    code = str(entity["country"])  # an alias such as UK -> GB
    if holiday_set == "nerc":
        if code != "US":
            raise ValueError(f"holiday_set: 'nerc' needs country US, not {code}")
        if subdivision is not None:
            raise ValueError(
                "subdivision: the NERC holidays are the same in every state; leave it out"
            )
        return code, None
    subs = tuple(str(x) for x in entity["subdivisions"])  # type: ignore[attr-defined]
    if subdivision is None:
        if code in _SUBDIVISION_NEEDED:
            raise ValueError(
                f"subdivision: {code} needs one of {', '.join(subs)}: their holidays differ "
                "and none has only the ones they share"
            )
        return code, None
    known = [s.upper() for s in subs]
    sub = subdivision.strip().upper()
    if sub not in known:
        choice = ", ".join(subs) if subs else "none"
        raise ValueError(f"subdivision: {subdivision!r} is not one of {code}'s ({choice})")
    return code, subs[known.index(sub)]


def nerc_holidays(year: int) -> dict[date, str]:
    """The six NERC holidays of `year`: New Year's Day, Memorial Day, Independence Day,
    Labor Day, Thanksgiving Day and Christmas Day. One falling on a Sunday is kept on the
    Monday after; one on a Saturday stays on the Saturday (no Friday substitute).

    References: NERC Resources Subcommittee, "Additional Off-Peak Days" (NERC holidays);
    PJM Manual 11 §10 leaves these days out of the weekday CBL basis.
    """
    us = package_holidays("US", None, year, observed=False)
    out: dict[date, str] = {}
    for day, name in us.items():
        if name in _NERC_NAMES:
            out[day + timedelta(days=1) if day.weekday() == 6 else day] = name
    return out


class WorkingDayCalendar:
    """Mon-Fri are working days unless they are a holiday of the configured place.

    country: ISO 3166-1 alpha-2 code (GB, US, ...), or None for no holidays (weekends only).
    subdivision: the package's code for a part of the country (GB: ENG, WLS, SCT, NIR).
    holiday_set: "public" (the country's public holidays) or "nerc" (US only, `nerc_holidays`).
    extra: more non-working days (site-specific, or ones the package does not know yet).
    """

    def __init__(
        self,
        country: str | None = "GB",
        subdivision: str | None = "ENG",
        *,
        holiday_set: HolidaySet = "public",
        extra: Iterable[date] = (),
    ) -> None:
        self.country, self.subdivision = check_region(country, subdivision, holiday_set)
        self.holiday_set = holiday_set
        self.extra = frozenset(extra)
        self._years: dict[int, frozenset[date]] = {}

    @classmethod
    def for_region(cls, region: str, extra: Iterable[date] = ()) -> WorkingDayCalendar:
        """From an older config's region name (see `LEGACY_REGIONS`)."""
        if region not in LEGACY_REGIONS:
            raise ValueError(f"region: unknown {region!r}, one of {sorted(LEGACY_REGIONS)}")
        country, subdivision = LEGACY_REGIONS[region]
        return cls(country, subdivision, extra=extra)

    @property
    def label(self) -> str:
        """E.g. "GB-SCT public holidays", "US NERC holidays", "no holidays"."""
        if self.country is None:
            return "no holidays"
        place = self.country + (f"-{self.subdivision}" if self.subdivision else "")
        return f"{place} {'NERC' if self.holiday_set == 'nerc' else 'public'} holidays"

    def holidays_in(self, year: int) -> frozenset[date]:
        """Every holiday of `year` (weekend ones too), the extra days included."""
        return self._known(year) | frozenset(d for d in self.extra if d.year == year)

    def _known(self, year: int) -> frozenset[date]:
        """The package's holidays of `year`, computed once per year and calendar."""
        days = self._years.get(year)
        if days is None:
            if self.country is None:
                days = frozenset()
            elif self.holiday_set == "nerc":
                days = frozenset(nerc_holidays(year))
            else:
                days = frozenset(package_holidays(self.country, self.subdivision, year))
            self._years[year] = days
        return days

    def warm(self, years: Iterable[int]) -> None:
        """Compute those years now (blocking: call it off the event loop, as the flex service
        does before a report)."""
        for year in years:
            self._known(year)

    def is_holiday(self, day: date) -> bool:
        return day in self.extra or day in self._known(day.year)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and not self.is_holiday(day)

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
