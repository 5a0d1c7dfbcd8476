"""Security profile 1 (basic auth), unknown chargers, pending chargers, path handling."""

from __future__ import annotations

import base64

import pytest
from ocpp_helpers import PASSWORD, central_system, charger_sim, ocpp_config, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hems.devices.ocpp.server import basic_auth, identity_from_path


async def _handshake_status(
    port: int, path: str, auth: str | None, protocol: str = "ocpp1.6"
) -> int:
    headers = {"Authorization": auth} if auth else {}
    try:
        async with connect(
            f"ws://127.0.0.1:{port}{path}",
            subprotocols=[protocol],
            additional_headers=headers,
            proxy=None,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_good_password_boots_bad_password_refused(version: str) -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        async with charger_sim(
            cs, version=version, password="wrong-password-123456", reconnect=False
        ) as bad:
            await wait_for(lambda: bad.boot_refusals, what="refusal")
            assert bad.boot_refusals == [401]
        assert not cs.charger("cp1").booted
        async with charger_sim(cs, version=version) as good:
            await wait_for(lambda: good.booted.is_set(), what="boot")
            assert good.registration == "Accepted"


async def test_handshake_statuses() -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        port = cs.port
        assert port is not None
        assert await _handshake_status(port, "/CP1", None) == 401  # no credentials
        assert await _handshake_status(port, "/CP1", _basic("CP2", PASSWORD)) == 401  # user≠id
        assert await _handshake_status(port, "/CP1", "Basic !!notbase64") == 401
        assert await _handshake_status(port, "/UNKNOWN", _basic("UNKNOWN", PASSWORD)) == 404
        assert await _handshake_status(port, "/", None) == 404
        # The identity is the LAST segment: /ocpp/CP1 works.
        assert await _handshake_status(port, "/ocpp/CP1", _basic("CP1", PASSWORD)) == 101
        # No common subprotocol: websockets refuses the upgrade.
        assert await _handshake_status(port, "/CP1", _basic("CP1", PASSWORD), "ocpp1.5") == 400


async def test_unknown_charger_held_pending_until_accepted(version: str) -> None:
    cfg = ocpp_config(allow_pending_unknown=True, chargers=[])
    async with central_system(cfg) as (cs, _state):
        async with charger_sim(cs, version=version, identity="NEW-CP", password=None) as sim:
            await wait_for(lambda: sim.registration == "Pending", what="pending")
            assert await cs.pending() == ["NEW-CP"]
            charger = cs.charger("new-cp")
            assert charger.pending and not charger.booted
            await cs.accept("NEW-CP")
            await wait_for(lambda: sim.booted.is_set(), what="accepted boot")
            assert sim.registration == "Accepted"
            await wait_for(lambda: charger.transaction is not None, what="transaction")


async def test_pending_charger_gets_security_error_for_other_calls() -> None:
    from ocpp.exceptions import SecurityError
    from ocpp.v16 import call

    cfg = ocpp_config(allow_pending_unknown=True, chargers=[])
    async with central_system(cfg) as (cs, _state):
        async with charger_sim(cs, identity="NEW-CP", password=None) as sim:
            await wait_for(lambda: sim.registration == "Pending", what="pending")
            with pytest.raises(SecurityError):
                await sim.call(call.Heartbeat())


def test_path_and_header_parsing() -> None:
    assert identity_from_path("/ocpp/CP1") == "CP1"
    assert identity_from_path("/CP%201/") == "CP 1"
    assert identity_from_path("/x/CP1?token=1") == "CP1"
    assert identity_from_path("/") == ""
    assert basic_auth(_basic("CP1", "a:b")) == ("CP1", "a:b")
    assert basic_auth("Bearer x") is None
    assert basic_auth("Basic " + base64.b64encode(b"nocolon").decode()) is None


async def test_a_rejected_pending_charger_stays_refused_across_restarts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hems.store.db import Database

    db = await Database.open(tmp_path / "hems.db")
    try:
        cfg = ocpp_config(allow_pending_unknown=True, chargers=[])
        async with central_system(cfg, db=db) as (cs, _state):
            async with charger_sim(cs, identity="ROGUE", password=None) as sim:
                await wait_for(lambda: sim.registration == "Pending", what="pending")
                await cs.reject("ROGUE")
                assert await cs.pending() == []
            assert await _handshake_status(cs.port, "/ROGUE", None) == 403
        async with central_system(cfg, db=db) as (cs, _state):  # the daemon restarted
            assert await _handshake_status(cs.port, "/ROGUE", None) == 403
            await cs.accept("ROGUE")  # the owner changes their mind
            async with charger_sim(cs, identity="ROGUE", password=None) as sim:
                await wait_for(lambda: sim.booted.is_set(), what="accepted boot")
    finally:
        await db.close()


async def test_a_configured_charger_cannot_be_rejected() -> None:
    from hems.errors import ConfigError

    async with central_system(ocpp_config()) as (cs, _state):
        with pytest.raises(ConfigError, match="configured charger"):
            await cs.reject("CP1")
