"""OCPP 1.6J: the central-system side of one charger connection.

Handlers stay fast and never await `self.call` (the receive loop would wait for its own
answer): follow-up calls go to `charger.followup`, run by a task the connection owns.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    AvailabilityType,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
    ConfigurationStatus,
    DataTransferStatus,
    MessageTrigger,
    RegistrationStatus,
    ResetType,
)

from hems.devices.ocpp.link import CsmsLink
from hems.devices.ocpp.model import MeterSample, parse_meter_values
from hems.devices.ocpp.quirks import Fallback

_PURPOSE = {
    "tx_default": ChargingProfilePurposeType.tx_default_profile,
    "tx": ChargingProfilePurposeType.tx_profile,
    "charge_point_max": ChargingProfilePurposeType.charge_point_max_profile,
}
PROFILE_ID = 1601  # hems' own profile id: a new profile with it replaces the last one


def _num(value: float) -> float:
    return round(float(value), 1)  # the 1.6 schema wants multiples of 0.1


class Link16(CsmsLink, ChargePoint):
    version = "1.6"

    # -- handlers (Charge Point -> Central System) ---------------------------------------
    @on(Action.boot_notification, skip_schema_validation=True)
    async def _boot(self, charge_point_vendor: str, charge_point_model: str, **kw: Any):
        accepted = await self.charger.on_boot(
            {
                "vendor": charge_point_vendor,
                "model": charge_point_model,
                "serial": kw.get("charge_point_serial_number")
                or kw.get("charge_box_serial_number")
                or "",
                "firmware": kw.get("firmware_version") or "",
            }
        )
        return call_result.BootNotification(
            current_time=self.charger.now_iso(),
            interval=self.charger.heartbeat_interval_s if accepted else 60,
            status=RegistrationStatus.accepted if accepted else RegistrationStatus.pending,
        )

    @on(Action.heartbeat, skip_schema_validation=True)
    def _heartbeat(self, **kw: Any):
        return call_result.Heartbeat(current_time=self.charger.now_iso())

    @on(Action.status_notification, skip_schema_validation=True)
    def _status(self, connector_id: int, error_code: str, status: str, **kw: Any):
        self.charger.on_status(status, connector_id, error_code, kw.get("info"))
        return call_result.StatusNotification()

    @on(Action.authorize, skip_schema_validation=True)
    def _authorize(self, id_tag: str, **kw: Any):
        return call_result.Authorize(id_tag_info=self._tag_info(id_tag))

    @on(Action.start_transaction, skip_schema_validation=True)
    async def _start(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ):
        tx_id = await self._start_transaction(connector_id, id_tag, float(meter_start))
        return call_result.StartTransaction(
            transaction_id=tx_id, id_tag_info=self._tag_info(id_tag)
        )

    @on(Action.stop_transaction, skip_schema_validation=True)
    async def _stop(self, meter_stop: int, timestamp: str, transaction_id: int, **kw: Any):
        if kw.get("transaction_data"):
            await self.charger.on_meter_values(
                parse_meter_values(kw["transaction_data"], self.charger.energy_unit),
                str(transaction_id),
            )
        await self.charger.transactions.stop(
            str(transaction_id), float(meter_stop), kw.get("reason") or "Local"
        )
        tag = kw.get("id_tag")
        return call_result.StopTransaction(id_tag_info=self._tag_info(tag) if tag else None)

    @on(Action.meter_values, skip_schema_validation=True)
    async def _meter(self, connector_id: int, meter_value: list[dict[str, Any]], **kw: Any):
        tx = kw.get("transaction_id")
        if connector_id not in (0, self.charger.cfg.connector_id):
            return call_result.MeterValues()  # another connector: not this EvCharger
        await self._meter_values(
            parse_meter_values(meter_value, self.charger.energy_unit),
            None if tx is None else str(tx),
        )
        return call_result.MeterValues()

    @on(Action.data_transfer, skip_schema_validation=True)
    def _data_transfer(self, vendor_id: str, **kw: Any):
        self.charger.on_data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    @on(Action.firmware_status_notification, skip_schema_validation=True)
    def _fw(self, status: str, **kw: Any):
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification, skip_schema_validation=True)
    def _diag(self, status: str, **kw: Any):
        return call_result.DiagnosticsStatusNotification()

    async def _start_transaction(
        self, connector_id: int, id_tag: str, meter_start_wh: float
    ) -> int:
        txs = self.charger.transactions
        tx = txs.current
        # A charger replaying its StartTransaction after a reconnect gets the same id.
        if (
            tx is not None
            and tx.connector_id == connector_id
            and tx.meter_start_wh == meter_start_wh
        ):
            return int(tx.transaction_id)
        tx_id = await txs.new_id()
        await txs.begin(str(tx_id), connector_id, meter_start_wh, id_tag)
        return tx_id

    async def _meter_values(self, sample: MeterSample, transaction_id: str | None) -> None:
        txs = self.charger.transactions
        tx = txs.current
        if transaction_id is not None and (tx is None or tx.transaction_id != transaction_id):
            if not await txs.join(transaction_id) and sample.energy_wh is not None:
                # A transaction we never saw start (daemon restarted without its database):
                # count from the first register we see, never from the lifetime total.
                txs.joined_late(transaction_id, sample.energy_wh)
                await txs.begin(transaction_id, self.charger.cfg.connector_id, sample.energy_wh)
        await self.charger.on_meter_values(sample, transaction_id)

    def _tag_info(self, id_tag: str) -> dict[str, str]:
        ok = self.charger.authorize(id_tag)
        status = AuthorizationStatus.accepted if ok else AuthorizationStatus.invalid
        return {"status": status.value}

    # -- calls (Central System -> Charge Point) -------------------------------------------
    async def set_profile(
        self,
        *,
        limit: float,
        unit: str,
        phases: int,
        purpose: str,
        stack_level: int,
        connector_id: int,
        transaction_id: str | None,
        dsr: bool,
        start_iso: str,
        valid_to_iso: str | None = None,
    ) -> str:
        profile: dict[str, Any] = {
            "charging_profile_id": PROFILE_ID,
            "stack_level": stack_level,
            "charging_profile_purpose": _PURPOSE[purpose].value,
            "charging_profile_kind": ChargingProfileKindType.relative.value,
            "charging_schedule": {
                "charging_rate_unit": (
                    ChargingRateUnitType.amps if unit == "A" else ChargingRateUnitType.watts
                ).value,
                "charging_schedule_period": [
                    {"start_period": 0, "limit": _num(limit), "number_phases": phases}
                ],
            },
        }
        if valid_to_iso is not None:
            profile["valid_to"] = valid_to_iso  # the charger drops it then (its default)
        if purpose == "tx":
            profile["transaction_id"] = int(transaction_id)  # type: ignore[arg-type]
        if purpose == "charge_point_max":
            profile["charging_profile_kind"] = ChargingProfileKindType.absolute.value
            profile["charging_schedule"]["start_schedule"] = start_iso
            connector_id = 0
        result = await self.call(
            call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=profile),
            suppress=False,
        )
        return str(result.status)

    async def set_fallback(self, fb: Fallback, *, limit: float, phases: int) -> str:
        if fb.method == "change_configuration":
            return await self.change_configuration(str(fb.key), f"{limit:g}")
        result = await self.call(
            call.DataTransfer(
                vendor_id=str(fb.vendor_id),
                message_id=fb.message_id,
                data=fb.payload(limit, phases),
            ),
            suppress=False,
        )
        return str(result.status)

    async def signal_dsr(self, vendor_id: str, dsr: bool) -> str:
        result = await self.call(
            call.DataTransfer(
                vendor_id=vendor_id,
                message_id="DemandSideResponse",
                data='{"dsr": true}' if dsr else '{"dsr": false}',
            ),
            suppress=False,
        )
        return str(result.status)

    async def configure_meter_values(self, interval_s: int, measurands: list[str]) -> None:
        await self.change_configuration("MeterValueSampleInterval", str(interval_s))
        # Clock-aligned values also flow while no transaction runs, so an idle charger still
        # reports (and is not mistaken for a stale one).
        await self.change_configuration("ClockAlignedDataInterval", str(interval_s))
        if measurands:
            sampled = ",".join(measurands)
            await self.change_configuration("MeterValuesSampledData", sampled)
            await self.change_configuration("MeterValuesAlignedData", sampled)
            if "SoC" not in measurands:
                # The car's SoC, where the charger can send it, asked for on its own: a
                # charger that rejects the longer list keeps the one set above.
                await self.change_configuration("MeterValuesSampledData", f"{sampled},SoC")

    async def trigger_status(self, connector_id: int) -> str:
        result = await self.call(
            call.TriggerMessage(
                requested_message=MessageTrigger.status_notification, connector_id=connector_id
            ),
            suppress=False,
        )
        return str(result.status)

    async def change_configuration(self, key: str, value: str) -> str:
        result = await self.call(call.ChangeConfiguration(key=key, value=value), suppress=False)
        if result.status not in (ConfigurationStatus.accepted, ConfigurationStatus.reboot_required):
            self.charger.log_config_refused(key, value, str(result.status))
        return str(result.status)

    async def get_configuration(self, keys: list[str] | None = None) -> dict[str, str | None]:
        result = await self.call(call.GetConfiguration(key=keys or None), suppress=False)
        return {c["key"]: c.get("value") for c in result.configuration_key or []}

    async def clear_profiles(self, connector_id: int | None = None) -> str:
        result = await self.call(
            call.ClearChargingProfile(id=PROFILE_ID, connector_id=connector_id), suppress=False
        )
        return str(result.status)

    async def composite_schedule(self, connector_id: int, duration_s: int) -> dict[str, Any]:
        result = await self.call(
            call.GetCompositeSchedule(connector_id=connector_id, duration=duration_s),
            suppress=False,
        )
        return {"status": str(result.status), "schedule": result.charging_schedule}

    async def remote_start(self, connector_id: int, id_tag: str) -> str:
        result = await self.call(
            call.RemoteStartTransaction(id_tag=id_tag, connector_id=connector_id), suppress=False
        )
        return str(result.status)

    async def remote_stop(self, transaction_id: str) -> str:
        result = await self.call(
            call.RemoteStopTransaction(transaction_id=int(transaction_id)), suppress=False
        )
        return str(result.status)

    async def reset(self, hard: bool = False) -> str:
        result = await self.call(
            call.Reset(type=ResetType.hard if hard else ResetType.soft), suppress=False
        )
        return str(result.status)

    async def change_availability(self, connector_id: int, operative: bool) -> str:
        result = await self.call(
            call.ChangeAvailability(
                connector_id=connector_id,
                type=AvailabilityType.operative if operative else AvailabilityType.inoperative,
            ),
            suppress=False,
        )
        return str(result.status)

    async def unlock_connector(self, connector_id: int) -> str:
        result = await self.call(call.UnlockConnector(connector_id=connector_id), suppress=False)
        return str(result.status)
