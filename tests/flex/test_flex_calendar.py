"""Holiday calendars from the holidays package, checked against published dates, and the
flex.calendar config that picks one."""

from datetime import date, time

import pytest
from flexdata import LONDON
from pydantic import ValidationError

from hems.flex.calendar import WorkingDayCalendar, at_wall_clock, nerc_holidays
from hems.flex.config import CalendarConfig, FlexConfig
from hems.store.rollup import settlement_periods


def test_england_2028_is_covered(cal: WorkingDayCalendar) -> None:
    # gov.uk lists 8 bank holidays a year for England and Wales; 1 Jan 2028 is a Saturday, so
    # Monday 3 Jan is the substitute day.
    weekdays = sorted(d for d in cal.holidays_in(2028) if d.weekday() < 5)
    assert weekdays == [
        date(2028, 1, 3), date(2028, 4, 14), date(2028, 4, 17), date(2028, 5, 1),
        date(2028, 5, 29), date(2028, 8, 28), date(2028, 12, 25), date(2028, 12, 26),
    ]  # fmt: skip
    assert cal.day_type(date(2028, 4, 14)) == "non-working"  # Good Friday
    assert cal.is_working_day(date(2028, 4, 13))
    # Far beyond any hand-written table: Christmas 2040 (a Tuesday) and Boxing Day.
    assert not cal.is_working_day(date(2040, 12, 25)) and not cal.is_working_day(date(2040, 12, 26))
    assert WorkingDayCalendar("GB", "WLS").holidays_in(2028) == cal.holidays_in(2028)


def test_scotland_and_northern_ireland() -> None:
    sct = WorkingDayCalendar("GB", "SCT")
    assert sct.is_holiday(date(2028, 11, 30))  # St Andrew's Day, a Thursday
    # 30 Nov 2030 is a Saturday: the substitute is Monday 2 December.
    assert sct.is_holiday(date(2030, 12, 2)) and not sct.is_working_day(date(2030, 12, 2))
    assert sct.is_holiday(date(2028, 8, 7))  # Scotland's summer bank holiday, first Monday
    assert sct.is_working_day(date(2028, 4, 17))  # Easter Monday is not one in Scotland
    assert sct.is_working_day(date(2028, 8, 28))
    nir = WorkingDayCalendar("GB", "NIR")
    assert nir.is_holiday(date(2028, 7, 12))  # Battle of the Boyne, a Wednesday
    assert nir.is_holiday(date(2028, 3, 17))  # St Patrick's Day
    assert WorkingDayCalendar("GB", "ENG").is_working_day(date(2028, 7, 12))


def test_nerc_holidays() -> None:
    # 2028: Thanksgiving is Thursday 23 November; 1 Jan is a Saturday and stays there.
    assert sorted(nerc_holidays(2028)) == [
        date(2028, 1, 1), date(2028, 5, 29), date(2028, 7, 4), date(2028, 9, 4),
        date(2028, 11, 23), date(2028, 12, 25),
    ]  # fmt: skip
    # 2023: 1 Jan was a Sunday -> Monday 2 Jan; 2027: 4 July a Sunday -> Monday 5 July, and
    # Christmas on a Saturday has no Friday substitute (the federal calendar has 24 Dec).
    assert date(2023, 1, 2) in nerc_holidays(2023)
    assert date(2027, 7, 5) in nerc_holidays(2027)
    assert date(2027, 12, 24) not in nerc_holidays(2027)
    cal = WorkingDayCalendar("US", None, holiday_set="nerc")
    assert not cal.is_working_day(date(2028, 11, 23))
    assert cal.is_working_day(date(2028, 1, 17))  # MLK Day is federal but not NERC
    federal = WorkingDayCalendar("US", None)
    assert not federal.is_working_day(date(2028, 1, 17))
    assert not federal.is_working_day(date(2028, 11, 23))


def test_no_holidays_and_extra_days() -> None:
    none = WorkingDayCalendar(None, None)
    assert none.is_working_day(date(2028, 4, 14)) and not none.is_working_day(date(2028, 4, 15))
    assert not WorkingDayCalendar(None, None, extra=[date(2028, 3, 28)]).is_working_day(
        date(2028, 3, 28)
    )
    assert WorkingDayCalendar.for_region("scotland").label == "GB-SCT public holidays"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"country": "XX"}, "country: unknown 'XX'"),
        ({"country": "GB", "subdivision": "CA"}, r"subdivision: 'CA' is not one of GB's \(ENG"),
        ({"country": None, "subdivision": "ENG"}, "subdivision: needs a country"),
        ({"country": "GB"}, "subdivision: GB needs one of ENG, NIR, SCT, WLS"),
        ({"country": "GB", "holiday_set": "nerc"}, "holiday_set: 'nerc' needs country US"),
        ({"country": "US", "subdivision": "PA", "holiday_set": "nerc"}, "subdivision: the NERC"),
    ],
)
def test_bad_calendar_is_rejected_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarConfig.model_validate(kwargs)
    args = dict(kwargs)
    with pytest.raises(ValueError, match=message):
        WorkingDayCalendar(args.pop("country"), args.pop("subdivision", None), **args)


