"""Forecasts: PV model, open-meteo replayed over local HTTP, calibration, load history."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from planning_helpers import AutoClock, put_history

from hems.planning.config import ForecastConfig
from hems.planning.forecast import (
    Forecaster,
    SiteDevices,
    open_meteo_azimuth,
    parse_open_meteo,
    pv_ac_power_w,
    resample_mean,
)
from hems.store.db import Database


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


def test_pv_model_by_hand() -> None:
    # G = 1000 W/m², 25 °C air: T_cell = 25 + 25·1000/800 = 56.25 °C,
    # P = 4 kWp · 1000 · (1 − 0.004 · 31.25) · 0.86 = 3010 W.
    assert pv_ac_power_w(1000, 25, 4.0, 0.86, -0.004) == pytest.approx(3010.0)
    assert pv_ac_power_w(0, 10, 4.0) == 0.0
    assert math.isnan(pv_ac_power_w(math.nan, 10, 4.0))  # missing stays missing
    assert open_meteo_azimuth(180) == 0 and open_meteo_azimuth(90) == -90
    assert open_meteo_azimuth(270) == 90


def test_resample_interval_means() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ends = [t0 + timedelta(minutes=15 * (i + 1)) for i in range(4)]  # values for each quarter
    out = resample_mean(ends, [100, 200, 300, math.nan], 900, t0, 2, 30)
    assert out[0] == 150.0 and math.isnan(out[1])  # NaN in, NaN out


def forecaster(cfg: ForecastConfig, db: Database, clock: AutoClock, http, devices=None):  # type: ignore[no-untyped-def]
    return Forecaster(
        cfg, latitude=51.5, longitude=-0.12, db=db, clock=clock, http=http, devices=devices
    )


async def test_pv_forecast_from_open_meteo_is_stored(replay, db) -> None:  # type: ignore[no-untyped-def]
    cfg = ForecastConfig(
        base_url=replay.base_url,
        arrays=[{"kwp": 4.0, "tilt_deg": 35, "azimuth_deg": 180},
                {"kwp": 2.0, "tilt_deg": 35, "azimuth_deg": 135}],
    )  # fmt: skip
    clock = AutoClock(datetime(2026, 11, 27, 9, 0, tzinfo=UTC))
    async with httpx.AsyncClient() as http:
        fc = await forecaster(cfg, db, clock, http).pv(clock.now(), 8, 30)
    assert fc.source == "open-meteo" and fc.flags == ()
    assert "azimuth=-45" in replay.requests[1] and "tilt=35" in replay.requests[0]
    # Slot 12:00–12:30 by hand from the recorded quarter-hours ending 12:15 and 12:30.
    om = json.loads((Path(__file__).parent / "data/open_meteo_gti_15min.json").read_text())
    i = om["minutely_15"]["time"].index("2026-11-27T12:15")
    quarters = [
        pv_ac_power_w(om["minutely_15"]["global_tilted_irradiance"][j],
                      om["minutely_15"]["temperature_2m"][j], 6.0)
        for j in (i, i + 1)
    ]  # fmt: skip
    assert fc.values_w[6] == pytest.approx(sum(quarters) / 2)
    assert fc.values_w[0] < fc.values_w[6]
    row = await db.fetchone("SELECT kind, source, values_json FROM forecasts")
    assert row is not None and row[0] == "pv" and row[1] == "open-meteo"
    assert json.loads(row[2])[6] == pytest.approx(fc.values_w[6], abs=0.1)


async def test_pv_is_calibrated_against_measured_history(replay, db) -> None:  # type: ignore[no-untyped-def]
    cfg = ForecastConfig(
        base_url=replay.base_url, arrays=[{"kwp": 4.0}], pv_device_ids=["pv1"],  # type: ignore[list-item]
        calibration_min_days=1,  # the recorded reply holds one past day
    )  # fmt: skip
    now = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    clock = AutoClock(now)
    async with httpx.AsyncClient() as http:
        f = forecaster(cfg, db, clock, http)
        await f.refresh_weather()
        day = datetime(2026, 11, 27, tzinfo=UTC)
        modelled, _ = f.modelled_pv_w(day, 48, 30)
        await put_history(db, "pv1", {day + timedelta(minutes=30 * i): 0.7 * v
                                      for i, v in enumerate(modelled)})  # fmt: skip
        fc = await f.pv(now + timedelta(hours=12), 2, 30)
        raw, _ = f.modelled_pv_w(now + timedelta(hours=12), 2, 30)
    assert "pv: calibrated per hour against 1 day of measured PV: × 0.70" in fc.flags
    assert fc.values_w == pytest.approx([0.7 * v for v in raw])


async def test_bad_open_meteo_values_are_cleaned_and_flagged(replay, db) -> None:  # type: ignore[no-untyped-def]
    replay.open_meteo_file = "open_meteo_gti_hourly_bad.json"
    cfg = ForecastConfig(base_url=replay.base_url, arrays=[{"kwp": 4.0}])  # type: ignore[list-item]
    clock = AutoClock(datetime(2026, 11, 27, 11, 0, tzinfo=UTC))
    async with httpx.AsyncClient() as http:
        fc = await forecaster(cfg, db, clock, http).pv(clock.now(), 4, 30)
    assert "pv: 1 negative irradiance values of array 0 set to 0" in fc.flags
    assert "pv: 2 slots without irradiance; history used there" in fc.flags
    assert all(v >= 0 and not math.isnan(v) for v in fc.values_w)
    assert fc.values_w[0:2] == [0.0, 0.0]  # the hour ending 12:00 was negative → 0


async def test_pv_offline_falls_back_to_history(replay, db) -> None:  # type: ignore[no-untyped-def]
    replay.down = True
    cfg = ForecastConfig(base_url=replay.base_url, arrays=[{"kwp": 4.0}], pv_device_ids=["pv1"])  # type: ignore[list-item]
    now = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    yesterday_noon = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    await put_history(db, "pv1", {yesterday_noon: 1500.0, yesterday_noon - timedelta(days=1): -20})
    clock = AutoClock(now)
    async with httpx.AsyncClient() as http:
        fc = await forecaster(cfg, db, clock, http).pv(now, 14, 30)
    assert fc.source == "history"
    assert fc.flags == ("pv: open-meteo unreachable; history-only forecast",)
    # Noon: 1500 W 18 h ago and a night-draw −20 W (clipped to 0) 42 h ago, recency weighted.
    w1, w2 = 0.5 ** (18 / 24 / 7), 0.5 ** (42 / 24 / 7)
    assert fc.values_w[12] == pytest.approx(1500.0 * w1 / (w1 + w2))
    assert fc.values_w[0] == 0.0


async def test_load_forecast_excludes_controllable_loads_and_weights_recency(db) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # a Friday
    t1 = now - timedelta(days=7) + timedelta(hours=18)  # last Friday 18:00
    t2 = now - timedelta(days=14) + timedelta(hours=18)
    # grid + pv − battery − ev: 1 week ago 3000 + 0 − (−500) − 2500 = 1000 W; 2 weeks 2000 W.
    await put_history(db, "grid", {t1: 3000.0, t2: 2000.0})
    await put_history(db, "batt", {t1: -500.0, t2: 0.0})
    await put_history(db, "wallbox", {t1: 2500.0})
    cfg = ForecastConfig(recency_half_life_days=7, default_load_w=350)
    devices = SiteDevices(grid=["grid"], battery=["batt"], ev=["wallbox"])
    fc = await forecaster(cfg, db, AutoClock(now), None, devices).load(
        now + timedelta(hours=17, minutes=30), 4, 15
    )
    # 17:30 has no history → default; 18:00 = (1·1000 + 0.5·2000) / 1.5.
    assert fc.values_w[:2] == [350.0, 350.0]
    assert fc.values_w[2:] == pytest.approx([2000 / 1.5] * 2)
    assert fc.flags == ("load: no history for 1 half-hours; 350 W assumed there",)
    row = await db.fetchone("SELECT kind, source FROM forecasts")
    assert tuple(row) == ("load", "history")  # type: ignore[arg-type]


def test_parse_open_meteo_names_the_field() -> None:
    with pytest.raises(ValueError, match="minutely_15/hourly: missing"):
        parse_open_meteo({"error": True, "reason": "bad"})
    with pytest.raises(ValueError, match="hourly"):
        parse_open_meteo({"hourly": {"time": ["2026-01-01T00:00"]}})


async def test_a_forecast_the_same_as_the_last_stored_is_not_stored_again(db) -> None:  # type: ignore[no-untyped-def]
    """Issue 16: a replan within a slot makes the same load forecast; a second identical row
    would only cost the SD card (forecast accuracy picks the same values from the first)."""
    now = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    await put_history(db, "grid", {now - timedelta(days=7) + timedelta(hours=18): 1000.0})
    clock = AutoClock(now)
    f = forecaster(ForecastConfig(), db, clock, None, SiteDevices(grid=["grid"]))
    start = now + timedelta(hours=17, minutes=30)
    await f.load(start, 4, 15)
    await clock.advance(300)
    await f.load(start, 4, 15)  # same start, same history: the same forecast
    await clock.advance(300)
    await f.load(start + timedelta(minutes=15), 4, 15)  # a new slot: a new forecast
    rows = await db.fetchall("SELECT made_at_ms, start_ms FROM forecasts ORDER BY made_at_ms")
    assert len(rows) == 2 and rows[0][1] != rows[1][1]
