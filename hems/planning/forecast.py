"""Forecasts: PV from open-meteo tilted irradiance, household load from the site's history.

Both come out as a `Forecast` (mean power per planning slot [W], where it came from, and
flags for anything cleaned or substituted) and are stored in the `forecasts` table. The PV
model is calibrated per local hour of day against the measured PV, and each forecast kind's
accuracy is measured against history (`hems.planning.forecast_quality`).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import structlog

from hems.core.clock import Clock
from hems.planning.config import ForecastConfig, PvArrayConfig
from hems.planning.forecast_quality import (
    Accuracy,
    PvCalibration,
    StoredForecast,
    accuracy,
    hourly_calibration,
    in_force,
    mean_or_none,
)
from hems.store.db import Database
from hems.store.timeseries import from_ms, half_hour_means, to_ms

log = structlog.get_logger(__name__)

HALF_HOUR_S = 1800


@dataclass(frozen=True, slots=True)
class Forecast:
    start: datetime
    step_min: int
    values_w: list[float]
    source: str  # "open-meteo", "history", "default"
    flags: tuple[str, ...] = ()


# -- the PV model ----------------------------------------------------------------------


def cell_temperature_c(gti_w_m2: float, temp_air_c: float, noct_c: float = 45.0) -> float:
    """Cell temperature from the NOCT model [°C].

    T_cell = T_air + (NOCT − 20) · G / 800, with G the plane-of-array irradiance [W/m²] and
    NOCT the nominal operating cell temperature [°C] (at 800 W/m², 20 °C, 1 m/s wind).

    References: J. A. Duffie, W. A. Beckman, Solar Engineering of Thermal Processes, 4th ed.,
    Wiley 2013, §23.3 (doi:10.1002/9781118671603).
    """
    return temp_air_c + (noct_c - 20.0) * gti_w_m2 / 800.0


def pv_ac_power_w(
    gti_w_m2: float,
    temp_air_c: float,
    kwp: float,
    loss_factor: float = 0.86,
    gamma_per_c: float = -0.004,
) -> float:
    """AC power of one array from plane-of-array irradiance, PVWatts-like [W].

    gti_w_m2: global tilted irradiance on the array's plane [W/m²].
    temp_air_c: air temperature [°C].
    kwp: DC rating at STC [kWp]. loss_factor: system efficiency η_sys incl. inverter [-].
    gamma_per_c: power temperature coefficient [1/°C].

    Notes
    -----
    P = kWp · 1000 · G/1000 · (1 + γ (T_cell − 25)) · η_sys, with T_cell from
    `cell_temperature_c`. Negative irradiance (sensor/model noise) is clipped to 0 by the
    caller, which flags it; NaN in gives NaN out, never 0.

    References: A. P. Dobos, PVWatts Version 5 Manual, NREL/TP-6A20-62641, 2014
    (doi:10.2172/1158421).
    """
    if math.isnan(gti_w_m2) or math.isnan(temp_air_c):
        return math.nan
    t_cell = cell_temperature_c(gti_w_m2, temp_air_c)
    return max(0.0, kwp * gti_w_m2 * (1.0 + gamma_per_c * (t_cell - 25.0)) * loss_factor)


def open_meteo_azimuth(compass_deg: float) -> float:
    """Compass bearing (180 = south) → open-meteo's convention (0 = south, −90 = east)."""
    return ((compass_deg - 180.0 + 180.0) % 360.0) - 180.0


