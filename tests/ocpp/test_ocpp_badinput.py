"""Bad input on the wire: every class gets the OCPP-J answer, and the connection survives."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import structlog
from ocpp_helpers import PASSWORD, central_system, charger_sim, ocpp_config, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hems.core.capabilities import EvState
from hems.core.readings import Quantity
from hems.errors import DeviceTimeout
from hil.chargepoint import SimQuirks

AUTH = {"Authorization": "Basic " + base64.b64encode(f"CP1:{PASSWORD}".encode()).decode()}

# (frame, expected code for 1.6, expected code for 2.0.1, expected message id)
CASES = [
    ("this is not json", "FormationViolation", "RpcFrameworkError", "-1"),
    ('{"not": "an array"}', "ProtocolError", "RpcFrameworkError", "-1"),
    ('[2, 17, "Heartbeat", {}]', "ProtocolError", "RpcFrameworkError", "-1"),
    ('[7, "m1", "Heartbeat", {}]', "ProtocolError", "MessageTypeNotSupported", "m1"),
    ('[2, "m2", "NoSuchAction", {}]', "NotImplemented", "NotImplemented", "m2"),
    ('[2, "m3", "Heartbeat", {"extra": 1}]', "FormationViolation", "FormatViolation", "m3"),
    (
        '[2, "m4", "Authorize", {}]',
        "OccurenceConstraintViolation",
        "OccurrenceConstraintViolation",
        "m4",
    ),
]
TYPE_CASE = {
    "1.6": '[2, "m5", "StatusNotification", {"connectorId": "one", "errorCode": "NoError",'
    ' "status": "Available"}]',
    "2.0.1": '[2, "m5", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z",'
    ' "connectorStatus": "Available", "evseId": "one", "connectorId": 1}]',
}
ENUM_CASE = {
    "1.6": '[2, "m6", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",'
    ' "status": "Sleeping"}]',
    "2.0.1": '[2, "m6", "StatusNotification", {"timestamp": "2026-01-01T00:00:00Z",'
    ' "connectorStatus": "Sleeping", "evseId": 1, "connectorId": 1}]',
}
KNOWN_UNHANDLED = {"1.6": "CancelReservation", "2.0.1": "CancelReservation"}


async def _exchange(ws, frame: str) -> list:
    """Send one frame and return the answer to it, accepting any CALL the CSMS makes."""
    await ws.send(frame)
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 3))
        if msg[0] == 2:
            await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))
            continue
        return msg


async def test_every_bad_frame_gets_the_right_call_error(version: str) -> None:
    protocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    col = 1 if version == "1.6" else 2
    async with central_system(ocpp_config()) as (cs, _state):
        async with connect(
            f"ws://127.0.0.1:{cs.port}/CP1",
            subprotocols=[protocol],
            additional_headers=AUTH,
            proxy=None,
        ) as ws:
            for case in CASES:
                reply = await _exchange(ws, case[0])
                assert reply[0] == 4, case
                assert reply[2] == case[col], (case[0], reply)
                assert reply[1] == case[3]
            for frame, code in (
                (TYPE_CASE[version], "TypeConstraintViolation"),
                (ENUM_CASE[version], "PropertyConstraintViolation"),
            ):
                reply = await _exchange(ws, frame)
                assert reply[2] == code, (frame, reply)
            reply = await _exchange(ws, f'[2, "m7", "{KNOWN_UNHANDLED[version]}", {{}}]')
            assert reply[2] == "NotSupported"
            # Duplicate message id: the first is answered, the repeat refused.
            first = await _exchange(ws, '[2, "dup", "Heartbeat", {}]')
            assert first[0] == 3
            again = await _exchange(ws, '[2, "dup", "Heartbeat", {}]')
            assert again[0] == 4
            assert again[2] == ("ProtocolError" if version == "1.6" else "RpcFrameworkError")
            # An answer nobody asked for is dropped; the connection still works.
            await ws.send('[3, "nobody-asked", {}]')
            ok = await _exchange(ws, '[2, "m8", "Heartbeat", {}]')
            assert ok[0] == 3 and ok[1] == "m8" and "currentTime" in ok[2]


async def test_unanswered_calls_time_out_and_fault_the_charger(version: str, db) -> None:
    cfg = ocpp_config(response_timeout_s=0.3)
    quirks = SimQuirks(silent_actions={"SetChargingProfile"})
    async with central_system(cfg, db=db) as (cs, state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, quirks=quirks) as sim:
            await wait_for(lambda: charger.booted and charger.status, what="boot")
            # The post-boot follow-ups (meter configuration, status trigger) are answered;
            # one answered between the two timeouts would rightly restart the count.
            await wait_for(charger.followups_idle, what="post-boot follow-ups done")
            with structlog.testing.capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises(DeviceTimeout):
                        await charger.set_limit(10, 3)
            assert sim.unanswered.count("SetChargingProfile") == 2
            events = [e["event"] for e in logs]
            assert "ocpp call not answered" in events
            assert "ocpp charger faulted" in events
            assert charger.current_state() is EvState.FAULTED
            assert state.is_stale("cp1")
            await wait_for(
                lambda: state.latest("cp1", Quantity.POWER_W).age_s < 0.1, what="a new reading"
            )
            assert state.is_stale("cp1")  # still down: meter values do not clear a fault
            sim.quirks.silent_actions.clear()  # it answers again: the fault is over
            await charger.set_limit(10, 3)
            assert charger.faulted_reason is None
            await wait_for(lambda: not state.is_stale("cp1"), what="fresh again")
    rows = await db.fetchall("SELECT status FROM ocpp_commands")
    assert [r["status"] for r in rows] == ["Timeout", "Timeout", "Accepted"]


async def test_out_of_order_answer_is_ignored(version: str) -> None:
    quirks = SimQuirks(bogus_answer_first=True)
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, quirks=quirks) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(12, 3)
            await wait_for(lambda: sim.current_a == 12.0, what="12 A")
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")


async def test_reconnect_loop_is_refused_and_shown_faulted() -> None:
    cfg = ocpp_config(max_connects_per_window=3, reconnect_window_s=60)
    async with central_system(cfg) as (cs, state):
        charger = cs.charger("cp1")
        statuses = []
        for _ in range(5):
            try:
                async with connect(
                    f"ws://127.0.0.1:{cs.port}/CP1",
                    subprotocols=["ocpp1.6"],
                    additional_headers=AUTH,
                    proxy=None,
                ):
                    statuses.append(101)
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses == [101, 101, 101, 429, 429]
        assert charger.current_state() is EvState.OFFLINE
        assert charger.faulted_reason is not None and "reconnect loop" in charger.faulted_reason
        assert state.is_stale("cp1")


async def test_bad_meter_value_is_skipped_not_zeroed() -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with connect(
            f"ws://127.0.0.1:{cs.port}/CP1",
            subprotocols=["ocpp1.6"],
            additional_headers=AUTH,
            proxy=None,
        ) as ws:
            boot = await _exchange(
                ws,
                '[2, "b1", "BootNotification", {"chargePointVendor": "V",'
                ' "chargePointModel": "M"}]',
            )
            assert boot[2]["status"] == "Accepted"
            frame = (
                '[2, "mv1", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp":'
                ' "2026-01-01T00:00:00Z", "sampledValue": [{"value": "NaN", "measurand":'
                ' "Power.Active.Import", "unit": "W"}, {"value": "1234.5"}]}]}]'
            )
            with structlog.testing.capture_logs() as logs:
                reply = await _exchange(ws, frame)
            assert reply[0] == 3
            assert any(e["event"] == "ocpp meter value skipped" for e in logs)
            assert charger.sample is not None and charger.sample.power_w is None
            assert charger.sample.energy_wh == 1234.5
