"""The durable outbox: every outgoing message is in SQLite before it is published.

A row is deleted only when the aggregator's ack covers its seq. Seqs are allocated in the
same transaction that stores the row, so a crash (kill -9, power cut) never reuses or skips
a seq the aggregator might have seen. Bounded: when full, the oldest droppable rows
(telemetry, capabilities, offers) go first; interval data, responses and reports are never
dropped, even if that means exceeding the bound (logged).

Seqs come from one counter in memory, loaded from the database on first use. The stored
`next_seq` is a high-water mark above every seq ever published: each row is stored with
`next_seq` above its own seq, and `reserve_live()` hands out seqs for rows that are never
stored (telemetry sent at once while the channel is up) only below a block reserved before
(`_RESERVE_BLOCK` seqs, committed with the store's next write, never in a commit of its
own). A restart starts above the mark: a kill -9 may skip seqs, never reuse one.

`append_deferred` (telemetry the channel could not send): the row is stored with the store's
next commit (`Database.defer_call`, at most `storage.batch_interval_s` later) instead of a
commit of its own, and only then can it be published; a kill -9 before that commit loses it,
never its seq.
"""

from __future__ import annotations

import sqlite3
import threading
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
# Seqs reserved ahead for telemetry sent without being stored. Refilled at half, with the
# store's next batch: half a block lasts 500 telemetry intervals (83 min at 10 s), far longer
# than a batch (at most 600 s), so live telemetry never waits for a reservation.
_RESERVE_BLOCK = 1000


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
        # The seq counter: taken on the database thread (rows stored) and on the loop
        # (`reserve_live`), so under a lock held for a few statements at most.
        self._lock = threading.Lock()
        self._next_seq: int | None = None  # None: not loaded from the database yet
        self._reserved = 0  # committed `next_seq`: seqs below it may be published unstored
        self._refilling = False

    def _take_seq(self, conn: sqlite3.Connection) -> int:
        """The next seq (database thread, lock held); loads the counter on first use."""
        if self._next_seq is None:
            self._next_seq = max(
                get_counter(conn, NEXT_SEQ, 1),
                (conn.execute("SELECT MAX(seq) FROM uplink_outbox").fetchone()[0] or 0) + 1,
            )
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def reserve_live(self) -> int | None:
        """A seq for a row published without being stored (live telemetry), or None when no
        reserved seq is left (the row must then be stored first: `append_deferred`). Never
        blocks the loop: a busy counter also answers None."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            seq = None
            if self._next_seq is not None and self._next_seq < self._reserved:
                seq = self._next_seq
                self._next_seq += 1
            short = self._next_seq is None or self._reserved - self._next_seq < _RESERVE_BLOCK // 2
        finally:
            self._lock.release()
        if short:
            self.refill()
        return seq

    def refill(self) -> None:
        """Reserve the next block of seqs with the store's next commit (once at a time)."""
        if self._refilling:
            return
        self._refilling = True

        def reserve(conn: sqlite3.Connection) -> int:
            with self._lock:
                if self._next_seq is None:
                    self._take_seq(conn)
                    self._next_seq -= 1  # loaded, not taken
                assert self._next_seq is not None
                target = self._next_seq + _RESERVE_BLOCK
            set_counter(conn, NEXT_SEQ, max(get_counter(conn, NEXT_SEQ, 1), target))
            return target

        def done(target: int) -> None:
            self._reserved = max(self._reserved, target)
            self._refilling = False

        self._db.defer_call(reserve, done)

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

    def store_deferred(
        self, row: OutboxRow, message_id: str, created: str, stored: Callable[[int], None]
    ) -> None:
        """Store a row already built under a reserved seq (live telemetry the channel could
        not send, or sent and not acked when it went down) with the store's next commit, for
        replay. Its seq is below the stored `next_seq` already."""

        def store(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.execute(
                "INSERT OR IGNORE INTO uplink_outbox(seq, id, topic, kind, message, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row.seq, message_id, row.topic, row.kind, row.message.decode(), created),
            )
            return row.seq, self._enforce_bound(conn)

        def done(result: tuple[int, int]) -> None:
            self._count_dropped(result[1])
            stored(result[0])

        self._db.defer_call(store, done)

    def _store(
        self,
        conn: sqlite3.Connection,
        topic: str,
        kind: str,
        created: str,
        build: Callable[[int], dict[str, Any]],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> tuple[int, int]:
        with self._lock:
            seq = self._take_seq(conn)
        try:
            message = build(seq)
            conn.execute(
                "INSERT INTO uplink_outbox(seq, id, topic, kind, message, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, message["id"], topic, kind, encode(message).decode(), created),
            )
        except BaseException:
            with self._lock:  # not stored, never published: the next row takes it
                if self._next_seq == seq + 1:
                    self._next_seq = seq
            raise
        # Never lowered: it may stand above seqs reserved for live telemetry.
        set_counter(conn, NEXT_SEQ, max(get_counter(conn, NEXT_SEQ, 1), seq + 1))
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
        see it at once): a kill -9 before then only makes those rows be sent again. An ack of
        rows never stored (live telemetry) queues nothing."""
        total = 0
        for lo, hi in ranges:
            row = await self._db.fetchone(
                "SELECT COUNT(*) FROM uplink_outbox WHERE seq BETWEEN ? AND ?", (lo, hi)
            )
            found = int(row[0]) if row else 0
            total += found
            if found:
                self._db.defer("DELETE FROM uplink_outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
        return total

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM uplink_outbox")
        return int(row[0]) if row else 0

    async def counts_by_kind(self) -> dict[str, int]:
        rows = await self._db.fetchall("SELECT kind, COUNT(*) FROM uplink_outbox GROUP BY kind")
        return {r[0]: int(r[1]) for r in rows}
