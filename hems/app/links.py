"""Glue between the stages, kept out of the composition root so each piece is testable.

* `FlexLink`: accepted flexibility instructions → the planner and the live control target;
  `answer_event`: the aggregator's down/event → flex's policy and back.
* `EnvelopeLink`: the aggregator's operating envelope → the planner's per-slot grid caps.
* `IntervalSender`: half-hourly meter intervals → the uplink's outbox, with a durable cursor.
* `ChargerJoin`: a charger accepted at run time → the control loop and its fuse guard.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from hems.core.clock import Clock
from hems.core.flex import FlexInstruction, live_candidate
from hems.core.tasks import raise_if_cancelling
from hems.devices.ocpp.events import ChargerBooted
from hems.errors import HemsError
from hems.flex.events import EventError, FlexEvent
from hems.planning.builder import Envelope, EnvelopeInterval
from hems.store.db import Database
from hems.store.intervals import intervals_updated_after
from hems.store.timeseries import from_ms
from hems.uplink.messages import Event, EventDecision, OperatingEnvelope

if TYPE_CHECKING:  # the service (reports, meter data) loads only with flex on
    from hems.flex.service import FlexService

log = structlog.get_logger(__name__)


class JoiningControl(Protocol):
    def add_device(self, adapter: object) -> bool: ...


class ChargerJoin:
    """A charger that boots accepted but was not known at start (the page's accept-charger,
    or one the owner accepted before a restart) joins control at once, so the fuse guard
    sheds it like a configured one. `chargers` looks a charger up by device id."""

    def __init__(self, control: JoiningControl, chargers: Callable[[], dict[str, Any]]) -> None:
        self._control = control
        self._chargers = chargers

    def on_charger_event(self, event: object) -> None:
        if not isinstance(event, ChargerBooted) or event.pending:
            return
        charger = self._chargers().get(event.device_id)
        if charger is not None and self._control.add_device(charger):
            log.info("accepted charger joins control", device=event.device_id)


class FlexPlanner(Protocol):
    def set_flex_instructions(self, instructions: Sequence[FlexInstruction]) -> None: ...


class FlexControl(Protocol):
    def set_flex_event(self, instruction: FlexInstruction | None) -> None: ...


class FlexLink:
    """Accepted flexibility instructions → the planner (all of them) and the control loop (the
    first cap or export floor to come, as its live target).

    `baseline_w(instruction)` gives the event's baseline net import [W] for live tracking
    (FlexService.live_baseline_w); when it cannot be computed (no history yet) the cap itself
    is used and the log says so, so delivery is tracked against the cap.
    """

    def __init__(
        self,
        clock: Clock,
        planner: FlexPlanner | None,
        control: FlexControl | None,
        baseline_w: Callable[[FlexInstruction], Awaitable[float]] | None = None,
    ) -> None:
        self._clock = clock
        self._planner = planner
        self._control = control
        self._baseline_w = baseline_w

    async def on_change(self, instructions: Sequence[FlexInstruction]) -> None:
        if self._planner is not None:
            self._planner.set_flex_instructions(instructions)
        if self._control is None:
            return
        live = live_candidate(instructions, self._clock.now())
        if live is not None:
            live = live.with_baseline(await self._live_baseline_w(live))
        self._control.set_flex_event(live)

    async def _live_baseline_w(self, live: FlexInstruction) -> float:
        baseline = math.nan
        if self._baseline_w is not None:
            try:
                baseline = await self._baseline_w(live)
            except HemsError as exc:
                log.warning("flex baseline unavailable", event_id=live.event_id, error=str(exc))
        if math.isfinite(baseline):
            return baseline
        log.warning(
            "flex baseline unknown; delivery tracked against the cap", event_id=live.event_id
        )
        limit = live.live_limit_w
        assert limit is not None  # live_candidate picks caps and export floors only
        return limit if live.import_cap_w is not None else -limit


async def answer_event(flex: FlexService | None, event: Event) -> EventDecision:
    """The uplink's event handler: the wire event → flex's input, flex's answer → the wire.

    The modification rule is flex's (its event book); an outdated answer becomes the uplink's
    outdated_modification rejection.
    """
    if flex is None:
        return EventDecision(status="opted_out", reason="flexibility is not enabled here")
    try:
        received = FlexEvent.from_mapping(event.model_dump())
    except EventError as exc:
        return EventDecision(status="opted_out", reason=str(exc))
    answer = await flex.on_event(received)
    if answer.status == "outdated":
        return EventDecision(status="outdated", stored_modification=answer.stored_modification)
    return EventDecision(status=answer.status, reason=answer.reason, clamped=answer.clamped)


class EnvelopePlanner(Protocol):
    def set_envelope(self, envelope: Envelope | None) -> None: ...


class EnvelopeLink:
    """down/envelope → the planner's per-slot grid caps (never looser than the site's)."""

    def __init__(self, planner: EnvelopePlanner | None) -> None:
        self._planner = planner
        self.last: OperatingEnvelope | None = None

    async def on_envelope(self, envelope: OperatingEnvelope) -> None:
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
