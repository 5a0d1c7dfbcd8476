"""Half-hourly import/export energy from cumulative meter registers.

Settlement periods start at UTC :00 and :30 (GB and the EU's 15/30-minute settlement both
align with UTC); on a local DST day a local calendar day therefore has 46 or 50 of them
(`settlement_periods`). The energy of a period is the difference of the cumulative registers
at its two boundaries. A boundary value is read from the samples around it:

* actual     a sample at most `fresh_s` before AND one at most `fresh_s` after the boundary
             (linear interpolation between them, sub-Wh effect at 1-10 s cadence);
* estimated  the bracketing samples are further apart (a gap up to `max_gap_s`): linear
             interpolation across the gap;
* missing    no sample on one side, a gap longer than `max_gap_s`, or a register that went
             backwards (meter swap): the energy is unknown, never 0.

A period's quality is the worse of its two boundaries. Pure functions first; the
`IntervalRecorder` at the end keeps samples and upserts rows into `meter_intervals`.

A new process (a restart, a `kill -9`) starts inside a period, with nothing in memory before
its first sample: without help that period, and the ones the restart took, never got a row,
and a delivery report waiting on them waited until its give-up time (3 days). So the
recorder's first flush takes the store's one-minute roll-ups of the registers since the
newest stored period as samples from before its first own one (`seeded`: their time is only
known to the minute, so a boundary read from them is at best 'estimated').
"""

from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from hems.core.clock import Clock
from hems.store.db import Database
from hems.store.intervals import Interval, Quality, load_intervals, save_intervals

__all__ = ["Interval", "IntervalRecorder", "Quality", "load_intervals"]

log = structlog.get_logger(__name__)

PERIOD_MS = 30 * 60 * 1000
MINUTE_MS = 60 * 1000
_RANK = {"actual": 0, "estimated": 1, "missing": 2}


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int  # Unix ms, UTC
    import_wh: float  # cumulative register
    export_wh: float
    seeded: bool = False  # from a stored one-minute roll-up, not read by this process


