"""SunSpec device adapters: readings into SiteState, staleness, recovery and control."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from modbus_sim import common_model, free_port, model_regs, sunspec_image

from hems.config import ConfigErrors, load_config
from hems.core.capabilities import Battery, BatteryControl, BatteryMode, Meter, PvInverter
from hems.core.clock import AcceleratedClock, ManualClock
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.service import ModbusService
from hems.devices.modbus.sunspec import decode_model
from hems.devices.modbus.sunspec_device import (
    SunSpecBattery,
    SunSpecInverter,
    SunSpecMeter,
    sunspec_device,
)
from hems.errors import BadValue, DeviceUnreachable, NotSupported
from tests.testlib import sunspec_cfg

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BASE = 40000


def home_images(with_123: bool = True) -> dict[int, tuple[int, list[int]]]:
    pv_models = [
        common_model("Acme", "PV5", "PV-1"),
        model_regs(103, W=3200, W_SF=0, WH=5000, WH_SF=3, Hz=5000, Hz_SF=-2),
    ]
    if with_123:
        pv_models.append(
            model_regs(123, WMaxLimPct=1000, WMaxLimPct_SF=-1, WMaxLim_Ena=0, WMaxLimPct_RvrtTms=0)
        )
    battery = [
        common_model("Acme", "BAT10", "BAT-1"),
        model_regs(103, W=-1500, W_SF=0),  # AC side, generator sign: -1500 = charging
        model_regs(
            124,
            WChaMax=5000,
            WChaMax_SF=0,
            StorCtl_Mod=0,
            ChaState=505,
            ChaState_SF=-1,
            OutWRte=10000,
            InWRte=10000,
            InOutWRte_SF=-2,
            InOutWRte_RvrtTms=0,
            ChaGriSet=0,
        ),
        model_regs(802, SoC=51, SoC_SF=0, W=-1450, W_SF=0, V=512, V_SF=-1),
    ]
    meter = [
        common_model("Acme", "M3", "MTR-1"),
        model_regs(
            203,
            W=-800,
            W_SF=0,
            TotWhImp=1000,
            TotWhExp=2000,
            TotWh_SF=1,
            WphA=-800,
            WphB=0,
            WphC=0,
            AphA=35,
            A_SF=-1,
            Hz=4999,
            Hz_SF=-2,
        ),
    ]
    return {
        1: (BASE, sunspec_image(*pv_models)),
        2: (BASE, sunspec_image(*battery)),
        3: (BASE, sunspec_image(*meter)),
    }


def cfg(port: int, device_id: str, role: str, unit: int, **kw) -> SunSpecDeviceConfig:
    return sunspec_cfg(port, device_id, role, unit, timeout_s=0.3, backoff_max_s=0.1, **kw)


def build(port, state, clock, pool=None):
    pool = pool or EndpointPool()
    pv = sunspec_device(cfg(port, "pv", "pv", 1), pool, state, clock)
    bat = sunspec_device(cfg(port, "battery", "battery", 2), pool, state, clock)
    grid = sunspec_device(cfg(port, "grid", "grid", 3), pool, state, clock)
    return pool, pv, bat, grid


async def test_modbus_sunspec_home_publishes_readings_with_hems_signs(serve):
    srv = await serve(home_images())
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool, pv, bat, grid = build(srv.port, state, clock)
    assert isinstance(pv, SunSpecInverter) and isinstance(pv, PvInverter)
    assert isinstance(bat, SunSpecBattery) and isinstance(bat, Battery)
    assert isinstance(bat, BatteryControl) and isinstance(grid, Meter)
    assert isinstance(grid, SunSpecMeter) and not isinstance(grid, BatteryControl)
    assert len(pool.endpoints) == 1  # three units, one connection
    for dev in (pv, bat, grid):
        assert await dev.poll()
    v = state.fresh_value
    assert v("pv", Quantity.POWER_W) == 3200  # producing: +
    assert v("pv", Quantity.ENERGY_EXPORT_WH) == 5_000_000
    assert v("pv", Quantity.FREQUENCY_HZ) == 50.0
    assert v("pv", Quantity.POWER_LIMIT_PCT) == 100.0  # limit not enabled
    assert v("pv", Quantity.TEMPERATURE_C) is None  # not implemented: not published, not 0
    assert v("battery", Quantity.SOC_PCT) == 51  # 802 wins over 124's ChaState
    assert v("battery", Quantity.POWER_W) == 1450  # 802 W -1450 (charging) → + charging
    assert v("battery", Quantity.VOLTAGE_V) == 51.2
    assert v("grid", Quantity.POWER_W) == -800  # exporting
    assert v("grid", Quantity.ENERGY_IMPORT_WH) == 10_000
    assert v("grid", Quantity.ENERGY_EXPORT_WH) == 20_000
    assert v("grid", Quantity.CURRENT_L1_A) == 3.5
    assert v("grid", Quantity.POWER_L1_W) == -800
    assert state.role_total(Role.GRID) == -800
    assert await pv.power_w() == 3200 and await bat.soc_pct() == 51
    assert await grid.energy_import_wh() == 10_000
    ep = next(iter(pool.endpoints.values()))
    before = ep.stats.requests
    await grid.poll()
    assert ep.stats.requests == before + 1  # a steady poll is one block read
    await pool.close()


async def test_modbus_sunspec_stale_after_missed_polls_and_recovery(serve, fault_proxy):
    srv = await serve(home_images())
    proxy = await fault_proxy(srv.port)
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    grid = sunspec_device(
        cfg(proxy.port, "grid", "grid", 3, stale_after_polls=3), pool, state, clock
    )
    assert await grid.poll()
    proxy.swallow = True
    for i in range(3):
        assert not await grid.poll()
        assert state.is_stale("grid") is (i == 2)  # down only after the 3rd miss
    assert "3 polls missed" in (state.down_reason("grid") or "")
    assert "no reply within 0.3 s" in (state.down_reason("grid") or "")
    with pytest.raises(DeviceUnreachable, match="grid: power_w: 3 polls missed"):
        await grid.power_w()
    proxy.swallow = False
    proxy.kill_connections()
    for _ in range(20):
        if await grid.poll():
            break
        await asyncio.sleep(0.03)
    assert not state.is_stale("grid")
    assert await grid.power_w() == -800
    await pool.close()


async def test_modbus_sunspec_bad_value_publishes_nothing(serve):
    images = home_images()
    srv = await serve(images)
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    grid = sunspec_device(cfg(srv.port, "grid", "grid", 3, stale_after_polls=1), pool, state, clock)
    await grid.ensure_map()
    loc = grid.sunspec_map.find(203)
    regs = images[3][1][loc.address - BASE : loc.address - BASE + loc.length + 2]
    w_sf = decode_model(203, loc.address, regs).points["W_SF"].address
    await srv.set(3, w_sf, [0x8000])  # scale factor vanishes: W unusable
    assert not await grid.poll()
    assert state.latest("grid", Quantity.POWER_W) is None
    assert "W_SF is not implemented" in (state.down_reason("grid") or "")
    await pool.close()


async def test_modbus_sunspec_unreachable_device_is_down_not_fatal(serve):

    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    dev = sunspec_device(cfg(free_port(), "pv", "pv", 1, stale_after_polls=2), pool, state, clock)
    assert not await dev.poll()
    assert not await dev.poll()
    assert "cannot connect" in (state.down_reason("pv") or "") or "next attempt" in (
        state.down_reason("pv") or ""
    )
    await pool.close()


async def test_modbus_sunspec_pv_limit_through_123(serve):
    images = home_images()
    srv = await serve(images)
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    pv = sunspec_device(cfg(srv.port, "pv", "pv", 1, control_revert_s=300), pool, state, clock)
    await pv.set_power_limit_pct(42.5)
    loc = pv.sunspec_map.find(123)
    regs = await srv.get(1, loc.address, loc.length + 2)
    data = decode_model(123, loc.address, regs)
    assert data.get("WMaxLimPct") == 42.5
    assert data.get("WMaxLim_Ena") == 1
    assert data.get("WMaxLimPct_RvrtTms") == 300
    assert await pv.poll()
    assert state.fresh_value("pv", Quantity.POWER_LIMIT_PCT) == 42.5
    await pv.set_power_limit_pct(100)
    data = decode_model(123, loc.address, await srv.get(1, loc.address, loc.length + 2))
    assert data.get("WMaxLim_Ena") == 0
    for bad in (-1, 101, float("nan")):
        with pytest.raises(BadValue, match="limit_pct"):
            await pv.set_power_limit_pct(bad)
    await pool.close()


async def test_modbus_sunspec_pv_without_123_is_not_supported(serve):
    srv = await serve(home_images(with_123=False))
    clock = ManualClock(T0)
    pool = EndpointPool()
    pv = sunspec_device(cfg(srv.port, "pv", "pv", 1), pool, SiteState(clock), clock)
    with pytest.raises(NotSupported, match="pv: device has none of models 123, 704"):
        await pv.set_power_limit_pct(50)
    await pool.close()


async def read124(srv, bat):
    loc = bat.sunspec_map.find(124)
    return decode_model(124, loc.address, await srv.get(2, loc.address, loc.length + 2))


@pytest.mark.parametrize(
    ("mode", "power_w", "expected"),
    [
        (BatteryMode.NORMAL, 0, {"StorCtl_Mod": 0}),
        (BatteryMode.IDLE, 0, {"StorCtl_Mod": 3, "OutWRte": 0, "InWRte": 0}),
        (BatteryMode.HOLD_DISCHARGE, 0, {"StorCtl_Mod": 2, "OutWRte": 0, "InWRte": 100}),
        (BatteryMode.HOLD_CHARGE, 0, {"StorCtl_Mod": 1, "OutWRte": 100, "InWRte": 0}),
        (
            BatteryMode.FORCE_CHARGE,
            2500,
            {"StorCtl_Mod": 3, "InWRte": 50, "OutWRte": -50, "ChaGriSet": 1},
        ),
        (BatteryMode.POWER_SETPOINT, -1000, {"StorCtl_Mod": 3, "OutWRte": 20, "InWRte": -20}),
        (BatteryMode.POWER_SETPOINT, 9000, {"StorCtl_Mod": 3, "InWRte": 100, "OutWRte": -100}),
    ],
)
async def test_modbus_sunspec_battery_modes_through_124(serve, mode, power_w, expected):
    srv = await serve(home_images())
    clock = ManualClock(T0)
    pool = EndpointPool()
    bat = sunspec_device(
        cfg(srv.port, "battery", "battery", 2, control_revert_s=90), pool, SiteState(clock), clock
    )
    await bat.set_mode(mode, power_w)
    data = await read124(srv, bat)
    for name, value in expected.items():
        assert data.get(name) == value, name
    if mode is not BatteryMode.NORMAL:
        assert data.get("InOutWRte_RvrtTms") == 90
    await pool.close()


async def test_modbus_sunspec_battery_never_writes_from_a_bad_read(serve):
    images = home_images()
    srv = await serve(images)
    clock = ManualClock(T0)
    pool = EndpointPool()
    bat = sunspec_device(cfg(srv.port, "battery", "battery", 2), pool, SiteState(clock), clock)
    await bat.ensure_map()
    before = await read124(srv, bat)
    await srv.set(2, before.points["WChaMax_SF"].address, [0x8000])
    with pytest.raises(BadValue, match=r"model 124 point WChaMax \(register \d+\): scale factor"):
        await bat.set_mode(BatteryMode.FORCE_CHARGE, 2000)
    after = await read124(srv, bat)
    for name in ("StorCtl_Mod", "InWRte", "OutWRte", "ChaGriSet"):
        assert after.get(name) == before.get(name), name


async def test_modbus_sunspec_battery_mode_not_offered_is_refused(serve):
    srv = await serve(home_images())
    clock = ManualClock(T0)
    pool = EndpointPool()
    c = cfg(srv.port, "battery", "battery", 2, battery_modes=["normal", "idle"])
    bat = sunspec_device(c, pool, SiteState(clock), clock)
    assert bat.modes == frozenset({BatteryMode.NORMAL, BatteryMode.IDLE})
    with pytest.raises(NotSupported, match="force-charge is not offered"):
        await bat.set_mode(BatteryMode.FORCE_CHARGE, 1000)
    full = sunspec_device(cfg(srv.port, "bat2", "battery", 2), pool, SiteState(clock), clock)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(BadValue, match="not a number"):
            await full.set_mode(BatteryMode.POWER_SETPOINT, bad)
    with pytest.raises(BadValue, match="force-charge power_w -500: must be >= 0"):
        await full.set_mode(BatteryMode.FORCE_CHARGE, -500)
    await pool.close()


async def test_modbus_sunspec_rediscovers_after_model_moves(serve):
    images = home_images()
    images[3] = (BASE, [*images[3][1], 0, 0])  # room for the image to grow
    srv = await serve(images)
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    grid = sunspec_device(cfg(srv.port, "grid", "grid", 3), pool, state, clock)
    assert await grid.poll()
    old = grid.sunspec_map
    # Firmware update: the meter model now sits after a bigger common model (shifted by 2).
    regs = images[3][1][:-2]
    common_end = 2 + regs[3] + 2
    shifted = [*regs[:2], 1, regs[3] + 2, *regs[4:common_end], 0, 0, *regs[common_end:]]
    await srv.set(3, BASE, shifted)
    assert not await grid.poll()  # the header check catches the move
    assert grid.sunspec_map is None
    assert await grid.poll()
    assert grid.sunspec_map.find(203).address == old.find(203).address + 2
    assert state.fresh_value("grid", Quantity.POWER_W) == -800
    await pool.close()


def test_modbus_sunspec_config_rules():
    with pytest.raises(ValueError, match="role: ev is not a SunSpec role"):
        SunSpecDeviceConfig(type="sunspec", id="x", role="ev", host="h")
    with pytest.raises(ValueError, match="battery_modes: only for role battery"):
        SunSpecDeviceConfig(type="sunspec", id="x", role="pv", host="h", battery_modes=["idle"])
    with pytest.raises(ValueError, match="host: required when transport is tcp"):
        SunSpecDeviceConfig(type="sunspec", id="x", role="pv")
    with pytest.raises(ValueError, match="serial_port: required when transport is rtu"):
        SunSpecDeviceConfig(type="sunspec", id="x", role="pv", transport="rtu")
    c = SunSpecDeviceConfig(
        type="sunspec",
        id="x",
        role="grid",
        transport="rtu",
        serial_port="/dev/ttyUSB0",
        baudrate=19200,
        parity="E",
    )
    assert c.endpoint_spec().key == "rtu:///dev/ttyUSB0"


async def test_modbus_service_runs_the_home_on_an_accelerated_clock(serve):
    srv = await serve(home_images())
    clock = AcceleratedClock(speed=50, start=T0)
    state = SiteState(clock)
    configs = [
        cfg(srv.port, "pv", "pv", 1),
        cfg(srv.port, "battery", "battery", 2),
        cfg(srv.port, "grid", "grid", 3),
    ]
    service = ModbusService(configs, state, clock)
    assert set(service.devices) == {"pv", "battery", "grid"}
    task = asyncio.create_task(service.run())
    try:
        for _ in range(100):
            if all(state.fresh_value(d, Quantity.POWER_W) is not None for d in service.devices):
                break
            await asyncio.sleep(0.02)
        await srv.set(3, service.devices["grid"].sunspec_map.find(203).address + 2 + 16, [1234])
        for _ in range(100):
            if state.fresh_value("grid", Quantity.POWER_W) == 1234:
                break
            await asyncio.sleep(0.02)
        assert state.fresh_value("grid", Quantity.POWER_W) == 1234
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not any(ep.stats.connected for ep in service.pool.endpoints.values())


async def test_modbus_sunspec_der_models_701_704_713(serve):
    """A DER-model device: 701 measurements, 704 curtailment (uint32 revert), 713 SoC.

    The battery unit is an AC-coupled storage inverter (`hybrid: false`), so its AC output is
    the battery's power."""
    pv = sunspec_image(
        common_model(),
        model_regs(701, W=1800, W_SF=0, TotWhInj=777, TotWh_SF=0, Hz=50010, Hz_SF=-3),
        model_regs(704, WMaxLimPctEna=0, WMaxLimPct=100, WMaxLimPct_SF=0, WMaxLimPctRvrtTms=0),
    )
    bat = sunspec_image(
        common_model(), model_regs(701, W=-900, W_SF=0), model_regs(713, SoC=640, Pct_SF=-1)
    )
    srv = await serve({1: (BASE, pv), 2: (BASE, bat)})
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    inv = sunspec_device(
        cfg(srv.port, "pv", "pv", 1, control_revert_s=70000 // 2), pool, state, clock
    )
    b = sunspec_device(cfg(srv.port, "battery", "battery", 2, hybrid=False), pool, state, clock)
    assert await inv.poll() and await b.poll()
    assert state.fresh_value("pv", Quantity.POWER_W) == 1800
    assert state.fresh_value("pv", Quantity.ENERGY_EXPORT_WH) == 777
    assert state.fresh_value("pv", Quantity.FREQUENCY_HZ) == 50.01
    assert state.fresh_value("battery", Quantity.SOC_PCT) == 64.0
    assert state.fresh_value("battery", Quantity.POWER_W) == 900  # 701 W -900: absorbing
    await inv.set_power_limit_pct(25)
    loc = inv.sunspec_map.find(704)
    data = decode_model(704, loc.address, await srv.get(1, loc.address, loc.length + 2))
    assert (data.get("WMaxLimPct"), data.get("WMaxLimPctEna")) == (25, 1)
    assert data.get("WMaxLimPctRvrtTms") == 35000
    with pytest.raises(NotSupported, match="none of models 124"):
        await b.set_mode(BatteryMode.IDLE)
    await pool.close()


def test_modbus_sunspec_config_through_the_root_loader(tmp_path):

    good = tmp_path / "good.yaml"
    good.write_text(
        "site: {id: home}\n"
        "devices:\n"
        "  - {type: sunspec, id: pv, role: pv, host: 127.0.0.1, port: 5020, unit_id: 1}\n"
        "  - type: sunspec\n"
        "    id: meter\n"
        "    role: grid\n"
        "    transport: rtu\n"
        "    serial_port: /dev/ttyUSB0\n"
        "    baudrate: 9600\n"
        "    parity: E\n"
        "    inter_request_delay_s: 0.05\n"
        "    proxy: {listen_port: 5502}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(good)
    assert any("proxy: only for tcp endpoints" in p for p in info.value.problems)
    good.write_text(good.read_text().replace("    proxy: {listen_port: 5502}\n", ""))
    config = load_config(good)
    assert config.devices[1].endpoint_spec().key == "rtu:///dev/ttyUSB0"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "site: {id: home}\n"
        "devices:\n"
        "  - type: sunspec\n"
        "    id: pv\n"
        "    role: pv\n"
        "    host: 127.0.0.1\n"
        "    stale_after_polls: 0\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(bad)
    assert any(
        p.startswith("devices[0].stale_after_polls") and "(line 7)" in p
        for p in info.value.problems
    ), info.value.problems


async def test_modbus_sunspec_logs_transitions_not_every_failure(serve, fault_proxy):
    from structlog.testing import capture_logs

    srv = await serve(home_images())
    proxy = await fault_proxy(srv.port)
    clock = ManualClock(T0)
    pool = EndpointPool()
    grid = sunspec_device(cfg(proxy.port, "grid", "grid", 3), pool, SiteState(clock), clock)
    assert await grid.poll()
    with capture_logs() as logs:
        proxy.swallow = True
        for _ in range(6):
            await grid.poll()
        proxy.swallow = False
        proxy.kill_connections()
        for _ in range(20):
            if await grid.poll():
                break
            await asyncio.sleep(0.03)
    events = [e["event"] for e in logs if e["event"].startswith("sunspec")]
    assert events == ["sunspec poll failed", "sunspec device down", "sunspec device recovered"]
    await pool.close()


async def test_modbus_sunspec_control_writes_log_at_debug(serve):
    """Issue 16: the control loop re-sends the PV limit and the battery mode all day; at info
    they were most of the log file (~2 MB a day), so they log at debug."""
    from structlog.testing import capture_logs

    srv = await serve(home_images())
    clock = ManualClock(T0)
    state = SiteState(clock)
    pool = EndpointPool()
    pv = sunspec_device(cfg(srv.port, "pv", "pv", 1), pool, state, clock)
    bat = sunspec_device(cfg(srv.port, "battery", "battery", 2), pool, state, clock)
    with capture_logs() as logs:
        await pv.set_power_limit_pct(60)
        await bat.set_mode(BatteryMode.POWER_SETPOINT, 1000)
    levels = {e["event"]: e["log_level"] for e in logs}
    assert levels["sunspec pv limit set"] == "debug"
    assert levels["sunspec battery mode set"] == "debug"
    await pool.close()
