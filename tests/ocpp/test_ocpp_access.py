"""OCPP access under attack from the LAN: password guessing, hijack attempts, floods of
unknown ids and hostile frames, all over real websockets."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import structlog
from ocpp_helpers import PASSWORD, central_system, charger_sim, ocpp_config, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hems.core.capabilities import EvState
from hems.core.clock import ManualClock


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _handshake(port: int, path: str, auth: str | None = None) -> int:
    headers = {"Authorization": auth} if auth else {}
    try:
        async with connect(
            f"ws://127.0.0.1:{port}{path}",
            subprotocols=["ocpp1.6"],
            additional_headers=headers,
            proxy=None,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_wrong_password_handshakes_never_lock_the_real_charger_out(version: str) -> None:
    cfg = ocpp_config(max_connects_per_window=10, reconnect_window_s=60)
    async with central_system(cfg) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            assert cs.port is not None
            statuses = [
                await _handshake(cs.port, "/CP1", _basic("CP1", "guess")) for _ in range(11)
            ]
            assert statuses == [401] * 11
            assert charger.faulted_reason is None
            assert sim.connects == 1 and charger.link is not None
            # The real charger still gets in after a drop.
            await sim.disconnect()
            await wait_for(lambda: sim.connects == 2 and charger.booted, what="reconnected")
            assert charger.current_state() is not EvState.OFFLINE


async def test_hijack_with_a_wrong_password_leaves_the_real_connection(version: str) -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            link = charger.link
            async with charger_sim(
                cs, version=version, password="not-the-password-1", reconnect=False
            ) as thief:
                await wait_for(lambda: thief.boot_refusals, what="refusal")
                assert thief.boot_refusals == [401]
            assert charger.link is link and sim.connects == 1
            await wait_for(lambda: charger.sample is not None, what="meter values still flow")


async def test_handshakes_are_limited_per_address_without_faulting_a_charger() -> None:
    cfg = ocpp_config(max_handshakes_per_address=3)
    async with central_system(cfg) as (cs, _state):
        assert cs.port is not None
        statuses = [await _handshake(cs.port, "/CP1", _basic("CP1", "guess")) for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        assert cs.charger("cp1").faulted_reason is None


async def test_unknown_pending_ids_are_bounded_and_expire() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    cfg = ocpp_config(
        allow_pending_unknown=True,
        chargers=[],
        max_pending_unknown=20,
        pending_unknown_expiry_s=3600,
        max_handshakes_per_address=10_000,
    )
    async with central_system(cfg, clock=clock) as (cs, _state):
        assert cs.port is not None
        statuses = [await _handshake(cs.port, f"/X{i}") for i in range(300)]
        assert statuses == [101] * 20 + [503] * 280
        assert cs.pending_unknown_count() == 20
        await wait_for(lambda: len(cs.chargers) == 20, what="pending chargers held")
        assert len(cs.chargers) == 20
        # An hour later the silent ones are forgotten and a new id gets in.
        await clock.advance(3601)
        assert await _handshake(cs.port, "/LATE") == 101
        assert cs.pending_unknown_count() == 1
        assert len(cs.chargers) <= 1


async def test_deep_frame_gets_a_call_error_and_the_connection_stays(version: str) -> None:
    protocol = "ocpp1.6" if version == "1.6" else "ocpp2.0.1"
    code = "FormationViolation" if version == "1.6" else "FormatViolation"
    async with central_system(ocpp_config()) as (cs, _state):
        async with connect(
            f"ws://127.0.0.1:{cs.port}/CP1",
            subprotocols=[protocol],
            additional_headers={"Authorization": _basic("CP1", PASSWORD)},
            proxy=None,
        ) as ws:
            for frame in ("[" * 200_000, '[2, "d1", "Heartbeat", ' + "[" * 50_000 + "]"):
                await ws.send(frame)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 3))
                assert reply[0] == 4 and reply[2] == code, reply
            await ws.send('[2, "ok1", "Heartbeat", {}]')
            reply = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert reply[0] == 3 and reply[1] == "ok1"


async def test_oversized_frame_closes_the_connection_with_1009() -> None:
    cfg = ocpp_config(max_frame_bytes=4096)
    async with central_system(cfg) as (cs, _state):
        async with connect(
            f"ws://127.0.0.1:{cs.port}/CP1",
            subprotocols=["ocpp1.6"],
            additional_headers={"Authorization": _basic("CP1", PASSWORD)},
            proxy=None,
        ) as ws:
            await ws.send(
                '[2, "big", "DataTransfer", {"vendorId": "x", "data": "' + "a" * 8000 + '"}]'
            )
            try:
                await asyncio.wait_for(ws.recv(), 3)
                raise AssertionError("the oversized frame was answered")
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1009


async def test_insecure_chargers_are_logged_at_start() -> None:
    cfg = ocpp_config(allow_insecure_chargers=True, chargers=[{"id": "cp1", "identity": "CP1"}])
    with structlog.testing.capture_logs() as logs:
        async with central_system(cfg) as (cs, _state):
            async with charger_sim(cs, password=None) as sim:
                await wait_for(lambda: sim.booted.is_set(), what="boot")
    insecure = [e for e in logs if e["event"].startswith("ocpp INSECURE")]
    assert insecure and insecure[0]["chargers"] == ["cp1"]
