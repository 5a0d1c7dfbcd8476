"""The SunSpec adapters against the HIL rig's simulated home (hil/sunspec_server.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import hil.home as hil_home
import hil.sunspec_server as hil_server
from hems.core.capabilities import BatteryMode
from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.sunspec_device import sunspec_device
from tests.testlib import sunspec_cfg

NOON = datetime(2026, 6, 21, 11, 0, tzinfo=UTC)


def cfg(port: int, device_id: str, role: str, unit: int) -> SunSpecDeviceConfig:
    return sunspec_cfg(port, device_id, role, unit, timeout_s=0.5, backoff_max_s=0.2)


async def test_modbus_hil_home_readings_and_control():
    clock = ManualClock(NOON)
    home = hil_home.Home(start=NOON)
    server = hil_server.SunSpecServer(home, clock)
    await server.start()
    state = SiteState(clock)
    pool = EndpointPool()
    try:
        truth = home.step(NOON, 1.0)
        server.refresh(NOON)
        devs = {
            "pv": sunspec_device(cfg(server.port, "pv", "pv", 1), pool, state, clock),
            "battery": sunspec_device(
                cfg(server.port, "battery", "battery", 2), pool, state, clock
            ),
            "grid": sunspec_device(cfg(server.port, "grid", "grid", 3), pool, state, clock),
        }
        for dev in devs.values():
            assert await dev.poll(), dev.device_id
        v = state.fresh_value
        assert v("pv", Quantity.POWER_W) == pytest.approx(truth.pv_w, abs=2)
        assert v("battery", Quantity.POWER_W) == pytest.approx(truth.battery_w, abs=2)
        assert v("battery", Quantity.SOC_PCT) == pytest.approx(truth.soc_pct, abs=0.1)
        assert v("grid", Quantity.POWER_W) == pytest.approx(truth.grid_w, abs=2)
        # acc32 0 is SunSpec's "not accumulated": a fresh counter reads as absent, not 0 Wh.
        assert v("grid", Quantity.ENERGY_IMPORT_WH) in (None, pytest.approx(truth.import_wh, abs=1))
        # The balance closes with hems signs: grid = load - pv + battery (+ charging).
        balance = state.role_total(Role.GRID) + v("pv", Quantity.POWER_W)
        assert balance - v("battery", Quantity.POWER_W) == pytest.approx(truth.load_w, abs=6)

        await devs["battery"].set_mode(BatteryMode.FORCE_CHARGE, 2000)
        assert home.battery_window_w == pytest.approx((2000, 2000), abs=1)
        await devs["pv"].set_power_limit_pct(30)
        assert home.pv_limit_pct == pytest.approx(30)
        truth = home.step(datetime(2026, 6, 21, 11, 0, 5, tzinfo=UTC), 5.0)
        server.refresh(truth.at)
        await clock.advance(5)
        for dev in devs.values():
            assert await dev.poll()
        assert v("battery", Quantity.POWER_W) == pytest.approx(2000, abs=2)
        assert v("pv", Quantity.POWER_LIMIT_PCT) == pytest.approx(30)
        await devs["battery"].set_mode(BatteryMode.NORMAL)
        assert home.battery_window_w is None
    finally:
        await pool.close()
        await server.stop()
