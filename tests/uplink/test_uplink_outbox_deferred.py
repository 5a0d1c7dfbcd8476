"""Telemetry rides on the store's next commit (`Outbox.append_deferred`): not readable, so
not publishable, before that commit; its seq allocated in it; durable rows stay durable
when `append` returns, also when a writer is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.outbox import Outbox
from tests.uplink.test_uplink_outbox import INTERVAL, KEY, NOW, TELEMETRY


def build(type_: str, payload: dict):  # type: ignore[no-untyped-def]
    return lambda seq: envelope.build(
        KEY, type_=type_, site_id="s", seq=seq, payload=payload, now=NOW, ttl_s=60
    )


def committed_seqs(path: Path) -> list[tuple[int, str]]:
    """What another connection sees: only what is committed."""
    conn = sqlite3.connect(str(path))
    try:
        return [(int(s), str(k)) for s, k in conn.execute(
            "SELECT seq, kind FROM uplink_outbox ORDER BY seq")]  # fmt: skip
    finally:
        conn.close()


async def test_deferred_telemetry_is_stored_with_the_next_commit_and_only_then_readable(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "hems.db")
    db.defer_max_s = 3600.0  # no timer: only the next write commits it
    box = Outbox(db, max_rows=100)
    stored: list[int] = []
    try:
        box.append_deferred(
            "hems/v1/s/telemetry", "telemetry", NOW.isoformat(),
            build("telemetry", TELEMETRY), stored.append,
        )  # fmt: skip
        assert db.deferred == 1
        # Not committed, so not readable: the publisher cannot send a row whose seq a kill
        # -9 could hand to another message.
        assert await box.pending() == [] and await box.count() == 0
        assert committed_seqs(db.path) == []  # type: ignore[arg-type]
        seq = await box.append(
            "hems/v1/s/meter_interval", "interval", NOW.isoformat(),
            build("meter_interval", INTERVAL),
        )  # fmt: skip
        # One commit took both, the telemetry first (it was queued first).
        assert committed_seqs(db.path) == [(1, "telemetry"), (2, "interval")]  # type: ignore[arg-type]
        assert seq == 2
        await asyncio.sleep(0)  # the commit callback runs on the loop
        assert stored == [1]
        rows = await box.pending()
        assert [r.seq for r in rows] == [1, 2]
        assert envelope.parse(rows[0].message)["seq"] == 1
    finally:
        await db.close()


async def test_deferred_telemetry_is_committed_by_the_timer_and_at_close(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    db.defer_max_s = 0.01
    box = Outbox(db, max_rows=100)
    done = asyncio.Event()
    box.append_deferred(
        "hems/v1/s/telemetry", "telemetry", NOW.isoformat(), build("telemetry", TELEMETRY),
        lambda seq: done.set(),
    )  # fmt: skip
    async with asyncio.timeout(30):
        await done.wait()
    assert committed_seqs(db.path) == [(1, "telemetry")]  # type: ignore[arg-type]
    db.defer_max_s = 3600.0
    box.append_deferred(
        "hems/v1/s/telemetry", "telemetry", NOW.isoformat(), build("telemetry", TELEMETRY),
        lambda seq: None,
    )  # fmt: skip
    await db.close()
    assert committed_seqs(tmp_path / "hems.db") == [(1, "telemetry"), (2, "telemetry")]


async def test_a_failing_deferred_build_is_dropped_alone(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    db.defer_max_s = 3600.0
    box = Outbox(db, max_rows=100)
    stored: list[int] = []

    def bad(seq: int) -> dict:
        raise ValueError("cannot sign")

    try:
        box.append_deferred("t", "telemetry", NOW.isoformat(), bad, stored.append)
        seq = await box.append(
            "hems/v1/s/meter_interval", "interval", NOW.isoformat(),
            build("meter_interval", INTERVAL),
        )  # fmt: skip
        await asyncio.sleep(0)
        assert seq == 1 and stored == [] and db.deferred_dropped == 1
        assert committed_seqs(db.path) == [(1, "interval")]  # type: ignore[arg-type]
    finally:
        await db.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from hems.store.db import Database
    from hems.uplink import envelope
    from hems.uplink.outbox import Outbox

    KEY = Ed25519PrivateKey.generate()
    NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    TELEMETRY = {"at": NOW.isoformat(), "grid_w": 1.0, "pv_w": None, "battery_w": None,
                 "soc_pct": None, "ev_w": None}
    INTERVAL = {"period_start": "2026-11-27T16:30:00Z", "period_end": "2026-11-27T17:00:00Z",
                "import_kwh": 0.5, "export_kwh": 0.0, "quality": "measured"}

    def build(type_, payload):
        return lambda seq: envelope.build(
            KEY, type_=type_, site_id="s", seq=seq, payload=payload, now=NOW, ttl_s=60)

    async def main():
        db = await Database.open(sys.argv[1])
        db.defer_max_s = 0.005
        box = Outbox(db, max_rows=100000)
        def stored(seq):
            print("telemetry", seq, flush=True)
        n = 0
        while True:
            for _ in range(3):
                box.append_deferred("t", "telemetry", NOW.isoformat(),
                                    build("telemetry", TELEMETRY), stored)
                await asyncio.sleep(0.002)
            n += 1
            seq = await box.append("i", "interval", NOW.isoformat(),
                                   build("meter_interval", INTERVAL))
            print("durable", seq, flush=True)

    asyncio.run(main())
    """
)


