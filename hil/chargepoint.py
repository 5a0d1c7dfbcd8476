"""Charge-point simulator for OCPP 1.6J and 2.0.1, on the same `ocpp` package as hems.

`SimChargePoint(cfg, clock, ev=EvModel(), quirks=SimQuirks(...))` connects to a central
system, boots, reports status, runs transactions while the EV is plugged, obeys (or, by
quirk, misreads) charging profiles and sends MeterValues every `meter_interval_s`.
Installed profiles are kept in `profiles` (by id) until cleared or past their `validTo`;
then the charger is back on its own default (`max_current_a`). `lost_calls` records each
CALL of the charger that got no answer.
Use it in-process: `task = tg.create_task(sim.run())`. `on_power(power_w)` feeds the EV's
draw into a simulated home (e.g. `lambda w: home.set_external_load_w("ev", w)`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as res16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as res201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hems.core.clock import Clock
from hems.devices.ocpp.rpc import StrictRouting
from hil.ev import IEC_MIN_CURRENT_A, EvModel

# The ocpp package logs every frame at INFO; the simulator's frames stay quiet by default.
_FRAMES = logging.getLogger("hil.chargepoint.frames")
_FRAMES.setLevel(logging.WARNING)


@dataclass
class SimQuirks:
    """One switch per real-world behaviour hems must cope with."""

    # Answer to SetChargingProfile: Accepted, Rejected, or a CallError NotSupported.
    profile_response: Literal["Accepted", "Rejected", "NotSupported"] = "Accepted"
    wants_watts: bool = False  # profiles in A are Rejected
    limit_config_key: str | None = "MaxCurrent"  # ChangeConfiguration/SetVariables key
    limit_data_transfer: tuple[str, str] | None = None  # (vendorId, messageId) that limits
    lifetime_register_wh: float = 0.0  # register value at simulator start (lifetime meter)
    session_register: bool = False  # the register restarts at 0 with each transaction
    suspended_ev_when_paused: bool = False  # says SuspendedEV when the EVSE holds it at 0
    charging_at_zero: bool = False  # stays "Charging" while drawing nothing
    randomised_delay_max_s: float = 0.0  # GB SCP delay on rate changes (not for DSR)
    ignores_limits: bool = False  # accepts limits and keeps drawing the maximum
    phase_switching: bool = True
    energy_in_kwh: bool = False
    omit_units: bool = False
    silent_actions: set[str] = field(default_factory=set)  # CALLs never answered
    bogus_answer_first: bool = False  # an answer with a wrong id before the right one
    refuses_valid_to: bool = False  # a profile with validTo is Rejected (older firmware)


@dataclass
class SimConfig:
    url: str  # ws://127.0.0.1:9000 (the identity is appended)
    identity: str = "CP1"
    version: Literal["1.6", "2.0.1"] = "1.6"
    password: str | None = None
    connector_id: int = 1
    phases: int = 3  # phases wired
    max_current_a: float = 32.0
    voltage_v: float = 230.0
    meter_interval_s: float = 10.0
    id_tag: str = "HOMETAG"
    reconnect: bool = True
    reconnect_delay_s: float = 0.2
    seed: int = 1
    ssl_context: Any = None  # ssl.SSLContext for wss:// (security profile 2)
    # The car tells its SoC (ISO 15118): sent in MeterValues once the SoC measurand is
    # configured; False rejects a measurand list with SoC, like a charger that cannot.
    sends_soc: bool = True


_MEASURAND_KEYS = frozenset({"MeterValuesSampledData", "SampledDataCtrlr.TxUpdatedMeasurands"})


class _SimRouting(StrictRouting):
    sim: SimChargePoint

    async def route_message(self, raw_msg: str | bytes) -> None:
        q = self.sim.quirks
        try:
            data = json.loads(raw_msg)
        except (ValueError, TypeError, RecursionError):
            data = None
        if isinstance(data, list) and len(data) == 4 and data[0] == 2:
            if data[2] in q.silent_actions:
                self.sim.unanswered.append(str(data[2]))
                return
            if q.bogus_answer_first:
                await self._send(json.dumps([3, f"x{str(data[1])[:20]}", {}]))  # type: ignore[attr-defined]
        await super().route_message(raw_msg)


def _limit_from_profile(profile: dict[str, Any], voltage_v: float) -> tuple[float, str, int | None]:
    schedule = profile["charging_schedule"]
    if isinstance(schedule, list):
        schedule = schedule[0]
    period = schedule["charging_schedule_period"][0]
    return float(period["limit"]), str(schedule["charging_rate_unit"]), period.get("number_phases")


class _Sim16(_SimRouting, Cp16):
    @on("SetChargingProfile", skip_schema_validation=True)
    def _set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **kw: Any):
        status = self.sim.apply_profile(cs_charging_profiles, dsr=None)
        return res16.SetChargingProfile(status=status)

    @on("ClearChargingProfile", skip_schema_validation=True)
    def _clear(self, **kw: Any):
        return res16.ClearChargingProfile(status=self.sim.clear_profiles(kw.get("id")))

    @on("GetCompositeSchedule", skip_schema_validation=True)
    def _composite(self, connector_id: int, duration: int, **kw: Any):
        return res16.GetCompositeSchedule(status="Accepted", connector_id=connector_id)

    @on("ChangeConfiguration", skip_schema_validation=True)
    def _change(self, key: str, value: str, **kw: Any):
        return res16.ChangeConfiguration(status=self.sim.set_config(key, value))

    @on("GetConfiguration", skip_schema_validation=True)
    def _get(self, **kw: Any):
        keys = kw.get("key") or list(self.sim.config)
        known = [
            {"key": k, "readonly": False, "value": self.sim.config[k]}
            for k in keys
            if k in self.sim.config
        ]
        unknown = [k for k in keys if k not in self.sim.config]
        return res16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("TriggerMessage", skip_schema_validation=True)
    def _trigger(self, requested_message: str, **kw: Any):
        return res16.TriggerMessage(status=self.sim.trigger(requested_message))

    @on("RemoteStartTransaction", skip_schema_validation=True)
    def _remote_start(self, id_tag: str, **kw: Any):
        return res16.RemoteStartTransaction(status=self.sim.remote_start())

    @on("RemoteStopTransaction", skip_schema_validation=True)
    def _remote_stop(self, transaction_id: int, **kw: Any):
        return res16.RemoteStopTransaction(status=self.sim.remote_stop())

    @on("Reset", skip_schema_validation=True)
    def _reset(self, type: str, **kw: Any):
        self.sim.later(self.sim.reboot)
        return res16.Reset(status="Accepted")

    @on("ChangeAvailability", skip_schema_validation=True)
    def _availability(self, connector_id: int, type: str, **kw: Any):
        return res16.ChangeAvailability(status="Accepted")

    @on("UnlockConnector", skip_schema_validation=True)
    def _unlock(self, connector_id: int, **kw: Any):
        return res16.UnlockConnector(status="Unlocked")

    @on("DataTransfer", skip_schema_validation=True)
    def _data(self, vendor_id: str, **kw: Any):
        return res16.DataTransfer(
            status=self.sim.data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))
        )


class _Sim201(_SimRouting, Cp201):
    @on("SetChargingProfile", skip_schema_validation=True)
    def _set_profile(self, evse_id: int, charging_profile: dict[str, Any], **kw: Any):
        custom = charging_profile.get("custom_data") or {}
        dsr = bool(custom.get("dsr")) if custom else None
        return res201.SetChargingProfile(status=self.sim.apply_profile(charging_profile, dsr))

    @on("ClearChargingProfile", skip_schema_validation=True)
    def _clear(self, **kw: Any):
        status = self.sim.clear_profiles(kw.get("charging_profile_id"))
        return res201.ClearChargingProfile(status=status)

    @on("SetVariables", skip_schema_validation=True)
    def _set_vars(self, set_variable_data: list[dict[str, Any]], **kw: Any):
        out = []
        for item in set_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            status = self.sim.set_config(key, str(item["attribute_value"]))
            out.append(
                {
                    "attribute_status": status,
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return res201.SetVariables(set_variable_result=out)

    @on("GetVariables", skip_schema_validation=True)
    def _get_vars(self, get_variable_data: list[dict[str, Any]], **kw: Any):
        out = []
        for item in get_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            value = self.sim.config.get(key)
            entry = {
                "attribute_status": "Accepted" if value is not None else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                entry["attribute_value"] = value
            out.append(entry)
        return res201.GetVariables(get_variable_result=out)

    @on("TriggerMessage", skip_schema_validation=True)
    def _trigger(self, requested_message: str, **kw: Any):
        return res201.TriggerMessage(status=self.sim.trigger(requested_message))

    @on("RequestStartTransaction", skip_schema_validation=True)
    def _remote_start(self, id_token: dict[str, Any], remote_start_id: int, **kw: Any):
        return res201.RequestStartTransaction(status=self.sim.remote_start())

    @on("RequestStopTransaction", skip_schema_validation=True)
    def _remote_stop(self, transaction_id: str, **kw: Any):
        return res201.RequestStopTransaction(status=self.sim.remote_stop())

    @on("Reset", skip_schema_validation=True)
    def _reset(self, type: str, **kw: Any):
        self.sim.later(self.sim.reboot)
        return res201.Reset(status="Accepted")

    @on("DataTransfer", skip_schema_validation=True)
    def _data(self, vendor_id: str, **kw: Any):
        return res201.DataTransfer(
            status=self.sim.data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))
        )


class SimChargePoint:
    """A charge point with one connector and an EV; `await run()` until cancelled."""

    def __init__(
        self,
        cfg: SimConfig,
        clock: Clock,
        ev: EvModel | None = None,
        quirks: SimQuirks | None = None,
        on_power: Callable[[float], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.ev = ev if ev is not None else EvModel()
        self.quirks = quirks or SimQuirks()
        self.on_power = on_power
        self._rng = random.Random(cfg.seed)
        self.register_wh = self.quirks.lifetime_register_wh
        self.limit_a: float | None = None  # in force now (None: no limit = max)
        self._pending_limit: tuple[float | None, float] | None = None  # (A, apply at s)
        self.phases = cfg.phases
        self.transaction_id: str | None = None
        self.status = "Available"
        self.booted = asyncio.Event()
        self.connected = asyncio.Event()
        self.dropped = asyncio.Event()  # set once a connection has ended, until the next
        self.registration = ""
        self.connects = 0
        self.boot_refusals: list[int] = []  # HTTP status of refused handshakes
        self.unanswered: list[str] = []  # CSMS CALLs this charger left unanswered (quirk)
        # The charger's own CALLs that got no answer: (action, seconds waited). A call cut
        # by the central system closing the connection waits ~0 s; an ignored one longer.
        self.lost_calls: list[tuple[str, float]] = []
        # Charging profiles in force, by id; each (profile, expires at monotonic s or None).
        self.profiles: dict[int, tuple[dict[str, Any], float | None]] = {}
        self._clock_offset_s = 0.0  # central system's time - ours, set at boot
        self.errors: list[str] = []  # why sessions ended
        self.received: list[tuple[str, Any]] = []  # (what, detail) for tests
        self.power_w = 0.0
        self.current_a = 0.0
        self._dsr_next = False
        self._stopped_remotely = False
        self._seq = 0
        self._tx_counter = 0
        self._ws: ClientConnection | None = None
        self._link: Any = None
        self._jobs: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._last_step_s = clock.monotonic()
        self.config: dict[str, str] = {
            "MeterValueSampleInterval": f"{cfg.meter_interval_s:g}",
            "MeterValuesSampledData": "Energy.Active.Import.Register",
            "SampledDataCtrlr.TxUpdatedInterval": f"{cfg.meter_interval_s:g}",
            "SampledDataCtrlr.TxUpdatedMeasurands": "Energy.Active.Import.Register",
            # The simulator always reports at the interval, aligned data included.
            "ClockAlignedDataInterval": f"{cfg.meter_interval_s:g}",
            "MeterValuesAlignedData": "Energy.Active.Import.Register",
            "AlignedDataCtrlr.Interval": f"{cfg.meter_interval_s:g}",
            "AlignedDataCtrlr.Measurands": "Energy.Active.Import.Register",
        }
        if self.quirks.limit_config_key:
            self.config[self.quirks.limit_config_key] = f"{cfg.max_current_a:g}"
        self._plugged = self.ev.plugged(clock.now())
        self._stop = False

    # -- test controls -----------------------------------------------------------------------
    def plug_in(self) -> None:
        self.ev.plug_in_at = None
        self.ev.leave_at = None

    def unplug(self) -> None:
        self.ev.leave_at = self.clock.now()

    async def disconnect(self) -> None:
        """Drop the connection (the run loop reconnects when `reconnect` is set)."""
        if self._ws is not None:
            await self._ws.close()

    async def call(self, payload: Any) -> Any:
        """Send a CALL as the charger (for tests); raises on CallError."""
        return await self._call(payload)

    async def _call(self, payload: Any) -> Any:
        """Every CALL of the charger: counted in `lost_calls` if no answer comes."""
        sent_s = self.clock.monotonic()
        try:
            return await self._link.call(payload, suppress=False)
        except (ConnectionClosed, TimeoutError, asyncio.CancelledError):
            action = type(payload).__name__
            self.lost_calls.append((action, self.clock.monotonic() - sent_s))
            raise

    async def send_raw(self, frame: str) -> None:
        assert self._ws is not None
        await self._ws.send(frame)

    def stop(self) -> None:
        """Stop after the current step and do not reconnect."""
        self._stop = True

    async def aclose(self) -> None:
        """Stop and close the connection; `run()` then returns on its own."""
        self._stop = True
        await self.disconnect()

    # -- main loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        headers = {}
        if self.cfg.password is not None:
            token = base64.b64encode(f"{self.cfg.identity}:{self.cfg.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        subprotocol = "ocpp1.6" if self.cfg.version == "1.6" else "ocpp2.0.1"
        while not self._stop:
            url = self.cfg.url.rstrip("/") + "/" + self.cfg.identity  # may change (tests)
            try:
                async with connect(
                    url,
                    subprotocols=[subprotocol],  # type: ignore[list-item]
                    additional_headers=headers,
                    proxy=None,
                    open_timeout=5,
                    ssl=self.cfg.ssl_context,
                ) as ws:
                    self._ws = ws
                    self.connects += 1
                    await self._session(ws)
            except InvalidStatus as exc:
                self.boot_refusals.append(exc.response.status_code)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                pass
            finally:
                self._ws = None
                self.connected.clear()
                self.booted.clear()
                self.dropped.set()
            if not self.cfg.reconnect:
                return
            await asyncio.sleep(self.cfg.reconnect_delay_s)

    async def _session(self, ws: ClientConnection) -> None:
        cls = _Sim16 if self.cfg.version == "1.6" else _Sim201
        link = cls(self.cfg.identity, ws, response_timeout=10, logger=_FRAMES)
        link._strict_init()
        link.sim = self
        self._link = link
        self._jobs = asyncio.Queue()
        self.dropped.clear()
        self.connected.set()
        receiver = asyncio.create_task(self._receive(link))
        worker = asyncio.create_task(self._work())
        body = asyncio.create_task(self._drive(ws))
        try:
            # The receiver ends when the connection closes. A CALL then in flight can never be
            # answered: abandon it at once (cancel the body) instead of waiting out its
            # response timeout, so the run loop reconnects promptly.
            await asyncio.wait({receiver, body}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                self.errors.append("connection closed with the session running")
        finally:
            for task in (body, worker, receiver):
                task.cancel()
            await asyncio.gather(body, worker, receiver, return_exceptions=True)
        if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
            raise receiver.exception()  # type: ignore[misc]

    async def _drive(self, ws: ClientConnection) -> None:
        try:
            await self._boot()
            await self._loop()
        except (ConnectionClosed, TimeoutError) as exc:
            self.errors.append(repr(exc))  # the run loop reconnects
        except OCPPError as exc:  # a refused CALL: drop the link and start over
            self.errors.append(repr(exc))
            await ws.close()

    async def _receive(self, link: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await link.start()

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            with contextlib.suppress(Exception):
                await job()

    def later(self, job: Callable[[], Awaitable[Any]]) -> None:
        self._jobs.put_nowait(job)

    async def _boot(self) -> None:
        while True:
            if self.cfg.version == "1.6":
                res = await self._call(
                    call16.BootNotification(
                        charge_point_vendor="hems-sim",
                        charge_point_model="SimCharger",
                        charge_point_serial_number=f"SIM-{self.cfg.identity}",
                        firmware_version="1.0",
                    ),
                )
            else:
                res = await self._call(
                    call201.BootNotification(
                        charging_station={
                            "vendor_name": "hems-sim",
                            "model": "SimCharger",
                            "serial_number": f"SIM-{self.cfg.identity}",
                            "firmware_version": "1.0",
                        },
                        reason="PowerUp",
                    ),
                )
            self.registration = str(res.status)
            # Like real chargers, take the central system's time (validTo is in its time).
            central = datetime.fromisoformat(str(res.current_time))
            self._clock_offset_s = (central - self.clock.now()).total_seconds()
            if res.status == "Accepted":
                break
            # Pending: wait for the interval or a TriggerMessage(BootNotification).
            self._boot_again = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(1, res.interval)):
                    await self._boot_again.wait()
        self.booted.set()
        await self._send_status(force=True)

    async def _loop(self) -> None:
        next_meter_s = self.clock.monotonic()
        while not self._stop:
            self._physics()
            await self._plug_events()
            await self._send_status()
            if self.clock.monotonic() >= next_meter_s:
                await self.send_meter_values()
                next_meter_s = self.clock.monotonic() + self.cfg.meter_interval_s
            await self.clock.sleep(min(self.cfg.meter_interval_s, 1.0) / 4)

    # -- physics -----------------------------------------------------------------------------
    def offered_a(self) -> float:
        """The current the charger offers now [A] (its profiles, else its default)."""
        return self._offered_a()

    def _offered_a(self) -> float:
        now_s = self.clock.monotonic()
        self._expire_profiles(now_s)
        if self._pending_limit is not None and now_s >= self._pending_limit[1]:
            self.limit_a = self._pending_limit[0]
            self._pending_limit = None
        if self.quirks.ignores_limits or self.limit_a is None:
            return self.cfg.max_current_a
        return min(self.limit_a, self.cfg.max_current_a)

    def _physics(self) -> None:
        now_s = self.clock.monotonic()
        dt_s = max(0.0, now_s - self._last_step_s)
        self._last_step_s = now_s
        # Energy over the last step at the last power, then the new operating point.
        self.register_wh += self.power_w * dt_s / 3600.0
        self.ev.step(self.power_w, dt_s)
        offered = self._offered_a() if self.transaction_id is not None else 0.0
        amps, phases = self.ev.draw_a(offered, self.phases, self.cfg.voltage_v)
        self.current_a = amps
        self._used_phases = phases
        self.power_w = amps * phases * self.cfg.voltage_v
        if self.on_power is not None:
            self.on_power(self.power_w)

    def _wanted_status(self) -> str:
        if not self._plugged:
            return "Available"
        if self.transaction_id is None:
            return "Preparing"
        if self.power_w > 0:
            return "Charging"
        if self._offered_a() < IEC_MIN_CURRENT_A:
            if self.quirks.charging_at_zero:
                return "Charging"
            return "SuspendedEV" if self.quirks.suspended_ev_when_paused else "SuspendedEVSE"
        return "Charging" if self.quirks.charging_at_zero else "SuspendedEV"

    async def _plug_events(self) -> None:
        plugged = self.ev.plugged(self.clock.now())
        if plugged and not self._plugged:
            self._plugged = True
        if (
            plugged
            and self.transaction_id is None
            and self.booted.is_set()
            and not self._stopped_remotely
        ):
            await self._start_transaction()
        if not plugged and self._plugged:
            self._plugged = False
            self._stopped_remotely = False  # a new plug-in starts a new session
            if self.transaction_id is not None:
                await self._stop_transaction("EVDisconnected")

    def _register_for_report(self) -> float:
        return self.register_wh - (
            self._tx_start_wh if self.quirks.session_register and self.transaction_id else 0.0
        )

    async def _start_transaction(self) -> None:
        self._tx_start_wh = self.register_wh
        meter_start = self._register_for_report()
        if self.cfg.version == "1.6":
            res = await self._call(
                call16.StartTransaction(
                    connector_id=self.cfg.connector_id,
                    id_tag=self.cfg.id_tag,
                    meter_start=int(meter_start),
                    timestamp=self._now(),
                ),
            )
            self.transaction_id = str(res.transaction_id)
        else:
            self._tx_counter += 1
            self.transaction_id = f"{self.cfg.identity}-{self._tx_counter}-{self.cfg.seed}"
            await self._tx_event("Started", "CablePluggedIn", "EVConnected")
        self.received.append(("transaction_started", self.transaction_id))

    async def _stop_transaction(self, reason: str) -> None:
        if self.cfg.version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=int(self._register_for_report()),
                    timestamp=self._now(),
                    transaction_id=int(self.transaction_id or 0),
                    reason=reason,
                ),
            )
        else:
            await self._tx_event("Ended", "EVCommunicationLost", "Idle", stopped=reason)
        self.transaction_id = None

    async def _tx_event(
        self, event: str, trigger: str, state: str, stopped: str | None = None
    ) -> None:
        self._seq += 1
        info: dict[str, Any] = {"transaction_id": self.transaction_id, "charging_state": state}
        if stopped:
            info["stopped_reason"] = stopped
        await self._call(
            call201.TransactionEvent(
                event_type=event,
                timestamp=self._now(),
                trigger_reason=trigger,
                seq_no=self._seq,
                transaction_info=info,
                evse={"id": self.cfg.connector_id, "connector_id": 1},
                meter_value=self._meter_value(),
                id_token={"id_token": self.cfg.id_tag, "type": "Local"}
                if event == "Started"
                else None,
            ),
        )

    # -- messages ----------------------------------------------------------------------------
    def _now(self) -> str:
        return self.clock.now().isoformat().replace("+00:00", "Z")

    def _sv(self, value: float, measurand: str, unit: str, phase: str | None = None) -> dict:
        if measurand.startswith("Energy") and self.quirks.energy_in_kwh:
            value, unit = value / 1000.0, "kWh"
        sv: dict[str, Any] = {"measurand": measurand, "context": "Sample.Periodic"}
        if phase:
            sv["phase"] = phase
        if self.cfg.version == "1.6":
            sv["value"] = f"{value:.1f}"
            if not self.quirks.omit_units:
                sv["unit"] = unit
        else:
            sv["value"] = round(value, 1)
            if not self.quirks.omit_units:
                sv["unit_of_measure"] = {"unit": unit}
        return sv

    def _sampled_measurands(self) -> list[str]:
        key = (
            "MeterValuesSampledData"
            if self.cfg.version == "1.6"
            else "SampledDataCtrlr.TxUpdatedMeasurands"
        )
        return [m.strip() for m in self.config.get(key, "").split(",")]

    def _meter_value(self) -> list[dict[str, Any]]:
        phases = ["L1", "L2", "L3"][: getattr(self, "_used_phases", self.phases)]
        values = [
            self._sv(self._register_for_report(), "Energy.Active.Import.Register", "Wh"),
            self._sv(self.power_w, "Power.Active.Import", "W"),
        ]
        for p in ["L1", "L2", "L3"][: self.cfg.phases]:
            values.append(
                self._sv(self.current_a if p in phases else 0.0, "Current.Import", "A", p)
            )
        values.append(self._sv(self.cfg.voltage_v, "Voltage", "V", "L1-N"))
        if self.cfg.sends_soc and "SoC" in self._sampled_measurands():
            values.append(self._sv(self.ev.soc_pct, "SoC", "Percent"))
        return [{"timestamp": self._now(), "sampled_value": values}]

    async def send_meter_values(self) -> None:
        self._physics()
        if self.cfg.version == "1.6":
            tx = int(self.transaction_id) if self.transaction_id else None
            await self._call(
                call16.MeterValues(
                    connector_id=self.cfg.connector_id,
                    meter_value=self._meter_value(),
                    transaction_id=tx,
                ),
            )
        elif self.transaction_id is not None:
            await self._tx_event("Updated", "MeterValuePeriodic", self._charging_state())
        else:
            await self._call(
                call201.MeterValues(evse_id=self.cfg.connector_id, meter_value=self._meter_value()),
            )

    def _charging_state(self) -> str:
        status = self._wanted_status()
        return {
            "Charging": "Charging",
            "SuspendedEV": "SuspendedEV",
            "SuspendedEVSE": "SuspendedEVSE",
            "Preparing": "EVConnected",
        }.get(status, "Idle")

    async def _send_status(self, force: bool = False) -> None:
        wanted = self._wanted_status()
        if wanted == self.status and not force:
            return
        self.status = wanted
        if self.cfg.version == "1.6":
            await self._call(
                call16.StatusNotification(
                    connector_id=self.cfg.connector_id,
                    error_code="NoError",
                    status=wanted,
                    timestamp=self._now(),
                ),
            )
        else:
            connector = "Available" if wanted == "Available" else "Occupied"
            await self._call(
                call201.StatusNotification(
                    timestamp=self._now(),
                    connector_status=connector,
                    evse_id=self.cfg.connector_id,
                    connector_id=1,
                ),
            )
            if self.transaction_id is not None and not force:
                await self._tx_event("Updated", "ChargingStateChanged", self._charging_state())

    # -- behaviour behind the handlers ---------------------------------------------------------
    def _set_limit(self, amps: float | None, dsr: bool | None) -> None:
        dsr = bool(dsr) or self._dsr_next
        self._dsr_next = False
        delay_s = 0.0
        if self.quirks.randomised_delay_max_s > 0 and not dsr:
            delay_s = self._rng.uniform(0, self.quirks.randomised_delay_max_s)
        self._pending_limit = (amps, self.clock.monotonic() + delay_s)
        self.received.append(("limit", {"current_a": amps, "dsr": dsr, "delay_s": delay_s}))
        self._offered_a()

    def apply_profile(self, profile: dict[str, Any], dsr: bool | None) -> str:
        self.received.append(("profile", profile))
        q = self.quirks
        if q.profile_response == "NotSupported":
            from ocpp.exceptions import NotSupportedError

            raise NotSupportedError(description="SmartCharging not supported")
        if q.profile_response == "Rejected":
            return "Rejected"
        limit, unit, phases = _limit_from_profile(profile, self.cfg.voltage_v)
        if q.wants_watts and unit == "A":
            return "Rejected"
        if q.refuses_valid_to and profile.get("valid_to") is not None:
            return "Rejected"
        profile_id = int(profile.get("charging_profile_id", profile.get("id", 0)))
        self.profiles[profile_id] = (profile, self._expires_s(profile.get("valid_to")))
        use_phases = phases if phases in (1, 3) and q.phase_switching else self.cfg.phases
        self.phases = min(use_phases, self.cfg.phases)
        amps = limit if unit == "A" else limit / (self.cfg.voltage_v * self.phases)
        self._set_limit(amps, dsr)
        return "Accepted"

    def clear_limit(self) -> None:
        self._set_limit(None, None)

    def clear_profiles(self, profile_id: int | None) -> str:
        """ClearChargingProfile by id (None: all). Accepted even when nothing matched (the
        spec allows Unknown; the simulator has always accepted)."""
        ids = list(self.profiles) if profile_id is None else [int(profile_id)]
        removed = [i for i in ids if self.profiles.pop(i, None) is not None]
        self.received.append(("clear", removed))
        if not self.profiles:
            self.clear_limit()
        return "Accepted"

    def _expires_s(self, valid_to: str | None) -> float | None:
        if valid_to is None:
            return None
        now = self.clock.now() + timedelta(seconds=self._clock_offset_s)
        left_s = (datetime.fromisoformat(valid_to) - now).total_seconds()
        return self.clock.monotonic() + left_s

    def _expire_profiles(self, now_s: float) -> None:
        """A profile past its validTo no longer applies: without one the charger is back
        on its own default (no limit, `max_current_a`)."""
        expired = [i for i, (_, at) in self.profiles.items() if at is not None and now_s >= at]
        for i in expired:
            del self.profiles[i]
            self.received.append(("profile_expired", i))
        if expired and not self.profiles:
            self.limit_a = None
            self._pending_limit = None

    def set_config(self, key: str, value: str) -> str:
        if key == self.quirks.limit_config_key:
            try:
                self._set_limit(float(value), None)
            except ValueError:
                return "Rejected"
        elif key not in self.config:
            return "NotSupported" if self.cfg.version == "1.6" else "UnknownVariable"
        elif key in _MEASURAND_KEYS and not self.cfg.sends_soc and "SoC" in value.split(","):
            return "Rejected"  # like a charger that cannot read the car's SoC
        self.config[key] = value
        self.received.append(("config", (key, value)))
        return "Accepted"

    def data_transfer(self, vendor_id: str, message_id: str | None, data: Any) -> str:
        self.received.append(("data_transfer", (vendor_id, message_id, data)))
        if message_id == "DemandSideResponse":
            payload = json.loads(data) if isinstance(data, str) else data
            self._dsr_next = bool((payload or {}).get("dsr"))
            return "Accepted"
        if self.quirks.limit_data_transfer == (vendor_id, message_id):
            self._set_limit(float(json.loads(data)["maxCurrent"]), None)
            return "Accepted"
        return "UnknownVendorId"

    def trigger(self, what: str) -> str:
        if what == "StatusNotification":
            self.later(lambda: self._send_status(force=True))
        elif what == "MeterValues":
            self.later(self.send_meter_values)
        elif what == "BootNotification":
            event = getattr(self, "_boot_again", None)
            if event is not None:
                event.set()
        else:
            return "NotImplemented"
        return "Accepted"

    def remote_start(self) -> str:
        if not self._plugged or self.transaction_id is not None:
            return "Rejected"
        self._stopped_remotely = False
        self.later(self._start_transaction)
        return "Accepted"

    def remote_stop(self) -> str:
        if self.transaction_id is None:
            return "Rejected"
        self._stopped_remotely = True  # no automatic restart until re-plugged
        self.later(lambda: self._stop_transaction("Remote"))
        return "Accepted"

    async def reboot(self) -> None:
        await self.disconnect()


__all__ = ["EvModel", "SimChargePoint", "SimConfig", "SimQuirks"]
