"""The durable outbox: every outgoing message is in SQLite before it is published.

A row is deleted only when the aggregator's ack covers its seq. Seqs are allocated in the
same transaction that stores the row, so a crash (kill -9, power cut) never reuses or skips
a seq the aggregator might have seen. Bounded: when full, the oldest droppable rows
(telemetry, capabilities, offers) go first; interval data, responses and reports are never
dropped, even if that means exceeding the bound (logged).

`append_deferred` (telemetry): the row is stored with the store's next commit (`Database.
defer_call`, at most `storage.batch_interval_s` later) instead of a commit of its own, and
only then can it be published; a kill -9 before that commit loses it, never its seq.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hems.store.db import Database
from hems.uplink.envelope import encode
from hems.uplink.messages import DROPPABLE_KINDS

log = structlog.get_logger(__name__)

NEXT_SEQ = "next_seq"
LAST_PEER_SEQ = "last_peer_seq"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    topic: str
    kind: str
    message: bytes


def get_counter(conn: sqlite3.Connection, key: str, default: int) -> int:
    row = conn.execute("SELECT value FROM uplink_state WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else default


def set_counter(conn: sqlite3.Connection, key: str, value: int) -> None:
    conn.execute(
        "INSERT INTO uplink_state(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


class Outbox:
    def __init__(self, db: Database, max_rows: int) -> None:
        self._db = db
        self._max_rows = max_rows
        self.dropped = 0  # droppable rows evicted since start

    async def append(
        self,
        topic: str,
        kind: str,
        created: str,
        build: Callable[[int], dict[str, Any]],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> int:
        """Allocate the next seq, build the signed message with it, store it. Returns seq.

        `also(conn)` runs in the same transaction (e.g. recording the message answered).
        """

        seq, dropped = await self._db.call(
            lambda conn: self._store(conn, topic, kind, created, build, also)
        )
        self._count_dropped(dropped)
        return seq

    def append_deferred(
        self,
        topic: str,
        kind: str,
        created: str,
        build: Callable[[int], dict[str, Any]],
        stored: Callable[[int], None],
    ) -> None:
        """`append`, committed with the store's next write rather than in a commit of its own
        (for low-value rows: telemetry). `stored(seq)` is called once it is committed; until
        then no read here sees the row, so it cannot be published before it is durable."""

        def done(result: tuple[int, int]) -> None:
            self._count_dropped(result[1])
            stored(result[0])

        self._db.defer_call(lambda conn: self._store(conn, topic, kind, created, build), done)

    def _store(
        self,
        conn: sqlite3.Connection,
        topic: str,
        kind: str,
        created: str,
        build: Callable[[int], dict[str, Any]],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> tuple[int, int]:
        seq = max(
            get_counter(conn, NEXT_SEQ, 1),
            (conn.execute("SELECT MAX(seq) FROM uplink_outbox").fetchone()[0] or 0) + 1,
        )
        message = build(seq)
        conn.execute(
            "INSERT INTO uplink_outbox(seq, id, topic, kind, message, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (seq, message["id"], topic, kind, encode(message).decode(), created),
        )
        set_counter(conn, NEXT_SEQ, seq + 1)
        if also is not None:
            also(conn)
        return seq, self._enforce_bound(conn)

    def _count_dropped(self, dropped: int) -> None:
        if dropped:
            self.dropped += dropped
            log.warning("uplink outbox full: dropped oldest telemetry", dropped=dropped)

    def _enforce_bound(self, conn: sqlite3.Connection) -> int:
        count = conn.execute("SELECT COUNT(*) FROM uplink_outbox").fetchone()[0]
        excess = count - self._max_rows
        if excess <= 0:
            return 0
        kinds = sorted(DROPPABLE_KINDS)
        marks = ",".join("?" * len(kinds))
        cur = conn.execute(
            f"DELETE FROM uplink_outbox WHERE seq IN (SELECT seq FROM uplink_outbox "
            f"WHERE kind IN ({marks}) ORDER BY seq LIMIT ?)",
            (*kinds, excess),
        )
        if cur.rowcount < excess:
            log.warning(
                "uplink outbox over its bound with undroppable messages",
                rows=count - cur.rowcount,
                max_rows=self._max_rows,
            )
        return cur.rowcount

    async def pending(self, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
        rows = await self._db.fetchall(
            "SELECT seq, topic, kind, message FROM uplink_outbox WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [OutboxRow(r[0], r[1], r[2], r[3].encode()) for r in rows]

    async def ack(self, ranges: list[tuple[int, int]]) -> int:
        """Delete every row whose seq an ack range covers. Returns how many went.

        The delete is committed with the store's next write (`Database.defer`; reads here
        see it at once): a kill -9 before then only makes those rows be sent again."""
        total = 0
        for lo, hi in ranges:
            row = await self._db.fetchone(
                "SELECT COUNT(*) FROM uplink_outbox WHERE seq BETWEEN ? AND ?", (lo, hi)
            )
            total += int(row[0]) if row else 0
            self._db.defer("DELETE FROM uplink_outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
        return total

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM uplink_outbox")
        return int(row[0]) if row else 0

    async def counts_by_kind(self) -> dict[str, int]:
        rows = await self._db.fetchall("SELECT kind, COUNT(*) FROM uplink_outbox GROUP BY kind")
        return {r[0]: int(r[1]) for r in rows}
