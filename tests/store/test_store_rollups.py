"""Storage: batching, roll-ups against hand-computed sums, retention, a full disk."""

import asyncio
import itertools
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hems.core import ManualClock, Quantity, Reading
from hems.store.db import Database, migrations
from hems.store.rollup import MINUTE_MS, bucket_samples, merge_buckets, settlement_periods
from hems.store.timeseries import ReadingStore, until_next_batch_s

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")


def power(value: float, at: datetime, device: str = "grid") -> Reading:
    return Reading(device, Quantity.POWER_W, value, at)


async def open_store(tmp_path: Path, clock: ManualClock) -> tuple[Database, ReadingStore]:
    db = await Database.open(tmp_path / "hems.db")
    return db, ReadingStore(db, clock, batch_interval_s=5, max_hold_s=60)


def test_migrations_are_numbered_uniquely_and_in_order() -> None:
    numbers = [n for n, _, _ in migrations()]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
    assert numbers[0] == 1


async def test_database_is_wal_and_migrations_are_idempotent(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    mode = await db.fetchone("PRAGMA journal_mode")
    assert mode is not None and mode[0] == "wal"
    await db.close()
    db = await Database.open(tmp_path / "hems.db")  # second open applies nothing new
    rows = await db.fetchall("SELECT number FROM schema_migrations")
    assert [r[0] for r in rows] == [n for n, _, _ in migrations()]
    await db.close()


def test_sample_and_hold_integration_splits_import_and_export() -> None:
    # 1000 W for 30 s, then -600 W (export) for 30 s, within one minute.
    samples = [(0, 1000.0), (30_000, -600.0), (60_000, 0.0)]
    (first, second) = bucket_samples(samples, MINUTE_MS, max_hold_ms=60_000)
    assert first.pos_wh == pytest.approx(1000 * 30 / 3600)  # 8.333 Wh imported
    assert first.neg_wh == pytest.approx(600 * 30 / 3600)  # 5 Wh exported, kept apart
    assert first.n == 2 and first.mean == 200 and first.min == -600 and first.max == 1000
    assert second.start_ms == 60_000 and second.pos_wh == 0


def test_a_gap_is_not_a_flat_line() -> None:
    # One sample then silence for 10 min: it holds at most max_hold (60 s), not 10 minutes.
    samples = [(0, 3600.0), (600_000, 3600.0)]
    buckets = {b.start_ms: b for b in bucket_samples(samples, MINUTE_MS, max_hold_ms=60_000)}
    assert buckets[0].pos_wh == pytest.approx(60.0)  # 3600 W × 60 s
    assert set(buckets) == {0, 600_000}  # minutes 1..9 hold nothing
    assert buckets[600_000].pos_wh == pytest.approx(60.0)


def test_half_hour_merge_of_known_series() -> None:
    # 2 kW constant, a sample every 10 s over one hour: each half hour holds exactly 1 kWh.
    start = 1_780_000_200_000  # a multiple of 30 min
    samples = [(start + i * 10_000, 2000.0) for i in range(361)]
    minutes = bucket_samples(samples, MINUTE_MS, max_hold_ms=60_000)
    halves = merge_buckets(minutes, 1_800_000)
    assert [h.start_ms for h in halves[:2]] == [start, start + 1_800_000]
    assert halves[0].pos_wh == pytest.approx(1000.0)
    assert halves[1].pos_wh == pytest.approx(1000.0)
    assert halves[0].n == 180 and halves[0].mean == 2000


@pytest.mark.parametrize(
    ("day", "count"),
    [(date(2026, 3, 29), 46), (date(2026, 10, 25), 50), (date(2026, 6, 1), 48)],
)
def test_settlement_periods_on_clock_change_days(day: date, count: int) -> None:
    periods = settlement_periods(day, LONDON)
    assert len(periods) == count
    assert periods[0] == datetime.combine(day, datetime.min.time(), LONDON).astimezone(UTC)
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(periods))


