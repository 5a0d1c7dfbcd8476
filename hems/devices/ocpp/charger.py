"""One charger as an `EvCharger`, the same across OCPP versions and vendors.

The object outlives connections: a charger that reconnects gets a new link (v16/v201
protocol object) but keeps its state, its transaction (meter start) and its last limit,
which is re-sent after every boot so a reboot cannot leave it at full power.

`OcppCharger` is the facade; the jobs live beside it: limits.py (deciding, sending and
judging a limit), transactions.py (the running session), faults.py (when it shows faulted),
followups.py (calls made after a handler answered), readings.py (what is published).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog
from ocpp.exceptions import OCPPError

from hems.core.capabilities import EvState
from hems.core.clock import Clock
from hems.core.readings import Role
from hems.core.state import SiteState
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.events import (
    ChargerBooted,
    ChargerEvent,
    ChargerFaulted,
    ChargerListener,
    ChargerOffline,
    ChargerStatusChanged,
    LimitOutcome,
    MeterUpdated,
)
from hems.devices.ocpp.faults import Faults
from hems.devices.ocpp.followups import Followup, Followups, cancel_until_done
from hems.devices.ocpp.limits import LimitCommand, Limits, response_delay_s
from hems.devices.ocpp.model import MeterSample, derive_state
from hems.devices.ocpp.quirks import QuirkProfile
from hems.devices.ocpp.readings import readings
from hems.devices.ocpp.store import OcppStore, Transaction
from hems.devices.ocpp.transactions import Transactions
from hems.errors import DeviceRejected, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

_TX_STATES = {"Charging", "SuspendedEV", "SuspendedEVSE", "EVConnected", "Idle"}


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
        listener: ChargerListener | None = None,
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
        self.sample: MeterSample | None = None
        self._sample_at_s: float | None = None
        self._alive_s = 0.0
        self.transactions = Transactions(self.device_id, self.identity, store, clock, self._emit)
        self._faults = Faults(self.device_id, site.response_timeout_s, self._on_fault)
        self._limits = Limits(
            cfg,
            quirks,
            clock,
            store,
            self._faults,
            self.transactions,
            self._emit,
            site.profile_validity_s,
        )
        self._followups = Followups(self.device_id, self._faults.call_timed_out)
        if publish:
            state.register_device(
                self.device_id, Role.EV, stale_after_s=3.0 * site.meter_value_sample_interval_s
            )
            state.mark_down(self.device_id, "not connected")

    # -- state kept by the parts ------------------------------------------------------------
    @property
    def transaction(self) -> Transaction | None:
        return self.transactions.current

    @property
    def last_session_wh(self) -> float:
        return self.transactions.last_session_wh

    @property
    def limit(self) -> LimitCommand | None:
        return self._limits.limit

    @property
    def active_phases(self) -> int:
        return self._limits.active_phases

    @property
    def profile_unsupported(self) -> bool:
        return self._limits.profile_unsupported

    @profile_unsupported.setter
    def profile_unsupported(self, value: bool) -> None:
        self._limits.profile_unsupported = value

    @property
    def profile_expiry(self) -> bool:
        """Profiles sent to this charger expire (False: it refused validTo, see limits.py)."""
        return self._limits.profile_expiry

    @property
    def ignores_limits(self) -> bool:
        return self._limits.ignores_limits

    @property
    def faulted_reason(self) -> str | None:
        return self._faults.reason

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
        return self.transactions.session_energy_wh()

    def expected_response_delay_s(self, dsr: bool = False) -> float:
        """Worst-case delay before a start or rate change takes effect [s] (the charger's
        own randomised delay, GB Smart Charge Points Regulations 2021; none for DSR)."""
        return response_delay_s(self.cfg, self.quirks, dsr)

    async def set_limit(self, current_a: float, phases: int, dsr: bool = False) -> None:
        """Limit charging to `current_a` per phase on `phases`; below the minimum: pause.

        dsr: the change is aggregator-driven demand-side response (recorded, and signalled
        to the charger where its profile says how). Raises DeviceUnreachable when offline,
        DeviceTimeout when unanswered, DeviceRejected when refused without a fallback.
        """
        link = None if self.pending else self.link
        await self._limits.set(link, self.quirks, current_a, phases, dsr)

    async def apply_safe_state(self) -> None:
        """Put the charger in its configured safe state: paused (0 A) or the minimum."""
        current_a = 0.0 if self.cfg.safe_state == "pause" else self.cfg.min_current_a
        await self.set_limit(current_a, self.active_phases)

    # -- higher-level commands -------------------------------------------------------------
    async def command(self, name: str, *args: Any) -> Any:
        """Run one link call (remote_start, remote_stop, reset, …) with error mapping."""
        link = self.link
        if link is None:
            raise DeviceUnreachable(self.device_id, "not connected")
        try:
            result = await getattr(link, name)(*args)
        except TimeoutError:
            self._faults.call_timed_out(name)
            raise DeviceTimeout(self.device_id, f"{name} not answered") from None
        except OCPPError as exc:
            raise DeviceRejected(self.device_id, f"{name}: {exc.code}") from None
        self._faults.call_answered()
        return result

    # -- connection lifecycle (called by the server) -----------------------------------------
    async def serve(self, link: Any) -> None:
        """Run one connection until it closes; owns the follow-up worker task."""
        from websockets.exceptions import ConnectionClosed

        self.link = link
        self.booted = False
        self._faults.new_connection()
        queue = self._followups.renew()
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(
                self._followups.work(queue), name=f"ocpp:{self.identity}:followups"
            )
            try:
                await link.start()
            except ConnectionClosed as exc:
                reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
                self._disconnected(link, reason)
            finally:
                self._disconnected(link, "connection ended")
                await cancel_until_done(worker)

    def publish_readings(self) -> None:
        """An unknown charger, once accepted, reports into SiteState like a configured one:
        the control loop and its fuse guard see its power (a pending one's never do)."""
        if self._publish:
            return
        self._publish = True
        self._state.register_device(
            self.device_id, Role.EV, stale_after_s=3.0 * self._site.meter_value_sample_interval_s
        )

    def _disconnected(self, link: Any, reason: str) -> None:
        if self.link is not link:
            return  # a newer connection replaced this one
        self.link = None
        self.booted = False
        log.warning("ocpp charger offline", charger=self.device_id, reason=reason)
        if self._publish:
            self._state.mark_down(self.device_id, f"offline: {reason}")
        self._emit(
            ChargerOffline(
                device_id=self.device_id,
                identity=self.identity,
                at=self._clock.now(),
                reason=reason,
            )
        )

    def followups_idle(self) -> bool:
        """No follow-up call queued or running on the current connection. Their answers
        reset the unanswered-call count, so a test timing calls waits for this first."""
        return self._followups.idle()

    def followup(self, job: Followup) -> None:
        """Queue a call to make after the current handler has answered."""
        self._followups.put(job)

    def set_fault(self, reason: str) -> None:
        self._faults.set(reason)

    def clear_fault(self) -> None:
        self._faults.clear()

    def _on_fault(self, reason: str) -> None:
        if self._publish:
            self._state.mark_down(self.device_id, f"faulted: {reason}")
        self._emit(
            ChargerFaulted(
                device_id=self.device_id,
                identity=self.identity,
                at=self._clock.now(),
                reason=reason,
            )
        )

    def on_alive(self) -> None:
        self._alive_s = self._clock.monotonic()

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
        self._emit(
            ChargerBooted(
                device_id=self.device_id,
                identity=self.identity,
                at=self._clock.now(),
                version=version,
                vendor=info.get("vendor", ""),
                model=info.get("model", ""),
                serial=info.get("serial", ""),
                firmware=info.get("firmware", ""),
                pending=self.pending,
            )
        )
        if self.pending:
            log.info("ocpp charger pending", charger=self.identity, **info)
            return False
        self.booted = True
        log.info("ocpp charger booted", charger=self.device_id, version=version, **info)
        await self.transactions.resume()
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
            self._faults.call_answered()
        except TimeoutError:
            self._faults.call_timed_out(what)
        except (OCPPError, DeviceRejected, DeviceUnreachable, DeviceTimeout) as exc:
            log.warning("ocpp follow-up failed", charger=self.device_id, step=what, error=str(exc))

    def on_status(
        self, status: str, connector_id: int, error_code: str | None, info: str | None
    ) -> None:
        if connector_id == 0:
            # Connector 0 is the charger as a whole: only a fault there matters.
            self._faults.charger_status(status, error_code)
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
                ChargerStatusChanged(
                    device_id=self.device_id,
                    identity=self.identity,
                    at=self._clock.now(),
                    status=status,
                    error_code=error_code,
                    state=self.current_state(),
                )
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

    async def on_meter_values(self, sample: MeterSample, transaction_id: str | None) -> None:
        """MeterValues of either version (the link has joined the transaction, if any)."""
        for problem in sample.problems:
            log.warning("ocpp meter value skipped", charger=self.device_id, problem=problem)
        now = self._clock.now()
        if self.sample is None:
            self.sample = MeterSample()
        merged = self.sample
        merged.merge(sample)
        merged.problems.clear()
        if sample.power_w is None and sample.current_a:
            # No power measurand: estimate from per-phase currents at the nominal voltage.
            volts = sample.voltage_v or self.cfg.voltage_v
            merged.power_w = sum(sample.current_a.values()) * volts
        self._sample_at_s = self._clock.monotonic()
        await self.transactions.meter(sample.energy_wh, transaction_id)
        out = readings(self.device_id, merged, self.transaction, now)
        if self._publish and out:
            self._state.publish(out)
            if self.faulted_reason is not None:
                # Publishing clears "down"; a charger we cannot command stays down.
                self._state.mark_down(self.device_id, f"faulted: {self.faulted_reason}")
        self._judge_limit(sample)
        self._emit(
            MeterUpdated(
                device_id=self.device_id,
                identity=self.identity,
                at=now,
                power_w=merged.power_w,
                current_a=dict(merged.current_a),
                energy_wh=merged.energy_wh,
                session_energy_wh=self.transactions.session_energy_wh(),
            )
        )

    def _judge_limit(self, sample: MeterSample) -> None:
        cmd = self._limits.judge(sample, self._clock.monotonic())
        if cmd is None:
            return
        self._emit(
            LimitOutcome(
                device_id=self.device_id,
                identity=self.identity,
                at=self._clock.now(),
                limit_a=cmd.current_a,
                followed=bool(cmd.outcome),
                measured_a=sample.max_phase_current_a or 0.0,  # judged: never None
            )
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

    def _emit(self, event: ChargerEvent) -> None:
        if self._listener is not None:
            self._listener(event)

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
            # How long hems' limit outlives hems: None when it does not expire (a charger
            # refusing validTo, or limited by a configuration key / DataTransfer).
            "limit_expires_after_s": (
                self._site.profile_validity_s
                if self.profile_expiry and not self.profile_unsupported
                else None
            ),
        }
