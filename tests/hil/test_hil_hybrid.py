"""The rig's hybrid inverter: scanned, split into PV and battery, and its battery controlled,
all over real Modbus TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hems.core.capabilities import BatteryMode
from hems.core.clock import ManualClock
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.scan import format_text, scan_endpoint
from hems.devices.modbus.sunspec import ModelData, decode_model
from hems.devices.modbus.sunspec_device import sunspec_device
from hil.home import HomeConfig
from hil.rig import HilRig
from hil.sunspec_server import UnitIds
from tests.testlib import sunspec_cfg

HYBRID = 4


async def read_back(device, model_id: int) -> ModelData:
    """One model read over Modbus through the device's own connection."""
    loc = device.sunspec_map.find(model_id)
    regs = await device.endpoint.read(HYBRID, "holding", loc.address, 2 + loc.length)
    return decode_model(model_id, loc.address, regs)


@pytest.fixture(params=[802, 713])
async def hybrid_rig(clock: ManualClock, request: pytest.FixtureRequest) -> AsyncIterator[HilRig]:
    cfg = HomeConfig(seed=7, cloudiness=0.0, cloud_transients_per_h=0.0)
    async with HilRig(
        clock,
        home_config=cfg,
        unit_ids=UnitIds(hybrid=HYBRID),
        hybrid_storage_model=request.param,
    ) as r:
        await clock.advance(60.0)
        r.tick()
        yield r


async def test_hil_hybrid_scan_splits_pv_and_battery(hybrid_rig: HilRig) -> None:
    s = hybrid_rig.home.state
    assert s.pv_w > 1000 and s.battery_w > 1000  # noon: PV producing, battery soaking it up
    (report,) = await scan_endpoint("127.0.0.1", hybrid_rig.sunspec_port, [HYBRID])
    storage = 802 if 802 in [m.model_id for m in report.models] else 713
    assert [m.model_id for m in report.models] == [1, 103, 160, 124, storage]
    assert report.hybrid and report.roles == ["pv", "battery"]
    assert report.snapshot["pv"]["power_w"] == pytest.approx(s.pv_w, abs=1.5)
    assert report.snapshot["battery"]["power_w"] == pytest.approx(s.battery_w, abs=1.5)
    assert report.snapshot["battery"]["soc_pct"] == pytest.approx(s.soc_pct, abs=0.05)
    text = format_text([report], "127.0.0.1", hybrid_rig.sunspec_port)
    ac_w = round(s.pv_w - s.battery_w)
    assert f"103.W = {ac_w} W → inverter AC output" in text
    assert "160.module[1].DCW = " in text and "→ PV (MPPT 1)" in text
    assert "→ battery charge, DC (StCha 3)" in text
    source = "802.W" if storage == 802 else "160 storage modules (charge - discharge, DC)"
    assert f"note: battery power from {source}" in text


async def test_hil_hybrid_battery_setpoint_through_124(
    hybrid_rig: HilRig, clock: ManualClock
) -> None:
    state = SiteState(clock)
    pool = EndpointPool()
    # A generous timeout: a busy machine can take seconds to accept the connection.
    kw = {"timeout_s": 5.0, "backoff_max_s": 0.1}
    port = hybrid_rig.sunspec_port
    pv = sunspec_device(sunspec_cfg(port, "pv", "pv", HYBRID, **kw), pool, state, clock)
    bat = sunspec_device(sunspec_cfg(port, "bat", "battery", HYBRID, **kw), pool, state, clock)
    try:
        await bat.set_mode(BatteryMode.POWER_SETPOINT, -1500)  # discharge 1500 W
        m124 = await read_back(bat, 124)
        # 1500 W of WChaMax 5000 W = 30 %: discharge limit 30 %, charge limit reversed.
        assert (m124.get("StorCtl_Mod"), m124.get("OutWRte"), m124.get("InWRte")) == (3, 30, -30)
        assert m124.get("InOutWRte_RvrtTms") == 120
        await clock.advance(30.0)
        s = hybrid_rig.tick()
        assert s.battery_w == pytest.approx(-1500.0)  # the home follows the setpoint
        assert await pv.poll() and await bat.poll()
        assert state.fresh_value("bat", Quantity.POWER_W) == pytest.approx(-1500.0, abs=1.5)
        assert state.fresh_value("pv", Quantity.POWER_W) == pytest.approx(s.pv_w, abs=1.5)
        m103 = await read_back(bat, 103)
        assert m103.get("W") == pytest.approx(s.pv_w + 1500.0, abs=1.0)  # PV + discharge
        await bat.set_mode(BatteryMode.NORMAL)
        await clock.advance(30.0)
        hybrid_rig.tick()
        assert hybrid_rig.home.battery_window_w is None  # back to self-consumption
    finally:
        await pool.close()
