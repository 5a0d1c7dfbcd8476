"""OCPP 2.0.1: the CSMS side of one charging-station connection.

Same rule as 1.6: handlers never await `self.call`; follow-ups go to `charger.followup`.
A DSR change is flagged in the profile's `customData` (`{"vendorId": …, "dsr": true}`),
which every 2.0.1 object allows; stations that do not know the vendor id ignore it.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import (
    Action,
    AuthorizationStatusEnumType,
    DataTransferStatusEnumType,
    MessageTriggerEnumType,
    RegistrationStatusEnumType,
    ResetEnumType,
)

from hems.devices.ocpp.link import CsmsLink
from hems.devices.ocpp.model import MeterSample, parse_meter_values
from hems.devices.ocpp.quirks import Fallback

_PURPOSE = {
    "tx_default": "TxDefaultProfile",
    "tx": "TxProfile",
    "charge_point_max": "ChargingStationMaxProfile",
}
PROFILE_ID = 2001
_MEASURANDS = ("SampledDataCtrlr", "TxUpdatedMeasurands")


def _var(key: str) -> tuple[dict[str, str], dict[str, str]]:
    component, _, variable = key.partition(".")
    return {"name": component}, {"name": variable}


class Link201(CsmsLink, ChargePoint):
    version = "2.0.1"
    _peer = "station"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._remote_start_id = 0

    # -- handlers ------------------------------------------------------------------------
    @on(Action.boot_notification, skip_schema_validation=True)
    async def _boot(self, charging_station: dict[str, Any], reason: str, **kw: Any):
        accepted = await self.charger.on_boot(
            {
                "vendor": charging_station.get("vendor_name", ""),
                "model": charging_station.get("model", ""),
                "serial": charging_station.get("serial_number") or "",
                "firmware": charging_station.get("firmware_version") or "",
            }
        )
        return call_result.BootNotification(
            current_time=self.charger.now_iso(),
            interval=self.charger.heartbeat_interval_s if accepted else 60,
            status=(
                RegistrationStatusEnumType.accepted
                if accepted
                else RegistrationStatusEnumType.pending
            ),
        )

    @on(Action.heartbeat, skip_schema_validation=True)
    def _heartbeat(self, **kw: Any):
        return call_result.Heartbeat(current_time=self.charger.now_iso())

    @on(Action.status_notification, skip_schema_validation=True)
    def _status(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **kw: Any
    ):
        self.charger.on_status(connector_status, evse_id, None, None)
        return call_result.StatusNotification()

    @on(Action.authorize, skip_schema_validation=True)
    def _authorize(self, id_token: dict[str, Any], **kw: Any):
        return call_result.Authorize(id_token_info=self._token_info(id_token))

    @on(Action.transaction_event, skip_schema_validation=True)
    async def _transaction(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kw: Any,
    ):
        tx_id = str(transaction_info["transaction_id"])
        sample = parse_meter_values(kw.get("meter_value") or [], self.charger.energy_unit)
        evse_id = int((kw.get("evse") or {}).get("id", self.charger.cfg.connector_id))
        await self._transaction_event(
            event_type,
            tx_id,
            evse_id,
            sample,
            transaction_info.get("charging_state"),
            transaction_info.get("stopped_reason"),
        )
        token = kw.get("id_token")
        return call_result.TransactionEvent(
            id_token_info=self._token_info(token) if token else None
        )

    @on(Action.meter_values, skip_schema_validation=True)
    async def _meter(self, evse_id: int, meter_value: list[dict[str, Any]], **kw: Any):
        if evse_id not in (0, self.charger.cfg.connector_id):
            return call_result.MeterValues()  # another EVSE: not this EvCharger
        await self.charger.on_meter_values(
            parse_meter_values(meter_value, self.charger.energy_unit), None
        )
        return call_result.MeterValues()

    @on(Action.data_transfer, skip_schema_validation=True)
    def _data_transfer(self, vendor_id: str, **kw: Any):
        self.charger.on_data_transfer(vendor_id, kw.get("message_id"), kw.get("data"))
        return call_result.DataTransfer(status=DataTransferStatusEnumType.unknown_vendor_id)

    @on(Action.notify_report, skip_schema_validation=True)
    def _report(self, **kw: Any):
        return call_result.NotifyReport()

    @on(Action.notify_event, skip_schema_validation=True)
    def _event(self, **kw: Any):
        return call_result.NotifyEvent()

    @on(Action.security_event_notification, skip_schema_validation=True)
    def _security(self, type: str, **kw: Any):
        self.charger.log_security_event(type, kw.get("tech_info"))
        return call_result.SecurityEventNotification()

    @on(Action.firmware_status_notification, skip_schema_validation=True)
    def _fw(self, status: str, **kw: Any):
        return call_result.FirmwareStatusNotification()

    async def _transaction_event(
        self,
        event_type: str,
        tx_id: str,
        evse_id: int,
        sample: MeterSample,
        charging_state: str | None,
        stopped_reason: str | None,
    ) -> None:
        charger = self.charger
        if evse_id != charger.cfg.connector_id:
            return
        txs = charger.transactions
        tx = txs.current
        if (tx is None or tx.transaction_id != tx_id) and not await txs.join(tx_id):
            start = sample.energy_wh
            if start is None:
                start = charger.sample.energy_wh if charger.sample else None
            if event_type != "Started":
                txs.joined_late(tx_id, start)
            if start is not None:
                await txs.begin(tx_id, evse_id, start)
        if charging_state:
            charger.on_status(charging_state, evse_id, None, None)
        await charger.on_meter_values(sample, tx_id)
        if event_type == "Ended":
            await txs.stop(tx_id, sample.energy_wh, stopped_reason or "Local")

    def _token_info(self, token: dict[str, Any]) -> dict[str, str]:
        ok = self.charger.authorize(str(token.get("id_token", "")))
        status = AuthorizationStatusEnumType.accepted if ok else AuthorizationStatusEnumType.invalid
        return {"status": status.value}

    # -- calls ---------------------------------------------------------------------------
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
        evse_id = 0 if purpose == "charge_point_max" else connector_id
        profile: dict[str, Any] = {
            "id": PROFILE_ID,
            "stack_level": stack_level,
            "charging_profile_purpose": _PURPOSE[purpose],
            "charging_profile_kind": "Relative",
            "charging_schedule": [
                {
                    "id": 1,
                    "charging_rate_unit": unit,
                    "charging_schedule_period": [
                        {
                            "start_period": 0,
                            "limit": round(float(limit), 1),
                            "number_phases": phases,
                        }
                    ],
                }
            ],
        }
        if valid_to_iso is not None:
            profile["valid_to"] = valid_to_iso  # the charger drops it then (its default)
        if purpose == "tx":
            profile["transaction_id"] = transaction_id
        if purpose == "charge_point_max":
            profile["charging_profile_kind"] = "Absolute"
            profile["charging_schedule"][0]["start_schedule"] = start_iso
        if self.charger.quirks.dsr_signal == "custom_data":
            profile["custom_data"] = {
                "vendor_id": self.charger.quirks.dsr_vendor_id,
                "dsr": bool(dsr),
            }
        result = await self.call(
            call.SetChargingProfile(evse_id=evse_id, charging_profile=profile), suppress=False
        )
        return str(result.status)

    async def set_fallback(self, fb: Fallback, *, limit: float, phases: int) -> str:
        if fb.method == "set_variables":
            return await self.set_variable(str(fb.key), f"{limit:g}")
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
                vendor_id=vendor_id, message_id="DemandSideResponse", data={"dsr": dsr}
            ),
            suppress=False,
        )
        return str(result.status)

    async def set_variable(self, key: str, value: str) -> str:
        component, variable = _var(key)
        result = await self.call(
            call.SetVariables(
                set_variable_data=[
                    {"attribute_value": value, "component": component, "variable": variable}
                ]
            ),
            suppress=False,
        )
        status = str(result.set_variable_result[0]["attribute_status"])
        if status not in ("Accepted", "RebootRequired"):
            self.charger.log_config_refused(key, value, status)
        return status

    async def get_variables(self, keys: list[str]) -> dict[str, str | None]:
        data = []
        for key in keys:
            component, variable = _var(key)
            data.append({"component": component, "variable": variable})
        result = await self.call(call.GetVariables(get_variable_data=data), suppress=False)
        return {
            f"{r['component']['name']}.{r['variable']['name']}": r.get("attribute_value")
            for r in result.get_variable_result
        }

    async def configure_meter_values(self, interval_s: int, measurands: list[str]) -> None:
        await self.set_variable("SampledDataCtrlr.TxUpdatedInterval", str(interval_s))
        # Aligned values also flow outside transactions (an idle station still reports).
        await self.set_variable("AlignedDataCtrlr.Interval", str(interval_s))
        if measurands:
            sampled = ",".join(measurands)
            await self.set_variable(".".join(_MEASURANDS), sampled)
            await self.set_variable("AlignedDataCtrlr.Measurands", sampled)
            if "SoC" not in measurands:
                # The car's SoC, where the station can send it, asked for on its own: one
                # that rejects the longer list keeps the one set above.
                await self.set_variable(".".join(_MEASURANDS), f"{sampled},SoC")

    async def trigger_status(self, connector_id: int) -> str:
        result = await self.call(
            call.TriggerMessage(
                requested_message=MessageTriggerEnumType.status_notification,
                evse={"id": connector_id, "connector_id": 1},
            ),
            suppress=False,
        )
        return str(result.status)

    async def clear_profiles(self, connector_id: int | None = None) -> str:
        result = await self.call(
            call.ClearChargingProfile(charging_profile_id=PROFILE_ID), suppress=False
        )
        return str(result.status)

    async def remote_start(self, connector_id: int, id_tag: str) -> str:
        self._remote_start_id += 1
        result = await self.call(
            call.RequestStartTransaction(
                id_token={"id_token": id_tag, "type": "Local"},
                remote_start_id=self._remote_start_id,
                evse_id=connector_id,
            ),
            suppress=False,
        )
        return str(result.status)

    async def remote_stop(self, transaction_id: str) -> str:
        result = await self.call(
            call.RequestStopTransaction(transaction_id=transaction_id), suppress=False
        )
        return str(result.status)

    async def reset(self, hard: bool = False) -> str:
        result = await self.call(
            call.Reset(type=ResetEnumType.immediate if hard else ResetEnumType.on_idle),
            suppress=False,
        )
        return str(result.status)
