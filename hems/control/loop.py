"""The control loop: snapshot, strategies, guard, shaped writes, verification, every cycle.

One cycle (`step`):
1. snapshot  the process image from SiteState (+ charger states and load on/off reports,
             asked concurrently under a time budget);
             implausible readings are dropped for the cycle, a duplicate grid meter ignored.
             (`snapshot.Snapshot`)
2. compute   strategies (plan slot, self-consumption, PV surplus, overrides, flex event),
             rate limits, then the safety guard. Only the guard's output reaches step 3.
             The guard's decisions are journalled (`journal.Journal`).
3. write     only what changed beyond a deadband (or what the guard changed, or what is due
             for a refresh inside the device-side revert timeout); each write is a task owned
             by the writer under its own timeout, and the cycle waits no longer than its
             budget. (`writer.Writer`, which also owns the rate limits)
4. verify    commands older than verify_after_s are checked against the readings (a load
             against its own is_on() report first); a device that keeps ignoring them is
             flagged in `status()`. (`verify.Verifier`)
Measured limit excursions are timed before compute (`excursions.Excursions`); manual
overrides are checked and expired by `overrides.Overrides`. This module keeps the cadence,
the compute stage (plan slot, EV sessions, the flexibility event) and the public surface.
The systemd watchdog callback is fed only after a healthy cycle.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import structlog

from hems.control.config import ControlConfig, EvStrategy
from hems.control.devices import ControlledDevices
from hems.control.excursions import Excursions, tracker_status
from hems.control.guard import ExcursionTracker, Guarded, apply_guard
from hems.control.journal import InterventionRecord, Journal
from hems.control.model import (
    Intervention,
    LoadCommand,
    ProcessImage,
)
from hems.control.overrides import Overrides
from hems.control.problems import Problems
from hems.control.snapshot import PHASE_POWER, Snapshot
from hems.control.strategies import (
    EvHysteresis,
    EvSession,
    ev_session_done,
    propose,
)
from hems.control.verify import FollowState, Verifier
from hems.control.writer import Writer, WriteState
from hems.core.capabilities import BatteryMode, EvState
from hems.core.clock import Clock
from hems.core.flex import LIVE_KINDS, FlexInstruction
from hems.core.histogram import DurationHistogram
from hems.core.plan import Plan, PlanSlot
from hems.core.readings import Quantity, Reading, Role
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import BadValue, ConfigError
from hems.store.db import Database

log = structlog.get_logger(__name__)

# The longest a stop may take to write the devices' safe states [s]: inside the daemon's
# grace for a stopping stage (hems.app.daemon, 3 s) and far inside systemd's stop timeout.
STOP_TIMEOUT_S = 2.0


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
    cycle_s: DurationHistogram = field(default_factory=DurationHistogram)  # for /metrics


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
        self._watchdog = watchdog
        self._spec = devices.spec()
        self._ev_memory: dict[str, EvHysteresis] = {}
        self._sessions: dict[str, EvSession] = {}
        self._soc_targets: dict[str, float] = {}  # charger -> the car's target SoC [%]
        self._ev_full: set[str] = set()  # chargers whose car reached its target SoC
        self._ev_modes: dict[str, EvStrategy] = {}
        self._flex: _FlexProgress | None = None
        self._problems = Problems()  # log-once keys for bad input transitions
        self._journal = Journal(db, self._problems)
        self._verifier = Verifier(cfg, self._spec, self._journal, devices)
        self._writer = Writer(
            cfg,
            devices,
            clock,
            self._journal,
            self._problems,
            self._dsr_active,
            self._verifier.new_command,
        )
        self._snapshot = Snapshot(
            cfg,
            limits,
            state,
            devices,
            self._spec,
            clock,
            self._problems,
            self._writer.last_written,
            self._dsr_active,
        )
        self._overrides = Overrides(cfg, limits, self._spec, devices)
        self._excursions = Excursions(cfg, limits, self._journal, self._problems)
        self._stats = _Stats()
        self._restore: set[str] = set()  # loads the guard switched off unasked
        self._wake = asyncio.Event()
        self._joining: dict[str, object] = {}  # devices to add before the next cycle
        self._in_step = False
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
            elif r.quantity in PHASE_POWER and r.value > phase_limit_w:
                self._wake.set()

    async def step(self) -> None:
        """Run exactly one cycle. Never raises for device or input problems."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        healthy = True
        self._join_pending()
        self._in_step = True
        try:
            image = await self._snapshot.take()
            self._excursions.track(image)  # first: the guard escalates on persisting excursions
            t1 = loop.time()
            guarded, interventions = self._compute(image)
            t2 = loop.time()
            self._journal.record(image.at, interventions)
            safety = {i.device_id for i in self._journal.active}
            await self._writer.write(image, guarded, safety)
            t3 = loop.time()
            self._verifier.check(image, self._writer.states, self._snapshot.load_on)
            self._track_flex(image)
            self._stats.stage_ms = {
                "snapshot": (t1 - t0) * 1000,
                "compute": (t2 - t1) * 1000,
                "write": (t3 - t2) * 1000,
            }
            if t2 - t1 > self._cfg.budgets.compute_s:
                self._problems.report(
                    "budget", "control compute over budget", ms=round((t2 - t1) * 1e3)
                )
            else:
                self._problems.clear("budget", "control compute within budget again")
            self._problems.clear("cycle", "control cycle works again")
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the safety loop; the watchdog sees it
            healthy = False
            self._stats.errors += 1
            if self._problems.first("cycle"):
                log.exception("control cycle failed")
        self._in_step = False
        elapsed_s = loop.time() - t0
        self._stats.cycles += 1
        self._stats.last_cycle_ms = elapsed_s * 1000
        self._stats.cycle_s.observe(elapsed_s)
        healthy = healthy and elapsed_s <= self._cfg.cycle_s
        self._stats.healthy = healthy
        if healthy and self._watchdog is not None:
            self._watchdog()
        self._journal.maybe_flush()

    def set_override(self, device_id: str, target: float | bool, expires_at: datetime) -> None:
        """Manual target until `expires_at`; still subject to the safety guard.

        Raises BadValue naming the device and the reason if the target is out of range.
        """
        self._overrides.set(device_id, target, expires_at, self._clock.now())

    def clear_override(self, device_id: str) -> None:
        self._overrides.clear(device_id)

    def set_battery_mode(
        self, device_id: str, mode: BatteryMode, expires_at: datetime, power_w: float = 0.0
    ) -> None:
        """Hold a battery in one of its own modes until `expires_at`; still guarded.
        Raises BadValue naming the device and the reason (e.g. a mode it does not offer)."""
        self._overrides.set_battery_mode(device_id, mode, expires_at, self._clock.now(), power_w)

    def battery_modes(self) -> dict[str, list[str]]:
        """The modes each controlled battery offers, for the page's override form."""
        return {d: sorted(str(m) for m in b.modes) for d, b in self._spec.batteries.items()}

    def set_ev_mode(self, device_id: str, mode: EvStrategy | None) -> None:
        """The owner's charging mode for one charger (None: back to the configured one)."""
        if device_id not in self._spec.chargers:
            raise BadValue(device_id, "mode: not a charger")
        if mode is None:
            self._ev_modes.pop(device_id, None)
        elif mode not in get_args(EvStrategy):
            raise BadValue(
                device_id, f"mode: {mode!r} is not one of {', '.join(get_args(EvStrategy))}"
            )
        else:
            self._ev_modes[device_id] = mode
        log.info("ev mode", device=device_id, mode=mode)

    def controls(self, device_id: str) -> bool:
        """Whether this loop commands the device (registered at start or since)."""
        return device_id in self._devices

    def add_device(self, adapter: object) -> bool:
        """A device that appeared at run time (a charger the owner accepted) joins control
        and the guard: at once between cycles, else before the next cycle's snapshot (a
        cycle's stages iterate the devices across awaits). False if it offers no control
        or is controlled already."""
        device_id = getattr(adapter, "device_id", None)
        if not isinstance(device_id, str) or self.controls(device_id) or device_id in self._joining:
            return False
        self._joining[device_id] = adapter
        if not self._in_step:
            self._join_pending()
        return True

    def _join_pending(self) -> None:
        joining, self._joining = self._joining, {}
        for device_id, adapter in joining.items():
            try:
                added = self._devices.register(self._cfg, adapter)
            except ConfigError as exc:
                log.error("device cannot join control", device=device_id, error=str(exc))
                continue
            if not added:
                continue
            # The loop's stages share this one SiteSpec: update it in place.
            fresh = self._devices.spec()
            for mine, theirs in (
                (self._spec.batteries, fresh.batteries),
                (self._spec.pvs, fresh.pvs),
                (self._spec.chargers, fresh.chargers),
                (self._spec.loads, fresh.loads),
            ):
                if device_id in theirs:
                    mine[device_id] = theirs[device_id]  # type: ignore[index]
            for stage in (self._writer, self._verifier, self._snapshot):
                stage.join(device_id)
            log.info("device joined control", device=device_id)

    def ev_mode(self, device_id: str) -> str:
        """The mode a charger follows now: the owner's, else the configured one."""
        return self._ev_modes.get(device_id) or self._cfg.setting(device_id, "ev_strategy")

    def set_ev_session(
        self,
        device_id: str,
        target_energy_wh: float,
        departure: datetime,
        *,
        target_soc_pct: float | None = None,
    ) -> None:
        """The EV on `device_id` wants `target_energy_wh` more by `departure`. With
        `target_soc_pct` the charger is held at 0 A once the car's measured SoC
        (`Quantity.SOC_PCT`) reaches it, whatever the mode or the plan, until the car is
        unplugged or a higher target is set (the energy figure is only an estimate of it)."""
        if device_id not in self._spec.chargers:
            raise BadValue(device_id, "ev session: not a charger")
        if not (math.isfinite(target_energy_wh) and 0 <= target_energy_wh <= 200000):
            raise BadValue(device_id, "ev session: target_energy_wh must be 0..200000")
        if target_soc_pct is not None and not (
            math.isfinite(target_soc_pct) and 0 < target_soc_pct <= 100
        ):
            raise BadValue(device_id, "ev session: target_soc_pct must be in (0, 100]")
        start = self._state.fresh_value(device_id, Quantity.SESSION_ENERGY_WH) or 0.0
        self._sessions[device_id] = EvSession(target_energy_wh, departure, start)
        if target_soc_pct is None:
            self._soc_targets.pop(device_id, None)
            self._ev_full.discard(device_id)
            return
        self._soc_targets[device_id] = target_soc_pct
        soc = self._state.fresh_value(device_id, Quantity.SOC_PCT)
        if device_id in self._ev_full and (soc is None or soc < target_soc_pct):
            self._ev_full.discard(device_id)  # a higher target: charge again
            log.info("ev target soc raised", device=device_id, target_soc_pct=target_soc_pct)

    def _check_soc_targets(self, image: ProcessImage) -> None:
        """Latch chargers whose car reached its SoC target; forget targets on unplug."""
        for d, target in list(self._soc_targets.items()):
            if image.ev(d).state is EvState.AVAILABLE:  # unplugged: the session is over
                del self._soc_targets[d]
                self._ev_full.discard(d)
                continue
            soc = self._state.fresh_value(d, Quantity.SOC_PCT)
            if d not in self._ev_full and soc is not None and soc >= target:
                self._ev_full.add(d)
                log.info("ev target soc reached: charger held at 0 A", device=d, soc_pct=soc,
                         target_soc_pct=target)  # fmt: skip

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
            "interventions_logged": self._journal.emitted,
            "stage_ms": {k: round(v, 2) for k, v in s.stage_ms.items()},
            "devices": {
                d: _device_status(w, self._verifier.state(d), self._snapshot.stale(d))
                for d, w in self._writer.states.items()
            },
            "active_interventions": [
                {"rule": i.rule, "device_id": i.device_id, "reason": i.reason}
                for i in self._journal.active
            ],
            "fuse": tracker_status(self._excursions.fuse),
            "export": tracker_status(self._excursions.export),
            "overrides": self._overrides.status(),
            "ev_modes": dict(self._ev_modes),
            "flex": self.flex_status(),
        }

    @property
    def healthy(self) -> bool:
        """Whether the last cycle ran without error within its period (False before the first)."""
        return self._stats.healthy

    @property
    def cycle_histogram(self) -> DurationHistogram:
        """Every cycle's duration since start, bucketed (read-only for callers)."""
        return self._stats.cycle_s

    def interventions_started(self) -> dict[str, int]:
        """How many interventions started since start, by guard rule."""
        return self._journal.started_by_rule()

    def recent_interventions(self) -> list[InterventionRecord]:
        return self._journal.recent()

    async def flush(self) -> None:
        """Write queued intervention rows now (tests, shutdown)."""
        await self._journal.flush()

    @property
    def fuse_tracker(self) -> ExcursionTracker:
        return self._excursions.fuse

    @property
    def export_tracker(self) -> ExcursionTracker:
        return self._excursions.export

    # -- 2. compute -------------------------------------------------------------------------
    def _current_slot(self, now: datetime) -> PlanSlot | None:
        try:
            plan = self._plan_source()
        except Exception as exc:  # the planner's problem must not stop control
            self._problems.report(
                "plan", "plan source failed; using live strategies", error=str(exc)
            )
            return None
        slot = plan.slot_at(now) if plan is not None else None
        if slot is None:
            self._problems.report("plan", "no plan for the current slot; using live strategies")
        else:
            self._problems.clear("plan", "plan slot available again")
        return slot

    def _compute(self, image: ProcessImage) -> tuple[Guarded, tuple[Intervention, ...]]:
        self._overrides.expire(image.at)
        if self._limits.phases > 1 and image.grid.power_w is not None:
            if image.grid.phase_current_a is None:
                self._problems.report(
                    "phases",
                    "grid meter gives no per-phase values: the fuse is guarded as if all "
                    "house load were on one phase (see the health reasons)",
                )
            else:
                self._problems.clear("phases", "per-phase grid values available again")
        energies = {
            d: v
            for d in self._spec.chargers
            if (v := self._state.fresh_value(d, Quantity.SESSION_ENERGY_WH)) is not None
        }
        for d, sess in list(self._sessions.items()):
            if ev_session_done(sess, energies.get(d)) or image.at >= sess.departure:
                del self._sessions[d]
        self._check_soc_targets(image)
        slot = self._current_slot(image.at)
        flex = self._flex.event if self._flex is not None else None
        proposal = propose(
            image,
            self._spec,
            self._cfg,
            slot,
            self._overrides.by_device,
            self._sessions,
            self._ev_memory,
            flex,
            energies,
            self._ev_modes,
            frozenset(self._ev_full),
        )
        # A load the guard switched off with nothing asking for it gets its state back once
        # the guard allows it (it was on because someone wanted it on).
        unasked = {d for d in self._spec.loads if d not in proposal.commands}
        for d in self._restore & unasked:
            proposal.commands[d] = LoadCommand(True)
        shaped = self._writer.shape(proposal.commands, image)
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
        flagged = self._verifier.flagged()
        if self._excursions.escalated(image.at_s):
            return frozenset(self._devices)
        return frozenset(flagged)

    def _dsr_active(self) -> bool:
        return self._flex is not None and self._flex.event.active(self._clock.now())

    # -- flexibility ---------------------------------------------------------------------------
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
    async def _shutdown(self) -> None:
        """Stop writing, then hand every commanded device back (battery to its own mode,
        charger to its safe state, PV uncurtailed) while the journal's last store write
        finishes; both within `STOP_TIMEOUT_S` so systemd's stop never waits on a device."""
        tasks: list[asyncio.Task[object]] = [*self._writer.tasks(), *self._snapshot.tasks()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let a running store write finish so no intervention row is lost.
        await asyncio.gather(
            self._writer.hand_back(STOP_TIMEOUT_S),
            self._journal.settle(timeout_s=STOP_TIMEOUT_S),
        )


def _device_status(w: WriteState, f: FollowState, stale: bool) -> dict[str, object]:
    """One device's line in `status()`: its writes, whether it follows, its readings."""
    return {
        "command": None if w.last_written is None else w.last_written.values(),
        "wanted": None if w.wanted is None else w.wanted.values(),
        "write_error": w.write_error,
        "ignores_commands": f.flagged,
        "verified": f.verified,
        "stale": stale,
    }
