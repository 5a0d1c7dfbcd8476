"""Working-day calendar and settlement periods in the site's time zone.

Holidays come from the `holidays` package (python-holidays): the public holidays of a
country and, where the country has them, a subdivision (GB: ENG, WLS, SCT, NIR; US: the
states), with the substitute ("observed") days the package lists. For US wholesale-market
baselines there is also the NERC holiday set (see `nerc_holidays`).

The settlement periods of a local day come from `hems.store.rollup.settlement_periods`
(48 half hours, 46/50 on clock changes). All instants here are aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from holidays import HolidayBase

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


def _country_holidays(country: str, **kwargs: Any) -> HolidayBase:
    """holidays.country_holidays, the package imported on first use (a calendar is needed)."""
    import holidays as pyholidays

    return pyholidays.country_holidays(country, **kwargs)


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
        # One country's module, not list_supported_countries(): that imports all of them (~2 s).
        entity = _country_holidays(code)
    except NotImplementedError:
        raise ValueError(
            f"country: unknown {country!r}; an ISO 3166-1 alpha-2 code the holidays package "
            "supports, e.g. GB, US, NL, DE"
        ) from None
    code = entity.country  # an alias such as UK -> GB
    if holiday_set == "nerc":
        if code != "US":
            raise ValueError(f"holiday_set: 'nerc' needs country US, not {code}")
        if subdivision is not None:
            raise ValueError(
                "subdivision: the NERC holidays are the same in every state; leave it out"
            )
        return code, None
    subs = tuple(entity.subdivisions)
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
    us = _country_holidays("US", years=year, observed=False)
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
                days = frozenset(
                    _country_holidays(self.country, subdiv=self.subdivision, years=year)
                )
            self._years[year] = days
        return days

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
