from datetime import date

import pytest
from flexdata import LONDON

from hems.flex.calendar import BANK_HOLIDAYS, WorkingDayCalendar, at_wall_clock
from hems.store.rollup import settlement_periods


def test_bank_holidays_cover_2024_to_2027_eight_a_year() -> None:
    days = BANK_HOLIDAYS["england-and-wales"]
    for year in range(2024, 2028):
        assert len([d for d in days if d.year == year]) == 8
    assert all(d.weekday() < 5 for d in days)  # weekend holidays move to a substitute day
    # substitute days when Christmas / Boxing Day fall on a weekend
    assert date(2026, 12, 28) in days and date(2026, 12, 26) not in days
    assert date(2027, 12, 27) in days and date(2027, 12, 28) in days


def test_working_day_rules(cal: WorkingDayCalendar) -> None:
    assert cal.is_working_day(date(2024, 5, 28))  # Tuesday
    assert not cal.is_working_day(date(2024, 5, 27))  # Spring bank holiday (Monday)
    assert not cal.is_working_day(date(2024, 5, 25))  # Saturday
    assert cal.day_type(date(2024, 3, 29)) == "non-working"  # Good Friday
    assert WorkingDayCalendar("none").is_working_day(date(2024, 3, 29))
    assert not WorkingDayCalendar("none", extra=[date(2024, 3, 28)]).is_working_day(
        date(2024, 3, 28)
    )
    with pytest.raises(ValueError, match="region: unknown 'mars'"):
        WorkingDayCalendar("mars")


def test_clock_change_days_have_46_and_50_periods() -> None:
    assert len(settlement_periods(date(2024, 3, 31), LONDON)) == 46
    assert len(settlement_periods(date(2024, 10, 27), LONDON)) == 50
    assert len(settlement_periods(date(2024, 6, 1), LONDON)) == 48
    from datetime import time

    assert at_wall_clock(date(2024, 3, 31), time(1, 30), LONDON) is None  # skipped hour