def test_calendar_config() -> None:
    default = CalendarConfig()
    assert (default.country, default.subdivision) == ("GB", "ENG")
    sct = CalendarConfig.model_validate({"country": "gb", "subdivision": "sct"})
    assert (sct.country, sct.subdivision) == ("GB", "SCT")  # upper-cased
    us = CalendarConfig.model_validate({"country": "US"})  # ENG belongs to GB's default only
    assert us.subdivision is None
    # auto: NERC for a US site with the PJM or CAISO preset, public holidays otherwise
    assert us.calendar("pjm-high-4-of-5").label == "US NERC holidays"
    assert us.calendar("caiso-10-of-10").label == "US NERC holidays"
    assert us.calendar("dfs").label == "US public holidays"
    assert default.calendar("pjm-high-4-of-5").label == "GB-ENG public holidays"
    legacy = CalendarConfig.model_validate({"region": "northern-ireland"})  # older configs
    assert (legacy.country, legacy.subdivision) == ("GB", "NIR")
    with pytest.raises(ValidationError, match="region: unknown 'mars'"):
        CalendarConfig.model_validate({"region": "mars"})
    with pytest.raises(ValidationError, match="region: give either region or country"):
        CalendarConfig.model_validate({"region": "scotland", "country": "GB"})
    with pytest.raises(ValidationError, match=r"calendar\.subdivision: the NERC holidays"):
        FlexConfig.model_validate(
            {
                "baseline_method": "pjm-high-4-of-5",
                "calendar": {"country": "US", "subdivision": "PA"},
            }
        )
    ok = FlexConfig.model_validate(
        {"baseline_method": "pjm-high-4-of-5",
         "calendar": {"country": "US", "subdivision": "PA", "holiday_set": "public"}}
    )  # fmt: skip
    assert ok.calendar.calendar(ok.baseline_method).label == "US-PA public holidays"


def test_clock_change_days_have_46_and_50_periods() -> None:
    assert len(settlement_periods(date(2024, 3, 31), LONDON)) == 46
    assert len(settlement_periods(date(2024, 10, 27), LONDON)) == 50
    assert len(settlement_periods(date(2024, 6, 1), LONDON)) == 48
    assert at_wall_clock(date(2024, 3, 31), time(1, 30), LONDON) is None  # skipped hour


def test_gb_without_the_package_matches_the_package() -> None:
    # GB's subdivisions are answered without importing holidays (the daemon checks the default
    # calendar even with flex off); the package must agree.
    import holidays

    from hems.flex import calendar

    assert tuple(sorted(holidays.country_holidays("GB").subdivisions)) == (
        calendar._GB_SUBDIVISIONS
    )
    for sub in calendar._GB_SUBDIVISIONS:
        assert calendar.check_region("gb", sub.lower()) == ("GB", sub)


def test_calendars_ask_the_holidays_package_in_a_child_process() -> None:
    # The package loads every country's module (about 19 MiB of RSS): the daemon must never
    # hold it, whatever calendar it checks or computes.
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from datetime import date\n"
        "from hems.flex.config import FlexConfig\n"
        "from hems.flex.calendar import WorkingDayCalendar, nerc_holidays\n"
        "cal = FlexConfig().calendar.calendar('dfs')\n"
        "us = WorkingDayCalendar('us', 'pa')\n"
        "print(cal.is_working_day(date(2028, 12, 25)), cal.is_working_day(date(2028, 12, 27)),\n"
        "      us.is_working_day(date(2028, 7, 4)), date(2028, 11, 23) in nerc_holidays(2028),\n"
        "      'holidays' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "True", "False", "True", "False"]


def test_a_failing_package_is_a_clear_error_not_a_wrong_calendar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A broken install must not read as "no holidays" (every weekday a working day).
    from hems.flex import calendar

    monkeypatch.setattr(calendar, "_CHILD", "import sys; sys.exit('no module named holidays')")
    monkeypatch.setattr(calendar, "_answers", {})
    cal = WorkingDayCalendar("GB", "ENG")
    with pytest.raises(calendar.HolidayLookupError, match="no module named holidays"):
        cal.is_working_day(date(2031, 12, 25))
    with pytest.raises(ValueError, match="country: holidays: the package failed"):
        WorkingDayCalendar("NL", None)
