"""Benchmark of the forecast quality figures: what each plan pays for them.

Run: .venv/bin/python bench/bench_forecast.py [--runs 20]
Input: a SQLite file holding 9 days of stored forecasts as the planner makes them (PV and
load, 48 h at 30 min, one every 15 min: 96 a day per kind, more than the ~50 of a quiet day),
28 days of half-hourly roll-ups for a PV meter and a grid meter, and a 7-day clear-sky
weather series. Times, each a median / p95 / max over the runs:
- accuracy after a restart: reading what every half-hour of the 7 days was planned with and
  computing PV and load MAE, and the longest the event loop waited meanwhile;
- accuracy at each later half-hour (once per half-hour): the newest half-hour only;
- calibration: the per-hour PV factors over 7 days (every plan with PV meters);
- calendar: `WorkingDayCalendar.day_type` per call, once the year is cached.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems.core.clock import ManualClock
from hems.flex.calendar import WorkingDayCalendar
from hems.planning.config import ForecastConfig
from hems.planning.forecast import (
    Forecast,
    Forecaster,
    SiteDevices,
    store_forecast,
)
from hems.planning.forecast_quality import hourly_calibration
from hems.store.db import Database
from hems.store.timeseries import to_ms

NOW = datetime(2027, 6, 15, 0, 0, tzinfo=UTC)
HALF = timedelta(minutes=30)
LONDON = ZoneInfo("Europe/London")


def sun_w(t: datetime) -> float:
    h = t.hour + t.minute / 60
    return max(0.0, 3000.0 * math.sin(math.pi * (h - 4.0) / 16.0))


def stats(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):.2f}, p95 {p95:.2f}, max {ms[-1]:.2f}"


async def loop_stall_ms(out: list[float]) -> None:
    """Append the longest gap between 1 ms ticks of the event loop until cancelled [ms]."""
    worst = 0.0
    last = time.perf_counter()
    try:
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, (now - last) * 1000 - 1.0)
            last = now
    except asyncio.CancelledError:
        out.append(worst)
        raise


async def fill(db: Database) -> None:
    made = NOW - timedelta(days=9)
    while made < NOW:
        start = made.replace(minute=made.minute - made.minute % 30, second=0)
        slots = [start + HALF * i for i in range(96)]
        await store_forecast(db, "pv", made, Forecast(start, 30, [sun_w(t) for t in slots], "x"))
        await store_forecast(db, "load", made, Forecast(start, 30, [450.0] * 96, "x"))
        made += timedelta(minutes=15)
    history = [NOW - timedelta(days=28) + HALF * i for i in range(28 * 48)]

    def write(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute("INSERT INTO quantities(name) VALUES ('power_w')")
        for pk, (device, fn) in enumerate(
            (("pv1", lambda t: 0.9 * sun_w(t)), ("grid", lambda t: 500.0 - 0.9 * sun_w(t))), 1
        ):
            conn.execute("INSERT INTO devices(device_pk, device_id) VALUES (?, ?)", (pk, device))
            conn.executemany(
                "INSERT INTO rollups(resolution_s, device_pk, quantity_pk, start_ms, n, mean,"
                " min, max, last) VALUES (1800, ?, 1, ?, 30, ?, ?, ?, ?)",
                [(pk, to_ms(t), fn(t), fn(t), fn(t), fn(t)) for t in history],
            )

    await db.call(write)


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "bench.db")
        try:
            await fill(db)
            cfg = ForecastConfig(pv_device_ids=["pv1"])
            f = Forecaster(cfg, latitude=51.5, longitude=-0.1, db=db, clock=ManualClock(NOW),
                           http=None, devices=SiteDevices(grid=["grid"], pv=["pv1"]))  # fmt: skip
            means = await f._history(NOW, ["pv1", "grid"])
            cold, warm, stall = [], [], []
            for _ in range(runs):
                f._accuracy_slot, f._planned, f._planned_until = None, {}, None  # a restart
                ticker = asyncio.create_task(loop_stall_ms(stall))
                t0 = time.perf_counter()
                await f._update_accuracy(NOW, means)
                cold.append((time.perf_counter() - t0) * 1000)
                ticker.cancel()
                # The next half-hour: only that one is read.
                f._accuracy_slot = None
                f._planned_until = NOW - HALF
                t0 = time.perf_counter()
                await f._update_accuracy(NOW, means)
                warm.append((time.perf_counter() - t0) * 1000)
            rows = await db.fetchone("SELECT count(*) FROM forecasts")
            n = rows[0] if rows else 0
            print(f"accuracy after a restart ({n} stored forecasts) [ms]: {stats(cold)}")
            print(f"  longest event-loop stall meanwhile [ms]: {stats(stall)}")
            print(f"accuracy at each later half-hour [ms]: {stats(warm)}")
            pv, load = f.accuracy["pv"].mae_w, f.accuracy["load"].mae_w
            print(f"  pv MAE {pv:.1f} W, load MAE {load:.1f} W")
        finally:
            await db.close()
    slots = [NOW - timedelta(days=7) + HALF * i for i in range(7 * 48)]
    modelled = {t: sun_w(t) for t in slots}
    measured = {t: 0.8 * v for t, v in modelled.items()}
    cal = []
    for _ in range(runs):
        t0 = time.perf_counter()
        hourly_calibration(measured, modelled, LONDON, lo=0.5, hi=1.5, min_days=3, window_days=7)
        cal.append((time.perf_counter() - t0) * 1000)
    print(f"calibration (7 days) [ms]: {stats(cal)}")
    c = WorkingDayCalendar("GB", "ENG")
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(5 * 366)]
    for d in days:
        c.day_type(d)  # fill the per-year cache
    per_call = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for d in days:
            c.day_type(d)
        per_call.append((time.perf_counter() - t0) / len(days) * 1e6)
    print(f"calendar day_type [µs/call]: {stats(per_call)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    asyncio.run(main(parser.parse_args().runs))
