"""A restart inside a settlement period: the period still gets a row (from the store's
one-minute roll-ups of the registers), so a delivery report waiting on it is not held until
its give-up time. Found by the soak: the `kill -9` at 17:55 inside Wednesday's 17:30-18:30
event left 17:30 and 18:00 without a row, and the report waited three simulated days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Reading
from hems.devices.meters.intervals import PERIOD_MS, IntervalRecorder, load_intervals, to_ms
from hems.store.db import Database
from hems.store.timeseries import ReadingStore

T0 = datetime(2026, 6, 24, 16, 0, tzinfo=UTC)  # Wed 17:00 in London
IMPORT_W = 1200.0
STEP_S = 10


def register_wh(at: datetime) -> float:
    """The meter's import register at constant power: the truth to compare with."""
    return 1_000_000.0 + IMPORT_W * (at - T0).total_seconds() / 3600


async def run_process(
    path: Path, start: datetime, end: datetime, *, flush_store: bool = True
) -> list[tuple[int, str, float | None]]:
    """One daemon process's meter path: readings into the store (raw 'latest', roll-ups) and
    the interval recorder, from `start` to `end`; then stopped without a goodbye."""
    db = await Database.open(path)
    clock = ManualClock(start)
    store = ReadingStore(db, clock, batch_interval_s=1, raw="latest")
    rec = IntervalRecorder("grid", db, clock, fresh_s=60, missing_after_s=300, max_gap_s=4 * 3600)
    try:
        while clock.now() <= end:
            at = clock.now()
            imp = register_wh(at)
            store.add(
                [
                    Reading("grid", Quantity.ENERGY_IMPORT_WH, imp, at),
                    Reading("grid", Quantity.ENERGY_EXPORT_WH, 0.0, at),
                ]
            )
            rec.add(at, imp, 0.0)
            if int(at.timestamp()) % 60 == 0:  # the store's batch and the recorder's flush
                await rec.flush()
                if flush_store:
                    await store.flush()
            await clock.advance(STEP_S)
        rows = await load_intervals(db, "grid", to_ms(T0), to_ms(T0) + 6 * PERIOD_MS)
        return [(r.period_start_ms, r.quality, r.import_wh) for r in rows]
    finally:
        await db.close()


async def test_a_restart_inside_a_period_still_writes_that_period(tmp_path: Path) -> None:
    path = tmp_path / "hems.db"
    # The first process runs 17:00-17:55 (local) and is killed; the second starts 25 minutes
    # later (at 400x a start-up of a few real seconds is that long) and runs to 18:40.
    first = await run_process(path, T0, T0 + timedelta(minutes=55))
    assert [(t, q) for t, q, _ in first] == [(to_ms(T0), "actual")]
    second = await run_process(path, T0 + timedelta(minutes=80), T0 + timedelta(minutes=100))
    by_start = {t: (q, wh) for t, q, wh in second}
    p1730, p1800 = to_ms(T0) + PERIOD_MS, to_ms(T0) + 2 * PERIOD_MS
    assert p1730 in by_start and p1800 in by_start, second
    # Read from the stored registers across the restart: estimated, and close to the truth
    # (a roll-up minute's last value is stamped at the minute's end: one sample step off).
    for p in (p1730, p1800):
        quality, wh = by_start[p]
        assert quality == "estimated"
        assert wh == pytest.approx(IMPORT_W / 2, abs=IMPORT_W * 2 * STEP_S / 3600)
    # What the first process wrote stays as it was.
    assert by_start[to_ms(T0)][0] == "actual"


async def test_no_stored_history_changes_nothing(tmp_path: Path) -> None:
    # A first start ever (no roll-ups): the period it started in has no row, as before.
    rows = await run_process(
        tmp_path / "hems.db", T0 + timedelta(minutes=10), T0 + timedelta(minutes=70)
    )
    assert [(t, q) for t, q, _ in rows] == [(to_ms(T0) + PERIOD_MS, "actual")]
