"""The central system's calls to the charger, and local authorisation, on both versions."""

from __future__ import annotations

from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from ocpp_helpers import central_system, charger_sim, ocpp_config, wait_for

from hems.core.capabilities import EvState


async def test_16_commands() -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            # Boot configured the meter values the quirk profile asks for.
            await wait_for(
                lambda: ("config", ("MeterValueSampleInterval", "1")) in sim.received,
                what="sample interval set",
            )
            conf = await charger.command("get_configuration", ["MeterValuesSampledData"])
            assert "Power.Active.Import" in conf["MeterValuesSampledData"]
            assert await charger.command("change_configuration", "Nope", "1") == "NotSupported"
            assert await charger.command("clear_profiles") == "Accepted"
            schedule = await charger.command("composite_schedule", 1, 3600)
            assert schedule["status"] == "Accepted"
            assert await charger.command("trigger_status", 1) == "Accepted"
            assert await charger.command("change_availability", 1, True) == "Accepted"
            assert await charger.command("unlock_connector", 1) == "Unlocked"
            tx = charger.transaction.transaction_id
            assert await charger.command("remote_stop", tx) == "Accepted"
            await wait_for(lambda: charger.transaction is None, what="stopped")
            sim.ev.leave_at = sim.ev.plug_in_at = None
            assert await charger.command("reset") == "Accepted"
            await wait_for(lambda: sim.connects == 2 and charger.booted, what="rebooted")


async def test_201_commands() -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version="2.0.1") as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await wait_for(
                lambda: ("config", ("SampledDataCtrlr.TxUpdatedInterval", "1")) in sim.received,
                what="interval set",
            )
            # The measurands are set after the interval (one call each): wait for that one
            # too, or a busy machine reads the charger's default first.
            await wait_for(
                lambda: any(
                    kind == "config" and item[0] == "SampledDataCtrlr.TxUpdatedMeasurands"
                    for kind, item in sim.received
                ),
                what="measurands set",
            )
            values = await charger.command(
                "get_variables", ["SampledDataCtrlr.TxUpdatedMeasurands", "X.Y"]
            )
            assert "Current.Import" in values["SampledDataCtrlr.TxUpdatedMeasurands"]
            assert values["X.Y"] is None
            assert await charger.command("set_variable", "X.Y", "1") == "UnknownVariable"
            assert await charger.command("clear_profiles") == "Accepted"
            assert await charger.command("trigger_status", 1) == "Accepted"
            assert await charger.command("remote_stop", charger.transaction.transaction_id) == (
                "Accepted"
            )
            await wait_for(lambda: charger.transaction is None, what="stopped")
            await wait_for(lambda: charger.current_state() is EvState.PLUGGED, what="plugged")
            assert await charger.command("reset") == "Accepted"
            await wait_for(lambda: sim.connects == 2 and charger.booted, what="rebooted")


async def test_local_authorisation_list(version: str) -> None:
    async with central_system(ocpp_config(id_tags=["HOMETAG"])) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            if version == "1.6":
                good = await sim.call(call16.Authorize(id_tag="HOMETAG"))
                bad = await sim.call(call16.Authorize(id_tag="STRANGER"))
                assert (good.id_tag_info["status"], bad.id_tag_info["status"]) == (
                    "Accepted",
                    "Invalid",
                )
            else:
                good = await sim.call(
                    call201.Authorize(id_token={"id_token": "HOMETAG", "type": "ISO14443"})
                )
                bad = await sim.call(
                    call201.Authorize(id_token={"id_token": "STRANGER", "type": "ISO14443"})
                )
                assert (good.id_token_info["status"], bad.id_token_info["status"]) == (
                    "Accepted",
                    "Invalid",
                )


async def test_limit_is_reasserted_after_the_charger_reboots(version: str) -> None:
    async with central_system(ocpp_config()) as (cs, _state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version) as sim:
            await wait_for(lambda: charger.booted and charger.transaction, what="session")
            await charger.set_limit(9, 3)
            await wait_for(lambda: sim.current_a == 9.0, what="9 A")
            sim.limit_a = None  # the charger forgets its profile across the reboot
            await sim.disconnect()
            await wait_for(lambda: sim.connects == 2 and charger.booted, what="back")
            await wait_for(lambda: sim.limit_a == 9.0, what="limit re-sent after boot")
