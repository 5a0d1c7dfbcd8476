"""Migration 0020 (the SD-card budget): the hot tables lose the indexes no query needs and
keep every row; retention still deletes old raw readings without the time index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems.core import ManualClock, Quantity, Reading
from hems.store.db import Database, connect, migrate, migrations
from hems.store.timeseries import ReadingStore


def test_migration_0020_keeps_the_rows_and_drops_the_indexes(tmp_path: Path) -> None:
    conn = connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name TEXT, "
                 "applied_at TEXT)")  # fmt: skip
    for number, name, sql in migrations():
        if number < 20:
            conn.executescript(sql)
            conn.execute(
                "INSERT INTO schema_migrations(number, name) VALUES (?, ?)", (number, name)
            )
    outbox = [(s, f"id{s}", "t", "telemetry" if s % 2 else "interval", "{}", "c")
              for s in range(1, 50)]  # fmt: skip
    conn.executemany("INSERT INTO uplink_outbox VALUES (?, ?, ?, ?, ?, ?)", outbox)
    seen = [(f"m{i}", f"2026-12-0{1 + i % 9}T00:00:00Z") for i in range(30)]
    conn.executemany("INSERT INTO uplink_seen VALUES (?, ?)", seen)
    assert migrate(conn) == [n for n, _, _ in migrations() if n >= 20]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [tuple(r) for r in conn.execute("SELECT * FROM uplink_outbox ORDER BY seq")] == outbox
    assert sorted(tuple(r) for r in conn.execute("SELECT * FROM uplink_seen")) == sorted(seen)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    gone = {"uplink_outbox_kind", "uplink_seen_expiry", "readings_at",
            "sqlite_autoindex_uplink_outbox_1", "sqlite_autoindex_uplink_seen_1",
            "ocpp_commands_identity"}  # fmt: skip
    assert not indexes & gone
    conn.close()


async def test_retention_deletes_old_raw_readings_series_by_series(tmp_path: Path) -> None:
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(t0)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock, raw="all", raw_retention_h=1.0)
    try:
        for device in ("grid", "pv"):
            store.add([Reading(device, Quantity.POWER_W, 1.0, t0 + timedelta(minutes=m))
                       for m in range(0, 180, 10)])  # fmt: skip
            store.add([Reading(device, Quantity.SOC_PCT, 1.0, t0 + timedelta(minutes=m))
                       for m in range(0, 180, 10)])  # fmt: skip
        await store.flush()
        await clock.advance(3 * 3600)
        raw, _ = await store.apply_retention()
        # Kept: the readings of the last hour (2:00 to 2:50), of each of the four series.
        assert raw == 4 * 12
        assert await store.count_raw() == 4 * 6
    finally:
        await db.close()
