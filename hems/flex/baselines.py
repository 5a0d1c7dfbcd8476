"""One parameterised baseline engine for measurement and verification of flexibility.

A baseline is what the home would have drawn (or exported) in each settlement period of an
event had there been no event. Every published day-matching method we support is the same
pipeline with different parameters:

1. day filter: same day type as the event day (working / non-working), within a lookback,
   leaving out earlier event days and days with missing data;
2. X-of-Y selection from the Y most recent eligible days: the X most recent, the X highest
   (by mean consumption over the event window) or a trimmed set (highest and lowest dropped
   alternately until X remain);
3. unadjusted baseline U = mean of the selected days per period, matched by local wall-clock
   time (so clock-change days with 46/50 periods line up with normal days);
4. adjustment from a window before the event: none, additive (optionally up-only, capped)
   or multiplicative (capped to 1 ± cap);
5. delivered = baseline - metered (turn-down) or metered - baseline (turn-up), per period,
   either clipped at zero ("positive_only") or "net".

Values are energies per settlement period [kWh]. Missing data is NaN and propagates: the
engine never turns a gap into zero. The named presets live in `hems.flex.presets`.

Choices where the published rules leave room (documented, and tested):

- Periods are matched across days by local wall-clock start time. The repeated autumn hour
  (two periods with the same wall-clock start) uses the same historical period for both; on
  the spring clock-change day the skipped hour does not exist, so that day simply does not
  contribute to the 01:00-02:00 periods (it is structurally absent, not missing).
- A day is "missing data" if any of its own periods is absent or NaN.
- For periods on a different local day than the event (an adjustment window crossing
  midnight, or an event crossing midnight), each selected day is shifted by the same number of
  days; a gap there gives NaN.
- If fewer than `min_days` eligible days exist, the baseline is NaN (with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from hems.flex.calendar import WorkingDayCalendar, at_wall_clock, local_day, wall_clock
from hems.store.rollup import periods_between, settlement_periods

Pick = Literal["most_recent", "highest", "trimmed_mean"]
Direction = Literal["turn_down", "turn_up"]
Series = Mapping[datetime, float]  # period start (aware UTC) -> energy in the period [kWh]


@dataclass(frozen=True, kw_only=True, slots=True)
class DayRule:
    """X-of-Y day selection for one day type."""

    count: int  # X: days averaged
    pool: int  # Y: most recent eligible days considered
    pick: Pick = "most_recent"
    min_days: int | None = None  # fewer eligible days than this -> NaN; default: count
    low_usage_fraction: float | None = None  # replace days below this x pool mean (PJM 0.25)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= self.pool:
            raise ValueError(f"count: must be 1..pool ({self.pool}), got {self.count}")
        if self.min_days is not None and not 1 <= self.min_days <= self.count:
            raise ValueError(f"min_days: must be 1..count ({self.count}), got {self.min_days}")

    @property
    def required(self) -> int:
        return self.count if self.min_days is None else self.min_days


@dataclass(frozen=True, kw_only=True, slots=True)
class AdjustmentRule:
    """Same-day adjustment from a window [start - window_start_h, start - window_end_h)."""

    kind: Literal["none", "additive", "multiplicative"] = "none"
    window_start_h: float = 4.0  # window begins this long before the event start [h]
    window_end_h: float = 1.0  # window ends this long before the event start [h]
    direction: Literal["both", "up_only"] = "both"
    cap_fraction: float | None = None  # multiplicative: factor kept within 1 ± cap
    cap_kwh: float | None = None  # additive: |adjustment| per period at most [kWh]

    def __post_init__(self) -> None:
        if self.window_start_h <= self.window_end_h or self.window_end_h < 0:
            raise ValueError("window_start_h: must be > window_end_h >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class BaselineMethod:
    name: str
    version: str
    reference: str  # the published source
    lookback_days: int
    working: DayRule
    non_working: DayRule
    adjustment: AdjustmentRule = field(default_factory=AdjustmentRule)
    settlement: Literal["positive_only", "net"] = "net"
    period_s: int = 1800
    shadow_threshold_fraction: float = 0.3  # flag window load > (1 + this) x baseline

    def rule_for(self, day_type: str) -> DayRule:
        return self.working if day_type == "working" else self.non_working


# -- pure building blocks ----------------------------------------------------------------------


def mean_or_nan(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN if the sequence is empty or holds a NaN. [same unit as input]"""
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    return math.fsum(values) / len(values)


