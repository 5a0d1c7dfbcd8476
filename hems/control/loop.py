"""The control loop: snapshot, strategies, guard, shaped writes, verification, every cycle.

One cycle (`step`):
1. snapshot  the process image from SiteState (+ charger states and load on/off reports,
             asked concurrently under a time budget);
             implausible readings are dropped for the cycle, a duplicate grid meter ignored.
2. compute   strategies (plan slot, self-consumption, PV surplus, overrides, flex event),
             rate limits, then the safety guard. Only the guard's output reaches step 3.
3. write     only what changed beyond a deadband (or what the guard changed, or what is due
             for a refresh inside the device-side revert timeout); each write is a task owned
             by the loop under its own timeout, and the cycle waits no longer than its budget.
4. verify    commands older than verify_after_s are checked against the readings (a load
             against its own is_on() report first); a device that keeps ignoring them is
             flagged in `status()`.
The systemd watchdog callback is fed only after a healthy cycle.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices, response_delay_s
from hems.control.guard import FUSE_DEADLINE_S, ExcursionTracker, Guarded, apply_guard
from hems.control.model import (
    BatteryCommand,
    BatteryImage,
    Command,
    EvCommand,
    EvImage,
    GridImage,
    Intervention,
    LoadCommand,
    LoadImage,
    ProcessImage,
    PvCommand,
    PvImage,
    SiteSpec,
)
from hems.control.strategies import (
    EvHysteresis,
    EvSession,
    Override,
    changed,
    ev_session_done,
    propose,
    ramp,
)
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import Clock
from hems.core.flex import LIVE_KINDS, FlexInstruction
from hems.core.plan import Plan, PlanSlot
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import BadValue, DeviceRejected
from hems.store.db import Database
from hems.store.timeseries import to_ms

log = structlog.get_logger(__name__)

_PHASE_POWER = (Quantity.POWER_L1_W, Quantity.POWER_L2_W, Quantity.POWER_L3_W)
_PHASE_CURRENT = (Quantity.CURRENT_L1_A, Quantity.CURRENT_L2_A, Quantity.CURRENT_L3_A)
_MAX_QUEUED_ROWS = 10000


@dataclass(slots=True)
class DeviceStatus:
    """What the loop knows about one device's commands; shown by `status()`."""

    last_written: Command | None = None
    written_at_s: float = -math.inf
    wanted: Command | None = None
    write_error: str | None = None
    failed_writes: int = 0
    retry_at_s: float = -math.inf
    misses: int = 0
    flagged: bool = False  # ignores commands
    verified: bool | None = None
    stale: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": None if self.last_written is None else self.last_written.values(),
            "wanted": None if self.wanted is None else self.wanted.values(),
            "write_error": self.write_error,
            "ignores_commands": self.flagged,
            "verified": self.verified,
            "stale": self.stale,
        }


@dataclass(slots=True)
class _FlexProgress:
    event: FlexInstruction
    baseline_w: float  # the event's, checked finite
    delivered_wh: float = 0.0
    last_s: float | None = None
    delivered_w: float | None = None


@dataclass(slots=True)
class _Stats:
    cycles: int = 0
    overruns: int = 0
    woken: int = 0  # cycles run early because a reading broke a limit
    errors: int = 0
    last_cycle_ms: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    healthy: bool = False


