"""How good the forecasts are, and the PV correction learned from that: pure functions.

* `hourly_calibration`: measured / modelled PV per local hour of day (a tree that shades the
  array from 15:00 shows as a low ratio in those hours only), clipped, and used only once an
  hour has data from enough days.
* `in_force` and `accuracy`: the forecast each past half-hour was planned with (the latest
  stored forecast made no later than the half-hour's start) against what was measured, as a
  mean absolute error [W] per day and over the window. `in_force` works on the rows'
  metadata, so only the rows it picks need their values read.

Series are keyed by aware UTC slot start; values are mean power over the slot [W]; NaN or a
missing key is unknown and is left out, never counted as 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HALF_HOUR = timedelta(minutes=30)

# A half-hour counts for the calibration only where the model expects at least this much:
# around dawn and dusk the ratio of two small numbers is noise. [W]
MIN_MODELLED_W = 50.0


@dataclass(frozen=True, slots=True)
class PvCalibration:
    """Factors for the PV model per local hour of day [-].

    hourly: hour (0..23) -> factor, for the hours with data from at least `min_days` days.
    typical: the median of those factors, used in the other hours (dawn, dusk, hours the
        model never gave `MIN_MODELLED_W` in); None when no hour qualifies (then nothing is
        calibrated). A median, so a few shaded hours do not pull the other hours down.
    days: days in the window with at least one usable half-hour.
    """

    hourly: dict[int, float]
    typical: float | None
    days: int
    min_days: int
    window_days: int

    @property
    def applied(self) -> bool:
        return self.typical is not None

    def factor(self, hour: int) -> float:
        if self.typical is None:
            return 1.0
        return self.hourly.get(hour, self.typical)

    def note(self) -> str:
        if self.typical is None:
            return (
                f"pv: not calibrated: measured PV on {self.days} of the last "
                f"{self.window_days} days, {self.min_days} needed"
            )
        days = f"{self.days} day{'' if self.days == 1 else 's'}"
        text = f"pv: calibrated per hour against {days} of measured PV: × {self.typical:.2f}"
        off = sorted(h for h, f in self.hourly.items() if abs(f - self.typical) >= 0.05)
        if off:
            text += " except " + ", ".join(f"{h:02d}h × {self.hourly[h]:.2f}" for h in off)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "typical": self.typical,
            "hourly": {f"{h:02d}": round(f, 3) for h, f in sorted(self.hourly.items())},
            "days": self.days,
            "min_days": self.min_days,
            "window_days": self.window_days,
        }


def hourly_calibration(
    measured_w: Mapping[datetime, float],
    modelled_w: Mapping[datetime, float],
    zone: ZoneInfo,
    *,
    lo: float,
    hi: float,
    min_days: int,
    window_days: int,
) -> PvCalibration:
    """Per local hour h: F_h = Σ measured / Σ modelled over the half-hours of hour h where both
    are known and the model gives at least `MIN_MODELLED_W`, clipped to [lo, hi].

    An hour's F_h is kept when its half-hours come from at least `min_days` different days;
    the other hours get the median of the kept ones. The hour is the local clock hour of the
    slot start, so for a few days after a clock change an hour's sun is an hour off.
    """
    sums: dict[int, list[float]] = {}
    days_by_hour: dict[int, set[date]] = {}
    for t, s in modelled_w.items():
        m = measured_w.get(t, math.nan)
        if math.isnan(m) or math.isnan(s) or s < MIN_MODELLED_W:
            continue
        local = t.astimezone(zone)
        acc = sums.setdefault(local.hour, [0.0, 0.0])
        acc[0] += m
        acc[1] += s
        days_by_hour.setdefault(local.hour, set()).add(local.date())
    all_days = set().union(*days_by_hour.values()) if days_by_hour else set()
    hourly = {
        h: min(hi, max(lo, m / s))
        for h, (m, s) in sorted(sums.items())
        if len(days_by_hour[h]) >= min_days
    }
    typical = statistics.median(hourly.values()) if hourly else None
    return PvCalibration(hourly, typical, len(all_days), min_days, window_days)


# -- accuracy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredForecast:
    """One row of the `forecasts` table, without its values: `n` values every `step_s` from
    `start`; `key` is the row's id."""

    made_at: datetime
    start: datetime
    step_s: int
    n: int
    key: int = 0

    def span(self, a: datetime, b: datetime) -> tuple[int, int] | None:
        """Indices [i0, i1) of the values over [a, b); None unless the row covers it all."""
        step = timedelta(seconds=self.step_s)
        i0, i1 = (a - self.start) / step, (b - self.start) / step
        if i0 < 0 or i1 > self.n or i0 != int(i0) or i1 != int(i1) or i1 <= i0:
            return None
        return int(i0), int(i1)


