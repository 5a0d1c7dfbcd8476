"""Boot, a full session with MeterValues, a limit applied and seen in the current."""

from __future__ import annotations

from ocpp_helpers import central_system, charger_sim, ocpp_config, wait_for

from hems.core.capabilities import EvCharger, EvState
from hems.core.readings import Quantity
from hil.ev import EvModel


async def test_boot_session_and_limit_followed(version: str) -> None:
    async with central_system(ocpp_config()) as (cs, state):
        charger = cs.charger("cp1")
        assert isinstance(charger, EvCharger)
        assert await charger.state() is EvState.OFFLINE
        ev = EvModel(soc_pct=30, max_ac_power_w=11_000)
        async with charger_sim(cs, version=version, ev=ev) as sim:
            await wait_for(lambda: charger.booted, what="boot")
            assert charger.boot_info["vendor"] == "hems-sim"
            await wait_for(lambda: charger.transaction is not None, what="transaction")
            await wait_for(lambda: charger.current_state() is EvState.CHARGING, what="charging")
            assert state.fresh_value("cp1", Quantity.POWER_W) > 10_000
            await charger.set_limit(10.0, 3)
            await wait_for(
                lambda: charger.limit and charger.limit.outcome is True, what="limit followed"
            )
            await wait_for(
                lambda: (state.fresh_value("cp1", Quantity.CURRENT_L1_A) or 99) <= 10.0,
                what="current at 10 A",
            )
            assert sim.current_a == 10.0
            assert abs(await charger.power_w() - 3 * 230 * 10) < 1
            session = await charger.session_energy_wh()
            assert session > 0
            assert state.fresh_value("cp1", Quantity.SESSION_ENERGY_WH) is not None
            # Below 6 A: pause (0 A) and the charger reports it holds the car.
            await charger.set_limit(4.0, 3)
            await wait_for(lambda: sim.current_a == 0.0, what="paused")
            await wait_for(
                lambda: charger.current_state() is EvState.SUSPENDED_EVSE, what="suspended by EVSE"
            )
        await wait_for(lambda: charger.current_state() is EvState.OFFLINE, what="offline")
        assert state.is_stale("cp1")


async def test_idle_charger_reports_and_stays_fresh(version: str) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=1)
    async with central_system(ocpp_config()) as (cs, state):
        charger = cs.charger("cp1")
        async with charger_sim(cs, version=version, ev=EvModel(plug_in_at=later)) as sim:
            key = "ClockAlignedDataInterval" if version == "1.6" else "AlignedDataCtrlr.Interval"
            await wait_for(lambda: ("config", (key, "1")) in sim.received, what="aligned data")
            await wait_for(
                lambda: state.fresh_value("cp1", Quantity.POWER_W) == 0.0, what="idle reading"
            )
            assert charger.current_state() is EvState.AVAILABLE
            assert not state.is_stale("cp1")
            assert charger.transaction is None
            assert await charger.session_energy_wh() == 0.0
