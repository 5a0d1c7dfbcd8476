"""The simulator's EV model and its coupling to the simulated home."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from ocpp_helpers import PASSWORD, central_system, ocpp_config, stop_task, wait_for

from hems.core.clock import RealClock
from hil.chargepoint import SimChargePoint, SimConfig
from hil.ev import EvModel


@pytest.mark.parametrize(
    ("soc_pct", "expected_w"),
    [(20.0, 11_000.0), (80.0, 11_000.0), (90.0, 5_500.0), (99.0, 1_100.0), (100.0, 0.0)],
)
def test_ev_taper(soc_pct: float, expected_w: float) -> None:
    ev = EvModel(max_ac_power_w=11_000, soc_pct=soc_pct)
    assert ev.acceptance_w() == pytest.approx(expected_w)


def test_ev_draw_and_step() -> None:
    ev = EvModel(battery_kwh=50, soc_pct=50, max_ac_power_w=7_400, phases=1)
    assert ev.draw_a(5.9, 3, 230) == (0.0, 1)  # below IEC minimum: nothing
    assert ev.draw_a(16, 3, 230) == (16, 1)  # a 1-phase car on a 3-phase charger
    amps, _ = ev.draw_a(40, 1, 230)
    assert amps == pytest.approx(7_400 / 230)
    ev.step(7_400, 3600)
    assert ev.soc_pct == pytest.approx(50 + 100 * 7.4 * 0.92 / 50)
    start = datetime(2026, 1, 1, 18, tzinfo=UTC)
    ev2 = EvModel(plug_in_at=start, leave_at=start + timedelta(hours=12))
    assert not ev2.plugged(start - timedelta(seconds=1))
    assert ev2.plugged(start + timedelta(hours=1))
    assert not ev2.plugged(start + timedelta(hours=12))
    with pytest.raises(ValueError, match="soc_pct"):
        EvModel(soc_pct=120)


async def test_ev_power_feeds_the_simulated_home() -> None:
    from hil.home import Home

    home = Home()
    async with central_system(
        ocpp_config(chargers=[{"id": "cp1", "identity": "CP1", "password": PASSWORD}])
    ) as (
        cs,
        _state,
    ):
        sim = SimChargePoint(
            SimConfig(
                url=f"ws://127.0.0.1:{cs.port}",
                identity="CP1",
                password=PASSWORD,
                meter_interval_s=0.2,
            ),
            RealClock(),
            on_power=lambda w: home.set_external_load_w("ev", w),
        )
        task = asyncio.create_task(sim.run())
        try:
            await wait_for(lambda: home.external_loads_w.get("ev", 0) > 10_000, what="EV load")
            await cs.charger("cp1").set_limit(6, 3)
            await wait_for(lambda: home.external_loads_w["ev"] == 6 * 3 * 230, what="6 A")
        finally:
            await sim.aclose()
            await stop_task(task)


async def test_simulator_abandons_an_unanswered_call_when_the_connection_closes() -> None:
    """A central system that closes with the simulator's CALL in flight: the simulator
    reconnects at once instead of waiting out its 10 s response timeout."""
    from websockets.asyncio.server import serve

    received: list[str] = []

    async def close_after_first_frame(ws) -> None:
        received.append(str(await ws.recv()))  # the BootNotification, never answered
        await ws.close()

    async with serve(close_after_first_frame, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        sim = SimChargePoint(
            SimConfig(url=f"ws://127.0.0.1:{port}", identity="CP1", reconnect_delay_s=0.05),
            RealClock(),
        )
        task = asyncio.create_task(sim.run())
        try:
            await wait_for(lambda: sim.connects >= 2, timeout_s=3, what="prompt reconnect")
            assert "BootNotification" in received[0]
        finally:
            await sim.aclose()
            await stop_task(task)
