"""The outbox on a real SQLite file: order, acks, bounds, and restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.outbox import Outbox

KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
TELEMETRY = {"at": NOW.isoformat(), "grid_w": 1.0, "pv_w": None, "battery_w": None,
             "soc_pct": None, "ev_w": None}  # fmt: skip
INTERVAL = {"period_start": "2026-11-27T16:30:00Z", "period_end": "2026-11-27T17:00:00Z",
            "import_kwh": 0.5, "export_kwh": 0.0, "quality": "measured"}  # fmt: skip


async def put(box: Outbox, type_: str, payload: dict, kind: str) -> int:
    return await box.append(
        f"hems/v1/s/{type_}",
        kind,
        NOW.isoformat(),
        lambda seq: envelope.build(
            KEY, type_=type_, site_id="s", seq=seq, payload=payload, now=NOW, ttl_s=60
        ),
    )


async def test_seqs_are_ordered_acked_by_range_and_survive_reopen(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    box = Outbox(db, max_rows=100)
    seqs = [await put(box, "meter_interval", INTERVAL, "interval") for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    rows = await box.pending()
    assert [r.seq for r in rows] == seqs
    stored = envelope.parse(rows[2].message)
    assert stored["seq"] == 3
    envelope.verify_signature(stored, KEY.public_key())  # the exact signed bytes are kept
    assert await box.ack([(1, 2), (4, 4)]) == 3
    assert [r.seq for r in await box.pending()] == [3, 5]
    await db.close()

    db = await Database.open(tmp_path / "hems.db")  # a restart keeps rows and the counter
    box = Outbox(db, max_rows=100)
    assert [r.seq for r in await box.pending()] == [3, 5]
    assert await put(box, "meter_interval", INTERVAL, "interval") == 6
    await box.ack([(1, 6)])
    assert await box.count() == 0
    assert await put(box, "meter_interval", INTERVAL, "interval") == 7  # never reused
    await db.close()


async def test_bound_drops_oldest_telemetry_never_intervals(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    box = Outbox(db, max_rows=10)
    telemetry = [await put(box, "telemetry", TELEMETRY, "telemetry") for _ in range(8)]
    intervals = [await put(box, "meter_interval", INTERVAL, "interval") for _ in range(5)]
    kept = [r.seq for r in await box.pending()]
    assert kept == telemetry[3:] + intervals  # the three oldest telemetry rows went
    assert box.dropped == 3
    more = [await put(box, "meter_interval", INTERVAL, "interval") for _ in range(10)]
    counts = await box.counts_by_kind()
    assert counts == {"interval": 15}  # over the bound rather than lose settlement data
    assert [r.seq for r in await box.pending()] == intervals + more
    await db.close()