def parse_open_meteo(payload: Any) -> tuple[list[datetime], list[float], list[float], int]:
    """(times, GTI, air temperature, step in s) from a 15-minutely or hourly reply.

    Each value is the mean over the interval *ending* at its timestamp. Nulls become NaN.
    Raises ValueError naming the field on malformed replies.
    """
    if not isinstance(payload, dict):
        raise ValueError("reply: not a JSON object")
    for key, step_s in (("minutely_15", 900), ("hourly", 3600)):  # noqa: B007 (used below)
        block = payload.get(key)
        if isinstance(block, dict):
            break
    else:
        raise ValueError("minutely_15/hourly: missing")
    offset = timedelta(seconds=int(payload.get("utc_offset_seconds", 0) or 0))
    try:
        times = [datetime.fromisoformat(t).replace(tzinfo=UTC) - offset for t in block["time"]]
        gti = [math.nan if v is None else float(v) for v in block["global_tilted_irradiance"]]
        temp = [math.nan if v is None else float(v) for v in block["temperature_2m"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{key}: {exc!r}") from exc
    if not (len(times) == len(gti) == len(temp)):
        raise ValueError(f"{key}: series of different lengths")
    return times, gti, temp, step_s


def resample_mean(
    times_end: Sequence[datetime],
    values: Sequence[float],
    step_s: int,
    start: datetime,
    n: int,
    slot_min: int,
) -> list[float]:
    """Time-weighted mean per slot of interval-mean values ending at `times_end`.

    NaN where a slot is not fully covered or any overlapping value is NaN.
    """
    out: list[float] = []
    slot = timedelta(minutes=slot_min)
    src = [(t - timedelta(seconds=step_s), t, v) for t, v in zip(times_end, values, strict=True)]
    j = 0
    for i in range(n):
        a, b = start + i * slot, start + (i + 1) * slot
        while j < len(src) and src[j][1] <= a:
            j += 1
        covered = total = 0.0
        bad = False
        k = j
        while k < len(src) and src[k][0] < b:
            s, e, v = src[k]
            d = (min(e, b) - max(s, a)).total_seconds()
            if d > 0:
                if math.isnan(v):
                    bad = True
                covered += d
                total += d * v
            k += 1
        span = slot.total_seconds()
        out.append(total / span if not bad and covered >= span - 1e-6 else math.nan)
    return out


def profile_w(
    history: dict[datetime, float],
    slots: Sequence[datetime],
    zone: ZoneInfo,
    half_life_days: float,
    now: datetime,
    by_weekday: bool,
) -> list[float]:
    """Recency-weighted mean of past values at the same local time of day (and weekday).

    history: slot start (UTC) → mean power [W] of past slots. Weight 0.5^(age / half life).
    Falls back from the weekday profile to the all-days profile; NaN when neither exists.
    """
    buckets: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for t, v in history.items():
        if math.isnan(v):
            continue
        local = t.astimezone(zone)
        tod = local.hour * 60 + local.minute
        w = 0.5 ** ((now - t).total_seconds() / 86400.0 / half_life_days)
        buckets.setdefault((local.weekday(), tod), []).append((w, v))
        buckets.setdefault((-1, tod), []).append((w, v))
    out = []
    for t in slots:
        local = t.astimezone(zone)
        tod = local.hour * 60 + local.minute
        pts = buckets.get((local.weekday(), tod), []) if by_weekday else []
        if len(pts) < 2:
            pts = buckets.get((-1, tod), [])
        wsum = sum(w for w, _ in pts)
        out.append(sum(w * v for w, v in pts) / wsum if wsum > 0 else math.nan)
    return out


@dataclass(frozen=True, slots=True)
class ArrayPower:
    """One array's modelled AC power [W] at the weather's times, with the count of negative
    irradiance values that were set to 0 (for the flags)."""

    times: list[datetime]
    power_w: list[float]
    step_s: int
    negative: int


def array_power(
    a: PvArrayConfig, weather: tuple[list[datetime], list[float], list[float], int]
) -> ArrayPower:
    """`pv_ac_power_w` over a parsed open-meteo reply (see `parse_open_meteo`)."""
    times, gti, temp, step_s = weather
    negative = sum(1 for g in gti if not math.isnan(g) and g < 0)
    gti = [max(0.0, g) if not math.isnan(g) else g for g in gti]
    power = [
        pv_ac_power_w(g, t, a.kwp, a.loss_factor, a.gamma_per_c)
        for g, t in zip(gti, temp, strict=True)
    ]
    return ArrayPower(times, power, step_s, negative)


# -- history from the store: half_hour_means (hems.store.timeseries) ------------------------


@dataclass
class SiteDevices:
    """The metered devices behind the household load.

    base load = grid + pv − battery − ev − deferrable (signs as the readings).
    """

    grid: list[str] = field(default_factory=list)
    pv: list[str] = field(default_factory=list)
    battery: list[str] = field(default_factory=list)
    ev: list[str] = field(default_factory=list)
    deferrable: list[str] = field(default_factory=list)


# -- the forecaster --------------------------------------------------------------------


class Forecaster:
    """Makes (and stores) PV and base-load forecasts for the planner."""

    def __init__(
        self,
        cfg: ForecastConfig,
        *,
        latitude: float,
        longitude: float,
        db: Database,
        clock: Clock,
        http: httpx.AsyncClient | None,
        timezone: str = "Europe/London",
        devices: SiteDevices | None = None,
    ) -> None:
        self.cfg = cfg
        self.lat, self.lon = latitude, longitude
        self.db = db
        self.clock = clock
        self.http = http
        self.zone = ZoneInfo(timezone)
        self.devices = devices or SiteDevices()
        self.online: bool | None = None
        # Per array, the model run once per weather fetch: every plan resamples it (twice,
        # with the calibration) and must not redo the PV model over ten days of weather.
        self._weather: dict[int, ArrayPower] = {}
        self._weather_at: datetime | None = None
        # The latest PV calibration and accuracy figures, for the plan notes and status.
        self.calibration: PvCalibration | None = None
        self.accuracy: dict[str, Accuracy] = {}
        self._accuracy_slot: datetime | None = None
        self._planned: dict[str, dict[datetime, float]] = {}  # kind -> half-hour -> W
        self._planned_until: datetime | None = None  # half-hours before this are in _planned
        self._stored: dict[str, tuple[int, int, str, str, str]] = {}  # kind -> last row stored

    # PV --------------------------------------------------------------------------------
    async def _fetch_array(
        self, a: PvArrayConfig
    ) -> tuple[list[datetime], list[float], list[float], int]:
        assert self.http is not None
        r = await self.http.get(
            f"{self.cfg.base_url.rstrip('/')}/v1/forecast",
            params={
                "latitude": f"{self.lat:.4f}",
                "longitude": f"{self.lon:.4f}",
                "minutely_15": "global_tilted_irradiance,temperature_2m",
                "tilt": f"{a.tilt_deg:g}",
                "azimuth": f"{open_meteo_azimuth(a.azimuth_deg):g}",
                "past_days": str(self.cfg.calibration_days),  # the calibration's window
                "forecast_days": "3",
                "timezone": "GMT",
            },
            timeout=self.cfg.timeout_s,
        )
        r.raise_for_status()
        return parse_open_meteo(r.json())

    async def refresh_weather(self, max_age_s: float = 3600.0) -> bool:
        """Fetch irradiance per array at most every `max_age_s`; False when offline."""
        now = self.clock.now()
        if self._weather_at and (now - self._weather_at).total_seconds() < max_age_s:
            return True
        if self.http is None or not self.cfg.arrays:
            return False
        try:
            fresh = {i: await self._fetch_array(a) for i, a in enumerate(self.cfg.arrays)}
        except (httpx.HTTPError, ValueError) as exc:
            if self.online is not False:
                log.warning("pv forecast fetch failed", reason=f"{type(exc).__name__}: {exc}")
            self.online = False
            return bool(self._weather)
        if self.online is False:
            log.info("pv forecast fetch recovered")
        self.online = True
        self._weather = {i: array_power(self.cfg.arrays[i], w) for i, w in fresh.items()}
        self._weather_at = now
        return True

    def modelled_pv_w(
        self, start: datetime, n: int, step_min: int
    ) -> tuple[list[float], list[str]]:
        """Sum over arrays of the model's AC power per slot; cleaned, with flags."""
        total = [0.0] * n
        flags: list[str] = []
        for i in range(len(self.cfg.arrays)):
            w = self._weather[i]
            if w.negative:
                flags.append(f"pv: {w.negative} negative irradiance values of array {i} set to 0")
            per_slot = resample_mean(w.times, w.power_w, w.step_s, start, n, step_min)
            total = [x + y for x, y in zip(total, per_slot, strict=True)]
        return total, flags

    async def forecasts(self, start: datetime, n: int, step_min: int) -> tuple[Forecast, Forecast]:
        """PV and base load for one plan, from ONE read of the history (the load needs the
        PV meters' history too)."""
        now = self.clock.now()
        means = await self._history(now, [*self.cfg.pv_device_ids, *self._load_ids()])
        pv = await self.pv(start, n, step_min, now=now, means=means)
        load = await self.load(start, n, step_min, now=now, means=means)
        await self._update_accuracy(now, means)
        return pv, load

    async def _history(self, now: datetime, ids: Sequence[str]) -> dict[str, dict[datetime, float]]:
        since = now - timedelta(days=self.cfg.history_days)
        return await half_hour_means(self.db, list(dict.fromkeys(ids)), since, now)

    def _load_ids(self) -> list[str]:
        d = self.devices
        return [*d.grid, *d.pv, *d.battery, *d.ev, *d.deferrable]

    async def pv(
        self,
        start: datetime,
        n: int,
        step_min: int,
        *,
        now: datetime | None = None,
        means: dict[str, dict[datetime, float]] | None = None,
    ) -> Forecast:
        """`now`/`means`: the time and history already read (see `forecasts`)."""
        flags: list[str] = []
        now = now or self.clock.now()
        means = means if means is not None else await self._history(now, self.cfg.pv_device_ids)
        pv_ids = self.cfg.pv_device_ids
        history = _sum_devices({d: means[d] for d in pv_ids}, len(pv_ids))
        hist_profile = profile_w(
            history, [start + timedelta(minutes=step_min * i) for i in range(n)],
            self.zone, self.cfg.recency_half_life_days, now, by_weekday=False,
        )  # fmt: skip
        have_weather = await self.refresh_weather()
        if not self.cfg.arrays:
            values = [0.0 if math.isnan(v) else v for v in hist_profile]
            fc = Forecast(start, step_min, values, "history", ("pv: no arrays configured",))
        elif not have_weather:
            values = [0.0 if math.isnan(v) else max(0.0, v) for v in hist_profile]
            flags.append("pv: open-meteo unreachable; history-only forecast")
            fc = Forecast(start, step_min, values, "history", tuple(flags))
        else:
            values, model_flags = self.modelled_pv_w(start, n, step_min)
            flags += model_flags
            if pv_ids:
                cal = self._calibration(history, now)
                self.calibration = cal
                flags.append(cal.note())
                if cal.applied:
                    values = [
                        v * cal.factor((start + timedelta(minutes=step_min * i)).astimezone(
                            self.zone).hour)
                        for i, v in enumerate(values)
                    ]  # fmt: skip
            nan = [i for i, v in enumerate(values) if math.isnan(v)]
            if nan:
                flags.append(f"pv: {len(nan)} slots without irradiance; history used there")
                for i in nan:
                    h = hist_profile[i]
                    values[i] = 0.0 if math.isnan(h) else max(0.0, h)
            fc = Forecast(start, step_min, values, "open-meteo", tuple(flags))
        await self._store("pv", now, fc)
        return fc

    def _calibration(self, history: dict[datetime, float], now: datetime) -> PvCalibration:
        """Per-hour factors from the last `calibration_days` of measured PV against the model
        run on the weather open-meteo reports for those days (its `past_days`)."""
        days = self.cfg.calibration_days
        first = slot_start(now - timedelta(days=days), 30)
        n = int((now - first).total_seconds() // HALF_HOUR_S)
        modelled, _ = self.modelled_pv_w(first, n, 30)
        slots = [first + timedelta(minutes=30 * i) for i in range(n)]
        return hourly_calibration(
            {t: v for t, v in history.items() if t >= first},
            dict(zip(slots, modelled, strict=True)),
            self.zone,
            lo=self.cfg.calibration_min,
            hi=self.cfg.calibration_max,
            min_days=self.cfg.calibration_min_days,
            window_days=days,
        )

    # accuracy --------------------------------------------------------------------------
    async def _update_accuracy(
        self, now: datetime, means: dict[str, dict[datetime, float]]
    ) -> None:
        """Once per half-hour: the PV and load forecasts of the last `accuracy_days` against
        what was measured (half-hours that have ended).

        What each half-hour was planned with cannot change once it has begun, so it is read
        once and kept (`_planned`); later runs read only the half-hours since."""
        slot = slot_start(now, 30)
        if slot == self._accuracy_slot:
            return
        self._accuracy_slot = slot
        days = self.cfg.accuracy_days
        first = slot_start(now - timedelta(days=days), 30)
        done = self._planned_until if self._planned_until is not None else first
        done = max(first, min(done, slot))
        new_slots = [done + _HALF * i for i in range(int((slot - done) / _HALF))]
        window = [first + _HALF * i for i in range(int((slot - first) / _HALF))]
        recent = {d: {t: s[t] for t in window if t in s} for d, s in means.items()}
        pv_ids = self.cfg.pv_device_ids or self.devices.pv
        measured = {
            "pv": _sum_devices({d: recent.get(d, {}) for d in pv_ids}, len(pv_ids)),
            "load": self._base_load_history(recent)[0],
        }
        for kind in ("pv", "load"):
            kept = {t: v for t, v in self._planned.get(kind, {}).items() if first <= t < slot}
            # A forecast made up to its horizon (48 h by default) before a half-hour still
            # covers it.
            since = (new_slots[0] if new_slots else slot) - timedelta(days=2)
            kept |= await planned_half_hours(self.db, kind, new_slots, since)
            self._planned[kind] = kept
            self.accuracy[kind] = accuracy(kind, kept, measured[kind], self.zone, days)
        self._planned_until = slot

    # load ------------------------------------------------------------------------------
    async def load(
        self,
        start: datetime,
        n: int,
        step_min: int,
        *,
        now: datetime | None = None,
        means: dict[str, dict[datetime, float]] | None = None,
    ) -> Forecast:
        """Base load = grid + PV − battery − EV − deferrable loads, profiled from history.

        `now`/`means`: the time and history already read (see `forecasts`)."""
        now = now or self.clock.now()
        per_device = means if means is not None else await self._history(now, self._load_ids())
        flags: list[str] = []
        history, negative = self._base_load_history(per_device)
        if negative:
            flags.append(f"load: {negative} negative history values set to 0")
        # Profile at half-hour resolution, then repeat for 15-min slots.
        half_start = start.replace(minute=0 if start.minute < 30 else 30)
        n_half = math.ceil((n * step_min + (start - half_start).total_seconds() / 60) / 30)
        halves = [half_start + timedelta(minutes=30 * i) for i in range(n_half)]
        prof = profile_w(
            history, halves, self.zone, self.cfg.recency_half_life_days, now, by_weekday=True
        )
        missing = sum(1 for v in prof if math.isnan(v))
        source = "history"
        if missing:
            flags.append(
                f"load: no history for {missing} half-hours; "
                f"{self.cfg.default_load_w:g} W assumed there"
            )
            prof = [self.cfg.default_load_w if math.isnan(v) else v for v in prof]
            if missing == len(prof):
                source = "default"
        values = []
        for i in range(n):
            t = start + timedelta(minutes=step_min * i)
            values.append(prof[int((t - half_start).total_seconds() // HALF_HOUR_S)])
        fc = Forecast(start, step_min, values, source, tuple(flags))
        await self._store("load", now, fc)
        return fc

    async def _store(self, kind: str, now: datetime, fc: Forecast) -> None:
        """Store `fc` unless it is the one last stored of its kind (a replan within a slot
        mostly makes the same forecast): an identical row made later would change nothing
        `in_force` picks, as the earlier one covers the same half-hours with the same
        values."""
        form = stored_form(fc)
        if self._stored.get(kind) == form:
            return
        await store_forecast(self.db, kind, now, fc)
        self._stored[kind] = form

    def _base_load_history(
        self, per_device: dict[str, dict[datetime, float]]
    ) -> tuple[dict[datetime, float], int]:
        """Measured base load per half-hour [W] (negative values set to 0) and how many were
        negative."""
        d = self.devices
        history: dict[datetime, float] = {}
        if d.grid:
            for t in set().union(*(per_device.get(g, {}).keys() for g in d.grid)):
                v = sum(per_device.get(g, {}).get(t, math.nan) for g in d.grid)
                v += sum(per_device.get(p, {}).get(t, 0.0) for p in d.pv)
                v -= sum(per_device.get(b, {}).get(t, 0.0) for b in d.battery)
                v -= sum(per_device.get(e, {}).get(t, 0.0) for e in d.ev)
                v -= sum(per_device.get(x, {}).get(t, 0.0) for x in d.deferrable)
                if not math.isnan(v):
                    history[t] = v
        negative = sum(1 for v in history.values() if v < 0)
        return {t: max(0.0, v) for t, v in history.items()}, negative


_HALF = timedelta(minutes=30)


def slot_start(t: datetime, step_min: int) -> datetime:
    """Start of the slot holding `t` (UTC; 15/30 min divide the hour)."""
    return t.replace(minute=t.minute - t.minute % step_min, second=0, microsecond=0)


def _sum_devices(
    per_device: dict[str, dict[datetime, float]], expected: int
) -> dict[datetime, float]:
    out: dict[datetime, float] = {}
    if not per_device:
        return out
    for t in set().union(*(s.keys() for s in per_device.values())):
        vals = [s[t] for s in per_device.values() if t in s]
        if len(vals) == expected:
            out[t] = max(0.0, sum(vals))  # a PV meter's night draw is not negative PV
    return out


def stored_form(fc: Forecast) -> tuple[int, int, str, str, str]:
    """(start_ms, step_s, values_json, source, flags_json): a forecast as a `forecasts` row
    stores it; two forecasts with the same form are the same row but for `made_at_ms`."""
    values = [None if math.isnan(v) else round(v, 1) for v in fc.values_w]
    return (
        to_ms(fc.start),
        fc.step_min * 60,
        json.dumps(values),
        fc.source,
        json.dumps(list(fc.flags)),
    )


async def store_forecast(db: Database, kind: str, made_at: datetime, fc: Forecast) -> None:
    """Written with the next commit (`Database.defer`: it rides on the store's batch)."""
    db.defer(
        "INSERT INTO forecasts(kind, made_at_ms, start_ms, step_s, values_json, source,"
        " flags_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, to_ms(made_at), *stored_form(fc)),
    )


async def planned_half_hours(
    db: Database, kind: str, slots: Sequence[datetime], since: datetime
) -> dict[datetime, float]:
    """Half-hour start -> the `kind` forecast it was planned with [W] (see
    `forecast_quality.in_force`), from the forecasts made since `since`.

    All of it runs in the database thread, and SQLite does the JSON (json_array_length for
    each row's length, json_extract for the values picked), so ~2000 stored rows do not
    hold up the event loop.
    """
    if not slots:
        return {}
    until = max(slots)

    def work(conn: sqlite3.Connection) -> dict[datetime, float]:
        meta = conn.execute(
            "SELECT forecast_pk, made_at_ms, start_ms, step_s, json_array_length(values_json)"
            " FROM forecasts WHERE kind = ? AND made_at_ms >= ? AND made_at_ms <= ?",
            (kind, to_ms(since), to_ms(until)),
        ).fetchall()
        rows = [StoredForecast(from_ms(m), from_ms(s), int(st), int(n), int(pk))
                for pk, m, s, st, n in meta]  # fmt: skip
        picks = in_force(rows, slots)
        # SQLite reads just the values picked (json_extract), so no row is parsed in Python.
        wanted = sorted({(row.key, i) for row, i0, i1 in picks.values() for i in range(i0, i1)})
        values: dict[tuple[int, int], float | None] = {}
        for c in range(0, len(wanted), 400):  # 800 bound parameters, under SQLite's limit
            chunk = wanted[c : c + 400]
            pairs = ",".join("(?, ?)" for _ in chunk)
            for pk, i, v in conn.execute(
                f"WITH want(pk, i) AS (VALUES {pairs}) SELECT want.pk, want.i,"
                " json_extract(f.values_json, '$[' || want.i || ']') FROM want"
                " JOIN forecasts f ON f.forecast_pk = want.pk",
                [x for pair in chunk for x in pair],
            ):
                values[(pk, i)] = None if v is None else float(v)
        out: dict[datetime, float] = {}
        for t, (row, i0, i1) in picks.items():
            v = mean_or_none([values.get((row.key, i)) for i in range(i0, i1)])
            if v is not None:
                out[t] = v
        return out

    # A read: the forecasts just queued are seen without being committed on their own.
    return await db.read(work)


async def prune_forecasts(db: Database, before: datetime) -> int:
    """Delete the forecasts made before `before` (this module owns the `forecasts` table);
    how many went."""
    return await db.execute("DELETE FROM forecasts WHERE made_at_ms < ?", (to_ms(before),))


def queue_prune_forecasts(db: Database, before: datetime) -> None:
    """`prune_forecasts` with the next commit (the store's batch), like `queue_prune_plans`."""
    db.defer("DELETE FROM forecasts WHERE made_at_ms < ?", (to_ms(before),))