async def test_kill_9_keeps_every_durable_row_and_every_reported_telemetry_row(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "hems.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db_path), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    durable: list[int] = []
    telemetry: list[int] = []
    async with asyncio.timeout(60):
        while len(durable) < 40 or len(telemetry) < 40:
            line = (await proc.stdout.readline()).decode()
            assert line, "the child ended"
            if not line.startswith(("durable ", "telemetry ")):
                continue  # the store's own log lines
            kind, seq = line.split()
            (durable if kind == "durable" else telemetry).append(int(seq))
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT seq, kind FROM uplink_outbox").fetchall())
        next_seq = conn.execute("SELECT value FROM uplink_state WHERE key='next_seq'").fetchone()
    finally:
        conn.close()
    # Durable when `append` returned; a telemetry row durable when it was reported stored
    # (only then may the channel publish it).
    assert all(rows.get(s) == "interval" for s in durable)
    assert all(rows.get(s) == "telemetry" for s in telemetry)
    assert next_seq[0] > max(rows)
    # A restart never hands out a seq that was stored (or reported) before the kill.
    db = await Database.open(db_path)
    try:
        box = Outbox(db, max_rows=100000)
        seq = await box.append("i", "interval", NOW.isoformat(), build("meter_interval", INTERVAL))
        assert seq > max(max(rows), *durable, *telemetry)
    finally:
        await db.close()


async def test_live_seqs_come_from_a_committed_reservation_and_are_never_reused(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "hems.db")
    db.defer_max_s = 3600.0
    box = Outbox(db, max_rows=100)
    try:
        # Nothing reserved yet: the caller must store the row first; a refill is queued.
        assert box.reserve_live() is None
        assert db.deferred == 1 and committed_seqs(db.path) == []  # type: ignore[arg-type]
        first = await box.append(
            "i", "interval", NOW.isoformat(), build("meter_interval", INTERVAL)
        )  # the refill rides this commit
        await asyncio.sleep(0)
        live = [box.reserve_live() for _ in range(3)]
        assert live == [first + 1, first + 2, first + 3]
        after = await box.append(
            "i", "interval", NOW.isoformat(), build("meter_interval", INTERVAL)
        )
        assert after == first + 4  # one counter: seqs follow the order they were made in
    finally:
        await db.close()
    conn = sqlite3.connect(tmp_path / "hems.db")
    try:
        stored_next = conn.execute("SELECT value FROM uplink_state WHERE key='next_seq'").fetchone()
    finally:
        conn.close()
    assert stored_next[0] > after  # the durable append did not lower the reservation
    # A restart (a kill -9 as well: the reservation was committed before any live seq was
    # handed out) starts above every seq published, stored or not.
    db = await Database.open(tmp_path / "hems.db")
    try:
        box = Outbox(db, max_rows=100)
        seq = await box.append("i", "interval", NOW.isoformat(), build("meter_interval", INTERVAL))
        assert seq >= stored_next[0] > max(live)  # type: ignore[type-var]
    finally:
        await db.close()
