"""FlexService: answers events, keeps the event book, sends offers and delivery reports."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from hems.core.clock import Clock
from hems.core.flex import FlexInstruction
from hems.core.tasks import raise_if_cancelling
from hems.flex.baselines import check_window
from hems.flex.calendar import WorkingDayCalendar
from hems.flex.config import FlexConfig
from hems.flex.events import (
    Answer,
    Decision,
    EstimateFn,
    EventBook,
    EventError,
    FlexEvent,
    OfferPeriod,
    OfferSolver,
    build_offers,
    evaluate,
    instruction_for,
    maybe_await,
    supersedes,
)
from hems.flex.meterdata import MeterData
from hems.flex.presets import method as preset_method
from hems.flex.report import DeliveryReport, report_for_event
from hems.store.db import Database
from hems.store.intervals import load_intervals
from hems.store.rollup import periods_between, settlement_periods
from hems.store.timeseries import to_ms

log = structlog.get_logger(__name__)

SendFn = Callable[[str, dict[str, Any]], Awaitable[Any] | Any]
# () -> (problem, expected import per period start [W]) or None when no plan is available
OfferSource = Callable[[], Awaitable[tuple[Any, dict[datetime, float]] | None]]
InstructionsFn = Callable[[list[FlexInstruction]], Awaitable[None] | None]


class FlexService:
    """The flex area's entry class.

    - `await on_event(event)`: decides, stores and returns an `Answer` (accepted / opted_out,
      reason, clamped; outdated when the modification is not above the stored one).
    - `await active_events()`: accepted events still to come; `instructions()`: the same as
      `FlexInstruction`s, which `on_change` receives after every change.
    - `await live_baseline_w(instruction)`: its baseline net import [W] for live tracking.
    - `run()`: after each accepted event ends and its meter data are in `meter_intervals`,
      builds the delivery report and hands it to `send("delivery_report", payload)`; when
      offers are enabled, sends `send("flex_offer", payload)` every `offers.interval_s`.
    """

    def __init__(
        self,
        cfg: FlexConfig,
        site_tz: str | ZoneInfo,
        db: Database,
        clock: Clock,
        send: SendFn,
        *,
        import_limit_w: float,
        export_limit_w: float,
        estimate: EstimateFn | None = None,
        on_change: InstructionsFn | None = None,
        offer_source: OfferSource | None = None,
        offer_solver: OfferSolver[Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.tz = site_tz if isinstance(site_tz, ZoneInfo) else ZoneInfo(site_tz)
        self.book = EventBook(db)
        self._db = db
        self._clock = clock
        self._send = send
        self._import_limit_w = import_limit_w
        self._export_limit_w = export_limit_w
        self._estimate = estimate
        self._on_change = on_change
        self._offer_source = offer_source
        self._offer_solver = offer_solver
        self.calendar: WorkingDayCalendar = cfg.calendar.calendar(cfg.baseline_method)
        self.method = preset_method(
            cfg.baseline_method,
            adjustment=cfg.baseline_adjustment,
            settlement=None if cfg.settlement == "preset" else cfg.settlement,
        )
        self._meter_table_missing = False

    # -- events ---------------------------------------------------------------------------

    async def decide(self, event: FlexEvent) -> Decision:
        """Run the policy (with the planner's estimate when one is wired). Does not store."""
        feasibility = None
        if self._estimate is not None and not event.cancelled:
            try:
                feasibility = await maybe_await(self._estimate(event))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the estimate is advisory; say so and go on
                log.warning("flex estimate failed", event_id=event.event_id, error=str(exc))
        return evaluate(
            event,
            self.cfg.policy,
            now=self._clock.now(),
            import_limit_w=self._import_limit_w,
            export_limit_w=self._export_limit_w,
            feasibility=feasibility,
        )

    async def on_event(self, ev: FlexEvent) -> Answer:
        """Decide and store one event (as received); the caller answers the aggregator."""
        if not self.cfg.enabled:
            return Answer(status="opted_out", reason="flexibility is not enabled")
        stored = await self.book.stored_modification(ev.event_id)
        if not supersedes(ev.modification_number, stored):
            return self._outdated(ev, stored)
        decision = await self.decide(ev)
        if not await self.book.record(ev, decision, self._clock.now()):
            # Another modification was stored while the policy ran.
            return self._outdated(ev, await self.book.stored_modification(ev.event_id))
        log.info(
            "flex event decided",
            event_id=ev.event_id,
            modification=ev.modification_number,
            status=decision.status,
            reason=decision.reason,
        )
        await self._changed()
        return Answer(
            status=decision.status, reason=decision.reason, clamped=decision.clamped or None
        )

    @staticmethod
    def _outdated(ev: FlexEvent, stored: int | None) -> Answer:
        return Answer(
            status="outdated",
            reason=f"modification {ev.modification_number} is not above {stored}",
            stored_modification=stored,
        )

    async def can_opt_out(self, event_id: str) -> str | None:
        """Why the owner may not opt out of `event_id` now, or None if they may."""
        policy = self.cfg.policy
        stored = await self.book.current(event_id)
        now = self._clock.now()
        if stored is None or stored.status != "accepted":
            return "not an accepted event"
        if not policy.owner_may_opt_out:
            return "the flexibility policy does not allow opting out after accepting"
        if stored.event.end <= now:
            return "the event has ended"
        if policy.owner_opt_out_before_s and (
            now > stored.event.start - timedelta(seconds=policy.owner_opt_out_before_s)
        ):
            return f"less than {policy.owner_opt_out_before_s:g} s before the start"
        return None

    async def opt_out(self, event_id: str) -> Answer:
        """The owner opts out of an accepted event: the aggregator is told (event_response,
        opted_out, through the outbox), the plan and the live target drop it. Raises
        EventError naming the reason when the policy does not allow it."""
        why = await self.can_opt_out(event_id)
        if why is not None:
            raise EventError(f"event_id: cannot opt out of {event_id!r}: {why}")
        stored = await self.book.current(event_id)
        assert stored is not None
        modification = stored.event.modification_number
        if not await self.book.opt_out(event_id, modification, "the owner opted out"):
            raise EventError(f"event_id: {event_id!r} changed meanwhile; reload")
        log.warning(
            "flex event opted out by the owner", event_id=event_id, modification=modification
        )
        await maybe_await(
            self._send(
                "event_response",
                {
                    "ref_id": None,
                    "ref_type": "event",
                    "event_id": event_id,
                    "modification_number": modification,
                    "status": "opted_out",
                    "detail": "the owner opted out after accepting",
                },
            )
        )
        await self._changed()
        return Answer(status="opted_out", reason="the owner opted out")

    async def active_events(self) -> list[FlexEvent]:
        return await self.book.accepted(ending_after=self._clock.now())

    async def instructions(self) -> list[FlexInstruction]:
        """The accepted events still to come as instructions, in start order."""
        out = (instruction_for(e) for e in await self.active_events())
        return [i for i in out if i is not None]

    async def live_baseline_w(self, instruction: FlexInstruction) -> float:
        """Mean unadjusted baseline of the event's periods [W] for live tracking; NaN when it
        cannot be computed (no history yet, or the event is no longer stored)."""
        stored = await self.book.get(instruction.event_id, instruction.modification)
        if stored is None:
            return math.nan
        event = stored.event
        report, _ = await self.build_report(event)
        kwh = [p.unadjusted_baseline_kwh for p in report.periods]
        known = [k for k in kwh if k is not None and math.isfinite(k)]
        if not known:
            return math.nan
        period_h = (event.end - event.start).total_seconds() / 3600 / max(1, len(kwh))
        return sum(known) / len(known) / period_h * 1000

    async def _changed(self) -> None:
        if self._on_change is not None:
            await maybe_await(self._on_change(await self.instructions()))

    # -- reports --------------------------------------------------------------------------

    async def meter_data(self, start: datetime, end: datetime) -> MeterData:
        """Half-hourly intervals of the configured meter in [start, end) from `meter_intervals`
        (migration 0002). 'missing' rows are gaps; see `MeterData.from_rows`."""
        if self.cfg.meter_device_id is None:
            return MeterData()

        try:
            intervals = await load_intervals(
                self._db, self.cfg.meter_device_id, to_ms(start), to_ms(end)
            )
        except sqlite3.OperationalError as exc:
            if not self._meter_table_missing:
                log.error("flex cannot read meter intervals", error=str(exc))
            self._meter_table_missing = True
            return MeterData()
        if self._meter_table_missing:
            log.info("flex meter intervals readable again")
        self._meter_table_missing = False
        rows = [(i.period_start_ms, i.import_wh, i.export_wh, i.quality) for i in intervals]
        return MeterData.from_rows(rows, use_estimated=self.cfg.use_estimated_intervals)

    async def build_report(self, ev: FlexEvent) -> tuple[DeliveryReport, bool]:
        """The report of one event and whether the event window's meter data are complete."""
        first_day = ev.start.astimezone(self.tz).date() - timedelta(
            days=self.method.lookback_days + 1
        )
        data = await self.meter_data(settlement_periods(first_day, self.tz)[0], ev.end)
        event_days = await self.book.event_days(self.tz, before=ev.start)
        # The calendar's first use per year asks the holidays package in a child process.
        years = range(first_day.year, ev.end.astimezone(self.tz).year + 1)
        await asyncio.to_thread(self.calendar.warm, years)
        report = report_for_event(
            data, ev.start, ev.end, self.method, self.calendar, self.tz,
            quantity=self.cfg.quantity, direction=ev.kind, event_days=event_days,
            event_id=ev.event_id, modification_number=ev.modification_number,
        )  # fmt: skip
        complete = all(p.metered_kwh is not None for p in report.periods)
        return report, complete

    async def window_complete(self, ev: FlexEvent) -> bool:
        """Whether every period of the event window has a meter value: the same test as
        `build_report`'s, on the window's rows only (not the whole look-back)."""
        check_window(ev.start, ev.end, self.method.period_s)
        series = (await self.meter_data(ev.start, ev.end)).series(self.cfg.quantity)
        periods = periods_between(ev.start, ev.end, self.method.period_s)
        return all(math.isfinite(series.get(t, math.nan)) for t in periods)

    async def report_due(self) -> int:
        """Build and send the reports that are due. Returns how many were sent."""
        now = self._clock.now()
        due = await self.book.due_for_report(
            ended_before=now - timedelta(seconds=self.cfg.report_delay_s)
        )
        sent = 0
        for stored in due:
            ev = stored.event
            give_up = now >= ev.end + timedelta(seconds=self.cfg.report_give_up_s)
            # Checked on the window alone: while the meter data are still out, each pass
            # would otherwise re-read the whole look-back and recompute the baseline.
            if not give_up and not await self.window_complete(ev):
                continue  # wait for the meter data to arrive
            report, complete = await self.build_report(ev)
            payload = report.payload()
            # Sent before it is marked reported: after a crash in between the report is sent
            # again (identical payload) rather than never.
            await maybe_await(self._send("delivery_report", payload))
            await self.book.save_report(ev, payload, report.method, now)
            log.info(
                "flex delivery report sent",
                event_id=ev.event_id,
                modification=ev.modification_number,
                delivered_kwh=report.total_delivered_kwh,
                complete=complete,
            )
            sent += 1
        return sent

    # -- offers ---------------------------------------------------------------------------

    async def send_offer(self) -> dict[str, Any] | None:
        """Compute and send one offer for the next `offers.horizon_h`. None if not possible."""
        solver = self._offer_solver
        if self._offer_source is None or solver is None:
            return None
        source = await self._offer_source()
        if source is None:
            return None
        problem, expected = source
        period = timedelta(seconds=self.method.period_s)
        now = self._clock.now()
        first = datetime.fromtimestamp(
            (int(now.timestamp()) // self.method.period_s + 1) * self.method.period_s, now.tzinfo
        )
        n = int(self.cfg.offers.horizon_h * 3600) // self.method.period_s
        periods = [(first + i * period, first + (i + 1) * period) for i in range(n)]
        sizes_w = self.cfg.offers.sizes_w

        def offers_now() -> list[OfferPeriod]:
            return build_offers(
                problem, expected, periods, solver.solve, sizes_w, solver.add_cap,
                add_floor=solver.add_floor,
            )  # fmt: skip

        offers = await asyncio.to_thread(offers_now)
        payload = {"offer_id": str(uuid.uuid4()), "periods": [o.to_json() for o in offers]}
        await maybe_await(self._send("flex_offer", payload))
        return payload

    async def run(self) -> None:
        """Until cancelled: send due reports (and offers) every `check_interval_s`."""
        next_offer = self._clock.monotonic()
        failing = False
        while True:
            raise_if_cancelling()
            try:
                await self.report_due()
                if self.cfg.offers.enabled and self._clock.monotonic() >= next_offer:
                    next_offer = self._clock.monotonic() + self.cfg.offers.interval_s
                    await self.send_offer()
                if failing:
                    log.info("flex service recovered")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the daemon up; log the transition once
                if not failing:
                    log.exception("flex service pass failed", error=str(exc))
                failing = True
            await self._clock.sleep(self.cfg.check_interval_s)