class ControlLoop:
    """Runs the control cycle at a fixed cadence until cancelled."""

    def __init__(
        self,
        cfg: ControlConfig,
        limits: LimitsConfig,
        state: SiteState,
        devices: ControlledDevices,
        clock: Clock,
        plan_source: Callable[[], Plan | None],
        db: Database | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> None:
        self._cfg = cfg
        self._limits = limits
        self._state = state
        self._devices = devices
        self._clock = clock
        self._plan_source = plan_source
        self._db = db
        self._watchdog = watchdog
        self._spec: SiteSpec = devices.spec()
        self._status: dict[str, DeviceStatus] = {d: DeviceStatus() for d in devices}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._ev_state: dict[str, EvState | None] = {}
        self._load_on: dict[str, bool | None] = {}  # what each load reports (is_on)
        self._probes: dict[str, asyncio.Task[Any]] = {}  # state / is_on calls in flight
        self._ev_memory: dict[str, EvHysteresis] = {}
        self._overrides: dict[str, Override] = {}
        self._sessions: dict[str, EvSession] = {}
        self._flex: _FlexProgress | None = None
        self._accepted: dict[tuple[str, Quantity], float] = {}
        self._suspect: dict[tuple[str, Quantity], float] = {}
        self._active: dict[tuple[str, str], Intervention] = {}  # (rule, device) -> latest
        self._problems: set[str] = set()  # log-once keys for bad input transitions
        self._recent: deque[dict[str, Any]] = deque(maxlen=500)
        self._rows: list[tuple[Any, ...]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._fuse = ExcursionTracker(FUSE_DEADLINE_S, FUSE_DEADLINE_S)
        self._export = ExcursionTracker(cfg.g100.correct_within_s, cfg.g100.max_excursion_s)
        self._stats = _Stats()
        self._emitted = 0
        self._restore: set[str] = set()  # loads the guard switched off unasked
        self._wake = asyncio.Event()
        state.add_listener(self._on_readings)
        self._last_result_pred_w: float | None = None
        unknown = sorted(set(cfg.devices) - set(devices))
        if unknown:
            log.warning(
                "devices[]: tuning given for devices that cannot be controlled", devices=unknown
            )

    # -- public API ------------------------------------------------------------------------
    async def run(self) -> None:
        cycle_s = self._cfg.cycle_s
        next_s = self._clock.monotonic()
        try:
            while True:
                started_s = self._clock.monotonic()
                await self.step()
                raise_if_cancelling()
                next_s += cycle_s
                now_s = self._clock.monotonic()
                if now_s > next_s:
                    # Overran: keep the cadence, skip the missed ticks rather than bunch them.
                    self._stats.overruns += 1
                    next_s += math.ceil((now_s - next_s) / cycle_s) * cycle_s
                if await self._sleep_or_wake(next_s - now_s):
                    self._stats.woken += 1
                    # At most five cycles per period however fast readings arrive.
                    gap_s = cycle_s / 5 - (self._clock.monotonic() - started_s)
                    if gap_s > 0:
                        await self._clock.sleep(gap_s)
                    next_s = self._clock.monotonic()  # the cadence restarts from this cycle
        finally:
            await self._shutdown()

    async def _sleep_or_wake(self, delay_s: float) -> bool:
        """Sleep until the next tick, or less if a reading shows a limit broken now.

        Returns True if woken early. The meter's own latency is the floor of the fuse
        reaction time; waiting for the next tick on top of it is not necessary.
        """
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay_s))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
        return waker in done and sleeper not in done

    def _on_readings(self, batch: list[Reading]) -> None:
        """SiteState listener (synchronous, must only flag): a fresh grid reading over the
        fuse or the export limit wakes the loop at once."""
        limit_w = self._limits.import_limit_w
        phase_limit_w = self._limits.fuse_a * self._limits.voltage_v
        roles = self._state.devices  # a copy: take it once per batch, not per reading
        for r in batch:
            if roles.get(r.device_id) is not Role.GRID:
                continue
            if r.quantity is Quantity.POWER_W and (
                r.value > limit_w or -r.value > self._limits.export_limit_w
            ):
                self._wake.set()
            elif r.quantity in _PHASE_POWER and r.value > phase_limit_w:
                self._wake.set()

    async def step(self) -> None:
        """Run exactly one cycle. Never raises for device or input problems."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        healthy = True
        try:
            image = await self._snapshot()
            self._track_limits(image)  # first: the guard escalates on persisting excursions
            t1 = loop.time()
            guarded, interventions = self._compute(image)
            t2 = loop.time()
            self._record(image, interventions)
            await self._write(image, guarded)
            t3 = loop.time()
            self._verify(image)
            self._track_flex(image)
            self._stats.stage_ms = {
                "snapshot": (t1 - t0) * 1000,
                "compute": (t2 - t1) * 1000,
                "write": (t3 - t2) * 1000,
            }
            if t2 - t1 > self._cfg.budgets.compute_s:
                self._problem("budget", "control compute over budget", ms=round((t2 - t1) * 1e3))
            else:
                self._clear_problem("budget", "control compute within budget again")
            self._clear_problem("cycle", "control cycle works again")
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the safety loop; the watchdog sees it
            healthy = False
            self._stats.errors += 1
            if "cycle" not in self._problems:
                self._problems.add("cycle")
                log.exception("control cycle failed")
        elapsed_s = loop.time() - t0
        self._stats.cycles += 1
        self._stats.last_cycle_ms = elapsed_s * 1000
        healthy = healthy and elapsed_s <= self._cfg.cycle_s
        self._stats.healthy = healthy
        if healthy and self._watchdog is not None:
            self._watchdog()
        self._maybe_flush()

    def set_override(self, device_id: str, target: float | bool, expires_at: datetime) -> None:
        """Manual target until `expires_at`; still subject to the safety guard.

        Raises BadValue naming the device and the reason if the target is out of range.
        """
        now = self._clock.now()
        spec = self._spec
        if device_id not in self._devices:
            raise BadValue(device_id, "override: no such controllable device")
        if expires_at.tzinfo is None:
            raise BadValue(device_id, "override: expires_at must be timezone-aware")
        horizon_s = (expires_at - now).total_seconds()
        if horizon_s <= 0:
            raise BadValue(device_id, "override: expires_at is in the past")
        if horizon_s > self._cfg.override_max_s:
            raise BadValue(
                device_id, f"override: expiry more than {self._cfg.override_max_s:.0f} s ahead"
            )
        if device_id in spec.loads:
            if not isinstance(target, bool):
                raise BadValue(device_id, "override: a switchable load takes true or false")
        else:
            if isinstance(target, bool) or not isinstance(target, int | float):
                raise BadValue(device_id, "override: target must be a number")
            if not math.isfinite(target):
                raise BadValue(device_id, "override: target must be finite")
            lo, hi, unit = self._override_range(device_id)
            if not lo <= target <= hi:
                raise BadValue(
                    device_id, f"override: target {target:g} {unit} outside {lo:g}..{hi:g} {unit}"
                )
        self._overrides[device_id] = Override(device_id, target, expires_at)
        log.info("override set", device=device_id, target=target, expires_at=expires_at.isoformat())

    def clear_override(self, device_id: str) -> None:
        if self._overrides.pop(device_id, None) is not None:
            log.info("override cleared", device=device_id)

    def set_ev_session(self, device_id: str, target_energy_wh: float, departure: datetime) -> None:
        """The EV on `device_id` wants `target_energy_wh` more by `departure`."""
        if device_id not in self._spec.chargers:
            raise BadValue(device_id, "ev session: not a charger")
        if not (math.isfinite(target_energy_wh) and 0 <= target_energy_wh <= 200000):
            raise BadValue(device_id, "ev session: target_energy_wh must be 0..200000")
        start = self._state.fresh_value(device_id, Quantity.SESSION_ENERGY_WH) or 0.0
        self._sessions[device_id] = EvSession(target_energy_wh, departure, start)

    def set_flex_event(self, event: FlexInstruction | None) -> None:
        """An accepted flexibility instruction becomes a live target (None clears it): its
        import cap, else its export floor, tracked against its baseline."""
        if event is None:
            self._flex = None
            return
        if event.kind not in LIVE_KINDS:
            raise BadValue(event.event_id, f"flex event: not a live target ({event.kind!r})")
        if event.baseline_w is None or not math.isfinite(event.baseline_w):
            raise BadValue(event.event_id, "flex event: baseline_w must be finite")
        self._flex = _FlexProgress(event, event.baseline_w)

    def flex_status(self) -> dict[str, Any] | None:
        f = self._flex
        if f is None:
            return None
        now = self._clock.now()
        e = f.event
        left_s = max(0.0, (e.end - max(now, e.start)).total_seconds())
        rate_w = f.delivered_w or 0.0
        return {
            "event_id": e.event_id,
            "kind": e.kind,
            "active": e.active(now),
            "baseline_w": f.baseline_w,
            "limit_w": e.live_limit_w,
            "delivered_w": f.delivered_w,
            "delivered_wh": round(f.delivered_wh, 2),
            "expected_delivery_wh": round(f.delivered_wh + rate_w * left_s / 3600.0, 2),
        }

    def status(self) -> dict[str, Any]:
        s = self._stats
        return {
            "cycles": s.cycles,
            "overruns": s.overruns,
            "woken": s.woken,
            "errors": s.errors,
            "healthy": s.healthy,
            "last_cycle_ms": round(s.last_cycle_ms, 2),
            "grid_pred_w": None
            if self._last_result_pred_w is None
            else round(self._last_result_pred_w, 1),
            "interventions_logged": self._emitted,
            "stage_ms": {k: round(v, 2) for k, v in s.stage_ms.items()},
            "devices": {d: st.as_dict() for d, st in self._status.items()},
            "active_interventions": [
                {"rule": i.rule, "device_id": i.device_id, "reason": i.reason}
                for i in self._active.values()
            ],
            "fuse": _tracker_dict(self._fuse),
            "export": _tracker_dict(self._export),
            "overrides": {
                d: {"target": o.target, "expires_at": o.expires_at.isoformat()}
                for d, o in self._overrides.items()
            },
            "flex": self.flex_status(),
        }

    def recent_interventions(self) -> list[dict[str, Any]]:
        return list(self._recent)

    @property
    def fuse_tracker(self) -> ExcursionTracker:
        return self._fuse

    @property
    def export_tracker(self) -> ExcursionTracker:
        return self._export

    # -- 1. snapshot ------------------------------------------------------------------------
    async def _snapshot(self) -> ProcessImage:
        await self._refresh_probes()
        grid_id = self._grid_id()
        v = self._fresh(grid_id or "", Quantity.VOLTAGE_V) or self._limits.voltage_v
        grid = self._grid_image(grid_id, v)
        spec = self._spec
        registered = self._state.devices
        for d, st in self._status.items():
            st.stale = d in registered and self._state.is_stale(d)
        batteries = {
            d: BatteryImage(self._fresh(d, Quantity.POWER_W), self._fresh(d, Quantity.SOC_PCT))
            for d in spec.batteries
        }
        pvs = {}
        for d in spec.pvs:
            st = self._status[d]
            last = st.last_written
            limit = self._fresh(d, Quantity.POWER_LIMIT_PCT)
            if limit is None:
                limit = last.limit_pct if isinstance(last, PvCommand) else 100.0
            pvs[d] = PvImage(self._fresh(d, Quantity.POWER_W), limit)
        evs = {}
        dsr = self._dsr_active()
        for d in spec.chargers:
            last = self._status[d].last_written
            offered, phases = (
                (last.current_a, last.phases) if isinstance(last, EvCommand) else (0.0, 1)
            )
            ev_state = self._ev_state.get(d)
            power = self._fresh(d, Quantity.POWER_W)
            if ev_state is EvState.OFFLINE:
                power = None
            delay_s = response_delay_s(self._devices.control(d), dsr)
            evs[d] = EvImage(power, ev_state, offered, phases, delay_s)
        loads = {}
        for d in spec.loads:
            last = self._status[d].last_written
            # What the load says beats what it was told: it may have ignored us.
            on = self._load_on.get(d)
            if on is None and isinstance(last, LoadCommand):
                on = last.on
            loads[d] = LoadImage(self._fresh(d, Quantity.POWER_W), on, stale=self._status[d].stale)
        return ProcessImage(
            self._clock.now(), self._clock.monotonic(), v, grid, batteries, pvs, evs, loads
        )

    async def _refresh_probes(self) -> None:
        """Ask every charger for its state and every switchable load whether it is on,
        concurrently; what misses the budget keeps its last answer and is asked again next
        cycle (a call is never started twice)."""
        for d in (*self._spec.chargers, *self._spec.loads):
            if d in self._probes:
                continue
            ctrl: Any = self._devices.control(d)
            call = ctrl.state() if d in self._spec.chargers else ctrl.is_on()
            self._probes[d] = asyncio.create_task(call, name=f"control:state:{d}")
        if self._probes:
            await asyncio.wait(self._probes.values(), timeout=self._cfg.budgets.snapshot_s)
        for d, task in list(self._probes.items()):
            if not task.done():
                continue
            del self._probes[d]
            what = "charger state" if d in self._spec.chargers else "load on/off state"
            exc = task.exception()
            value = task.result() if exc is None else None
            if d in self._spec.chargers:
                self._ev_state[d] = value
            else:
                self._load_on[d] = value if isinstance(value, bool) else None
            if exc is None:
                self._clear_problem(f"state:{d}", f"{what} readable again", device=d)
            else:
                self._problem(f"state:{d}", f"{what} unreadable", device=d, error=str(exc))

    def _grid_id(self) -> str | None:
        meters = sorted(d for d, r in self._state.devices.items() if r is Role.GRID)
        if not meters:
            return None
        chosen = self._cfg.grid_meter_id if self._cfg.grid_meter_id in meters else meters[0]
        if len(meters) > 1:
            values = {m: self._state.fresh_value(m, Quantity.POWER_W) for m in meters}
            others = [m for m in meters if m != chosen and values[m] is not None]
            if others:
                self._problem(
                    "grid:dup",
                    "several devices report the grid flow; using one, not their sum",
                    using=chosen,
                    ignored=others,
                )
            if values[chosen] is None and others:
                return others[0]  # the chosen meter is stale; another fresh one is better
        return chosen

    def _grid_image(self, grid_id: str | None, v: float) -> GridImage:
        if grid_id is None:
            self._problem("grid:none", "no grid meter registered: limits cannot be checked")
            return GridImage(None)
        power = self._fresh(grid_id, Quantity.POWER_W)
        phases: tuple[float, ...] | None = None
        if self._limits.phases > 1:
            by_power = [self._fresh(grid_id, q) for q in _PHASE_POWER]
            if all(p is not None for p in by_power):
                phases = tuple(p / v for p in by_power)  # type: ignore[operator]
            else:
                # A current without a sign is taken as import: safe for the fuse.
                by_current = [self._fresh(grid_id, q) for q in _PHASE_CURRENT]
                if all(c is not None for c in by_current):
                    phases = tuple(abs(c) for c in by_current)  # type: ignore[arg-type]
        return GridImage(power, phases)

    def _fresh(self, device_id: str, quantity: Quantity) -> float | None:
        """A fresh value that passes the plausibility checks, else None."""
        value = self._state.fresh_value(device_id, quantity)
        if value is None:
            return None
        key = (device_id, quantity)
        why = self._implausible(device_id, quantity, value)
        if why is None:
            prev = self._accepted.get(key)
            if (
                prev is not None
                and quantity is Quantity.POWER_W
                and abs(value - prev) > self._cfg.max_step_w
            ):
                # A jump may be real if the next reading confirms it.
                suspect = self._suspect.get(key)
                if suspect is None or abs(suspect - value) > 0.1 * abs(value) + 100:
                    self._suspect[key] = value
                    why = f"jumped {value - prev:+.0f} W in one cycle"
        if why is not None:
            self._problem(
                f"bad:{device_id}:{quantity}",
                "implausible reading ignored",
                device=device_id,
                quantity=str(quantity),
                value=value,
                why=why,
            )
            return None
        self._suspect.pop(key, None)
        self._accepted[key] = value
        self._clear_problem(
            f"bad:{device_id}:{quantity}",
            "reading plausible again",
            device=device_id,
            quantity=str(quantity),
        )
        return value

    def _implausible(self, device_id: str, quantity: Quantity, value: float) -> str | None:
        if quantity is Quantity.SOC_PCT and not 0 <= value <= 100:
            return "SoC outside 0..100 %"
        if quantity is Quantity.POWER_LIMIT_PCT and not 0 <= value <= 100:
            return "limit outside 0..100 %"
        if quantity is Quantity.VOLTAGE_V and not 100 <= value <= 300:
            return "voltage outside 100..300 V"
        if quantity is not Quantity.POWER_W:
            return None
        spec = self._spec
        bound_w = self._limits.import_limit_w * 3
        if device_id in spec.batteries:
            b = spec.batteries[device_id]
            bound_w = 1.5 * max(b.max_charge_w, b.max_discharge_w) + 500
        elif device_id in spec.pvs:
            if value < -500:
                return "PV power far below zero"
            bound_w = 1.5 * spec.pvs[device_id].rated_w + 500
        elif device_id in spec.chargers:
            bound_w = 1.5 * spec.chargers[device_id].max_power_w(self._limits.voltage_v) + 500
        if abs(value) > bound_w:
            return f"|{value:.0f}| W beyond {bound_w:.0f} W"
        return None

    # -- 2. compute -------------------------------------------------------------------------
    def _current_slot(self, now: datetime) -> PlanSlot | None:
        try:
            plan = self._plan_source()
        except Exception as exc:  # the planner's problem must not stop control
            self._problem("plan", "plan source failed; using live strategies", error=str(exc))
            return None
        slot = plan.slot_at(now) if plan is not None else None
        if slot is None:
            self._problem("plan", "no plan for the current slot; using live strategies")
        else:
            self._clear_problem("plan", "plan slot available again")
        return slot

    def _compute(self, image: ProcessImage) -> tuple[Guarded, tuple[Intervention, ...]]:
        for d, o in list(self._overrides.items()):
            if o.expires_at <= image.at:
                del self._overrides[d]
                log.info("override expired", device=d)
        energies = {
            d: v
            for d in self._spec.chargers
            if (v := self._state.fresh_value(d, Quantity.SESSION_ENERGY_WH)) is not None
        }
        for d, sess in list(self._sessions.items()):
            if ev_session_done(sess, energies.get(d)) or image.at >= sess.departure:
                del self._sessions[d]
        slot = self._current_slot(image.at)
        flex = self._flex.event if self._flex is not None else None
        proposal = propose(
            image,
            self._spec,
            self._cfg,
            slot,
            self._overrides,
            self._sessions,
            self._ev_memory,
            flex,
            energies,
        )
        # A load the guard switched off with nothing asking for it gets its state back once
        # the guard allows it (it was on because someone wanted it on).
        unasked = {d for d in self._spec.loads if d not in proposal.commands}
        for d in self._restore & unasked:
            proposal.commands[d] = LoadCommand(True)
        shaped: dict[str, Command] = {}
        for d, cmd in proposal.commands.items():
            st = self._status[d]
            ramp_w = self._cfg.setting(d, "ramp_w_per_s")
            dt_s = image.at_s - st.written_at_s
            shaped[d] = ramp(cmd, st.last_written, dt_s, ramp_w, image.voltage_v)
        cap = None
        if flex is not None and flex.active(image.at) and flex.kind == "import-cap":
            cap = flex.import_cap_w
        result = apply_guard(
            image, self._spec, self._limits, self._cfg, shaped, cap, self._distrusted(image)
        )
        self._last_result_pred_w = result.grid_pred_w
        for i in result.interventions:
            if i.device_id in unasked and i.after == {"on": False} and i.before != {"on": False}:
                self._restore.add(i.device_id)
        for d in list(self._restore):
            if result.commands.get(d) == LoadCommand(True):
                self._restore.discard(d)
        return result.guarded, (*proposal.notes, *result.interventions)

    def _distrusted(self, image: ProcessImage) -> frozenset[str]:
        """Devices whose commands the guard may not count on.

        A device flagged as ignoring commands, always; every device while a measured fuse
        overload outlasts one cycle or an export excursion a third of its G100 window: the
        predictions were wrong, so shed on measurements alone.
        """
        flagged = {d for d, st in self._status.items() if st.flagged}
        fuse_s = self._fuse.duration_s(image.at_s)
        export_s = self._export.duration_s(image.at_s)
        if fuse_s >= self._cfg.cycle_s or export_s >= self._cfg.g100.correct_within_s / 3:
            self._problem(
                "escalated",
                "limit still exceeded: shedding on measurements alone",
                fuse_s=fuse_s,
                export_s=export_s,
            )
            return frozenset(self._status)
        self._clear_problem("escalated", "limits held again")
        return frozenset(flagged)

    # -- interventions: log and store transitions ---------------------------------------------
    def _record(self, image: ProcessImage, interventions: tuple[Intervention, ...]) -> None:
        seen: dict[tuple[str, str], Intervention] = {}
        for i in interventions:
            key = (i.rule, i.device_id)
            seen[key] = i
            prev = self._active.get(key)
            if prev is None or prev.reason != i.reason:
                self._emit(image.at, i, "start")
        for key, prev in list(self._active.items()):
            if key not in seen:
                self._emit(image.at, prev, "end")
        self._active = seen

    def _emit(self, at: datetime, i: Intervention, event: str) -> None:
        level = log.info if event == "end" else log.warning
        level(
            "control intervention",
            rule=i.rule,
            device=i.device_id,
            kind=event,
            reason=i.reason,
            before=i.before,
            after=i.after,
        )
        row = {
            "at": at.isoformat(),
            "rule": i.rule,
            "device_id": i.device_id,
            "event": event,
            "reason": i.reason,
            "before": i.before,
            "after": i.after,
        }
        self._recent.append(row)
        self._emitted += 1
        if self._db is not None and len(self._rows) < _MAX_QUEUED_ROWS:
            self._rows.append(
                (
                    to_ms(at),
                    i.rule,
                    i.device_id,
                    event,
                    i.reason,
                    json.dumps(i.before, sort_keys=True),
                    json.dumps(i.after, sort_keys=True),
                )
            )

    def _maybe_flush(self) -> None:
        if self._db is None or not self._rows:
            return
        if self._flush_task is not None and not self._flush_task.done():
            return
        rows, self._rows = self._rows, []
        self._flush_task = asyncio.create_task(self._flush(rows), name="control:flush")

    async def _flush(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._db is not None
        try:
            await self._db.executemany(
                "INSERT INTO control_interventions"
                "(at_ms, rule, device_id, event, reason, before_json, after_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._clear_problem("db", "interventions stored again")
        except Exception as exc:  # keep the rows for the next attempt; never stop control
            self._rows[:0] = rows[: _MAX_QUEUED_ROWS - len(self._rows)]
            self._problem("db", "cannot store interventions", error=str(exc))

    async def flush(self) -> None:
        """Write queued intervention rows now (tests, shutdown)."""
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        if self._db is not None and self._rows:
            rows, self._rows = self._rows, []
            await self._flush(rows)

    # -- 3. write ---------------------------------------------------------------------------
    async def _write(self, image: ProcessImage, guarded: Guarded) -> None:
        now_s = image.at_s
        safety = {i.device_id for i in self._active.values()}
        started: list[asyncio.Task[None]] = []
        for d, cmd in guarded.commands.items():
            st = self._status[d]
            st.wanted = cmd
            deadband_w = self._cfg.setting(d, "deadband_w")
            differs = cmd != st.last_written
            due = (
                changed(cmd, st.last_written, deadband_w, self._cfg.deadband_pct, image.voltage_v)
                or (d in safety and differs)
                or now_s - st.written_at_s >= self._cfg.refresh_s
                or st.write_error is not None
            )
            if not due or now_s < st.retry_at_s:
                continue
            task = self._pending.get(d)
            if task is not None and not task.done():
                self._problem(f"busy:{d}", "previous write still running; skipped", device=d)
                continue
            self._clear_problem(f"busy:{d}", "writes keep up again", device=d)
            timeout_s = self._cfg.setting(d, "write_timeout_s")
            task = asyncio.create_task(self._send(d, cmd, timeout_s), name=f"control:write:{d}")
            self._pending[d] = task
            started.append(task)
        if started:
            await asyncio.wait(started, timeout=self._cfg.budgets.write_s)

    def _dsr_active(self) -> bool:
        return self._flex is not None and self._flex.event.active(self._clock.now())

    async def _send(self, device_id: str, cmd: Command, timeout_s: float) -> None:
        st = self._status[device_id]
        ctrl: Any = self._devices.control(device_id)
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(cmd, BatteryCommand):
                    await ctrl.set_mode(cmd.mode, cmd.power_w)
                elif isinstance(cmd, EvCommand):
                    # Inside an accepted aggregator event the change is demand-side response:
                    # GB smart chargers then skip their randomised delay.
                    await ctrl.set_limit(cmd.current_a, cmd.phases, dsr=self._dsr_active())
                elif isinstance(cmd, PvCommand):
                    await ctrl.set_power_limit_pct(cmd.limit_pct)
                else:
                    await ctrl.set_on(cmd.on)
        except DeviceRejected as exc:
            # The device refused this value: do not hammer it; try again after a refresh.
            self._write_failed(st, device_id, cmd, f"rejected: {exc.reason}", self._cfg.refresh_s)
            return
        except Exception as exc:
            # Anything else is an adapter bug; it still must not take the loop down.
            reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            backoff_s = min(self._cfg.refresh_s, self._cfg.cycle_s * 2 ** min(st.failed_writes, 6))
            self._write_failed(st, device_id, cmd, reason, backoff_s)
            return
        if st.write_error is not None:
            log.info("control write recovered", device=device_id, command=cmd.values())
        if cmd != st.last_written:
            st.misses = 0
            st.verified = None
        st.last_written = cmd
        st.written_at_s = self._clock.monotonic()
        st.write_error = None
        st.failed_writes = 0
        st.retry_at_s = -math.inf

    def _write_failed(
        self, st: DeviceStatus, device_id: str, cmd: Command, reason: str, backoff_s: float
    ) -> None:
        if st.write_error is None:
            log.error("control write failed", device=device_id, command=cmd.values(), reason=reason)
            now = self._clock.now()
            self._emit(
                now,
                Intervention("device", device_id, f"write failed: {reason}", {}, cmd.values()),
                "failed",
            )
        st.write_error = reason
        st.failed_writes += 1
        st.retry_at_s = self._clock.monotonic() + backoff_s

    # -- 4. verify ---------------------------------------------------------------------------
    def _verify(self, image: ProcessImage) -> None:
        tol_w = self._cfg.verify_tolerance_w
        for d, st in self._status.items():
            cmd = st.last_written
            if cmd is None:
                continue
            settle_s = self._cfg.verify_after_s
            if d in self._spec.chargers:
                settle_s += self._spec.chargers[d].response_delay_s
            if image.at_s - st.written_at_s < settle_s:
                continue
            ok = self._followed(d, cmd, image, tol_w)
            if ok is None:
                continue
            st.verified = ok
            if ok:
                if st.flagged:
                    log.info("device follows commands again", device=d)
                    self._emit(image.at, Intervention("device", d, "follows commands again"), "end")
                st.misses, st.flagged = 0, False
                continue
            st.misses += 1
            if st.misses >= self._cfg.verify_failures and not st.flagged:
                st.flagged = True
                log.error("device ignores commands", device=d, command=cmd.values())
                self._emit(
                    image.at,
                    Intervention("device", d, "ignores commands", {}, cmd.values()),
                    "flagged",
                )

    def _followed(self, d: str, cmd: Command, image: ProcessImage, tol_w: float) -> bool | None:
        """Did the readings follow `cmd`? None: cannot tell (stale, or limited by the device)."""
        if isinstance(cmd, BatteryCommand):
            b = image.batteries.get(d)
            if b is None or b.power_w is None or b.soc_pct is None:
                return None
            if cmd.mode is BatteryMode.IDLE:
                return abs(b.power_w) <= tol_w
            if cmd.mode not in (BatteryMode.POWER_SETPOINT, BatteryMode.FORCE_CHARGE):
                return None
            target = cmd.power_w if cmd.mode is BatteryMode.POWER_SETPOINT else abs(cmd.power_w)
            if (target > 0 and b.soc_pct >= 98) or (target < 0 and b.soc_pct <= 2):
                return None  # the BMS limits it, not the inverter ignoring us
            return abs(b.power_w - target) <= tol_w + 0.05 * abs(target)
        if isinstance(cmd, EvCommand):
            e = image.evs.get(d)
            if e is None or e.power_w is None:
                return None
            # The car may take less than offered; taking more means the limit was ignored.
            return e.power_w <= cmd.current_a * image.voltage_v * cmd.phases + tol_w
        if isinstance(cmd, PvCommand):
            p = image.pvs.get(d)
            if p is None or p.power_w is None:
                return None
            return p.power_w <= self._spec.pvs[d].rated_w * cmd.limit_pct / 100.0 + tol_w
        # A switchable load: its own report (is_on) decides; without one, a power reading
        # can show that it is off, never that it is on (a thermostat may hold it at 0 W).
        reported = self._load_on.get(d)
        if reported is not None:
            return reported == cmd.on
        ld = image.loads.get(d)
        if ld is None or ld.power_w is None or cmd.on:
            return None
        return ld.power_w <= tol_w

    # -- limits over time, flexibility ----------------------------------------------------------
    def _track_limits(self, image: ProcessImage) -> None:
        grid = image.grid
        if grid.power_w is None:
            return
        if grid.phase_current_a is not None:
            over_fuse = max(grid.phase_current_a) > self._limits.fuse_a
        else:
            over_fuse = grid.power_w > self._limits.import_limit_w
        ev = self._fuse.update(image.at_s, over_fuse)
        if ev is not None and ev != "late":
            self._emit(
                image.at,
                Intervention("fuse-time", "", f"fuse overload {ev}", {}, {"grid_w": grid.power_w}),
                ev,
            )
        over_export = -grid.power_w > self._limits.export_limit_w
        ev = self._export.update(image.at_s, over_export)
        if ev is not None:
            self._emit(
                image.at,
                Intervention(
                    "g100",
                    "",
                    f"export excursion {ev}",
                    {},
                    {"export_w": -grid.power_w, "count": self._export.count},
                ),
                ev,
            )

    def _track_flex(self, image: ProcessImage) -> None:
        f = self._flex
        if f is None or image.grid.power_w is None:
            return
        if not f.event.active(image.at):
            f.last_s = None
            return
        delivered_w = f.baseline_w - image.grid.power_w
        if f.last_s is not None:
            f.delivered_wh += delivered_w * (image.at_s - f.last_s) / 3600.0
        f.last_s = image.at_s
        f.delivered_w = delivered_w

    # -- helpers ------------------------------------------------------------------------------
    def _problem(self, key: str, message: str, **kw: Any) -> None:
        if key not in self._problems:
            self._problems.add(key)
            log.warning(message, **kw)

    def _clear_problem(self, key: str, message: str, **kw: Any) -> None:
        if key in self._problems:
            self._problems.discard(key)
            log.info(message, **kw)

    def _override_range(self, device_id: str) -> tuple[float, float, str]:
        spec = self._spec
        v = self._limits.voltage_v
        if device_id in spec.batteries:
            b = spec.batteries[device_id]
            return -b.max_discharge_w, b.max_charge_w, "W"
        if device_id in spec.chargers:
            return 0.0, spec.chargers[device_id].max_power_w(v), "W"
        return 0.0, 100.0, "%"

    async def _shutdown(self) -> None:
        tasks = [*self._pending.values(), *self._probes.values()]
        if self._flush_task is not None:
            # Let a running store write finish so no intervention row is lost.
            await asyncio.wait([self._flush_task], timeout=2.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _tracker_dict(t: ExcursionTracker) -> dict[str, Any]:
    return {
        "excursions": t.count,
        "late": t.late,
        "breaches": t.breaches,
        "longest_s": round(t.longest_s, 1),
        "over_now": t.since_s is not None,
    }
