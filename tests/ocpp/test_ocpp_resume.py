"""A running transaction survives a reconnect and a daemon restart (meter start in SQLite)."""

from __future__ import annotations

import contextlib

from ocpp_helpers import central_system, charger_sim, ocpp_config, wait_for

from hems.core.capabilities import EvState
from hil.chargepoint import SimQuirks

LIFETIME_WH = 7_654_321.0


async def test_reconnect_and_restart_resume_the_transaction(version: str, db) -> None:
    quirks = SimQuirks(lifetime_register_wh=LIFETIME_WH)
    cfg = ocpp_config()
    async with contextlib.AsyncExitStack() as outer:
        first = contextlib.AsyncExitStack()
        cs, _state = await first.enter_async_context(central_system(cfg, db=db))
        sim = await outer.enter_async_context(charger_sim(cs, version=version, quirks=quirks))
        charger = cs.charger("cp1")
        await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
        tx_id = charger.transaction.transaction_id
        await wait_for(
            lambda: charger.transaction.meter_last_wh > LIFETIME_WH + 5, what="energy flowing"
        )
        # 1) The link drops and comes back: same transaction, energy keeps counting.
        await sim.disconnect()
        await wait_for(lambda: charger.current_state() is EvState.OFFLINE, what="offline")
        await wait_for(lambda: sim.connects == 2 and charger.booted, what="reconnected")
        before = await charger.session_energy_wh()
        await wait_for(
            lambda: charger.transaction.meter_last_wh > LIFETIME_WH + before + 5, what="more energy"
        )
        assert charger.transaction.transaction_id == tx_id
        assert sim.transaction_id == tx_id
        meter_start = charger.transaction.meter_start_wh
        before = await charger.session_energy_wh()
        # 2) The daemon restarts: a new central system on the same database file.
        await first.aclose()
        cs2, _state2 = await outer.enter_async_context(central_system(cfg, db=db))
        sim.cfg.url = f"ws://127.0.0.1:{cs2.port}"
        charger2 = cs2.charger("cp1")
        await wait_for(lambda: charger2.booted and charger2.transaction, what="resumed")
        assert charger2.transaction.transaction_id == tx_id
        assert charger2.transaction.meter_start_wh == meter_start
        await wait_for(lambda: charger2.sample and charger2.sample.energy_wh, what="meter")
        session = await charger2.session_energy_wh()
        assert session >= before
        assert session < 10_000  # never the lifetime register
        sim.unplug()
        await wait_for(lambda: charger2.transaction is None, what="stopped")
        assert charger2.last_session_wh >= session - 1  # 1.6 meterStop is whole Wh
    rows = await db.fetchall(
        "SELECT transaction_id, meter_start_wh, stopped_ms, stop_reason FROM ocpp_transactions"
    )
    assert len(rows) == 1
    assert rows[0]["transaction_id"] == tx_id
    assert rows[0]["meter_start_wh"] >= LIFETIME_WH
    assert rows[0]["stopped_ms"] is not None
    status = await db.fetchall("SELECT identity, status, vendor FROM ocpp_chargers")
    assert [tuple(r) for r in status] == [("CP1", "accepted", "hems-sim")]


async def test_restart_without_database_never_counts_the_lifetime_register(version: str) -> None:
    quirks = SimQuirks(lifetime_register_wh=LIFETIME_WH)
    cfg = ocpp_config()
    async with contextlib.AsyncExitStack() as outer:
        first = contextlib.AsyncExitStack()
        cs, _state = await first.enter_async_context(central_system(cfg))
        sim = await outer.enter_async_context(charger_sim(cs, version=version, quirks=quirks))
        charger = cs.charger("cp1")
        # Energy has flowed, so the register at the late join is above its value at start.
        await wait_for(
            lambda: charger.transaction and charger.transaction.meter_last_wh > LIFETIME_WH + 5,
            what="energy flowing",
        )
        await first.aclose()
        cs2, _state2 = await outer.enter_async_context(central_system(cfg))
        sim.cfg.url = f"ws://127.0.0.1:{cs2.port}"
        charger2 = cs2.charger("cp1")
        await wait_for(lambda: charger2.transaction, what="joined late")
        assert charger2.transaction.transaction_id == sim.transaction_id
        assert charger2.transaction.meter_start_wh > LIFETIME_WH
        assert 0 <= await charger2.session_energy_wh() < 1_000
