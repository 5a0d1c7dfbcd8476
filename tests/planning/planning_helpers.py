"""Helpers shared by the planning tests (a unique module name, importable from the tests)."""

from __future__ import annotations

from datetime import datetime

from hems.core.clock import ManualClock
from hems.store.db import Database


class AutoClock(ManualClock):
    """A manual clock whose sleeps advance time at once: backoffs take no real time."""

    async def sleep(self, seconds: float) -> None:
        await self.advance(max(0.0, seconds))


async def put_history(db: Database, device_id: str, series: dict[datetime, float]) -> None:
    def write(conn):  # type: ignore[no-untyped-def]
        conn.execute("INSERT OR IGNORE INTO devices(device_id) VALUES (?)", (device_id,))
        conn.execute("INSERT OR IGNORE INTO quantities(name) VALUES ('power_w')")
        dpk = conn.execute("SELECT device_pk FROM devices WHERE device_id=?", (device_id,))
        dpk = dpk.fetchone()[0]
        qpk = conn.execute("SELECT quantity_pk FROM quantities WHERE name='power_w'")
        qpk = qpk.fetchone()[0]
        conn.executemany(
            "INSERT INTO rollups(resolution_s, device_pk, quantity_pk, start_ms, n, mean, min,"
            " max, last) VALUES (1800, ?, ?, ?, 30, ?, ?, ?, ?)",
            [(dpk, qpk, int(t.timestamp() * 1000), v, v, v, v) for t, v in series.items()],
        )

    await db.call(write)