def unadjusted_baseline_kwh(day_energy_kwh: Sequence[float]) -> float:
    """Unadjusted baseline U for one settlement period. [kWh]

    day_energy_kwh: metered energy in the matching period on each selected day [kWh].
    Returns NaN if the list is empty or holds a NaN; never 0 for missing data.

    References: Elexon, BSC Baselining Methodology Document v1.0 (P376), BL01: the
    arithmetic mean over the selected days.
    """
    return mean_or_nan(day_energy_kwh)


def additive_adjustment_kwh(
    window_metered_kwh: Sequence[float],
    window_unadjusted_kwh: Sequence[float],
    *,
    direction: Literal["both", "up_only"] = "both",
    cap_kwh: float | None = None,
) -> float:
    """Additive same-day adjustment A per period. [kWh]

    A = mean(M_w - U_w) over the adjustment window periods w, where M is metered and U the
    unadjusted baseline [kWh per period]. "up_only" keeps A >= 0; `cap_kwh` bounds |A|.
    The result is added to U in every event period. NaN if any window value is NaN.

    References: Elexon BL01 in-day adjustment (P376); PJM Manual 11 §10, Symmetric Additive
    Adjustment (SAA), which may be positive or negative.
    """
    if len(window_metered_kwh) != len(window_unadjusted_kwh):
        raise ValueError("window_metered_kwh and window_unadjusted_kwh differ in length")
    diffs = [m - u for m, u in zip(window_metered_kwh, window_unadjusted_kwh, strict=True)]
    a = mean_or_nan(diffs)
    if math.isnan(a):
        return a
    if direction == "up_only":
        a = max(0.0, a)
    if cap_kwh is not None:
        a = max(-cap_kwh, min(cap_kwh, a))
    return a


def multiplicative_factor(
    window_metered_kwh: Sequence[float],
    window_unadjusted_kwh: Sequence[float],
    *,
    cap_fraction: float | None = None,
    direction: Literal["both", "up_only"] = "both",
) -> float:
    """Multiplicative same-day adjustment factor F. [-]

    F = sum(M_w) / sum(U_w) over the adjustment window, limited to [1 - cap, 1 + cap]
    (CAISO: ±20 %). If sum(U_w) is 0 the ratio is undefined and F = 1 (no adjustment) is
    used: a zero baseline gives nothing to scale. NaN if any window value is NaN.

    References: CAISO Business Practice Manual for Metering, Customer Load Baseline,
    "10-in-10" with a day-of (load point) adjustment capped at 20 %.
    """
    m = math.fsum(window_metered_kwh) if window_metered_kwh else math.nan
    u = math.fsum(window_unadjusted_kwh) if window_unadjusted_kwh else math.nan
    if math.isnan(m) or math.isnan(u):
        return math.nan
    f = 1.0 if u == 0 else m / u
    if direction == "up_only":
        f = max(1.0, f)
    if cap_fraction is not None:
        f = max(1.0 - cap_fraction, min(1.0 + cap_fraction, f))
    return f


def delivered_kwh(
    baseline_kwh: float,
    metered_kwh: float,
    *,
    direction: Direction = "turn_down",
    settlement: Literal["positive_only", "net"] = "net",
) -> float:
    """Flexibility delivered in one period. [kWh]

    turn_down: B - M (less drawn than the baseline); turn_up: M - B. "positive_only"
    counts only delivery in the asked direction (negative -> 0), as in the Demand Flexibility
    Service opt-in settlement; "net" keeps the sign. NaN in, NaN out.
    """
    d = baseline_kwh - metered_kwh if direction == "turn_down" else metered_kwh - baseline_kwh
    if settlement == "positive_only" and not math.isnan(d):
        d = max(0.0, d)
    return d


# -- day filter and selection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaySelection:
    day_type: str  # of the event day
    used: tuple[date, ...]  # most recent first
    excluded: tuple[tuple[date, str], ...]  # (day, reason), most recent first
    problem: str | None = None  # why no baseline could be made


def day_complete(series: Series, day: date, tz: ZoneInfo, period_s: int) -> bool:
    """True if every settlement period of local `day` has a non-NaN value."""
    for t in settlement_periods(day, tz, period_s):
        v = series.get(t)
        if v is None or math.isnan(v):
            return False
    return True


