"""A gateway uplink as its own process, for kill -9 tests and demos.

    python -m hil.uplink_gateway --config uplink.json --site SITE --db hems.db [--reports N]

`uplink.json` holds an `uplink:` section as JSON. With --reports N it queues N delivery
reports (event ids rep-0..rep-N-1) before connecting, then runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from hems.core.clock import RealClock
from hems.core.state import SiteState
from hems.store.db import Database
from hems.uplink.channel import Uplink
from hems.uplink.config import UplinkConfig
from hems.uplink.messages import EventDecision


def report_payload(n: int) -> dict[str, object]:
    return {
        "event_id": f"rep-{n}",
        "modification_number": 0,
        "method": "elexon-bl01",
        "method_version": "1",
        "periods": [
            {
                "period_start": "2026-11-27T17:00:00Z",
                "period_end": "2026-11-27T17:30:00Z",
                "unadjusted_baseline_kwh": 1.2,
                "adjustment_kwh": 0.0,
                "baseline_kwh": 1.2,
                "metered_kwh": 0.4,
                "delivered_kwh": 0.8,
            }
        ],
        "meter_data_sha256": "0" * 64,
    }


async def main(args: argparse.Namespace, cfg: UplinkConfig) -> None:
    clock = RealClock()
    db = await Database.open(args.db)
    state = SiteState(clock)

    async def accept(event: object) -> EventDecision:
        return EventDecision(status="accepted")

    uplink = Uplink(cfg, args.site, state, db, clock, on_event=accept, storage_path=Path(args.db))
    for n in range(args.reports):
        await uplink.send("delivery_report", report_payload(n))
    print("queued", args.reports, flush=True)
    await uplink.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--reports", type=int, default=0)
    try:
        ns = parser.parse_args()
        config = UplinkConfig.model_validate(json.loads(Path(ns.config).read_text()))
        asyncio.run(main(ns, config))
    except KeyboardInterrupt:
        sys.exit(130)
