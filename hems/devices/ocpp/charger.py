"""One charger as an `EvCharger`, the same across OCPP versions and vendors.

The object outlives connections: a charger that reconnects gets a new link (v16/v201
protocol object) but keeps its state, its transaction (meter start) and its last limit,
which is re-sent after every boot so a reboot cannot leave it at full power.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from ocpp.exceptions import OCPPError

from hems.core.capabilities import EvState
from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.model import (
    MeterSample,
    decide_limit,
    derive_state,
    followed,
    session_energy_wh,
)
from hems.devices.ocpp.quirks import QuirkProfile
from hems.devices.ocpp.store import OcppStore, Transaction, to_ms
from hems.errors import DeviceRejected, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

Followup = Callable[[], Awaitable[Any]]
Listener = Callable[[str, dict[str, Any]], None]
_TX_STATES = {"Charging", "SuspendedEV", "SuspendedEVSE", "EVConnected", "Idle"}
_NOT_SUPPORTED = {"NotSupported", "NotImplemented"}
# Consecutive unanswered CALLs before the charger is shown faulted.
TIMEOUTS_TO_FAULT = 2
# Consecutive MeterValues above the limit (after the allowed delay) before it is flagged.
VIOLATIONS_TO_FLAG = 2


async def _cancel(task: asyncio.Task[Any]) -> None:
    # Python 3.11's asyncio.wait_for (used by ocpp's `call`) can swallow a cancellation
    # that races with an answer; cancel until the task has really ended.
    for _ in range(50):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


@dataclass(slots=True)
class LimitCommand:
    current_a: float
    phases: int
    dsr: bool
    issued_s: float  # clock.monotonic()
    check_after_s: float  # clock.monotonic() from which readings must obey
    command_pk: int | None = None
    outcome: bool | None = None


class OcppCharger:
    """EvCharger over OCPP. Construct once per configured (or accepted) charger."""

    def __init__(
        self,
        cfg: ChargerConfig,
        quirks: QuirkProfile,
        site: OcppConfig,
        state: SiteState,
        clock: Clock,
        store: OcppStore,
        listener: Listener | None = None,
        publish: bool = True,
    ) -> None:
        self.cfg = cfg
        self.device_id = cfg.id
        self.identity = cfg.cp_identity
        self.quirks = quirks
        self._site = site
        self._state = state
        self._clock = clock
        self._store = store
        self._listener = listener
        self._publish = publish
        self.link: Any = None  # Link16 | Link201 while connected
        self.pending = False
        self.boot_info: dict[str, str] = {}
        self.booted = False
        self.status: str | None = None
        self.error_code: str | None = None
        self.faulted_reason: str | None = None
        self.transaction: Transaction | None = None
        self.last_session_wh = 0.0
        self.sample: MeterSample | None = None
        self._sample_at_s: float | None = None
        self.active_phases = cfg.phases
        self._last_switch_s: float | None = None
        self.limit: LimitCommand | None = None
        self.profile_unsupported = quirks.limit.method == "fallback"
        self.ignores_limits = False
        self._violations = 0
        self._timeouts = 0
        self._followups: asyncio.Queue[Followup] = asyncio.Queue()
        self._alive_s = 0.0
        self._last_tx_id = 0
        if publish:
            state.register_device(
                self.device_id, Role.EV, stale_after_s=3.0 * site.meter_value_sample_interval_s
            )
            state.mark_down(self.device_id, "not connected")

    # -- EvCharger -----------------------------------------------------------------------
    async def state(self) -> EvState:
        return self.current_state()

    def current_state(self) -> EvState:
        return derive_state(
            self.status,
            online=self.link is not None and self.booted and not self.pending,
            faulted=self.faulted_reason is not None,
            paused_by_us=self.limit is not None and self.limit.current_a == 0,
            power_w=self._fresh_power_w(),
            suspended=self.quirks.suspended,
        )

    async def power_w(self) -> float:
        power = self._fresh_power_w()
        if power is None:
            raise DeviceUnreachable(self.device_id, "no fresh power reading")
        return power

    async def session_energy_wh(self) -> float:
        if self.transaction is None:
            return self.last_session_wh
        value = session_energy_wh(self.transaction.meter_last_wh, self.transaction.meter_start_wh)
        return value if value is not None else 0.0

    def expected_response_delay_s(self, dsr: bool = False) -> float:
        """Worst-case delay before a start or rate change takes effect [s].

        GB Smart Charge Points Regulations 2021: the charger itself randomises up to 600 s
        unless the change is demand-side response. hems adds no delay; the planner uses this.
        """
        if dsr:
            return 0.0
        if self.cfg.randomised_delay_max_s is not None:
            return self.cfg.randomised_delay_max_s
        return self.quirks.randomised_delay_max_s

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        """Limit charging to `current_a` per phase on `phases`; below the minimum: pause.

        dsr: the change is aggregator-driven demand-side response (recorded, and signalled
        to the charger where its profile says how). Raises DeviceUnreachable when offline,
        DeviceTimeout when unanswered, DeviceRejected when refused without a fallback.
        """
        now_s = self._clock.monotonic()
        since = None if self._last_switch_s is None else now_s - self._last_switch_s
        decision = decide_limit(
            current_a,
            phases,
            min_current_a=self.cfg.min_current_a,
            max_current_a=self.cfg.max_current_a,
            max_phases=self.cfg.phases,
            active_phases=self.active_phases,
            phase_switching=self.quirks.limit.phase_switching,
            since_last_switch_s=since,
            cooldown_s=self.cfg.phase_switch_cooldown_s,
        )
        if decision.note:
            log.info(
                "ocpp limit adjusted",
                charger=self.device_id,
                requested_a=current_a,
                requested_phases=phases,
                note=decision.note,
            )
        link = self.link
        if link is None or self.pending:
            # Remember it: it is sent as soon as the charger boots again.
            self.limit = LimitCommand(decision.current_a, decision.phases, dsr, now_s, now_s)
            raise DeviceUnreachable(self.device_id, "not connected")
        try:
            method, status = await self._send_limit(link, decision.current_a, decision.phases, dsr)
        except DeviceTimeout:
            await self._store.command(
                self.identity,
                self._clock.now(),
                decision.current_a,
                decision.phases,
                dsr,
                "charging_profile" if not self.profile_unsupported else "fallback",
                "Timeout",
                decision.note,
            )
            raise
        self._call_ok()
        cmd = LimitCommand(
            decision.current_a,
            decision.phases,
            dsr,
            now_s,
            now_s + self.expected_response_delay_s(dsr),
        )
        cmd.command_pk = await self._store.command(
            self.identity,
            self._clock.now(),
            decision.current_a,
            decision.phases,
            dsr,
            method,
            status,
            decision.note,
        )
        log.info(
            "ocpp limit sent",
            charger=self.device_id,
            current_a=decision.current_a,
            phases=decision.phases,
            dsr=dsr,
            method=method,
            status=status,
        )
        self._emit(
            "limit",
            {
                "current_a": decision.current_a,
                "phases": decision.phases,
                "dsr": dsr,
                "method": method,
                "status": status,
            },
        )
        if status not in ("Accepted", "RebootRequired"):
            raise DeviceRejected(self.device_id, f"limit {decision.current_a:g} A: {status}")
        if decision.phases != self.active_phases:
            self._last_switch_s = now_s
            self.active_phases = decision.phases
        self.limit = cmd
        self._violations = 0

    async def apply_safe_state(self) -> None:
        """Put the charger in its configured safe state: paused (0 A) or the minimum."""
        current_a = 0.0 if self.cfg.safe_state == "pause" else self.cfg.min_current_a
        await self.set_limit(current_a, self.active_phases)

    async def _send_limit(
        self, link: Any, current_a: float, phases: int, dsr: bool
    ) -> tuple[str, str]:
        q = self.quirks
        try:
            if dsr and q.dsr_signal == "data_transfer":
                await link.signal_dsr(q.dsr_vendor_id, True)
            if not self.profile_unsupported:
                status = await self._profile(link, current_a, phases, dsr)
                if status == "Accepted" or q.limit.fallback is None:
                    return "charging_profile", status
                # First refusal: remember it and use the quirk path from now on.
                log.warning(
                    "ocpp charging profile refused, using fallback",
                    charger=self.device_id,
                    status=status,
                    fallback=q.limit.fallback.method,
                )
                self.profile_unsupported = True
            fb = q.limit.fallback
            if fb is None:
                return "charging_profile", "NotSupported"
            value = current_a if fb.unit == "A" else current_a * self.cfg.voltage_v * phases
            status = await link.set_fallback(fb, limit=value, phases=phases)
            return fb.method, status
        except TimeoutError:
            self._on_timeout("SetChargingProfile")
            raise DeviceTimeout(self.device_id, "limit not answered") from None
        except OCPPError as exc:
            raise DeviceRejected(self.device_id, f"limit refused: {exc}") from None

    async def _profile(self, link: Any, current_a: float, phases: int, dsr: bool) -> str:
        q = self.quirks.limit
        limit = current_a if q.unit == "A" else current_a * self.cfg.voltage_v * phases
        tx_id = None if self.transaction is None else self.transaction.transaction_id
        purpose = q.profile_purpose
        if purpose == "tx" and tx_id is None:
            purpose = "tx_default"  # a TxProfile needs a running transaction
        try:
            return await link.set_profile(
                limit=limit,
                unit=q.unit,
                phases=phases,
                purpose=purpose,
                stack_level=q.stack_level,
                connector_id=self.cfg.connector_id,
                transaction_id=tx_id,
                dsr=dsr,
                start_iso=self.now_iso(),
            )
        except OCPPError as exc:
            if exc.code in _NOT_SUPPORTED:
                return "NotSupported"
            raise

    # -- higher-level commands -------------------------------------------------------------
    async def command(self, name: str, *args: Any) -> Any:
        """Run one link call (remote_start, remote_stop, reset, …) with error mapping."""
        link = self.link
        if link is None:
            raise DeviceUnreachable(self.device_id, "not connected")
        try:
            result = await getattr(link, name)(*args)
        except TimeoutError:
            self._on_timeout(name)
            raise DeviceTimeout(self.device_id, f"{name} not answered") from None
        except OCPPError as exc:
            raise DeviceRejected(self.device_id, f"{name}: {exc.code}") from None
        self._call_ok()
        return result

    # -- connection lifecycle (called by the server) -----------------------------------------
    async def serve(self, link: Any) -> None:
        """Run one connection until it closes; owns the follow-up worker task."""
        from websockets.exceptions import ConnectionClosed

        self.link = link
        self.booted = False
        self._timeouts = 0
        # One queue per connection: a worker of an older connection can never take its jobs.
        queue: asyncio.Queue[Followup] = asyncio.Queue()
        self._followups = queue
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(
                self._run_followups(queue), name=f"ocpp:{self.identity}:followups"
            )
            try:
                await link.start()
            except ConnectionClosed as exc:
                reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
                self._disconnected(link, reason)
            finally:
                self._disconnected(link, "connection ended")
                await _cancel(worker)

    def _disconnected(self, link: Any, reason: str) -> None:
        if self.link is not link:
            return  # a newer connection replaced this one
        self.link = None
        self.booted = False
        log.warning("ocpp charger offline", charger=self.device_id, reason=reason)
        if self._publish:
            self._state.mark_down(self.device_id, f"offline: {reason}")
        self._emit("offline", {"reason": reason})

    async def _run_followups(self, queue: asyncio.Queue[Followup]) -> None:
        while True:
            job = await queue.get()
            try:
                await job()
            except TimeoutError:
                self._on_timeout("follow-up")
            except (OCPPError, DeviceRejected, DeviceUnreachable, DeviceTimeout) as exc:
                log.warning("ocpp follow-up failed", charger=self.device_id, error=str(exc))
            finally:
                queue.task_done()

    def followups_idle(self) -> bool:
        """No follow-up call queued or running on the current connection. Their answers
        reset the unanswered-call count, so a test timing calls waits for this first."""
        return self._followups._unfinished_tasks == 0  # type: ignore[attr-defined]

    def followup(self, job: Followup) -> None:
        """Queue a call to make after the current handler has answered."""
        self._followups.put_nowait(job)

    def _on_timeout(self, what: str) -> None:
        self._timeouts += 1
        log.error(
            "ocpp call not answered",
            charger=self.device_id,
            call=what,
            timeout_s=self._site.response_timeout_s,
            in_a_row=self._timeouts,
        )
        if self._timeouts >= TIMEOUTS_TO_FAULT and self.faulted_reason is None:
            self.set_fault(f"{self._timeouts} calls in a row not answered")

    def set_fault(self, reason: str) -> None:
        self.faulted_reason = reason
        log.error("ocpp charger faulted", charger=self.device_id, reason=reason)
        if self._publish:
            self._state.mark_down(self.device_id, f"faulted: {reason}")
        self._emit("faulted", {"reason": reason})

    def clear_fault(self) -> None:
        if self.faulted_reason is not None:
            log.info("ocpp charger recovered", charger=self.device_id, was=self.faulted_reason)
            self.faulted_reason = None

    def on_alive(self) -> None:
        self._alive_s = self._clock.monotonic()

    def _call_ok(self) -> None:
        """A CALL was answered: a fault for unanswered calls is over."""
        self._timeouts = 0
        if self.faulted_reason and "not answered" in self.faulted_reason:
            self.clear_fault()

    # -- events from the link ----------------------------------------------------------------
    @property
    def energy_unit(self) -> str:
        return self.quirks.default_energy_unit

    @property
    def heartbeat_interval_s(self) -> int:
        return self._site.heartbeat_interval_s

    def now_iso(self) -> str:
        return self._clock.now().isoformat().replace("+00:00", "Z")

    def authorize(self, id_tag: str) -> bool:
        return not self._site.id_tags or id_tag in self._site.id_tags

    async def on_boot(self, info: dict[str, str]) -> bool:
        self.boot_info = info
        version = getattr(self.link, "version", "")
        await self._store.seen(
            self.identity,
            "pending" if self.pending else "accepted",
            self._clock.now(),
            version,
            info,
        )
        self._emit("boot", {**info, "version": version, "pending": self.pending})
        if self.pending:
            log.info("ocpp charger pending", charger=self.identity, **info)
            return False
        self.booted = True
        log.info("ocpp charger booted", charger=self.device_id, version=version, **info)
        if self.transaction is None:
            self.transaction = await self._store.open_transaction(self.identity)
        self.followup(self._after_boot)
        return True

    async def _after_boot(self) -> None:
        link = self.link
        if link is None:
            return
        # Each step on its own: a charger refusing one must not skip the others.
        if self.quirks.configure_meter_values:
            await self._step(
                "configure meter values",
                link.configure_meter_values(
                    self._site.meter_value_sample_interval_s, self.quirks.measurands
                ),
            )
        if self.limit is not None:  # re-assert our last limit: the charger may have rebooted
            last = self.limit
            await self._step(
                "re-assert limit", self.set_limit(last.current_a, last.phases, last.dsr)
            )
        await self._step("trigger status", link.trigger_status(self.cfg.connector_id))

    async def _step(self, what: str, coro: Awaitable[Any]) -> None:
        try:
            await coro
            self._call_ok()
        except TimeoutError:
            self._on_timeout(what)
        except (OCPPError, DeviceRejected, DeviceUnreachable, DeviceTimeout) as exc:
            log.warning("ocpp follow-up failed", charger=self.device_id, step=what, error=str(exc))

    def on_status(
        self, status: str, connector_id: int, error_code: str | None, info: str | None
    ) -> None:
        if connector_id == 0:
            # Connector 0 is the charger as a whole: only a fault there matters.
            if status in ("Faulted", "Unavailable"):
                self.set_fault(f"charger status {status} ({error_code or 'no code'})")
            elif self.faulted_reason and self.faulted_reason.startswith("charger status"):
                self.clear_fault()
            return
        if connector_id != self.cfg.connector_id:
            return
        if status == "Occupied" and self.status in _TX_STATES:
            return  # 2.0.1: the TransactionEvent chargingState says more than "Occupied"
        changed = status != self.status
        self.status = status
        self.error_code = error_code
        if changed:
            log.info(
                "ocpp charger status", charger=self.device_id, status=status, error_code=error_code
            )
            self._emit(
                "status",
                {"status": status, "error_code": error_code, "state": str(self.current_state())},
            )

    def on_data_transfer(self, vendor_id: str, message_id: str | None, data: Any) -> None:
        log.info(
            "ocpp data transfer ignored",
            charger=self.device_id,
            vendor_id=vendor_id,
            message_id=message_id,
        )

    def log_config_refused(self, key: str, value: str, status: str) -> None:
        log.warning(
            "ocpp configuration refused",
            charger=self.device_id,
            key=key,
            value=value,
            status=status,
        )

    def log_security_event(self, kind: str, info: str | None) -> None:
        log.warning("ocpp security event", charger=self.device_id, kind=kind, info=info)

    async def on_transaction_start16(
        self, connector_id: int, id_tag: str, meter_start_wh: float
    ) -> int:
        tx = self.transaction
        # A charger replaying its StartTransaction after a reconnect gets the same id.
        if (
            tx is not None
            and tx.connector_id == connector_id
            and tx.meter_start_wh == meter_start_wh
        ):
            return int(tx.transaction_id)
        # Seconds since the epoch as a floor: unique across restarts even without a database.
        floor = max(int(self._clock.now().timestamp()), self._last_tx_id + 1)
        tx_id = await self._store.next_transaction_id(floor)
        self._last_tx_id = tx_id
        await self._begin(
            Transaction(str(tx_id), connector_id, meter_start_wh, to_ms(self._clock.now()), id_tag)
        )
        return tx_id

    async def _begin(self, tx: Transaction) -> None:
        if self.transaction is not None and self.transaction.transaction_id != tx.transaction_id:
            await self._store.stop_transaction(
                self.identity,
                self.transaction.transaction_id,
                self._clock.now(),
                None,
                "superseded",
            )
        tx.meter_last_wh = tx.meter_start_wh
        self.transaction = tx
        await self._store.start_transaction(self.identity, tx)
        log.info(
            "ocpp transaction started",
            charger=self.device_id,
            transaction_id=tx.transaction_id,
            meter_start_wh=tx.meter_start_wh,
        )
        self._emit(
            "transaction_started",
            {"transaction_id": tx.transaction_id, "meter_start_wh": tx.meter_start_wh},
        )

    async def on_transaction_stop(
        self, transaction_id: str, meter_stop_wh: float | None, reason: str
    ) -> None:
        tx = self.transaction
        if tx is not None and tx.transaction_id == transaction_id:
            if meter_stop_wh is not None:
                tx.meter_last_wh = meter_stop_wh
            self.last_session_wh = await self.session_energy_wh()
            self.transaction = None
        await self._store.stop_transaction(
            self.identity, transaction_id, self._clock.now(), meter_stop_wh, reason
        )
        log.info(
            "ocpp transaction stopped",
            charger=self.device_id,
            transaction_id=transaction_id,
            session_energy_wh=self.last_session_wh,
            reason=reason,
        )
        self._emit(
            "transaction_stopped",
            {"transaction_id": transaction_id, "session_energy_wh": self.last_session_wh},
        )

    async def on_transaction_event201(
        self,
        event_type: str,
        tx_id: str,
        evse_id: int,
        sample: MeterSample,
        charging_state: str | None,
        stopped_reason: str | None,
    ) -> None:
        if evse_id != self.cfg.connector_id:
            return
        tx = self.transaction
        if event_type == "Started" or tx is None or tx.transaction_id != tx_id:
            if tx is None or tx.transaction_id != tx_id:
                known = await self._store.open_transaction(self.identity)
                if known is not None and known.transaction_id == tx_id:
                    self.transaction = known  # resumed after a daemon restart
                else:
                    start = sample.energy_wh
                    if start is None:
                        start = self.sample.energy_wh if self.sample else None
                    if event_type != "Started":
                        log.warning(
                            "ocpp transaction joined late, meter start assumed",
                            charger=self.device_id,
                            transaction_id=tx_id,
                            meter_start_wh=start,
                        )
                    if start is not None:
                        await self._begin(
                            Transaction(tx_id, evse_id, start, to_ms(self._clock.now()))
                        )
        if charging_state:
            self.on_status(charging_state, evse_id, None, None)
        await self.on_meter_values(sample, tx_id)
        if event_type == "Ended":
            await self.on_transaction_stop(tx_id, sample.energy_wh, stopped_reason or "Local")

    async def on_meter_values16(self, sample: MeterSample, transaction_id: str | None) -> None:
        tx = self.transaction
        if transaction_id is not None and (tx is None or tx.transaction_id != transaction_id):
            known = await self._store.open_transaction(self.identity)
            if known is not None and known.transaction_id == transaction_id:
                self.transaction = known
            elif sample.energy_wh is not None:
                # A transaction we never saw start (daemon restarted without its database):
                # count from the first register we see, never from the lifetime total.
                log.warning(
                    "ocpp transaction joined late, meter start assumed",
                    charger=self.device_id,
                    transaction_id=transaction_id,
                    meter_start_wh=sample.energy_wh,
                )
                await self._begin(
                    Transaction(
                        transaction_id,
                        self.cfg.connector_id,
                        sample.energy_wh,
                        to_ms(self._clock.now()),
                    )
                )
        await self.on_meter_values(sample, transaction_id)

    async def on_meter_values(self, sample: MeterSample, transaction_id: str | None) -> None:
        for problem in sample.problems:
            log.warning("ocpp meter value skipped", charger=self.device_id, problem=problem)
        now = self._clock.now()
        if self.sample is None:
            self.sample = MeterSample()
        self.sample.merge(sample)
        self.sample.problems.clear()
        if sample.power_w is None and sample.current_a:
            # No power measurand: estimate from per-phase currents at the nominal voltage.
            volts = sample.voltage_v or self.cfg.voltage_v
            self.sample.power_w = sum(sample.current_a.values()) * volts
        self._sample_at_s = self._clock.monotonic()
        tx = self.transaction
        if (
            tx is not None
            and sample.energy_wh is not None
            and (transaction_id is None or transaction_id == tx.transaction_id)
        ):
            tx.meter_last_wh = sample.energy_wh
            await self._store.update_meter(self.identity, tx.transaction_id, sample.energy_wh)
        readings = self._readings(now)
        if self._publish and readings:
            self._state.publish(readings)
            if self.faulted_reason is not None:
                # Publishing clears "down"; a charger we cannot command stays down.
                self._state.mark_down(self.device_id, f"faulted: {self.faulted_reason}")
        self._check_outcome(sample)
        self._emit(
            "meter",
            {
                "power_w": self.sample.power_w,
                "current_a": dict(self.sample.current_a),
                "energy_wh": self.sample.energy_wh,
                "session_energy_wh": await self.session_energy_wh(),
            },
        )

    def _readings(self, now: Any) -> list[Reading]:
        s = self.sample
        assert s is not None
        out: list[Reading] = []
        dev = self.device_id
        if s.power_w is not None:
            out.append(Reading(dev, Quantity.POWER_W, s.power_w, now))
        phase_q = {
            "L1": Quantity.CURRENT_L1_A,
            "L2": Quantity.CURRENT_L2_A,
            "L3": Quantity.CURRENT_L3_A,
            "": Quantity.CURRENT_A,
        }
        for phase, amps in s.current_a.items():
            out.append(Reading(dev, phase_q[phase], amps, now))
        if s.energy_wh is not None:
            out.append(Reading(dev, Quantity.ENERGY_IMPORT_WH, s.energy_wh, now))
        if self.transaction is not None:
            session = session_energy_wh(
                self.transaction.meter_last_wh, self.transaction.meter_start_wh
            )
            if session is not None:
                out.append(Reading(dev, Quantity.SESSION_ENERGY_WH, session, now))
        if s.soc_pct is not None:
            out.append(Reading(dev, Quantity.SOC_PCT, s.soc_pct, now))
        if s.voltage_v is not None:
            out.append(Reading(dev, Quantity.VOLTAGE_V, s.voltage_v, now))
        return out

    def _check_outcome(self, sample: MeterSample) -> None:
        cmd = self.limit
        if cmd is None or cmd.outcome is not None:
            return
        if self._clock.monotonic() < cmd.check_after_s:
            return  # still inside the charger's own randomised delay
        verdict = followed(cmd.current_a, sample.max_phase_current_a, self.cfg.follow_tolerance_a)
        if verdict is None:
            return
        if verdict:
            cmd.outcome = True
            self._violations = 0
            if self.ignores_limits:
                log.info("ocpp charger follows limits again", charger=self.device_id)
                self.ignores_limits = False
        else:
            self._violations += 1
            if self._violations < VIOLATIONS_TO_FLAG:
                return
            cmd.outcome = False
            if not self.ignores_limits:
                log.error(
                    "ocpp charger ignores its limit",
                    charger=self.device_id,
                    limit_a=cmd.current_a,
                    measured_a=sample.max_phase_current_a,
                )
            self.ignores_limits = True
        self._emit(
            "outcome",
            {
                "limit_a": cmd.current_a,
                "followed": cmd.outcome,
                "measured_a": sample.max_phase_current_a,
            },
        )
        if cmd.command_pk is not None:
            self.followup(
                lambda: self._store.command_followed(cmd.command_pk or 0, bool(cmd.outcome))
            )

    def _fresh_power_w(self) -> float | None:
        if self.sample is None or self.sample.power_w is None or self._sample_at_s is None:
            return None
        age = self._clock.monotonic() - self._sample_at_s
        if self.link is None or age > 3.0 * self._site.meter_value_sample_interval_s:
            return None
        return self.sample.power_w

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._listener is not None:
            self._listener(kind, {"charger": self.identity, **data})

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the web page and `hems charger test`."""
        return {
            "id": self.device_id,
            "identity": self.identity,
            "version": getattr(self.link, "version", None),
            "state": str(self.current_state()),
            "status": self.status,
            "pending": self.pending,
            "boot": dict(self.boot_info),
            "faulted": self.faulted_reason,
            "ignores_limits": self.ignores_limits,
            "limit_a": None if self.limit is None else self.limit.current_a,
            "phases": self.active_phases,
            "transaction_id": None if self.transaction is None else self.transaction.transaction_id,
            "expected_response_delay_s": self.expected_response_delay_s(),
        }