def value_on(series: Series, day: date, t: datetime, event_day: date, tz: ZoneInfo) -> float | None:
    """The value on historical `day` matching instant `t` of the event day (by wall clock).

    None if that wall-clock time does not exist on the shifted day (spring clock change);
    NaN if it exists but has no data.
    """
    shifted = day + (local_day(t, tz) - event_day)
    instant = at_wall_clock(shifted, wall_clock(t, tz), tz)
    if instant is None:
        return None
    v = series.get(instant)
    return math.nan if v is None else v


def select_days(
    series: Series,
    event_start: datetime,
    event_end: datetime,
    method: BaselineMethod,
    calendar: WorkingDayCalendar,
    tz: ZoneInfo,
    event_days: frozenset[date] = frozenset(),
) -> DaySelection:
    """Apply the day filter and X-of-Y selection for the event's local day."""
    event_day = local_day(event_start, tz)
    day_type = calendar.day_type(event_day)
    rule = method.rule_for(day_type)
    excluded: list[tuple[date, str]] = []
    eligible: list[date] = []
    periods = periods_between(event_start, event_end, method.period_s)
    score: dict[date, float] = {}
    for back in range(1, method.lookback_days + 1):
        day = event_day - timedelta(days=back)
        if calendar.day_type(day) != day_type:
            continue
        if len(eligible) >= rule.pool:
            break
        if day in event_days:
            excluded.append((day, "earlier event day"))
        elif not day_complete(series, day, tz, method.period_s):
            excluded.append((day, "missing data"))
        else:
            eligible.append(day)
            score[day] = _window_mean(series, day, periods, event_day, tz)
            if rule.low_usage_fraction is not None and len(eligible) == rule.pool:
                # PJM: a day below the fraction of the pool's mean event-window usage is
                # replaced by the next older eligible day.
                avg = math.fsum(score[d] for d in eligible) / len(eligible)
                low = [d for d in eligible if score[d] < rule.low_usage_fraction * avg]
                for d in low:
                    eligible.remove(d)
                    excluded.append((d, f"low usage (< {rule.low_usage_fraction:.0%} of average)"))
    if len(eligible) < rule.required:
        problem = (
            f"only {len(eligible)} eligible {day_type} days in the {method.lookback_days}-day "
            f"lookback, {rule.required} needed"
        )
        return DaySelection(day_type, (), tuple(excluded), problem)
    if rule.pick == "most_recent" or len(eligible) <= rule.count:
        used = eligible[: rule.count]
        dropped = [(d, f"not among the {rule.count} most recent") for d in eligible[rule.count :]]
    else:
        used, dropped = _pick(eligible, score, rule)
    return DaySelection(day_type, tuple(used), tuple(excluded + dropped), None)


def _window_mean(
    series: Series, day: date, periods: Sequence[datetime], event_day: date, tz: ZoneInfo
) -> float:
    vals = [v for t in periods if (v := value_on(series, day, t, event_day, tz)) is not None]
    m = mean_or_nan(vals)
    return -math.inf if math.isnan(m) else m


def _pick(
    eligible: list[date], score: dict[date, float], rule: DayRule
) -> tuple[list[date], list[tuple[date, str]]]:
    # Ties keep the more recent day: `eligible` is most-recent-first and sorted() is stable.
    if rule.pick == "highest":
        ranked = sorted(eligible, key=lambda d: -score[d])
        keep = set(ranked[: rule.count])
        reason = f"not among the highest {rule.count} of {len(eligible)}"
        dropped = [(d, reason) for d in eligible if d not in keep]
    else:  # trimmed_mean: drop the highest, then the lowest, ... until `count` remain
        remaining = list(eligible)
        dropped = []
        drop_high = True
        while len(remaining) > rule.count:
            ordered = sorted(remaining, key=lambda d: -score[d])
            victim = ordered[0] if drop_high else ordered[-1]
            remaining.remove(victim)
            dropped.append((victim, "trimmed (highest)" if drop_high else "trimmed (lowest)"))
            drop_high = not drop_high
        keep = set(remaining)
    return [d for d in eligible if d in keep], dropped


# -- the whole pipeline ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodResult:
    period_start: datetime  # aware UTC
    unadjusted_kwh: float
    adjustment_kwh: float
    baseline_kwh: float
    metered_kwh: float
    delivered_kwh: float


@dataclass(frozen=True, slots=True)
class ShadowCheck:
    """Pre-event load shifting check on the adjustment window."""

    window_start: datetime
    window_end: datetime
    window_metered_kwh: float
    window_unadjusted_kwh: float
    ratio: float  # metered / unadjusted over the window; NaN if undefined
    threshold_fraction: float
    flagged: bool


