"""One store of events: migration 0010 moves what only the uplink knew into flex_events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hems.core.clock import ManualClock
from hems.flex.config import FlexConfig
from hems.flex.events import FlexEvent
from hems.flex.service import FlexService
from hems.store.db import Database, _split_sql, connect, migrations
from hems.store.timeseries import to_ms

T0 = datetime(2024, 1, 31, 10, tzinfo=UTC)


def payload(event_id: str, mod: int) -> dict[str, object]:
    return {
        "event_id": event_id, "modification_number": mod, "kind": "turn_down",
        "start": "2024-01-31T17:00:00Z", "end": "2024-01-31T18:30:00.5+01:00",
        "cancelled": False, "import_cap_w": 1000.0, "export_floor_w": None,
        "setpoint_w": None, "price_per_kwh": None, "currency": None,
    }  # fmt: skip


def at_0008(path: Path) -> None:
    """A store as migration 0008 left it, with events the uplink answered."""
    conn = connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
    )
    for number, name, sql in migrations():
        if number > 8:
            break
        for statement in _split_sql(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations(number, name) VALUES (?, ?)", (number, name))
    # "both": stored by flex too (mod 1); the uplink's copy is the same. "uplink-only":
    # answered while flexibility was off. "newer": flex has mod 0, the uplink answered mod 2
    # (the handler failed).
    stored = FlexEvent.from_mapping(payload("both", 1)).to_json()
    conn.execute(
        "INSERT INTO flex_events(event_id, modification_number, kind, start_ms, end_ms,"
        " constraint_json, effective_json, status, reasons_json, received_at_ms)"
        " VALUES ('both', 1, 'turn_down', 0, 1, ?, ?, 'accepted', '[]', 0)",
        (json.dumps(stored), json.dumps(stored)),
    )
    newer = FlexEvent.from_mapping(payload("newer", 0)).to_json()
    conn.execute(
        "INSERT INTO flex_events(event_id, modification_number, kind, start_ms, end_ms,"
        " constraint_json, effective_json, status, reasons_json, received_at_ms)"
        " VALUES ('newer', 0, 'turn_down', 0, 1, ?, ?, 'accepted', '[]', 0)",
        (json.dumps(newer), json.dumps(newer)),
    )
    for event_id, mod in (("both", 1), ("uplink-only", 3), ("newer", 2)):
        conn.execute(
            "INSERT INTO uplink_events(event_id, modification_number, message_id, payload,"
            " received_at) VALUES (?, ?, 'm', ?, '2024-01-31T09:00:00.250Z')",
            (event_id, mod, json.dumps(payload(event_id, mod))),
        )
    conn.close()


async def test_uplink_only_events_move_to_the_book_and_still_bind(tmp_path: Path) -> None:
    path = tmp_path / "hems.db"
    at_0008(path)
    db = await Database.open(path)
    try:
        tables = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert "uplink_events" not in {r[0] for r in tables}
        rows = await db.fetchall(
            "SELECT event_id, modification_number, status, start_ms, end_ms, received_at_ms"
            " FROM flex_events ORDER BY event_id, modification_number"
        )
        start, end = (
            to_ms(datetime(2024, 1, 31, 17, tzinfo=UTC)),
            to_ms(datetime(2024, 1, 31, 17, 30, 0, 500000, tzinfo=UTC)),
        )
        received = to_ms(datetime(2024, 1, 31, 9, 0, 0, 250000, tzinfo=UTC))
        assert [tuple(r) for r in rows] == [
            ("both", 1, "accepted", 0, 1, 0),
            ("newer", 0, "accepted", 0, 1, 0),  # still followed, as before
            ("newer", 2, "opted_out", start, end, received),
            ("uplink-only", 3, "opted_out", start, end, received),
        ]
        flex = FlexService(
            FlexConfig(enabled=True), "Europe/London", db, ManualClock(T0), lambda t, p: None,
            import_limit_w=13800.0, export_limit_w=3680.0,
        )  # fmt: skip
        moved = await flex.book.current("uplink-only")
        assert moved is not None and moved.received == FlexEvent.from_mapping(
            payload("uplink-only", 3)
        )
        # The modification numbers the aggregator was answered for still bind.
        for event_id, mod, stored in (("uplink-only", 3, 3), ("newer", 2, 2), ("both", 1, 1)):
            answer = await flex.on_event(FlexEvent.from_mapping(payload(event_id, mod)))
            assert (answer.status, answer.stored_modification) == ("outdated", stored)
        answer = await flex.on_event(FlexEvent.from_mapping(payload("uplink-only", 4)))
        assert answer.status == "accepted"
    finally:
        await db.close()
