"""The `meter_intervals` table (its only owner): half-hourly import and export of each
meter, with a quality flag. Written by the meters' interval recorder; read by flex (reports)
and the uplink link (sending each new or corrected interval once)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hems.store.db import Database

Quality = Literal["actual", "estimated", "missing"]


@dataclass(frozen=True, slots=True)
class Interval:
    period_start_ms: int
    import_wh: float | None
    export_wh: float | None
    quality: Quality


@dataclass(frozen=True, slots=True)
class StoredInterval:
    interval: Interval
    updated_ms: int


# A stored period is only ever improved: missing → anything, estimated → actual.
_UPSERT = """
INSERT INTO meter_intervals(device_id, period_start_ms, import_wh, export_wh, quality, updated_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(device_id, period_start_ms) DO UPDATE SET
    import_wh = excluded.import_wh, export_wh = excluded.export_wh,
    quality = excluded.quality, updated_ms = excluded.updated_ms
WHERE meter_intervals.quality = 'missing'
   OR (meter_intervals.quality = 'estimated' AND excluded.quality = 'actual')
"""


async def save_intervals(
    db: Database, device_id: str, rows: Sequence[Interval], stamp_ms: int
) -> None:
    """Upsert `rows`, with the store's next commit (`Database.defer_many`): a kill -9 loses
    at most one batch; reads through `db` see them at once."""
    db.defer_many(
        _UPSERT,
        [
            (device_id, r.period_start_ms, r.import_wh, r.export_wh, r.quality, stamp_ms)
            for r in rows
        ],
    )


async def load_intervals(
    db: Database, device_id: str, start_ms: int, end_ms: int
) -> list[Interval]:
    """The meter's stored periods starting in [start_ms, end_ms), in order. Raises
    sqlite3.OperationalError if the table cannot be read."""

    def run(conn: sqlite3.Connection) -> list[tuple[int, float | None, float | None, Quality]]:
        return conn.execute(
            "SELECT period_start_ms, import_wh, export_wh, quality FROM meter_intervals"
            " WHERE device_id = ? AND period_start_ms >= ? AND period_start_ms < ?"
            " ORDER BY period_start_ms",
            (device_id, start_ms, end_ms),
        ).fetchall()

    return [Interval(*r) for r in await db.call(run)]


async def intervals_updated_after(
    db: Database, device_id: str, cursor_ms: int
) -> list[StoredInterval]:
    """Periods written or corrected after `cursor_ms` (their `updated_ms`), oldest first."""
    rows = await db.fetchall(
        "SELECT period_start_ms, import_wh, export_wh, quality, updated_ms "
        "FROM meter_intervals WHERE device_id=? AND updated_ms>? ORDER BY updated_ms, "
        "period_start_ms",
        (device_id, cursor_ms),
    )
    return [StoredInterval(Interval(r[0], r[1], r[2], r[3]), r[4]) for r in rows]