@dataclass(frozen=True, slots=True)
class BaselineResult:
    method: BaselineMethod
    direction: Direction
    event_start: datetime
    event_end: datetime
    selection: DaySelection
    periods: tuple[PeriodResult, ...]
    adjustment_factor: float  # multiplicative F (1.0 if not multiplicative)
    shadow: ShadowCheck
    data_periods: tuple[datetime, ...]  # every period whose meter value the result depends on

    @property
    def total_delivered_kwh(self) -> float:
        return math.fsum(p.delivered_kwh for p in self.periods)


def check_window(event_start: datetime, event_end: datetime, period_s: int) -> None:
    """Raise ValueError unless the event is a non-empty whole number of aligned periods."""
    if event_start.tzinfo is None or event_end.tzinfo is None:
        raise ValueError("event: start and end must carry a UTC offset")
    if event_end <= event_start:
        raise ValueError("event: end must be after start")
    for name, t in (("start", event_start), ("end", event_end)):
        if int(t.timestamp()) % period_s or t.microsecond:
            raise ValueError(
                f"event: {name} {t.isoformat()} is not on a {period_s // 60}-min boundary"
            )


def compute_baseline(
    series: Series,
    event_start: datetime,
    event_end: datetime,
    method: BaselineMethod,
    calendar: WorkingDayCalendar,
    tz: ZoneInfo,
    *,
    direction: Direction = "turn_down",
    event_days: frozenset[date] = frozenset(),
) -> BaselineResult:
    """Baseline, adjustment and delivery for every period of one event. [kWh per period]

    series: metered energy per period [kWh], keyed by aware UTC period start; NaN = missing.
    event_days: local days of earlier events, left out of the baseline days.
    """
    check_window(event_start, event_end, method.period_s)
    event_day = local_day(event_start, tz)
    sel = select_days(series, event_start, event_end, method, calendar, tz, event_days)
    adj = method.adjustment
    w_start = event_start - timedelta(hours=adj.window_start_h)
    w_end = event_start - timedelta(hours=adj.window_end_h)
    window = periods_between(w_start, w_end, method.period_s)
    event_periods = periods_between(event_start, event_end, method.period_s)

    def unadjusted(t: datetime) -> float:
        if sel.problem is not None:
            return math.nan
        vals = [v for d in sel.used if (v := value_on(series, d, t, event_day, tz)) is not None]
        return unadjusted_baseline_kwh(vals)

    def metered(t: datetime) -> float:
        v = series.get(t)
        return math.nan if v is None else v

    w_metered = [metered(t) for t in window]
    w_unadj = [unadjusted(t) for t in window]
    factor = 1.0
    additive = 0.0
    if adj.kind == "additive":
        additive = additive_adjustment_kwh(
            w_metered, w_unadj, direction=adj.direction, cap_kwh=adj.cap_kwh
        )
    elif adj.kind == "multiplicative":
        factor = multiplicative_factor(
            w_metered, w_unadj, cap_fraction=adj.cap_fraction, direction=adj.direction
        )

    rows: list[PeriodResult] = []
    for t in event_periods:
        u = unadjusted(t)
        a = additive if adj.kind != "multiplicative" else u * (factor - 1.0)
        b = u + a
        m = metered(t)
        rows.append(
            PeriodResult(
                t,
                u,
                a,
                b,
                m,
                delivered_kwh(b, m, direction=direction, settlement=method.settlement),
            )
        )

    wm = math.fsum(w_metered) if w_metered else math.nan
    wu = math.fsum(w_unadj) if w_unadj else math.nan
    ratio = math.nan if math.isnan(wm) or math.isnan(wu) or wu == 0 else wm / wu
    shadow = ShadowCheck(
        w_start,
        w_end,
        wm,
        wu,
        ratio,
        method.shadow_threshold_fraction,
        not math.isnan(ratio) and ratio > 1.0 + method.shadow_threshold_fraction,
    )
    used_periods = {t for t in window} | set(event_periods)
    for d in sel.used:
        for t in (*window, *event_periods):
            shifted = d + (local_day(t, tz) - event_day)
            used_periods.update(settlement_periods(shifted, tz, method.period_s))
    return BaselineResult(
        method,
        direction,
        event_start,
        event_end,
        sel,
        tuple(rows),
        factor,
        shadow,
        tuple(sorted(used_periods)),
    )