def to_ms(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("timestamp must be aware")
    return round(at.timestamp() * 1000)


def period_floor_ms(at_ms: int) -> int:
    return at_ms - at_ms % PERIOD_MS


def settlement_periods(day: date, timezone: str) -> list[int]:
    """Start (Unix ms) of every settlement period of a local calendar day: 46, 48 or 50."""
    tz = ZoneInfo(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)
    return list(range(to_ms(start), to_ms(end), PERIOD_MS))


def boundary_value(
    samples: list[Sample], t_ms: int, fresh_ms: int, max_gap_ms: int
) -> tuple[float, float, Quality] | None:
    """(import_wh, export_wh, quality) of the cumulative registers at `t_ms`, or None.

    `samples` are sorted by time.
    """
    times = [s.at_ms for s in samples]
    i = bisect.bisect_left(times, t_ms)
    if i < len(samples) and samples[i].at_ms == t_ms:
        s = samples[i]
        return s.import_wh, s.export_wh, "estimated" if s.seeded else "actual"
    if i == 0 or i == len(samples):
        return None
    a, b = samples[i - 1], samples[i]
    if b.at_ms - a.at_ms > max_gap_ms:
        return None
    if b.import_wh < a.import_wh or b.export_wh < a.export_wh:
        return None  # the register went backwards: a meter swap or a bad read
    f = (t_ms - a.at_ms) / (b.at_ms - a.at_ms)
    imp = a.import_wh + f * (b.import_wh - a.import_wh)
    exp = a.export_wh + f * (b.export_wh - a.export_wh)
    fresh = t_ms - a.at_ms <= fresh_ms and b.at_ms - t_ms <= fresh_ms
    fresh = fresh and not (a.seeded or b.seeded)
    return imp, exp, "actual" if fresh else "estimated"


def derive_interval(
    samples: list[Sample], period_start_ms: int, fresh_s: float, max_gap_s: float
) -> Interval:
    """One settlement period from sorted cumulative samples."""
    fresh_ms, gap_ms = int(fresh_s * 1000), int(max_gap_s * 1000)
    b0 = boundary_value(samples, period_start_ms, fresh_ms, gap_ms)
    b1 = boundary_value(samples, period_start_ms + PERIOD_MS, fresh_ms, gap_ms)
    if b0 is None or b1 is None:
        return Interval(period_start_ms, None, None, "missing")
    imp, exp = b1[0] - b0[0], b1[1] - b0[1]
    if imp < 0 or exp < 0:
        return Interval(period_start_ms, None, None, "missing")
    quality: Quality = max(b0[2], b1[2], key=_RANK.__getitem__)
    return Interval(period_start_ms, round(imp, 3), round(exp, 3), quality)


def derive_intervals(
    samples: list[Sample], start_ms: int, end_ms: int, fresh_s: float, max_gap_s: float
) -> list[Interval]:
    """Every period starting in [start_ms, end_ms), both aligned to a period boundary."""
    ordered = sorted(samples, key=lambda s: s.at_ms)
    return [
        derive_interval(ordered, p, fresh_s, max_gap_s) for p in range(start_ms, end_ms, PERIOD_MS)
    ]


def _pairs(rows: list[sqlite3.Row] | list[tuple[int, str, float]]) -> list[Sample]:
    """(at_ms, quantity name, value) rows to seeded samples, where both registers are there."""
    by_ms: dict[int, dict[str, float]] = {}
    for at_ms, name, value in rows:
        by_ms.setdefault(int(at_ms), {})[str(name)] = float(value)
    return [
        Sample(t, v["energy_import_wh"], v["energy_export_wh"], seeded=True)
        for t, v in sorted(by_ms.items())
        if "energy_import_wh" in v and "energy_export_wh" in v
    ]


# -- recording ---------------------------------------------------------------------------------


class IntervalRecorder:
    """Collects one meter's cumulative samples and writes finished periods.

    `add()` is synchronous and cheap (it may be called from a SiteState listener);
    `flush()` writes every period whose end boundary has a sample after it, and marks
    periods 'missing' once they ended `missing_after_s` ago with no sample since.
    A later sample within `max_gap_s` upgrades a 'missing' row to 'estimated'.
    """

    def __init__(
        self,
        device_id: str,
        db: Database,
        clock: Clock,
        fresh_s: float = 60.0,
        missing_after_s: float = 300.0,
        max_gap_s: float = 4 * 3600.0,
    ) -> None:
        self.device_id = device_id
        self._db = db
        self._clock = clock
        self._fresh_s = fresh_s
        self._missing_after_ms = int(missing_after_s * 1000)
        self._max_gap_s = max_gap_s
        self._samples: list[Sample] = []
        self._next_ms: int | None = None  # first period not yet final
        self._marked_missing: set[int] = set()
        self._seeded = False  # the first flush has looked for stored history

    def add(self, at: datetime, import_wh: float, export_wh: float) -> None:
        t = to_ms(at)
        if self._samples and t <= self._samples[-1].at_ms:
            return  # out of order or duplicate: the newer sample is already in
        self._samples.append(Sample(t, import_wh, export_wh))
        if self._next_ms is None:
            # The first full period after the first sample: a period needs both boundaries.
            self._next_ms = (
                period_floor_ms(t) if t % PERIOD_MS == 0 else period_floor_ms(t) + PERIOD_MS
            )

    def due(self, now_ms: int) -> list[Interval]:
        """Periods ready to write now (pure apart from advancing the recorder)."""
        if self._next_ms is None or not self._samples:
            return []
        out: list[Interval] = []
        last_ms = self._samples[-1].at_ms
        while self._next_ms + PERIOD_MS <= last_ms:
            out.append(
                derive_interval(self._samples, self._next_ms, self._fresh_s, self._max_gap_s)
            )
            self._marked_missing.discard(self._next_ms)
            self._next_ms += PERIOD_MS
        p = self._next_ms
        while p + PERIOD_MS + self._missing_after_ms <= now_ms:
            if p not in self._marked_missing:
                out.append(Interval(p, None, None, "missing"))
                self._marked_missing.add(p)
            p += PERIOD_MS
        self._prune()
        return out

    def _prune(self) -> None:
        assert self._next_ms is not None
        times = [s.at_ms for s in self._samples]
        keep_from = max(0, bisect.bisect_right(times, self._next_ms) - 1)
        if keep_from:
            del self._samples[:keep_from]

    def seed(self, history: list[Sample]) -> None:
        """Put samples from before this process (sorted, `seeded`) in front of its own, and
        start at the first period they bound. Periods already stored stay as they are (the
        upsert only improves a row)."""
        first_ms = self._samples[0].at_ms if self._samples else None
        older = [h for h in history if first_ms is None or h.at_ms < first_ms]
        if not older:
            return
        self._samples[:0] = older
        t = older[0].at_ms
        start = period_floor_ms(t) if t % PERIOD_MS == 0 else period_floor_ms(t) + PERIOD_MS
        self._next_ms = start if self._next_ms is None else min(self._next_ms, start)

    async def stored_history(self, before_ms: int) -> list[Sample]:
        """The registers as stored before `before_ms`, from the end of the newest stored
        period (one minute earlier, so its boundary has a sample before it), at most
        `max_gap_s` back: the raw readings kept (exact times; with `raw_readings: latest`
        only the newest) and, before them, the one-minute roll-ups (the bucket's last value,
        stamped at the bucket's end)."""
        since_ms = before_ms - int(self._max_gap_s * 1000)
        names = ("energy_import_wh", "energy_export_wh")
        joined = "JOIN devices d USING(device_pk) JOIN quantities q USING(quantity_pk) "
        try:
            row = await self._db.fetchone(
                "SELECT max(period_start_ms) FROM meter_intervals "
                "WHERE device_id=? AND quality != 'missing'",
                (self.device_id,),
            )
            if row is not None and row[0] is not None:
                since_ms = max(since_ms, int(row[0]) + PERIOD_MS - MINUTE_MS)
            raw = await self._db.fetchall(
                "SELECT r.at_ms, q.name, r.value FROM readings r " + joined
                + "WHERE d.device_id=? AND q.name IN (?, ?) AND r.at_ms>=? AND r.at_ms<? "
                "ORDER BY r.at_ms",
                (self.device_id, *names, since_ms, before_ms),
            )  # fmt: skip
            minutes = await self._db.fetchall(
                "SELECT r.start_ms + ? - 1, q.name, r.last FROM rollups r " + joined
                + "WHERE r.resolution_s=60 AND d.device_id=? AND q.name IN (?, ?) "
                "AND r.start_ms>=? AND r.start_ms + ? <= ? ORDER BY r.start_ms",
                (MINUTE_MS, self.device_id, *names, since_ms, MINUTE_MS, before_ms),
            )  # fmt: skip
        except sqlite3.OperationalError as exc:  # no store tables (a database of its own)
            log.info("meter intervals: no stored history", device=self.device_id, error=str(exc))
            return []
        exact = _pairs(raw)
        # A roll-up minute is only used before the first raw reading: the raw one is exact.
        first_raw_minute = exact[0].at_ms - exact[0].at_ms % MINUTE_MS if exact else before_ms
        coarse = [s for s in _pairs(minutes) if s.at_ms < first_raw_minute]
        return coarse + exact

    async def flush(self) -> list[Interval]:
        if not self._seeded and self._samples:
            self._seeded = True
            self.seed(await self.stored_history(self._samples[0].at_ms))
        now = self._clock.now()
        rows = self.due(to_ms(now))
        if rows:
            stamp = to_ms(now)
            await save_intervals(self._db, self.device_id, rows, stamp)
            for r in rows:
                if r.quality != "actual":
                    log.info(
                        "meter interval not actual",
                        device=self.device_id,
                        period_start=datetime.fromtimestamp(
                            r.period_start_ms / 1000, UTC
                        ).isoformat(),
                        quality=r.quality,
                    )
        return rows
