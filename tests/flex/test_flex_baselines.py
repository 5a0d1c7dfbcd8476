"""Worked examples, computed by hand, for every preset (arithmetic in the comments)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import pytest
from flexdata import LONDON, build_data, local

from hems.flex import presets
from hems.flex.baselines import (
    AdjustmentRule,
    BaselineMethod,
    DayRule,
    additive_adjustment_kwh,
    compute_baseline,
    delivered_kwh,
    multiplicative_factor,
    unadjusted_baseline_kwh,
)
from hems.flex.calendar import WorkingDayCalendar

EVENT_DAY = date(2024, 1, 31)  # Wednesday, GMT (UTC+0)


def working_days_before(day: date, cal: WorkingDayCalendar, n: int) -> list[date]:
    out: list[date] = []
    d = day
    while len(out) < n:
        d -= timedelta(days=1)
        if cal.is_working_day(d):
            out.append(d)
    return out


def jan_data(
    cal: WorkingDayCalendar,
    *,
    window_kwh: float = 0.55,
    event_kwh: float = 0.2,
    gap_on: date | None = None,
):
    """History: the 10 most recent working days before 31 Jan hold 0.1, 0.2 .. 1.0 kWh in every
    period (most recent = 0.1); older working days 5.0; weekends and holidays 9.0.
    31 Jan: 13:00-16:00 (the adjustment window) `window_kwh`, 17:00-18:00 `event_kwh`, else 0.5.
    """
    recent = working_days_before(EVENT_DAY, cal, 10)
    rank = {d: 0.1 * (i + 1) for i, d in enumerate(recent)}

    def fn(day: date, t: datetime) -> float | None:
        if day == gap_on and t.time() == time(3, 0):
            return None
        if day == EVENT_DAY:
            if time(13) <= t.time() < time(16):
                return window_kwh
            if time(17) <= t.time() < time(18):
                return event_kwh
            return 0.5
        if not cal.is_working_day(day):
            return 9.0
        return rank.get(day, 5.0)

    return build_data(date(2023, 11, 20), EVENT_DAY, fn)


def run(data, method, cal, start="17:00", end="18:00", day="2024-01-31", **kw):
    return compute_baseline(
        data.series("import"), local(day, start), local(day, end), method, cal, LONDON, **kw
    )


# -- building blocks: NaN in, NaN out ---------------------------------------------------------


def test_building_blocks_propagate_nan() -> None:
    assert math.isnan(unadjusted_baseline_kwh([]))
    assert math.isnan(unadjusted_baseline_kwh([1.0, math.nan]))
    assert unadjusted_baseline_kwh([1.0, 2.0]) == 1.5
    assert math.isnan(additive_adjustment_kwh([1.0, math.nan], [1.0, 1.0]))
    assert math.isnan(multiplicative_factor([math.nan], [1.0]))
    assert math.isnan(delivered_kwh(math.nan, 1.0, settlement="positive_only"))
    # additive: mean(M - U) = mean(0.5, 1.5) = 1.0, capped to 0.25
    assert additive_adjustment_kwh([1.5, 2.5], [1.0, 1.0], cap_kwh=0.25) == 0.25
    # up_only keeps a negative adjustment at 0
    assert additive_adjustment_kwh([0.5], [1.0], direction="up_only") == 0.0
    # zero baseline in the window: ratio undefined -> factor 1
    assert multiplicative_factor([1.0], [0.0], cap_fraction=0.2) == 1.0
    assert delivered_kwh(1.0, 1.5, settlement="positive_only") == 0.0
    assert delivered_kwh(1.0, 1.5, settlement="net") == -0.5
    assert delivered_kwh(1.0, 1.5, direction="turn_up") == 0.5


# -- elexon-bl01 --------------------------------------------------------------------------------


def test_bl01_working_day_without_adjustment(cal: WorkingDayCalendar) -> None:
    m = presets.method("elexon-bl01", adjustment=False)
    r = run(jan_data(cal), m, cal)
    # U = mean(0.1 .. 1.0) = 5.5 / 10 = 0.55 in both periods; metered 0.2
    # delivered = 0.55 - 0.2 = 0.35 per period, 0.70 in total
    assert [p.unadjusted_kwh for p in r.periods] == pytest.approx([0.55, 0.55])
    assert [p.adjustment_kwh for p in r.periods] == [0.0, 0.0]
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([0.35, 0.35])
    assert r.total_delivered_kwh == pytest.approx(0.70)
    assert r.selection.used == tuple(working_days_before(EVENT_DAY, cal, 10))
    assert r.selection.used[0] == date(2024, 1, 30) and r.selection.used[-1] == date(2024, 1, 17)
    assert m.version.endswith("+no-adjustment")


def test_bl01_working_day_with_in_day_adjustment(cal: WorkingDayCalendar) -> None:
    r = run(jan_data(cal, window_kwh=0.75), presets.ELEXON_BL01, cal)
    # window 13:00-16:00 (3 h ending 1 h before 17:00): 6 periods metered 0.75, U 0.55
    # A = mean(0.75 - 0.55) = +0.20; B = 0.55 + 0.20 = 0.75; delivered = 0.75 - 0.2 = 0.55
    assert [p.adjustment_kwh for p in r.periods] == pytest.approx([0.2, 0.2])
    assert [p.baseline_kwh for p in r.periods] == pytest.approx([0.75, 0.75])
    assert r.total_delivered_kwh == pytest.approx(1.10)
    assert r.shadow.window_start == local("2024-01-31", "13:00")
    assert r.shadow.window_end == local("2024-01-31", "16:00")
    # shadow: window load 6 x 0.75 = 4.5 vs baseline 6 x 0.55 = 3.3 -> ratio 1.364 > 1.3
    assert r.shadow.ratio == pytest.approx(4.5 / 3.3)
    assert r.shadow.flagged


def test_bl01_negative_adjustment_and_no_shadow_flag(cal: WorkingDayCalendar) -> None:
    r = run(jan_data(cal, window_kwh=0.45), presets.ELEXON_BL01, cal)
    # A = 0.45 - 0.55 = -0.10 (BL01 adjusts both ways); B = 0.45; delivered = 0.25 per period
    assert [p.baseline_kwh for p in r.periods] == pytest.approx([0.45, 0.45])
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([0.25, 0.25])
    assert not r.shadow.flagged


def test_bl01_excludes_an_earlier_event_day(cal: WorkingDayCalendar) -> None:
    m = presets.method("elexon-bl01", adjustment=False)
    r = run(jan_data(cal), m, cal, event_days=frozenset({date(2024, 1, 25)}))
    # 25 Jan (0.4) is an event day: 16 Jan (5.0) is the 10th day instead
    # U = (5.5 - 0.4 + 5.0) / 10 = 1.01; delivered = 1.01 - 0.2 = 0.81
    assert r.periods[0].unadjusted_kwh == pytest.approx(1.01)
    assert r.periods[0].delivered_kwh == pytest.approx(0.81)
    assert (date(2024, 1, 25), "earlier event day") in r.selection.excluded
    assert date(2024, 1, 16) in r.selection.used


def test_bl01_excludes_a_day_with_missing_data(cal: WorkingDayCalendar) -> None:
    m = presets.method("elexon-bl01", adjustment=False)
    r = run(jan_data(cal, gap_on=date(2024, 1, 24)), m, cal)
    # 24 Jan (0.5) lacks its 03:00 period: 16 Jan (5.0) replaces it
    # U = (5.5 - 0.5 + 5.0) / 10 = 1.00
    assert r.periods[0].unadjusted_kwh == pytest.approx(1.00)
    assert (date(2024, 1, 24), "missing data") in r.selection.excluded


def test_bl01_bank_holiday_is_a_non_working_day(cal: WorkingDayCalendar) -> None:
    # Event on Spring bank holiday Monday 27 May 2024 (BST) 17:00-17:30.
    # Non-working days before it: Sun 26, Sat 25, Sun 19, Sat 18 May (the 6 May bank holiday
    # is 5th). Values: 26th 2.0, 25th 2.0, 19th 1.0, 18th 1.0, older 7.0, working days 3.0.
    vals = {date(2024, 5, 26): 2.0, date(2024, 5, 25): 2.0}
    vals |= {date(2024, 5, 19): 1.0, date(2024, 5, 18): 1.0}

    def fn(day: date, t: datetime) -> float:
        if day == date(2024, 5, 27):
            return 0.5
        if cal.is_working_day(day):
            return 3.0
        return vals.get(day, 7.0)

    data = build_data(date(2024, 3, 20), date(2024, 5, 28), fn)
    m = presets.method("elexon-bl01", adjustment=False)
    r = run(data, m, cal, day="2024-05-27", start="17:00", end="17:30")
    # U = (2 + 2 + 1 + 1) / 4 = 1.5; delivered = 1.5 - 0.5 = 1.0
    assert r.selection.day_type == "non-working"
    assert r.selection.used == (date(2024, 5, 26), date(2024, 5, 25), date(2024, 5, 19),
                                date(2024, 5, 18))  # fmt: skip
    assert r.periods[0].unadjusted_kwh == pytest.approx(1.5)
    assert r.periods[0].delivered_kwh == pytest.approx(1.0)
    # Next day (Tue 28 May, working): the bank holiday (3.0 would be wrong: it holds 7.0 too)
    # is skipped; the 10 most recent working days all hold 3.0 -> U = 3.0
    r2 = run(data, m, cal, day="2024-05-28", start="17:00", end="17:30")
    assert date(2024, 5, 27) not in r2.selection.used
    assert r2.periods[0].unadjusted_kwh == pytest.approx(3.0)


def test_bl01_insufficient_history_gives_nan_not_zero(cal: WorkingDayCalendar) -> None:
    data = build_data(date(2024, 1, 22), EVENT_DAY, lambda d, t: 1.0)
    r = run(data, presets.ELEXON_BL01, cal)
    # 22..30 Jan hold 7 working days; BL01 needs 10
    assert r.selection.problem is not None and "only 7 eligible working days" in r.selection.problem
    assert all(math.isnan(p.baseline_kwh) and math.isnan(p.delivered_kwh) for p in r.periods)


def test_missing_metered_event_period_gives_nan_delivery(cal: WorkingDayCalendar) -> None:
    data = jan_data(cal)
    del data.import_kwh[local("2024-01-31", "17:30").astimezone(UTC)]
    r = run(data, presets.method("elexon-bl01", adjustment=False), cal)
    assert r.periods[0].delivered_kwh == pytest.approx(0.35)
    assert math.isnan(r.periods[1].metered_kwh) and math.isnan(r.periods[1].delivered_kwh)
    assert math.isnan(r.total_delivered_kwh)


# -- clock changes ------------------------------------------------------------------------------


def test_event_on_the_50_period_autumn_day(cal: WorkingDayCalendar) -> None:
    # Sun 27 Oct 2024: 01:00-02:00 local happens twice (BST then GMT): 4 periods 00:00Z-02:00Z.
    # Non-working history (4 most recent): Sat 26 (1.0), Sun 20 (1.0), Sat 19 (2.0), Sun 13 (2.0).
    vals = {date(2024, 10, 26): 1.0, date(2024, 10, 20): 1.0}
    vals |= {date(2024, 10, 19): 2.0, date(2024, 10, 13): 2.0}

    def fn(d: date, t: datetime) -> float:
        if d == date(2024, 10, 27):
            return 0.25
        return 0.0 if cal.is_working_day(d) else vals.get(d, 8.0)

    data = build_data(date(2024, 9, 1), date(2024, 10, 27), fn)
    start = local("2024-10-27", "01:00").astimezone(UTC)  # first 01:00 (BST) = 00:00Z
    end = local("2024-10-27", "02:00").astimezone(UTC)  # 02:00 GMT = 02:00Z
    assert (end - start).total_seconds() == 2 * 3600
    r = compute_baseline(
        data.series("import"), start, end, presets.method("elexon-bl01", adjustment=False),
        cal, LONDON,
    )  # fmt: skip
    # 4 periods; both 01:00 (and both 01:30) periods match the history 01:00 (01:30) period:
    # U = (1 + 1 + 2 + 2) / 4 = 1.5; delivered = 1.5 - 0.25 = 1.25 each, 5.0 in total
    assert len(r.periods) == 4
    assert [p.unadjusted_kwh for p in r.periods] == pytest.approx([1.5] * 4)
    assert r.total_delivered_kwh == pytest.approx(5.0)
    assert len(r.selection.used) == 4


def test_history_with_46_and_50_period_days(cal: WorkingDayCalendar) -> None:
    # Event Sun 7 Apr 2024 01:00-02:00 BST (00:00Z-01:00Z). Non-working history (BL01: 4 most
    # recent): Sat 6 Apr (1.0), Mon 1 Apr = Easter Monday bank holiday (1.0), Sun 31 Mar =
    # clock change, 46 periods (3.0), Sat 30 Mar (1.0).
    # 01:00-02:00 does not exist on 31 Mar, so those periods average the other 3 days:
    # U(01:00) = U(01:30) = (1 + 1 + 1) / 3 = 1.0; metered 0.4 -> delivered 0.6 each.
    # At 03:00 (all four days have it): U = (1 + 3 + 1 + 1) / 4 = 1.5.
    vals = {date(2024, 3, 31): 3.0}

    def fn(d: date, t: datetime) -> float:
        if d == date(2024, 4, 7):
            return 0.4
        return vals.get(d, 1.0) if not cal.is_working_day(d) else 0.0

    data = build_data(date(2024, 2, 1), date(2024, 4, 7), fn)
    m = presets.method("elexon-bl01", adjustment=False)
    r = run(data, m, cal, day="2024-04-07", start="01:00", end="02:00")
    assert r.selection.used == (date(2024, 4, 6), date(2024, 4, 1), date(2024, 3, 31),
                                date(2024, 3, 30))  # fmt: skip
    assert [p.unadjusted_kwh for p in r.periods] == pytest.approx([1.0, 1.0])
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([0.6, 0.6])
    r3 = run(data, m, cal, day="2024-04-07", start="03:00", end="03:30")
    assert r3.periods[0].unadjusted_kwh == pytest.approx(1.5)


# -- dfs ----------------------------------------------------------------------------------------


def test_dfs_positive_only_and_switchable_adjustment(cal: WorkingDayCalendar) -> None:
    # metered 0.9 in the event, above the unadjusted baseline 0.55
    data = jan_data(cal, window_kwh=0.75, event_kwh=0.9)
    # with adjustment: B = 0.55 + 0.20 = 0.75; 0.75 - 0.9 = -0.15 -> 0 (positive_only)
    r = run(data, presets.method("dfs", adjustment=True), cal)
    assert [p.delivered_kwh for p in r.periods] == [0.0, 0.0]
    # net settlement keeps -0.15 per period
    r_net = run(data, presets.method("dfs", adjustment=True, settlement="net"), cal)
    assert [p.delivered_kwh for p in r_net.periods] == pytest.approx([-0.15, -0.15])
    # the DFS default has no adjustment; metered 0.2: 0.55 - 0.2 = 0.35 per period
    r_off = run(jan_data(cal, window_kwh=0.75), presets.DFS, cal)
    assert [p.delivered_kwh for p in r_off.periods] == pytest.approx([0.35, 0.35])
    assert r_off.method.adjustment.kind == "none"
    assert presets.method("dfs", adjustment=True).version == "dfs-bl01/hems-1+adjustment"


# -- pjm-high-4-of-5 ----------------------------------------------------------------------------


def pjm_data(cal: WorkingDayCalendar, window_kwh: float, jan24_kwh: float = 0.6):
    # 5 most recent weekdays before Wed 31 Jan: 30 (1.0), 29 (2.0), 26 (3.0), 25 (4.0), 24 (0.6);
    # older weekdays 10.0, weekends 20.0
    vals = {date(2024, 1, 30): 1.0, date(2024, 1, 29): 2.0, date(2024, 1, 26): 3.0}
    vals |= {date(2024, 1, 25): 4.0, date(2024, 1, 24): jan24_kwh}

    def fn(d: date, t: datetime) -> float:
        if d == EVENT_DAY:
            return window_kwh if time(13) <= t.time() < time(16) else 1.0
        return vals.get(d, 10.0) if cal.is_working_day(d) else 20.0

    return build_data(date(2023, 12, 10), EVENT_DAY, fn)


def test_pjm_high_4_of_5_without_adjustment(cal: WorkingDayCalendar) -> None:
    m = presets.method("pjm-high-4-of-5", adjustment=False)
    r = run(pjm_data(cal, 2.5), m, cal)
    # low-usage test: pool mean (1 + 2 + 3 + 4 + 0.6) / 5 = 2.12, 25 % = 0.53 < 0.6: all stay
    # highest 4 of (1, 2, 3, 4, 0.6) = 4, 3, 2, 1 -> CBL = 10 / 4 = 2.5; metered 1.0 -> 1.5
    assert [p.unadjusted_kwh for p in r.periods] == pytest.approx([2.5, 2.5])
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([1.5, 1.5])
    assert date(2024, 1, 24) not in r.selection.used
    assert (date(2024, 1, 24), "not among the highest 4 of 5") in r.selection.excluded


def test_pjm_low_usage_day_is_replaced(cal: WorkingDayCalendar) -> None:
    m = presets.method("pjm-high-4-of-5", adjustment=False)
    r = run(pjm_data(cal, 2.5, jan24_kwh=0.2), m, cal)
    # pool mean (1 + 2 + 3 + 4 + 0.2) / 5 = 2.04, 25 % = 0.51 > 0.2: 24 Jan is replaced by
    # 23 Jan (10.0); highest 4 of (1, 2, 3, 4, 10) = 10, 4, 3, 2 -> CBL = 19 / 4 = 4.75
    assert (date(2024, 1, 24), "low usage (< 25% of average)") in r.selection.excluded
    assert r.selection.used == (date(2024, 1, 29), date(2024, 1, 26), date(2024, 1, 25),
                                date(2024, 1, 23))  # fmt: skip
    assert r.periods[0].unadjusted_kwh == pytest.approx(4.75)


def test_pjm_symmetric_additive_adjustment_both_ways(cal: WorkingDayCalendar) -> None:
    # window 13:00-16:00 metered 3.0 vs CBL 2.5 -> SAA +0.5 -> B = 3.0, delivered 2.0
    up = run(pjm_data(cal, 3.0), presets.PJM_HIGH_4_OF_5, cal)
    assert [p.baseline_kwh for p in up.periods] == pytest.approx([3.0, 3.0])
    assert [p.delivered_kwh for p in up.periods] == pytest.approx([2.0, 2.0])
    # window metered 2.0 -> SAA -0.5 (symmetric) -> B = 2.0, delivered 1.0
    down = run(pjm_data(cal, 2.0), presets.PJM_HIGH_4_OF_5, cal)
    assert [p.adjustment_kwh for p in down.periods] == pytest.approx([-0.5, -0.5])
    assert [p.delivered_kwh for p in down.periods] == pytest.approx([1.0, 1.0])


# -- caiso-10-of-10 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window_kwh", "factor", "baseline"),
    [
        # U = 0.55 (mean of 0.1 .. 1.0). F = window metered / window U:
        (0.605, 1.1, 0.605),  # 0.605 / 0.55 = 1.10 (inside the cap): B = 0.55 x 1.1 = 0.605
        (0.88, 1.2, 0.66),  # 0.88 / 0.55 = 1.60 -> capped 1.20: B = 0.66
        (0.11, 0.8, 0.44),  # 0.11 / 0.55 = 0.20 -> capped 0.80: B = 0.44
    ],
)
def test_caiso_multiplicative_adjustment_capped(
    cal: WorkingDayCalendar, window_kwh: float, factor: float, baseline: float
) -> None:
    r = run(jan_data(cal, window_kwh=window_kwh), presets.CAISO_10_OF_10, cal)
    assert r.adjustment_factor == pytest.approx(factor)
    assert [p.baseline_kwh for p in r.periods] == pytest.approx([baseline, baseline])
    assert r.periods[0].adjustment_kwh == pytest.approx(baseline - 0.55)
    assert r.periods[0].delivered_kwh == pytest.approx(baseline - 0.2)


def test_caiso_without_adjustment_and_with_few_days(cal: WorkingDayCalendar) -> None:
    m = presets.method("caiso-10-of-10", adjustment=False)
    r = run(jan_data(cal, window_kwh=0.88), m, cal)
    assert r.periods[0].baseline_kwh == pytest.approx(0.55)
    # only 6 working days of history (23..30 Jan, values 0.1..0.6): CAISO accepts >= 5
    data = jan_data(cal)
    for t in list(data.import_kwh):
        if t < local("2024-01-23", "00:00"):
            del data.import_kwh[t]
    r6 = run(data, m, cal)
    # U = (0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.6) / 6 = 0.35
    assert len(r6.selection.used) == 6
    assert r6.periods[0].unadjusted_kwh == pytest.approx(0.35)


# -- engine options beyond the presets ----------------------------------------------------------


def test_trimmed_mean_selection(cal: WorkingDayCalendar) -> None:
    m = BaselineMethod(
        name="trim", version="t1", reference="test", lookback_days=30,
        working=DayRule(count=3, pool=5, pick="trimmed_mean"),
        non_working=DayRule(count=1, pool=1),
        adjustment=AdjustmentRule(kind="none"),
    )  # fmt: skip
    # 5 most recent weekdays hold 1.0, 2.0, 3.0, 4.0, 0.6 (pjm_data): drop highest (4.0),
    # then lowest (0.6): mean(1, 2, 3) = 2.0
    r = run(pjm_data(cal, 1.0), m, cal)
    assert r.periods[0].unadjusted_kwh == pytest.approx(2.0)
    reasons = dict(r.selection.excluded)
    assert reasons[date(2024, 1, 25)] == "trimmed (highest)"
    assert reasons[date(2024, 1, 24)] == "trimmed (lowest)"


def test_bad_event_window_is_rejected(cal: WorkingDayCalendar) -> None:
    data = jan_data(cal)
    with pytest.raises(ValueError, match="not on a 30-min boundary"):
        run(data, presets.DFS, cal, start="17:10", end="18:00")
    with pytest.raises(ValueError, match="end must be after start"):
        run(data, presets.DFS, cal, start="18:00", end="17:00")
    with pytest.raises(ValueError, match="unknown 'nope'"):
        presets.method("nope")


def test_turn_up_on_export_and_net_import(cal: WorkingDayCalendar) -> None:
    # A PV home: export 1.0 kWh in every period of the 10 working days before 31 Jan (import
    # 0.2); asked to turn up (import more / export less) at 12:00-13:00 on 31 Jan, it exports
    # 0.4 and imports 0.5.
    def imp(d: date, t: datetime) -> float:
        return 0.5 if d == EVENT_DAY and time(12) <= t.time() < time(13) else 0.2

    def exp(d: date, t: datetime) -> float:
        return 0.4 if d == EVENT_DAY and time(12) <= t.time() < time(13) else 1.0

    data = build_data(date(2023, 12, 1), EVENT_DAY, imp, exp)
    m = presets.method("elexon-bl01", adjustment=False)
    start, end = local("2024-01-31", "12:00"), local("2024-01-31", "13:00")
    # net import baseline = 0.2 - 1.0 = -0.8; metered 0.5 - 0.4 = +0.1
    # turn-up delivered = M - B = 0.1 - (-0.8) = 0.9 per period
    r = compute_baseline(data.series("net_import"), start, end, m, cal, LONDON,
                         direction="turn_up")  # fmt: skip
    assert [p.baseline_kwh for p in r.periods] == pytest.approx([-0.8, -0.8])
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([0.9, 0.9])
    # on export alone, "turn_down" of export is B - M = 1.0 - 0.4 = 0.6
    r = compute_baseline(data.series("export"), start, end, m, cal, LONDON)
    assert [p.delivered_kwh for p in r.periods] == pytest.approx([0.6, 0.6])
