"""The rolling-horizon planner: the one entry class of this area, `PlannerService`.

It replans at every slot boundary and whenever an input changes (an EV plugged in or its
target changed, new prices, a forecast off by more than a threshold, a flexibility event),
stores every plan with the full `Problem` that produced it, and publishes the plan to
subscribers (the control loop reads `current_plan`).

Time comes only from the injected clock. Tariff fetches follow each source's crontabs
(`fetch_cron`, in the site's zone): APScheduler's cron trigger computes the next fetch time
and the loop wakes for it on the injected clock, so the accelerated demo clock and the
tests drive them too.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import structlog

from hems.core.clock import Clock
from hems.core.flex import FlexInstruction
from hems.core.plan import Plan
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import Infeasible, PlanningError
from hems.planning.builder import Envelope, EnvelopeInterval, ProblemInputs, load_window, without
from hems.planning.builder import EvRequest as _EvRequest  # the name ev_plugged uses
from hems.planning.builder import build_problem as _build_problem
from hems.planning.config import PlannerConfig
from hems.planning.flex import PRICE_STEP_MIN, constraint_for, price_slots
from hems.planning.forecast import Forecast, Forecaster, SiteDevices, queue_prune_forecasts
from hems.planning.problem import FlexConstraint, Problem
from hems.planning.solver_process import optimise_in_child
from hems.planning.store import queue_prune_plans, save_plan
from hems.planning.tariffs import Tariff, build_tariff
from hems.planning.tariffs.fetch import FAR_PAST
from hems.store.db import Database

if TYPE_CHECKING:
    from hems.core.site import LimitsConfig, SiteConfig
    from hems.planning.result import Result

__all__ = ["Envelope", "EnvelopeInterval", "PlannerService", "load_window", "slot_floor"]


log = structlog.get_logger(__name__)
_PRUNE_EVERY = timedelta(hours=1)  # plans and forecasts are kept for days

PlanListener = Callable[[Plan], None]


def metered_run_min(
    before_wh: float | None, after_wh: float | None, power_w: float, step_min: int
) -> float | None:
    """Run time [min] of a load over one slot from its energy register at both ends, at its
    rated power, at most the slot; None when a register is unknown or went backwards (a
    meter reset: the slot cannot be measured)."""
    if before_wh is None or after_wh is None or after_wh < before_wh:
        return None
    return min(float(step_min), (after_wh - before_wh) / power_w * 60.0)


def slot_floor(t: datetime, step_min: int) -> datetime:
    """Start of the settlement period holding `t` (UTC; 15/30 min divide the hour)."""
    return t.replace(minute=t.minute - t.minute % step_min, second=0, microsecond=0)


class PlannerService:
    """Plans the site over a rolling horizon and publishes `Plan`s.

    Construct with the planner config, the site limits, the live state, the database and
    the clock; `http` is the shared httpx.AsyncClient (None = offline, fixed/TOU only).
    """

    def __init__(
        self,
        cfg: PlannerConfig,
        limits: LimitsConfig,
        state: SiteState,
        db: Database,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        *,
        site: SiteConfig | None = None,
        devices: SiteDevices | None = None,
        battery_to_ev: bool = True,
    ) -> None:
        self.cfg = cfg
        self.battery_to_ev = battery_to_ev
        self.limits = limits
        self.state = state
        self.db = db
        self.clock = clock
        self.http = http
        tz = site.timezone if site is not None else "Europe/London"
        self.zone = ZoneInfo(tz)
        self.tariff: Tariff = build_tariff(cfg.tariff, db=db, http=http, clock=clock, timezone=tz)
        self.forecaster = Forecaster(
            cfg.forecast,
            latitude=site.latitude if site is not None else 51.5,
            longitude=site.longitude if site is not None else -0.1,
            db=db,
            clock=clock,
            http=http,
            timezone=tz,
            devices=devices,  # None: taken from the state before each plan
        )
        self._explicit_devices = devices
        self._plan: Plan | None = None
        self._problem: Problem | None = None
        self._listeners: list[PlanListener] = []
        self._reasons: list[str] = []
        self._wake = asyncio.Event()
        self._events: dict[str, FlexConstraint] = {}  # by event id
        self._prices: dict[str, tuple[datetime, datetime]] = {}  # price events' windows
        self._envelope: Envelope | None = None
        self._evs: dict[str, _EvRequest] = {}
        self._load_done_min: dict[tuple[str, datetime], float] = {}
        # Each deferrable load's energy register at the last slot boundary [Wh] (None: unknown).
        self._load_energy_wh: dict[str, float | None] = {}
        self._last_plan_mono: float | None = None
        self._next_tariff_at: datetime | None = FAR_PAST  # None: the tariff fetches nothing
        self._tariff_version = -1
        self._pv_fc: Forecast | None = None
        self._load_fc: Forecast | None = None
        self._deviation_slot: datetime | None = None
        self._slot: datetime | None = None  # the slot the loop last saw
        self._pruned_at: datetime | None = None  # the plans' and forecasts' last retention
        # Batteries the last problem left out for an unknown SoC: replan once it is known,
        # not at the next slot boundary (the first plan often comes before the first poll).
        self._unplanned_batteries: set[str] = set()
        self.plans_made = 0
        # The last solve, for /metrics: when, the plan's status ("infeasible": no plan), seconds.
        self.last_solve: tuple[datetime, str, float | None] | None = None

    # -- public surface ------------------------------------------------------------------
    @property
    def current_plan(self) -> Plan | None:
        return self._plan

    @property
    def last_problem(self) -> Problem | None:
        return self._problem

    @property
    def next_tariff_fetch(self) -> datetime | None:
        """When the loop next fetches prices (the sources' crontabs); None: never."""
        return self._next_tariff_at

    def subscribe(self, listener: PlanListener) -> None:
        """`listener(plan)` is called (synchronously) for every new plan; it must only enqueue."""
        self._listeners.append(listener)

    def request_replan(self, reason: str) -> None:
        self._reasons.append(reason)
        self._wake.set()

    def set_flex_instructions(self, instructions: Sequence[FlexInstruction]) -> None:
        """The accepted flexibility instructions, all of them: what is missing is withdrawn.

        One with a power instruction becomes a constraint of every plan (see
        `hems.planning.flex.constraint_for`); a price-only one becomes the aggregator's import
        price in its window, which the plan then answers as it answers any price.
        """
        constraints: dict[str, FlexConstraint] = {}
        prices: dict[str, tuple[datetime, datetime]] = {}
        for ins in instructions:
            constraint = constraint_for(ins)
            if constraint is not None:
                constraints[ins.event_id] = constraint
                self.request_replan(f"flex event {ins.event_id}")
            elif ins.price_per_kwh is not None:
                self.inject_price_signal(ins.start, PRICE_STEP_MIN, price_slots(ins))
                prices[ins.event_id] = (ins.start, ins.end)
        for gone in [e for e in self._events if e not in constraints]:
            self.request_replan(f"flex event {gone} removed")
        for gone, (start, end) in self._prices.items():
            if gone not in prices:
                self.clear_price_signal(start, end)
        # Known events keep their place, so a plan's events[i] stay put as others come and go.
        kept = {e: constraints[e] for e in self._events if e in constraints}
        self._events = kept | constraints
        self._prices = prices

    def set_envelope(self, envelope: Envelope | None) -> None:
        """An aggregator's operating envelope: grid caps per interval, within the site's own."""
        self._envelope = envelope
        self.request_replan("aggregator envelope changed")

    def ev_plugged(
        self,
        charger_id: str,
        *,
        energy_wh: float | None = None,
        departure: datetime | None = None,
        arrival: datetime | None = None,
    ) -> None:
        """An EV was plugged in (or its target/departure changed); `arrival`: when it was
        plugged in, if known (a session resumed after a restart)."""
        prev = self._evs.get(charger_id)
        if arrival is None:
            arrival = prev.arrival if prev else self.clock.now()
        self._evs[charger_id] = _EvRequest(arrival, departure, energy_wh)
        self.request_replan(f"ev {charger_id} plugged/target changed")

    def ev_unplugged(self, charger_id: str) -> None:
        if self._evs.pop(charger_id, None) is not None:
            self.request_replan(f"ev {charger_id} unplugged")

    def inject_price_signal(
        self,
        start: datetime,
        step_min: int,
        import_per_kwh: list[float],
        export_per_kwh: list[float] | None = None,
    ) -> None:
        """An aggregator's price series; overrides the tariff where given."""
        self.tariff.inject_signal(start, step_min, import_per_kwh, export_per_kwh)
        self.request_replan("aggregator price signal")

    def clear_price_signal(self, start: datetime, end: datetime) -> None:
        self.tariff.clear_signal(start, end)
        self.request_replan("aggregator price signal withdrawn")

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        if not self.cfg.enabled:
            log.info("planner disabled")
            return
        await self.tariff.load_cache()
        self.request_replan("start")
        while True:
            raise_if_cancelling()
            self._check_slot_boundary()
            await self._maybe_refresh_tariff()
            self._check_forecast_deviation()
            self._check_batteries_known()
            if self._reasons and self._debounced():
                reasons, self._reasons = self._reasons, []
                await self.plan_once(", ".join(dict.fromkeys(reasons)))
            await self._sleep_until_due()

    def _check_slot_boundary(self) -> None:
        slot = slot_floor(self.clock.now(), self.cfg.step_min)
        if self._slot is not None and slot > self._slot:
            self._account_load_runs(self._slot)
            if self.cfg.replan.on_slot_boundary:
                self.request_replan("slot boundary")
        elif self._slot is None:
            self._read_load_registers()
        self._slot = slot

    def _read_load_registers(self) -> dict[str, float | None]:
        """Each load's energy register now (fresh, else None); kept for the next boundary.
        Returns the previous values."""
        before = dict(self._load_energy_wh)
        for d in self.cfg.loads:
            self._load_energy_wh[d.device_id] = self.state.fresh_value(
                d.device_id, Quantity.ENERGY_IMPORT_WH
            )
        return before

    def _debounced(self) -> bool:
        if self._last_plan_mono is None:
            return True
        return self.clock.monotonic() - self._last_plan_mono >= self.cfg.replan.min_interval_s

    async def _sleep_until_due(self) -> None:
        if self._reasons and self._debounced():
            return  # asked for while the last plan was made: its wake-up is cleared below
        now = self.clock.now()
        if self._slot is not None and slot_floor(now, self.cfg.step_min) > self._slot:
            return  # time moved past a boundary while we planned: handle it first
        step = timedelta(minutes=self.cfg.step_min)
        to_boundary = (slot_floor(now, self.cfg.step_min) + step - now).total_seconds()
        wait_s = min(self.cfg.replan.check_interval_s, max(to_boundary, 0.0))
        if self._next_tariff_at is not None:  # wake for the next scheduled fetch
            wait_s = min(wait_s, max((self._next_tariff_at - now).total_seconds(), 0.0))
        if self._reasons and not self._debounced():
            assert self._last_plan_mono is not None
            left = self.cfg.replan.min_interval_s - (self.clock.monotonic() - self._last_plan_mono)
            wait_s = min(wait_s, max(left, 0.0))
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(wait_s))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)

    async def _maybe_refresh_tariff(self) -> None:
        now = self.clock.now()
        if self._next_tariff_at is not None and now >= self._next_tariff_at:
            first = self._next_tariff_at == FAR_PAST
            await self.tariff.refresh(force=first)  # at start every source; then those due
            self._next_tariff_at = self.tariff.next_fetch_after(now)
        if self.tariff.version != self._tariff_version:
            if self._tariff_version >= 0:
                self.request_replan("new prices")
            self._tariff_version = self.tariff.version

    def _check_batteries_known(self) -> None:
        known = {
            d
            for d in self._unplanned_batteries
            if self.state.fresh_value(d, Quantity.SOC_PCT) is not None
        }
        if known:
            self._unplanned_batteries -= known
            self.request_replan(f"battery {', '.join(sorted(known))} SoC known")

    def _check_forecast_deviation(self) -> None:
        """Replan (once per slot) when measured PV or load is far off the forecast."""
        if self._pv_fc is None or self._load_fc is None:
            return
        now = self.clock.now()
        slot = slot_floor(now, self.cfg.step_min)
        if slot == self._deviation_slot:
            return
        i = int((slot - self._pv_fc.start).total_seconds() // (self.cfg.step_min * 60))
        if not 0 <= i < len(self._pv_fc.values_w):
            return
        r = self.cfg.replan
        pv = self.state.role_total(Role.PV)
        grid = self.state.role_total(Role.GRID)
        measured: list[tuple[str, float | None, float]] = [("pv", pv, self._pv_fc.values_w[i])]
        if grid is not None:
            load = grid + (pv or 0.0)
            load -= self.state.role_total(Role.BATTERY) or 0.0
            load -= self.state.role_total(Role.EV) or 0.0
            measured.append(("load", load, self._load_fc.values_w[i]))
        for name, value, forecast in measured:
            if value is None or math.isnan(forecast):
                continue
            off = abs(value - forecast)
            if off > max(r.forecast_error_fraction * abs(forecast), r.forecast_error_min_w):
                self._deviation_slot = slot
                self.request_replan(f"{name} forecast off by {off:.0f} W")
                return

    def _account_load_runs(self, finished_slot: datetime) -> None:
        """Count the run time each deferrable load had in the slot just ended: from its
        metered energy (what it really ran: a dishwasher that stopped early, a load the
        owner switched by hand), else, without a fresh register at both ends of the slot,
        what the plan gave it."""
        before = self._read_load_registers()
        slot = self._plan.slot_at(finished_slot) if self._plan is not None else None
        for d in self.cfg.loads:
            minutes = metered_run_min(
                before.get(d.device_id), self._load_energy_wh.get(d.device_id), d.power_w,
                self.cfg.step_min,
            )  # fmt: skip
            if minutes is None:
                planned = slot is not None and slot.switches.get(d.device_id, False)
                minutes = float(self.cfg.step_min) if planned else 0.0
            if minutes <= 0:
                continue
            start, _end = load_window(d, finished_slot, self.zone)
            key = (d.device_id, start)
            self._load_done_min[key] = self._load_done_min.get(key, 0.0) + minutes

    # -- one plan ------------------------------------------------------------------------
    async def plan_once(self, reason: str) -> Plan | None:
        """Build the problem from the current inputs, solve it (in the solver's child process,
        waited on in a thread: hems.planning.solver_process), store, publish."""
        self._last_plan_mono = self.clock.monotonic()
        now = self.clock.now()
        start = slot_floor(now, self.cfg.step_min)
        n = int(self.cfg.horizon_h * 60 // self.cfg.step_min)
        if self._explicit_devices is None:  # devices register after we are built
            self.forecaster.devices = self._devices_from_state()
        self._pv_fc, self._load_fc = await self.forecaster.forecasts(start, n, self.cfg.step_min)
        problem, notes = self.build_problem(start, n)
        dropped: list[str] = []
        result: Result | None = None
        error: str | None = None
        for _attempt in range(4):
            try:
                result = await asyncio.to_thread(
                    optimise_in_child,
                    problem,
                    time_limit_s=self.cfg.time_limit_s,
                    mip_rel_gap=self.cfg.mip_rel_gap,
                    created_at=now,
                    warm_start=self._plan,  # the last plan's choices, tried first
                )
                break
            except Infeasible as exc:
                group = exc.field.split("[")[0].split(".")[0]
                if group not in ("loads", "events", "evs") or not getattr(problem, group):
                    error = str(exc)
                    break
                # Keep planning without the impossible part; say so on the plan.
                dropped.append(f"{exc} (left out of this plan)")
                problem = without(problem, exc.field)
            except PlanningError as exc:
                error = str(exc)
                break
        self._problem = problem
        if result is None:
            error = error or "no plan"
            log.error("planning failed", reason=reason, error=error)
            self.last_solve = (now, "infeasible", None)
            await self._store(now, reason, "infeasible", problem, None, None, [error])
            return None
        plan = result.plan
        extra = tuple(notes + dropped + self._accuracy_notes())
        if extra:
            plan = Plan(plan.created_at, plan.slots, plan.cost, plan.status, extra + plan.notes)
        self.last_solve = (now, plan.status, result.solve_time_s)
        await self._store(now, reason, plan.status, problem, plan, result.solve_time_s, None)
        self._plan = plan
        self.plans_made += 1
        log.info(
            "plan",
            reason=reason,
            status=plan.status,
            cost=round(plan.cost, 4),
            solve_ms=round(result.solve_time_s * 1000, 1),
            notes=len(plan.notes),
        )
        for listener in self._listeners:
            listener(plan)
        return plan

    def forecast_status(self) -> dict[str, Any]:
        """The forecasts' quality as plain JSON (for the API and the page): the PV
        calibration per local hour of day (None before the first PV forecast with PV meters)
        and the accuracy per kind (see `hems.planning.forecast_quality.Accuracy.to_dict`)."""
        f = self.forecaster
        return {
            "pv_calibration": None if f.calibration is None else f.calibration.to_dict(),
            "accuracy": {kind: a.to_dict() for kind, a in sorted(f.accuracy.items())},
        }

    def _accuracy_notes(self) -> list[str]:
        return [
            self.forecaster.accuracy[k].note()
            for k in ("pv", "load")
            if k in self.forecaster.accuracy
        ]

    def build_problem(self, start: datetime, n: int) -> tuple[Problem, list[str]]:
        """The `Problem` for now: the tariff, the latest forecasts, the live state and the
        requests gathered into `ProblemInputs` for the pure builder (hems.planning.builder)."""
        assert self._pv_fc is not None and self._load_fc is not None
        cfg, fresh = self.cfg, self.state.fresh_value
        # Aggregator price signals included; with a carbon weight, import carries it too.
        prices = self.tariff.objective_prices(start, n, cfg.step_min)
        # Flexibility: the accepted events still to come become constraints of the problem.
        events = [ev for ev in self._events.values() if ev.end > start]
        soc = {b.device_id: fresh(b.device_id, Quantity.SOC_PCT) for b in cfg.batteries}
        self._unplanned_batteries = {d for d, v in soc.items() if v is None}
        inputs = ProblemInputs(
            now=self.clock.now(),
            start=start,
            n_slots=n,
            step_min=cfg.step_min,
            import_price_per_kwh=tuple(prices.import_per_kwh),
            export_price_per_kwh=tuple(prices.export_per_kwh),
            pv_w=tuple(self._pv_fc.values_w),
            load_w=tuple(self._load_fc.values_w),
            input_notes=(*prices.notes, *self._pv_fc.flags, *self._load_fc.flags),
            limits=self.limits,
            zone=self.zone,
            batteries=cfg.batteries,
            battery_soc_pct=soc,
            evs=cfg.evs,
            ev_requests=dict(self._evs),
            ev_session_energy_wh={
                e.charger_id: fresh(e.charger_id, Quantity.SESSION_ENERGY_WH) for e in cfg.evs
            },
            loads=cfg.loads,
            load_done_min=dict(self._load_done_min),
            envelope=self._envelope,
            events=tuple(events),
            battery_to_ev=self.battery_to_ev,
            time_share=cfg.time_share,
            min_phase_s=cfg.min_phase_s,
            soc_targets=tuple(cfg.soc_targets),
        )
        return _build_problem(inputs)

    async def _store(
        self,
        now: datetime,
        reason: str,
        status: str,
        problem: Problem,
        plan: Plan | None,
        solve_time_s: float | None,
        notes: list[str] | None,
    ) -> None:
        await save_plan(
            self.db,
            created_at=now,
            reason=reason,
            status=status,
            problem=problem,
            plan=plan,
            solve_time_s=solve_time_s,
            notes=notes,
        )
        # ~100 plans a day with their inputs: keep the SD card from filling up. Each table's
        # owner deletes its own rows, once an hour and with the store's next batch: a delete
        # committed on its own would take the plan and forecasts just queued along at once.
        if self._pruned_at is not None and abs(now - self._pruned_at) < _PRUNE_EVERY:
            return
        self._pruned_at = now
        before = now - timedelta(days=self.cfg.retention_days)
        queue_prune_plans(self.db, before)
        queue_prune_forecasts(self.db, before)

    def _devices_from_state(self) -> SiteDevices:
        roles = self.state.devices
        planned = {ld.device_id for ld in self.cfg.loads}
        return SiteDevices(
            grid=[d for d, r in roles.items() if r is Role.GRID],
            pv=[d for d, r in roles.items() if r is Role.PV],
            battery=[d for d, r in roles.items() if r is Role.BATTERY],
            ev=[d for d, r in roles.items() if r is Role.EV],
            deferrable=[d for d, r in roles.items() if r is Role.LOAD and d in planned],
        )
