"""The intervention journal: what the guard and the loop's fail-safes did, and when.

Guard decisions are recorded as transitions (a rule starting or ending on a device, or
changing its reason), device events (write failed, ignores commands) and limit timings
(fuse overload, G100 excursion) as single events. Each is logged, kept in a short in-memory
list for the web page and `hems interventions`, and queued for `control_interventions` in
SQLite; the queue is handed to the store's next commit (`Database.defer_many`: a kill -9 loses
at most one batch) off the cycle, so a slow disk never delays control.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter, deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict

from hems.control.model import Intervention
from hems.control.problems import Problems, log
from hems.store.db import Database
from hems.store.timeseries import to_ms

_MAX_QUEUED_ROWS = 10000
_RECENT = 500

# at_ms, rule, device_id, event, reason, before_json, after_json
_Row = tuple[int, str, str, str, str, str, str]


class InterventionRecord(TypedDict):
    """One journal entry as kept in memory and shown by `recent_interventions()`."""

    at: str  # ISO 8601
    rule: str
    device_id: str  # "" for site-wide
    event: str  # start, end, failed, flagged, or a limit tracker's event
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]


class Journal:
    """Records interventions; owns the active set, the recent list and the store queue."""

    def __init__(self, db: Database | None, problems: Problems) -> None:
        self._db = db
        self._problems = problems
        self._active: dict[tuple[str, str], Intervention] = {}  # (rule, device) -> latest
        self._recent: deque[InterventionRecord] = deque(maxlen=_RECENT)
        self._rows: list[_Row] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._emitted = 0
        self._started: Counter[str] = Counter()  # rule -> "start" entries (new or new reason)

    @property
    def active(self) -> Iterable[Intervention]:
        """The interventions in force since the last `record`."""
        return self._active.values()

    @property
    def emitted(self) -> int:
        """How many entries were journalled since start."""
        return self._emitted

    def started_by_rule(self) -> dict[str, int]:
        """How many interventions started since start, by rule (for /metrics)."""
        return dict(self._started)

    def recent(self) -> list[InterventionRecord]:
        return list(self._recent)

    def record(self, at: datetime, interventions: Iterable[Intervention]) -> None:
        """This cycle's guard decisions: journal those that start, change or end."""
        seen: dict[tuple[str, str], Intervention] = {}
        for i in interventions:
            key = (i.rule, i.device_id)
            seen[key] = i
            prev = self._active.get(key)
            if prev is None or prev.reason != i.reason:
                self.emit(at, i, "start")
        for key, prev in list(self._active.items()):
            if key not in seen:
                self.emit(at, prev, "end")
        self._active = seen

    def emit(self, at: datetime, i: Intervention, event: str) -> None:
        """Log, keep and queue one entry."""
        level = log.info if event == "end" else log.warning
        level(
            "control intervention",
            rule=i.rule,
            device=i.device_id,
            kind=event,
            reason=i.reason,
            before=i.before,
            after=i.after,
        )
        row: InterventionRecord = {
            "at": at.isoformat(),
            "rule": i.rule,
            "device_id": i.device_id,
            "event": event,
            "reason": i.reason,
            "before": i.before,
            "after": i.after,
        }
        self._recent.append(row)
        self._emitted += 1
        if event == "start":
            self._started[i.rule] += 1
        if self._db is not None and len(self._rows) < _MAX_QUEUED_ROWS:
            self._rows.append(
                (
                    to_ms(at),
                    i.rule,
                    i.device_id,
                    event,
                    i.reason,
                    json.dumps(i.before, sort_keys=True),
                    json.dumps(i.after, sort_keys=True),
                )
            )

    def maybe_flush(self) -> None:
        """Start writing the queue unless a write is running (called once per cycle)."""
        if self._db is None or not self._rows:
            return
        if self._flush_task is not None and not self._flush_task.done():
            return
        rows, self._rows = self._rows, []
        self._flush_task = asyncio.create_task(self._flush(rows), name="control:flush")

    async def _flush(self, rows: list[_Row]) -> None:
        assert self._db is not None
        try:
            self._db.defer_many(
                "INSERT INTO control_interventions"
                "(at_ms, rule, device_id, event, reason, before_json, after_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._problems.clear("db", "interventions stored again")
        except Exception as exc:  # keep the rows for the next attempt; never stop control
            self._rows[:0] = rows[: _MAX_QUEUED_ROWS - len(self._rows)]
            self._problems.report("db", "cannot store interventions", error=str(exc))

    async def flush(self) -> None:
        """Write queued rows now (tests, shutdown)."""
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        if self._db is not None and self._rows:
            rows, self._rows = self._rows, []
            await self._flush(rows)
        if self._db is not None:
            try:
                await self._db.flush_deferred()
            except Exception as exc:  # kept in the store's queue for its next commit
                self._problems.report("db", "cannot store interventions", error=str(exc))

    async def settle(self, timeout_s: float) -> None:
        """Let a running store write finish (at most `timeout_s`) so no row is lost."""
        if self._flush_task is not None:
            await asyncio.wait([self._flush_task], timeout=timeout_s)


def read_interventions(
    conn: sqlite3.Connection, rule: str | None, limit: int
) -> list[tuple[int, str, str | None, str, str, str, str]]:
    """Stored interventions, newest first: (at_ms, rule, device_id, event, reason,
    before_json, after_json). For `hems interventions`, on a read-only connection."""
    sql = (
        "SELECT at_ms, rule, device_id, event, reason, before_json, after_json"
        " FROM control_interventions"
    )
    params: list[object] = []
    if rule:
        sql += " WHERE rule = ?"
        params.append(rule)
    sql += " ORDER BY at_ms DESC, id DESC LIMIT ?"
    params.append(limit)
    return conn.execute(sql, params).fetchall()