async def test_batched_readings_roll_up_to_known_half_hour_sums(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db, store = await open_store(tmp_path, clock)
    # 30 min at +1200 W then 30 min at -2400 W (export), one sample per 5 s.
    for i in range(720):
        value = 1200.0 if i < 360 else -2400.0
        store.add([power(value, T0 + timedelta(seconds=5 * i))])
        if i % 100 == 99:
            await store.flush()  # several batches, like the real cadence
    store.add([power(0.0, T0 + timedelta(hours=1))])
    await store.flush()
    rows = await store.series("grid", Quantity.POWER_W, T0, T0 + timedelta(hours=1), 1800)
    assert [r["start"] for r in rows] == [T0.isoformat(), (T0 + timedelta(minutes=30)).isoformat()]
    assert rows[0]["import_wh"] == pytest.approx(600.0)  # 1.2 kW × 0.5 h
    assert rows[0]["export_wh"] == pytest.approx(0.0)
    assert rows[1]["import_wh"] == pytest.approx(0.0)
    assert rows[1]["export_wh"] == pytest.approx(1200.0)  # 2.4 kW × 0.5 h
    minutes = await store.series("grid", Quantity.POWER_W, T0, T0 + timedelta(hours=1), 60)
    assert len(minutes) == 60
    assert minutes[0]["import_wh"] == pytest.approx(20.0)  # 1.2 kW × 1 min
    await db.close()


async def test_one_transaction_per_batch(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db, store = await open_store(tmp_path, clock)
    store.add([power(float(i), T0 + timedelta(seconds=i)) for i in range(50)])
    before = await db.fetchone("SELECT count(*) FROM readings")
    assert before is not None and before[0] == 0  # nothing written until the flush
    assert await store.flush() == 50
    assert await store.count_raw() == 50
    assert store.stats.buffered == 0 and store.stats.written == 50
    await db.close()


async def test_retention_keeps_48h_raw_and_13_months_of_rollups(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db, store = await open_store(tmp_path, clock)
    old = T0 - timedelta(days=400)
    store.add([power(100, old), power(100, T0 - timedelta(hours=49)), power(100, T0)])
    await store.flush()
    raw_deleted, rollups_deleted = await store.apply_retention()
    assert raw_deleted == 2  # the 400-day-old and the 49-hour-old samples
    assert rollups_deleted > 0  # only the 400-day-old buckets
    assert await store.count_raw() == 1
    kept = await store.series(
        "grid", Quantity.POWER_W, T0 - timedelta(hours=50), T0 + timedelta(minutes=1), 1800
    )
    assert {r["start"] for r in kept} == {
        (T0 - timedelta(hours=49)).isoformat(),
        T0.isoformat(),
    }
    await db.close()


async def test_full_disk_keeps_readings_in_memory_and_loses_nothing(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db, store = await open_store(tmp_path, clock)
    store.add([power(1, T0)])
    await store.flush()
    # Cap the file at its current size: the next write fails as a full disk would.
    pages = await db.fetchone("PRAGMA page_count")
    assert pages is not None
    await db.call(lambda c: c.execute(f"PRAGMA max_page_count={pages[0]}"))
    store.add([power(float(i), T0 + timedelta(seconds=i)) for i in range(1, 3000)])
    assert await store.flush() == 0
    assert store.stats.failed_flushes == 1 and store.stats.buffered == 2999
    assert "full" in (store.stats.last_error or "")
    await db.call(lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    assert await store.flush() == 2999
    assert await store.count_raw() == 3000 and store.stats.last_error is None
    await db.close()


async def test_cancelled_run_flushes_the_last_batch(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock, batch_interval_s=3600)
    task = asyncio.create_task(store.run())
    await asyncio.sleep(0)
    store.add([power(5, T0), power(6, T0 + timedelta(seconds=1))])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.count_raw() == 2
    await db.close()


async def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    from hems.errors import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"storage\.path: cannot open"):
        await Database.open(blocker / "hems.db")
    assert sqlite3.sqlite_version


async def test_first_batch_is_written_at_once_then_batched(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock, batch_interval_s=3600)
    task = asyncio.create_task(store.run())
    store.add([power(1, T0)])
    for _ in range(50):
        if await store.count_raw():
            break
        await asyncio.sleep(0.05)
    assert await store.count_raw() == 1  # not an hour later
    store.add([power(2, T0 + timedelta(seconds=1))])
    await asyncio.sleep(0.5)
    assert await store.count_raw() == 1  # the next one waits for its batch
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.count_raw() == 2
    await db.close()


async def test_last_flush_survives_a_second_cancel(tmp_path: Path) -> None:
    # systemd's SIGTERM cancels the daemon; a supervisor may cancel again while the last
    # batch is being written. The batch must still reach the file.
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock, batch_interval_s=3600)
    task = asyncio.create_task(store.run())
    store.add([power(1.0, T0)])
    for _ in range(100):
        if await store.count_raw():
            break
        await asyncio.sleep(0.01)
    store.add([power(float(i), T0 + timedelta(seconds=i)) for i in range(1, 20_000)])
    task.cancel()
    await asyncio.sleep(0)  # the final flush has started
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Written by the time the task ends, not by a write left running behind it (the
    # daemon closes the database right after its tasks end).
    assert store.stats.buffered == 0
    await db.close()
    db = await Database.open(tmp_path / "hems.db")
    row = await db.fetchone("SELECT count(*) FROM readings")
    assert row is not None and row[0] == 20_000
    await db.close()


def test_batches_fall_on_multiples_of_the_interval_of_the_wall_clock() -> None:
    # 300 s batches: committed 2 s after :00, :05, ... (so a half-hour period's last
    # readings are in the batch at its end); a restart keeps the phase.
    half_hour_s = 1_796_000_400.0  # Unix seconds, a multiple of 1800: a half-hour boundary
    assert until_next_batch_s(half_hour_s - 100.0, 300) == 102.0
    assert until_next_batch_s(half_hour_s + 2.0, 300) == 300.0  # just flushed: a full one
    assert until_next_batch_s(half_hour_s + 1.0, 300) == 1.0
    assert until_next_batch_s(half_hour_s + 3.0, 300) == 299.0
    # Short intervals (tests): the lag is a tenth of the interval at most.
    assert abs(until_next_batch_s(10.0, 0.3) - 0.23) < 1e-9  # 10.2 + 0.03
