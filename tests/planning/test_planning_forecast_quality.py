"""PV calibration per hour of day and forecast accuracy, on real SQLite files with an injected
clock; the weather is served over local HTTP as open-meteo serves it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from planning_helpers import AutoClock, put_history

from hems.planning.config import ForecastConfig, PlannerConfig
from hems.planning.forecast import Forecast, Forecaster, SiteDevices, store_forecast
from hems.store.db import Database

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2027, 6, 15, 0, 0, tzinfo=UTC)  # a Tuesday; BST, so local = UTC + 1
HALF = timedelta(minutes=30)


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = await Database.open(tmp_path / "hems.db")
    yield database
    await database.close()


def clear_days_reply(path: Path, first: datetime, days: int) -> str:
    """An open-meteo 15-minutely reply (timezone GMT): a smooth clear-sky day, every day the
    same, sun up 04:00-20:00 UTC, 20 °C. Returns the file's path for the replay server."""
    times, gti, temp = [], [], []
    for i in range(days * 96):
        end = first + timedelta(minutes=15 * (i + 1))
        h = (end - timedelta(minutes=7.5)).hour + (end - timedelta(minutes=7.5)).minute / 60
        times.append(end.strftime("%Y-%m-%dT%H:%M"))
        gti.append(round(max(0.0, 900.0 * math.sin(math.pi * (h - 4.0) / 16.0)), 1))
        temp.append(20.0)
    body = {
        "utc_offset_seconds": 0,
        "minutely_15": {"time": times, "global_tilted_irradiance": gti, "temperature_2m": temp},
    }
    path.write_text(json.dumps(body))
    return str(path)


def forecaster(cfg: ForecastConfig, db: Database, now: datetime, http, devices=None):  # type: ignore[no-untyped-def]
    return Forecaster(cfg, latitude=51.5, longitude=-0.12, db=db, clock=AutoClock(now),
                      http=http, timezone="Europe/London", devices=devices)  # fmt: skip


def shaded(t: datetime) -> bool:
    return t.astimezone(LONDON).hour in (15, 16)  # 15:00-17:00 local


async def pv_with_history(replay, db, tmp_path: Path, history_days: int):  # type: ignore[no-untyped-def]
    """Measured PV over `history_days` before NOW: the model's output, at 60 % while shaded.
    Returns (calibrated forecast for NOW's day, the uncalibrated model, the forecaster)."""
    replay.open_meteo_file = clear_days_reply(tmp_path / "om.json", NOW - timedelta(days=7), 10)
    cfg = ForecastConfig(base_url=replay.base_url, arrays=[{"kwp": 4.0}], pv_device_ids=["pv1"])  # type: ignore[list-item]
    async with httpx.AsyncClient() as http:
        f = forecaster(cfg, db, NOW, http)
        assert await f.refresh_weather()
        first = NOW - timedelta(days=history_days)
        n = history_days * 48
        modelled, _ = f.modelled_pv_w(first, n, 30)
        slots = [first + HALF * i for i in range(n)]
        await put_history(db, "pv1", {
            t: v * (0.6 if shaded(t) else 1.0) for t, v in zip(slots, modelled, strict=True)
        })  # fmt: skip
        fc = await f.pv(NOW, 48, 30)
        raw, _ = f.modelled_pv_w(NOW, 48, 30)
    assert "past_days=7" in replay.requests[0]  # the calibration window's weather
    return fc, raw, f


