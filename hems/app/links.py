"""Glue between the stages, kept out of the composition root so each piece is testable.

* `FlexLink`: accepted flexibility events → planner constraints and the live control target.
* `EnvelopeLink`: the aggregator's operating envelope → the planner's per-slot grid caps.
* `IntervalSender`: half-hourly meter intervals → the uplink's outbox, with a durable cursor.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog

from hems.core.clock import Clock
from hems.core.tasks import raise_if_cancelling
from hems.errors import HemsError
from hems.store.db import Database
from hems.store.intervals import intervals_updated_after
from hems.store.timeseries import from_ms

log = structlog.get_logger(__name__)


class FlexLink:
    """Accepted flexibility events → planner constraints and the live control target.

    `baseline_w(event)` gives the event's baseline net import [W] for live tracking (the
    unadjusted baseline of the configured method); when it cannot be computed (no history
    yet) the cap itself is used and the log says so, so delivery is tracked against the cap.
    """

    def __init__(
        self,
        clock: Clock,
        planner: Any | None,
        control: Any | None,
        baseline_w: Callable[[Any], Awaitable[float]] | None = None,
    ) -> None:
        self._clock = clock
        self._planner = planner
        self._control = control
        self._baseline_w = baseline_w
        self._in_planner: set[str] = set()
        self._prices: dict[str, tuple[datetime, datetime]] = {}

    async def on_change(self, events: Iterable[Any]) -> None:
        from hems.control.strategies import FlexEvent as LiveEvent

        events = [e for e in events if not getattr(e, "cancelled", False)]
        if self._planner is not None:
            ids = set()
            prices: dict[str, tuple[datetime, datetime]] = {}
            for e in events:
                ids.add(e.event_id)
                cap, floor, up = _instruction(e)
                if cap is None and floor is None and up is None:
                    if e.price_per_kwh is not None:
                        # A price event: the aggregator's price for import in its window,
                        # which the plan then answers as it answers any price.
                        self._price_signal(e)
                        prices[e.event_id] = (e.start, e.end)
                    continue
                self._planner.add_event_constraint(
                    e.event_id,
                    e.start,
                    e.end,
                    import_cap_w=cap,
                    export_floor_w=floor,
                    import_floor_w=up,
                )
            for gone in self._in_planner - ids:
                self._planner.remove_event_constraint(gone)
            for gone, (start, end) in self._prices.items():
                if gone not in prices:
                    self._planner.clear_price_signal(start, end)
            self._in_planner, self._prices = ids, prices
        if self._control is None:
            return
        now = self._clock.now()
        upcoming = sorted((e for e in events if e.end > now), key=lambda e: e.start)
        live = None
        for e in upcoming:
            # The live loop tracks caps and export floors; a turn-up floor is left to the
            # plan (the control loop follows its per-slot targets).
            cap, floor, _up = _instruction(e)
            if cap is None and floor is None:
                continue
            baseline = math.nan
            if self._baseline_w is not None:
                try:
                    baseline = await self._baseline_w(e)
                except HemsError as exc:
                    log.warning("flex baseline unavailable", event_id=e.event_id, error=str(exc))
            limit = cap if cap is not None else floor
            assert limit is not None
            if not math.isfinite(baseline):
                log.warning(
                    "flex baseline unknown; delivery tracked against the cap", event_id=e.event_id
                )
                baseline = limit if cap is not None else -limit
            live = LiveEvent(
                event_id=e.event_id,
                kind="import-cap" if cap is not None else "export-floor",
                start=e.start,
                end=e.end,
                limit_w=limit,
                baseline_w=baseline,
            )
            break
        self._control.set_flex_event(live)

    def _price_signal(self, event: Any) -> None:
        assert self._planner is not None
        step_min = 30
        slots = max(1, math.ceil((event.end - event.start).total_seconds() / (step_min * 60)))
        self._planner.inject_price_signal(
            event.start, step_min, [float(event.price_per_kwh)] * slots
        )


def _instruction(event: Any) -> tuple[float | None, float | None, float | None]:
    """(import cap, export floor, net-import floor) [W] of an event; all None for a
    price-only event."""
    from hems.flex.events import as_planner_constraint

    constraint = as_planner_constraint(event)
    if constraint is None:
        return None, None, None
    return constraint.import_cap_w, constraint.export_floor_w, constraint.import_floor_w


class EnvelopeLink:
    """down/envelope → the planner's per-slot grid caps (never looser than the site's)."""

    def __init__(self, planner: Any | None) -> None:
        self._planner = planner
        self.last: Any | None = None

    async def on_envelope(self, envelope: Any) -> None:
        from hems.planning.service import Envelope, EnvelopeInterval

        self.last = envelope
        log.info("aggregator envelope", intervals=len(envelope.intervals))
        if self._planner is None:
            return
        self._planner.set_envelope(
            Envelope(
                default_import_w=envelope.default_import_limit_w,
                default_export_w=envelope.default_export_limit_w,
                intervals=tuple(
                    EnvelopeInterval(i.start, i.end, i.import_limit_w, i.export_limit_w)
                    for i in envelope.intervals
                ),
            )
        )


class IntervalSender:
    """Sends every new or updated meter interval of `device_id` to the uplink, in order."""

    KEY = "uplink.meter_interval.updated_ms"

    def __init__(
        self,
        db: Database,
        clock: Clock,
        device_id: str,
        send: Callable[[str, dict[str, Any]], Awaitable[int]],
        every_s: float = 60.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._device_id = device_id
        self._send = send
        self._every_s = every_s

    async def run(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                await self.send_new()
            except HemsError as exc:
                log.error("meter intervals not handed to the uplink", error=str(exc))
            await self._clock.sleep(self._every_s)

    async def send_new(self) -> int:
        row = await self._db.fetchone("SELECT value FROM app_state WHERE key=?", (self.KEY,))
        cursor = int(row[0]) if row else -1
        rows = await intervals_updated_after(self._db, self._device_id, cursor)
        for row in rows:
            imp, exp, quality = row.interval.import_wh, row.interval.export_wh, row.interval.quality
            start, updated_ms = from_ms(row.interval.period_start_ms), row.updated_ms
            await self._send(
                "meter_interval",
                {
                    "period_start": start.isoformat(),
                    "period_end": (start + timedelta(minutes=30)).isoformat(),
                    "import_kwh": None if imp is None else imp / 1000,
                    "export_kwh": None if exp is None else exp / 1000,
                    # the wire vocabulary says "measured" for the meter's own reads
                    "quality": "measured" if quality == "actual" else quality,
                },
            )
            await self._db.execute(
                "INSERT INTO app_state(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (self.KEY, str(updated_ms)),
            )
        return len(rows)
