"""Readings to SQLite: batched writes, 1-min and 30-min roll-ups, retention.

SD cards wear with every write, so readings are buffered in memory and written in one
transaction every `batch_interval_s`, at its multiples of the wall clock (so each half-hour
settlement period is durable at its end), and once more at shutdown. A failed write (disk
full, I/O error) keeps the batch in memory and retries; the buffer is bounded and reports
what it had to drop.

`raw="latest"` (the daemon's default, `storage.raw_readings`): raw samples are not stored one
row each (at 1 s telemetry that alone is ~50 MB a day); the roll-ups are computed from the
samples held in memory (the last `RECENT_WINDOW_MS` of each series) and the `readings` table
keeps the newest sample of each series. `raw="all"` stores every sample for
`raw_retention_h`, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading
from hems.store.db import Database
from hems.store.rollup import (
    HALF_HOUR_MS,
    MINUTE_MS,
    Bucket,
    bucket_samples,
    floor_ms,
    merge_buckets,
)

log = structlog.get_logger(__name__)

_INTEGRATED = {q for q in Quantity if q.value.endswith("_w")}
# raw="latest": samples of a series held in memory for its roll-ups. A sample older than the
# newest of its series by more than this is not rolled up (a late arrival; nothing sends one
# that late today), and a bucket is only recomputed from where the window starts.
RECENT_WINDOW_MS = 15 * 60_000


# Batches are committed this long after each multiple of the interval (at most a tenth of
# it): the readings polled in the last second of a half-hour period are in the batch
# committed at its end.
_ALIGN_LAG_S = 2.0


def until_next_batch_s(now_s: float, interval_s: float) -> float:
    """Seconds from `now_s` (Unix, wall clock) to the next batch: a multiple of `interval_s`
    plus the lag. With 300 s batches every half-hour settlement period is durable at its
    boundary, and a restart does not shift the phase."""
    lag_s = min(_ALIGN_LAG_S, interval_s / 10)
    wait_s = (lag_s - now_s) % interval_s
    return wait_s if wait_s > 0 else interval_s


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(at_ms: int) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class StoreStats:
    buffered: int
    written: int
    dropped: int
    failed_flushes: int
    last_error: str | None


class ReadingStore:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        batch_interval_s: float = 5.0,
        raw_retention_h: float = 48.0,
        rollup_retention_days: float = 396.0,
        max_buffer: int = 200_000,
        max_hold_s: float = 60.0,
        raw: Literal["all", "latest"] = "all",
    ) -> None:
        if raw not in ("all", "latest"):
            raise ValueError(f"raw: must be 'all' or 'latest', got {raw!r}")
        self._raw = raw
        # raw="latest": (device_pk, quantity_pk) -> {at_ms: value}, on the database thread only
        self._recent: dict[tuple[int, int], dict[int, float]] = {}
        self._db = db
        self._clock = clock
        self._interval_s = batch_interval_s
        self._raw_retention = timedelta(hours=raw_retention_h)
        self._rollup_retention = timedelta(days=rollup_retention_days)
        self._buffer: deque[Reading] = deque()
        self._max_buffer = max_buffer
        self._max_hold_ms = int(max_hold_s * 1000)
        self._ids: dict[tuple[str, str], int] = {}
        self._roles: dict[str, str] = {}
        self._written = 0
        self._dropped = 0
        self._failed = 0
        self._last_error: str | None = None
        self._flush_lock = asyncio.Lock()
        self._arrived = asyncio.Event()

    # -- input ----------------------------------------------------------------------------
    def add(self, readings: list[Reading]) -> None:
        """SiteState listener: enqueue only, never block the loop."""
        self._buffer.extend(readings)
        self._arrived.set()
        overflow = len(self._buffer) - self._max_buffer
        if overflow > 0:
            for _ in range(overflow):
                self._buffer.popleft()
            self._dropped += overflow
            log.error("store buffer full, oldest readings dropped", dropped=overflow)

    def set_role(self, device_id: str, role: str) -> None:
        self._roles[device_id] = role

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            len(self._buffer), self._written, self._dropped, self._failed, self._last_error
        )

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            # The first batch goes out as soon as readings arrive, so a fresh install shows
            # stored data at once; after that, one transaction per interval.
            await self._arrived.wait()
            await self.flush()
            while True:
                # Real seconds on purpose: this paces writes to the SD card, whatever the
                # simulated clock's speed.
                await asyncio.sleep(until_next_batch_s(time.time(), self._interval_s))
                await self.flush()
        finally:
            # SIGTERM or shutdown: the last batch is written before we go, even if we are
            # asked to stop again meanwhile (the write is bounded; losing it is not).
            last = asyncio.ensure_future(self.flush())
            while not last.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(last)

    async def flush(self) -> int:
        async with self._flush_lock:
            if not self._buffer:
                return 0
            batch = list(self._buffer)
            try:
                await self._db.call(lambda conn: self._write(conn, batch))
            except sqlite3.Error as exc:
                self._failed += 1
                if self._last_error is None:
                    log.error("store write failed; readings kept in memory", error=str(exc))
                self._last_error = str(exc)
                return 0
            for _ in range(len(batch)):
                self._buffer.popleft()
            self._written += len(batch)
            if self._last_error is not None:
                log.info("store write recovered", written=len(batch))
                self._last_error = None
            return len(batch)

    # -- on the database thread -----------------------------------------------------------
    def _pk(self, conn: sqlite3.Connection, table: str, key: str, role: str = "") -> int:
        cached = self._ids.get((table, key))
        if cached is not None:
            return cached
        if table == "devices":
            conn.execute(
                "INSERT INTO devices(device_id, role) VALUES (?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET role = excluded.role",
                (key, role),
            )
            pk = conn.execute("SELECT device_pk FROM devices WHERE device_id=?", (key,))
        else:
            conn.execute("INSERT OR IGNORE INTO quantities(name) VALUES (?)", (key,))
            pk = conn.execute("SELECT quantity_pk FROM quantities WHERE name=?", (key,))
        value = int(pk.fetchone()[0])
        self._ids[(table, key)] = value
        return value

    def _write(self, conn: sqlite3.Connection, batch: list[Reading]) -> None:
        rows = []
        touched: dict[tuple[int, int, bool], int] = {}
        for r in batch:
            dpk = self._pk(conn, "devices", r.device_id, self._roles.get(r.device_id, ""))
            qpk = self._pk(conn, "quantities", str(r.quantity))
            at_ms = to_ms(r.at)
            rows.append((dpk, qpk, at_ms, r.value))
            key = (dpk, qpk, r.quantity in _INTEGRATED)
            touched[key] = min(touched.get(key, at_ms), at_ms)
        if self._raw == "all":
            conn.executemany("INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?)", rows)
        else:
            self._write_latest(conn, rows)
        for (dpk, qpk, integrate), first_ms in touched.items():
            self._rollup(conn, dpk, qpk, integrate, first_ms)
        if self._raw == "latest":
            self._prune_recent()

    def _write_latest(
        self, conn: sqlite3.Connection, rows: list[tuple[int, int, int, float]]
    ) -> None:
        # Keyed by time, so a batch retried after a failed write is not counted twice.
        newest: dict[tuple[int, int], tuple[int, float]] = {}
        for dpk, qpk, at_ms, value in rows:
            self._recent.setdefault((dpk, qpk), {})[at_ms] = value
            if (dpk, qpk) not in newest or at_ms >= newest[(dpk, qpk)][0]:
                newest[(dpk, qpk)] = (at_ms, value)
        for (dpk, qpk), (at_ms, value) in newest.items():
            conn.execute(
                "DELETE FROM readings WHERE device_pk=? AND quantity_pk=? AND at_ms<?",
                (dpk, qpk, at_ms),
            )
            conn.execute(
                "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?)", (dpk, qpk, at_ms, value)
            )

    def _prune_recent(self) -> None:
        for series, samples in self._recent.items():
            cut = max(samples) - RECENT_WINDOW_MS
            if min(samples) < cut:
                self._recent[series] = {t: v for t, v in samples.items() if t >= cut}

    def _samples(
        self, conn: sqlite3.Connection, dpk: int, qpk: int, since_ms: int
    ) -> list[tuple[int, float]]:
        if self._raw == "all":
            rows = conn.execute(
                "SELECT at_ms, value FROM readings WHERE device_pk=? AND quantity_pk=? "
                "AND at_ms >= ? ORDER BY at_ms",
                (dpk, qpk, since_ms),
            ).fetchall()
            return [(int(a), float(v)) for a, v in rows]
        held = self._recent.get((dpk, qpk), {})
        return sorted((t, v) for t, v in held.items() if t >= since_ms)

    def _rollup(
        self, conn: sqlite3.Connection, dpk: int, qpk: int, integrate: bool, first_ms: int
    ) -> None:
        # Recompute every 1-min bucket from the first touched one; a hold from the sample
        # before it may reach in, so fetch that much context.
        m0 = floor_ms(first_ms, MINUTE_MS)
        if self._raw == "latest":
            # Only from where the samples in memory cover the whole bucket (and its hold).
            held = self._recent.get((dpk, qpk))
            if held:
                newest = max(held)
                earliest = newest - RECENT_WINDOW_MS + self._max_hold_ms
                earliest = -(-earliest // MINUTE_MS) * MINUTE_MS  # the next whole minute
                m0 = min(max(m0, earliest), floor_ms(newest, MINUTE_MS))
        samples = self._samples(conn, dpk, qpk, m0 - self._max_hold_ms)
        minutes = bucket_samples(
            samples,
            MINUTE_MS,
            self._max_hold_ms,
            first_bucket_ms=m0,
            integrate=integrate,
        )
        self._upsert(conn, 60, dpk, qpk, minutes)
        h0 = floor_ms(m0, HALF_HOUR_MS)
        finer = conn.execute(
            "SELECT start_ms, n, mean, min, max, last, pos_wh, neg_wh FROM rollups "
            "WHERE resolution_s=60 AND device_pk=? AND quantity_pk=? AND start_ms >= ? "
            "ORDER BY start_ms",
            (dpk, qpk, h0),
        ).fetchall()
        halves = merge_buckets([Bucket(*row) for row in finer], HALF_HOUR_MS)
        self._upsert(conn, 1800, dpk, qpk, halves)

    @staticmethod
    def _upsert(
        conn: sqlite3.Connection, resolution_s: int, dpk: int, qpk: int, buckets: list[Bucket]
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO rollups VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    resolution_s,
                    dpk,
                    qpk,
                    b.start_ms,
                    b.n,
                    b.mean,
                    b.min,
                    b.max,
                    b.last,
                    b.pos_wh,
                    b.neg_wh,
                )
                for b in buckets
            ],
        )

    # -- retention and queries ------------------------------------------------------------
    async def apply_retention(self) -> tuple[int, int]:
        """Delete raw readings older than 48 h and roll-ups older than 13 months (defaults)."""
        now = self._clock.now()
        raw_cut = to_ms(now - self._raw_retention)
        rollup_cut = to_ms(now - self._rollup_retention)

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            # Series by series on the primary key: no index on time (migration 0020: one
            # less page written per batch).
            raw = 0
            for dpk, qpk in conn.execute(
                "SELECT device_pk, quantity_pk FROM devices, quantities"
            ).fetchall():
                raw += conn.execute(
                    "DELETE FROM readings WHERE device_pk=? AND quantity_pk=? AND at_ms<?",
                    (dpk, qpk, raw_cut),
                ).rowcount
            agg = conn.execute(
                "DELETE FROM rollups WHERE resolution_s IN (60, 1800) AND start_ms < ?",
                (rollup_cut,),
            ).rowcount
            return raw, agg

        raw, agg = await self._db.call(run)
        if raw or agg:
            log.info("retention applied", raw_deleted=raw, rollups_deleted=agg)
        return raw, agg

    async def series(
        self,
        device_id: str,
        quantity: Quantity,
        since: datetime,
        until: datetime,
        resolution_s: int = 60,
    ) -> list[dict[str, float | int | str]]:
        rows = await self._db.fetchall(
            "SELECT r.start_ms, r.n, r.mean, r.min, r.max, r.last, r.pos_wh, r.neg_wh "
            "FROM rollups r JOIN devices d USING(device_pk) JOIN quantities q USING(quantity_pk) "
            "WHERE r.resolution_s=? AND d.device_id=? AND q.name=? AND r.start_ms>=? "
            "AND r.start_ms<? ORDER BY r.start_ms",
            (resolution_s, device_id, str(quantity), to_ms(since), to_ms(until)),
        )
        return [
            {
                "start": from_ms(row[0]).isoformat(),
                "n": row[1],
                "mean": row[2],
                "min": row[3],
                "max": row[4],
                "last": row[5],
                "import_wh": row[6],
                "export_wh": row[7],
            }
            for row in rows
        ]

    async def count_raw(self) -> int:
        row = await self._db.fetchone("SELECT count(*) FROM readings")
        return int(row[0]) if row else 0


async def half_hour_means(
    db: Database, device_ids: Sequence[str], since: datetime, until: datetime
) -> dict[str, dict[datetime, float]]:
    """device → {half-hour start: mean power [W]} from the 30-min roll-ups."""
    if not device_ids:
        return {}
    marks = ",".join("?" for _ in device_ids)
    rows = await db.fetchall(
        "SELECT d.device_id, r.start_ms, r.mean FROM rollups r"
        " JOIN devices d USING(device_pk) JOIN quantities q USING(quantity_pk)"
        f" WHERE r.resolution_s = 1800 AND q.name = 'power_w' AND d.device_id IN ({marks})"
        " AND r.start_ms >= ? AND r.start_ms < ?",
        (*device_ids, to_ms(since), to_ms(until)),
    )
    out: dict[str, dict[datetime, float]] = {d: {} for d in device_ids}
    for device_id, start_ms, mean in rows:
        out[device_id][from_ms(start_ms)] = float(mean)
    return out
