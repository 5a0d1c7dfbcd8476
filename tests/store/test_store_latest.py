"""raw_readings "latest": roll-ups from the samples in memory, one raw row per series, the
time-first roll-up key (migration 0019), and a kill -9 losing at most one batch."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hems.core import ManualClock, Quantity, Reading
from hems.store.db import Database, connect, migrate, migrations
from hems.store.timeseries import ReadingStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def readings(seconds: range) -> list[Reading]:
    out = []
    for i in seconds:
        at = T0 + timedelta(seconds=i)
        out.append(Reading("grid", Quantity.POWER_W, 1000.0 + (i % 97) * 10 - 400, at))
        out.append(Reading("battery", Quantity.SOC_PCT, 50 + i / 1000, at))
    return out


async def test_latest_rolls_up_exactly_as_all_and_keeps_one_raw_row_per_series(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    stores = {}
    for raw in ("all", "latest"):
        db = await Database.open(tmp_path / f"{raw}.db")
        stores[raw] = (db, ReadingStore(db, clock, max_hold_s=60, raw=raw))  # type: ignore[arg-type]
    for lo in range(0, 3600, 7):  # batches of 7 s, not aligned to minutes
        for _db, store in stores.values():
            store.add(readings(range(lo, min(lo + 7, 3600))))
            await store.flush()
    until = T0 + timedelta(hours=1)
    for q, device in ((Quantity.POWER_W, "grid"), (Quantity.SOC_PCT, "battery")):
        for res in (60, 1800):
            want = await stores["all"][1].series(device, q, T0, until, res)
            got = await stores["latest"][1].series(device, q, T0, until, res)
            assert len(got) == len(want) == (60 if res == 60 else 2)
            for g, w in zip(got, want, strict=True):
                assert g == pytest.approx(w), (device, res, g["start"])
    db = stores["latest"][0]
    rows = await db.fetchall("SELECT at_ms FROM readings")
    newest_ms = int((T0 + timedelta(seconds=3599)).timestamp() * 1000)
    assert [r[0] for r in rows] == [newest_ms, newest_ms]  # one per series, the newest
    for db, _store in stores.values():
        await db.close()


def test_bad_raw_mode_is_named() -> None:
    with pytest.raises(ValueError, match="raw: must be 'all' or 'latest'"):
        ReadingStore(None, ManualClock(T0), raw="some")  # type: ignore[arg-type]


def test_migration_0019_keeps_every_rollup_and_orders_by_time(tmp_path: Path) -> None:
    conn = connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name TEXT, "
                 "applied_at TEXT)")  # fmt: skip
    for number, name, sql in migrations():
        if number < 19:
            conn.executescript(sql)
            conn.execute(
                "INSERT INTO schema_migrations(number, name) VALUES (?, ?)", (number, name)
            )
    conn.execute("INSERT INTO devices(device_pk, device_id) VALUES (1, 'grid'), (2, 'pv')")
    conn.execute("INSERT INTO quantities(quantity_pk, name) VALUES (1, 'power_w')")
    old = [(60, d, 1, m * 60_000, 1, 1.0 * m, 0.0, 2.0, 1.0, 0.5, 0.0) for d in (1, 2)
           for m in range(100)]  # fmt: skip
    conn.executemany("INSERT INTO rollups VALUES (?,?,?,?,?,?,?,?,?,?,?)", old)
    assert migrate(conn) == [n for n, _, _ in migrations() if n >= 19]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    got = conn.execute("SELECT * FROM rollups ORDER BY device_pk, start_ms").fetchall()
    assert [tuple(r) for r in got] == sorted(old, key=lambda r: (r[1], r[3]))
    pk = sorted((r["pk"], r["name"]) for r in conn.execute("PRAGMA table_info(rollups)") if r["pk"])
    assert [name for _, name in pk] == ["resolution_s", "start_ms", "device_pk", "quantity_pk"]
    conn.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    from hems.core import Quantity, Reading, RealClock
    from hems.store.db import Database
    from hems.store.timeseries import ReadingStore

    async def main():
        db = await Database.open(sys.argv[1])
        store = ReadingStore(db, RealClock(), batch_interval_s=0.3, raw="latest")
        t0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        task = asyncio.create_task(store.run())
        i = 0
        while True:
            store.add([Reading("grid", Quantity.POWER_W, 100.0, t0 + timedelta(seconds=i))])
            i += 1
            before = store.stats.written
            await asyncio.sleep(0.01)
            if store.stats.written != before:  # a batch is committed: say up to which second
                print("committed", store.stats.written - 1, flush=True)

    asyncio.run(main())
    """
)


async def test_kill_9_loses_at_most_the_batch_in_memory(tmp_path: Path) -> None:
    db_path = tmp_path / "hems.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    committed = []
    async with asyncio.timeout(60):
        while len(committed) < 4:
            line = (await proc.stdout.readline()).decode()
            assert line, "the child ended"
            if line.startswith("committed "):
                committed.append(int(line.split()[1]))
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        newest_ms = conn.execute("SELECT max(at_ms) FROM readings").fetchone()[0]
        minutes = conn.execute(
            "SELECT count(*), sum(n) FROM rollups WHERE resolution_s=60"
        ).fetchone()
    finally:
        conn.close()
    t0_ms = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
    newest_s = (newest_ms - t0_ms) // 1000
    # Everything the last reported commit held is there; at most the batch after it is not
    # (it may have committed in the moment before the kill, unreported).
    assert newest_s >= committed[-1]
    assert minutes[1] >= committed[-1] + 1  # every committed reading is in a 1-min bucket