def in_force(
    rows: Sequence[StoredForecast], slots: Sequence[datetime]
) -> dict[datetime, tuple[StoredForecast, int, int]]:
    """Half-hour start -> (row, i0, i1): the forecast it was planned with, and which of the
    row's values fall in the half-hour (one at 30-min steps, two at 15).

    The row is the latest made no later than the half-hour's start that covers it (an older
    one where the latest does not reach that far). Half-hours no row covers are left out.
    """
    ordered = sorted(rows, key=lambda r: (r.made_at, r.key))
    out: dict[datetime, tuple[StoredForecast, int, int]] = {}
    j = -1
    for t in sorted(slots):
        while j + 1 < len(ordered) and ordered[j + 1].made_at <= t:
            j += 1
        for k in range(j, -1, -1):
            span = ordered[k].span(t, t + HALF_HOUR)
            if span is not None:
                out[t] = (ordered[k], *span)
                break
    return out


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of a forecast's values over a half-hour [W]; None if one is unknown."""
    if not values or any(v is None or math.isnan(v) for v in values):
        return None
    return math.fsum(v for v in values if v is not None) / len(values)


@dataclass(frozen=True, slots=True)
class DayError:
    day: date  # local
    mae_w: float
    slots: int


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Mean absolute error of half-hour mean power, forecast in force vs measured [W]."""

    kind: str  # "pv" | "load"
    window_days: int
    days: tuple[DayError, ...]  # oldest first; days without any pair are left out
    mae_w: float | None  # over every half-hour of the window; None: nothing to compare
    slots: int

    def note(self) -> str:
        if self.mae_w is None:
            return f"{self.kind}: no forecast accuracy yet (no stored forecast with measurements)"
        return (
            f"{self.kind}: forecast mean absolute error {self.mae_w:.0f} W per half-hour over "
            f"{len(self.days)} days ({self.slots} half-hours)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "unit": "W",
            "what": "mean absolute error of the half-hour mean power, the forecast each "
            "half-hour was planned with against the measured value",
            "window_days": self.window_days,
            "mae_w": None if self.mae_w is None else round(self.mae_w, 1),
            "slots": self.slots,
            "daily": [
                {"day": d.day.isoformat(), "mae_w": round(d.mae_w, 1), "slots": d.slots}
                for d in self.days
            ],
        }


def accuracy(
    kind: str,
    forecast_w: Mapping[datetime, float],
    measured_w: Mapping[datetime, float],
    zone: ZoneInfo,
    window_days: int,
) -> Accuracy:
    """Daily and overall MAE [W] over the half-hours where both series are known."""
    per_day: dict[date, list[float]] = {}
    for t, f in forecast_w.items():
        m = measured_w.get(t, math.nan)
        if math.isnan(m) or math.isnan(f):
            continue
        per_day.setdefault(t.astimezone(zone).date(), []).append(abs(f - m))
    days = tuple(
        DayError(d, math.fsum(errs) / len(errs), len(errs)) for d, errs in sorted(per_day.items())
    )
    every = [e for errs in per_day.values() for e in errs]
    mae = math.fsum(every) / len(every) if every else None
    return Accuracy(kind, window_days, days, mae, len(every))