async def test_a_shaded_afternoon_lowers_the_forecast_there_only(replay, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fc, raw, f = await pv_with_history(replay, db, tmp_path, history_days=7)
    slots = [NOW + HALF * i for i in range(48)]
    daylight = [i for i, v in enumerate(raw) if v > 0]
    assert len(daylight) > 20
    for i in daylight:
        expected = 0.6 * raw[i] if shaded(slots[i]) else raw[i]
        assert fc.values_w[i] == pytest.approx(expected, rel=1e-6), slots[i]
    assert any(shaded(slots[i]) for i in daylight)
    cal = f.calibration
    assert cal is not None and cal.applied and cal.days == 7
    assert cal.hourly[15] == pytest.approx(0.6) and cal.hourly[16] == pytest.approx(0.6)
    assert cal.hourly[14] == pytest.approx(1.0) and cal.hourly[17] == pytest.approx(1.0)
    assert cal.typical == pytest.approx(1.0)
    assert (
        "pv: calibrated per hour against 7 days of measured PV: × 1.00 except 15h × 0.60, "
        "16h × 0.60" in fc.flags
    )


async def test_too_little_history_gives_no_calibration_and_says_so(replay, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fc, raw, f = await pv_with_history(replay, db, tmp_path, history_days=2)
    assert fc.values_w == pytest.approx(raw)  # the model as it is
    assert f.calibration is not None and not f.calibration.applied
    assert "pv: not calibrated: measured PV on 2 of the last 7 days, 3 needed" in fc.flags


async def test_calibration_is_clipped(replay, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    replay.open_meteo_file = clear_days_reply(tmp_path / "om.json", NOW - timedelta(days=7), 10)
    cfg = ForecastConfig(base_url=replay.base_url, arrays=[{"kwp": 4.0}], pv_device_ids=["pv1"],  # type: ignore[list-item]
                         calibration_min=0.8, calibration_max=1.2)  # fmt: skip
    async with httpx.AsyncClient() as http:
        f = forecaster(cfg, db, NOW, http)
        await f.refresh_weather()
        first = NOW - timedelta(days=7)
        modelled, _ = f.modelled_pv_w(first, 7 * 48, 30)
        # A meter reading 3× the model (a wrong kWp) in the morning, nothing at all after 18:00.
        await put_history(db, "pv1", {
            first + HALF * i: v * (3.0 if (first + HALF * i).hour < 12 else
                                   0.0 if (first + HALF * i).hour >= 17 else 1.0)
            for i, v in enumerate(modelled)
        })  # fmt: skip
        await f.pv(NOW, 48, 30)
    cal = f.calibration
    assert cal is not None
    assert cal.hourly[9] == 1.2 and cal.hourly[19] == 0.8 and cal.hourly[14] == 1.0


# -- accuracy ----------------------------------------------------------------------------------

JAN = datetime(2027, 1, 13, 0, 0, tzinfo=UTC)  # GMT: local = UTC


def daytime(t: datetime) -> bool:
    return 10 <= t.astimezone(LONDON).hour < 14


def noon_on(t: datetime) -> bool:
    return 12 <= t.astimezone(LONDON).hour < 14


async def test_mae_against_a_known_history(db) -> None:  # type: ignore[no-untyped-def]
    day1 = JAN - timedelta(days=2)  # 11 Jan; the window is 11 and 12 Jan
    # Forecast A (made 10 Jan 23:50): PV 1000 W 10:00-14:00; load 600 W throughout.
    a_start = day1 - HALF
    a_slots = [a_start + HALF * i for i in range(96)]
    made_a = day1 - timedelta(minutes=10)
    await store_forecast(db, "pv", made_a, Forecast(a_start, 30, [
        1000.0 if daytime(t) else 0.0 for t in a_slots], "open-meteo"))  # fmt: skip
    await store_forecast(db, "load", made_a, Forecast(a_start, 30, [600.0] * 97, "history"))
    # Forecast B (made 11 Jan 12:00, in force from then on): PV 900 W 12:00-14:00 only.
    b_start = day1 + timedelta(hours=12)
    b_slots = [b_start + HALF * i for i in range(72)]
    await store_forecast(db, "pv", b_start, Forecast(b_start, 30, [
        900.0 if noon_on(t) else 0.0 for t in b_slots], "open-meteo"))  # fmt: skip
    # Measured: PV 800 W 10:00-14:00 both days; grid 500 W, so base load = 500 + PV.
    slots = [day1 + HALF * i for i in range(96)]
    await put_history(db, "pv1", {t: 800.0 if daytime(t) else 0.0 for t in slots})
    await put_history(db, "grid", {t: 500.0 for t in slots})
    cfg = ForecastConfig(pv_device_ids=["pv1"], accuracy_days=2)
    f = forecaster(cfg, db, JAN, None, SiteDevices(grid=["grid"], pv=["pv1"]))
    await f.forecasts(JAN, 4, 30)
    pv, load = f.accuracy["pv"], f.accuracy["load"]
    # 11 Jan: 10-12 from A (|1000-800| = 200 W x 4), 12-14 from B (100 W x 4): 1200 / 48.
    # 12 Jan: all from B: 10-12 (|0-800| x 4), 12-14 (100 x 4): 3600 / 48.
    assert [(d.day.isoformat(), d.mae_w, d.slots) for d in pv.days] == [
        ("2027-01-11", pytest.approx(25.0), 48), ("2027-01-12", pytest.approx(75.0), 48)
    ]  # fmt: skip
    assert pv.mae_w == pytest.approx(50.0) and pv.slots == 96
    # Load: 600 forecast against 500 (night, 40 x 100 W) and 1300 (day, 8 x 700 W) = 200 W.
    assert [d.mae_w for d in load.days] == [pytest.approx(200.0)] * 2
    assert load.mae_w == pytest.approx(200.0)
    assert (
        pv.note()
        == "pv: forecast mean absolute error 50 W per half-hour over 2 days (96 half-hours)"
    )
    assert pv.to_dict()["unit"] == "W" and pv.to_dict()["daily"][1]["mae_w"] == 75.0


async def test_no_stored_forecasts_means_no_accuracy_yet(db) -> None:  # type: ignore[no-untyped-def]
    slots = [JAN - timedelta(days=1) + HALF * i for i in range(48)]
    await put_history(db, "grid", {t: 500.0 for t in slots})
    f = forecaster(ForecastConfig(), db, JAN, None, SiteDevices(grid=["grid"]))
    await f.forecasts(JAN, 4, 30)
    assert f.accuracy["load"].mae_w is None and f.accuracy["load"].days == ()
    assert f.accuracy["load"].note() == (
        "load: no forecast accuracy yet (no stored forecast with measurements)"
    )


def test_config_windows_are_checked() -> None:
    with pytest.raises(ValueError, match="calibration_min_days: must be <= calibration_days"):
        ForecastConfig(calibration_days=3, calibration_min_days=4)
    with pytest.raises(ValueError, match=r"accuracy_days: must be <= history_days \(5\)"):
        ForecastConfig(history_days=5, accuracy_days=7, calibration_days=5)
    with pytest.raises(ValueError, match=r"forecast.accuracy_days: must be <= retention_days"):
        PlannerConfig.model_validate({"retention_days": 3, "forecast": {"accuracy_days": 7}})


def test_in_force_picks_the_latest_row_that_covers_the_half_hour() -> None:
    from hems.planning.forecast_quality import StoredForecast, in_force

    t0 = datetime(2027, 1, 1, tzinfo=UTC)
    long = StoredForecast(t0, t0, 1800, 10, key=1)  # 5 h at 30 min
    quarter = StoredForecast(t0 + HALF, t0 + HALF, 900, 4, key=2)  # 1 h at 15 min
    slots = [t0 + HALF * i for i in range(6)]
    picks = in_force([quarter, long], slots)
    assert picks[slots[0]] == (long, 0, 1)  # `quarter` was not made yet
    assert picks[slots[1]] == (quarter, 0, 2) and picks[slots[2]] == (quarter, 2, 4)
    assert picks[slots[3]] == (long, 3, 4)  # past `quarter`'s horizon: the older row
    late = StoredForecast(t0 + HALF * 7, t0 + HALF * 7, 1800, 4, key=3)
    assert t0 + HALF * 6 not in in_force([late], [t0 + HALF * 6])  # made after: not in force


async def test_unknown_forecast_values_are_left_out(db) -> None:  # type: ignore[no-untyped-def]
    from hems.planning.forecast import planned_half_hours

    t0 = datetime(2027, 1, 1, tzinfo=UTC)
    await store_forecast(db, "pv", t0, Forecast(t0, 15, [100.0, 300.0, math.nan, 50.0], "x"))
    got = await planned_half_hours(db, "pv", [t0, t0 + HALF, t0 + 2 * HALF], t0)
    assert got == {t0: 200.0}  # 15-min values averaged; a half-hour with a null is unknown
