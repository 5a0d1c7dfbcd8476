"""Read-only views of flexibility events and delivery reports, for the web page and API
(the rows come from their owner, `EventBook`)."""

from __future__ import annotations

import json
from typing import Any

from hems.flex.events import EventBook
from hems.store.db import Database
from hems.store.timeseries import from_ms

_INSTRUCTIONS = ("import_cap_w", "export_floor_w", "setpoint_w", "price_per_kwh", "currency")


def _iso_ms(ms: int) -> str:
    return from_ms(ms).isoformat()


async def recent_events(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The last events as decided (every status, with reasons), requested vs applied."""
    rows = await EventBook(db).recent_rows(limit)
    events = []
    for r in rows:
        received, effective = json.loads(r[5]), json.loads(r[6])
        events.append(
            {
                "event_id": r[0],
                "modification_number": r[1],
                "kind": r[2],
                "start": _iso_ms(r[3]),
                "end": _iso_ms(r[4]),
                "status": r[7],
                "reasons": json.loads(r[8]),
                "received_at": _iso_ms(r[9]),
                "requested": {k: received.get(k) for k in _INSTRUCTIONS},
                "effective": {k: effective.get(k) for k in _INSTRUCTIONS},
            }
        )
    return events


async def recent_reports(db: Database, limit: int = 5) -> list[dict[str, Any]]:
    """The last delivery reports as sent (signed) to the aggregator, newest first."""
    rows = await EventBook(db).recent_report_rows(limit)
    out = []
    for event_id, modification, created_ms, payload_json in rows:
        p = json.loads(payload_json)
        out.append(
            {
                "event_id": event_id,
                "modification_number": modification,
                "created_at": _iso_ms(created_ms),
                "method": p.get("method"),
                "method_version": p.get("method_version"),
                "days_used": len(p.get("days_used") or []),
                "total_delivered_kwh": p.get("total_delivered_kwh"),
                "meter_data_sha256": p.get("meter_data_sha256"),
                "load_shifting_suspected": (p.get("shadow") or {}).get("load_shifting_suspected"),
                "periods": p.get("periods") or [],
            }
        )
    return out
