"""The SunSpec server over real Modbus TCP, read and written with a plain pymodbus client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hil_testlib import cval, read_regs, read_sunspec
from pymodbus.client import AsyncModbusTcpClient

from hems.core.clock import AcceleratedClock, ManualClock
from hil.home import HomeConfig
from hil.rig import HilRig


async def test_hil_model_chain_per_unit(rig: HilRig, client: AsyncModbusTcpClient) -> None:
    chains = {u: list(await read_sunspec(client, u)) for u in (1, 2, 3)}
    assert chains == {1: [1, 103, 123], 2: [1, 103, 124, 802], 3: [1, 203]}
    common = (await read_sunspec(client, 3))[1][1]
    assert common.points["Mn"].value == "hems-hil"
    assert common.points["Md"].value == "HIL-METER"


async def test_hil_values_match_physics_with_scale_factors(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    await clock.advance(30.0)
    s = rig.tick()
    pv = await read_sunspec(client, 1)
    m103 = pv[103][1]
    assert m103.points["W_SF"].value == 0 and m103.points["A_SF"].value == -2
    assert cval(m103, "W") == pytest.approx(s.pv_w, abs=0.5)
    assert cval(m103, "WH") == pytest.approx(s.pv_energy_wh, abs=1.0)
    assert cval(m103, "PhVphA") == pytest.approx(s.voltage_phase_v[0], abs=0.05)
    assert cval(m103, "Hz") == pytest.approx(s.frequency_hz, abs=0.005)
    assert cval(m103, "A") == pytest.approx(s.pv_w / s.voltage_phase_v[0], abs=0.01)
    assert m103.points["AphB"].value is None  # single-phase home: B and C not implemented
    assert m103.points["St"].value == 4  # MPPT at noon

    bat = await read_sunspec(client, 2)
    assert cval(bat[124][1], "ChaState") == pytest.approx(s.soc_pct, abs=0.05)
    assert cval(bat[802][1], "SoC") == pytest.approx(s.soc_pct, abs=0.05)
    # SunSpec inverter convention on 103 (and 802 here): + = discharging.
    assert cval(bat[103][1], "W") == pytest.approx(-s.battery_w, abs=0.5)
    assert cval(bat[802][1], "W") == pytest.approx(-s.battery_w, abs=0.5)

    meter = (await read_sunspec(client, 3))[203][1]
    assert cval(meter, "W") == pytest.approx(s.grid_w, abs=0.5)  # + = import
    assert cval(meter, "WphA") == pytest.approx(s.grid_phase_w[0], abs=0.5)
    assert cval(meter, "TotWhImp") == pytest.approx(s.import_wh, abs=1.0)
    assert cval(meter, "TotWhExp") == pytest.approx(s.export_wh, abs=1.0)
    assert cval(meter, "PhVphA") == pytest.approx(s.voltage_phase_v[0], abs=0.05)
    assert cval(meter, "Hz") == pytest.approx(s.frequency_hz, abs=0.005)


async def _write(c: AsyncModbusTcpClient, address: int, value: int, unit: int) -> None:
    rr = await c.write_register(address, value & 0xFFFF, device_id=unit)
    assert not rr.isError(), rr


async def test_hil_124_setpoint_drives_the_battery(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    b = rig.sunspec.battery
    # Forced discharge at 40 % of WChaMax (5 kW): StorCtl_Mod CHARGE bit, InWRte = -40.00 %.
    await _write(client, b.address_of(124, "InWRte"), -4000, 2)
    await _write(client, b.address_of(124, "StorCtl_Mod"), 1, 2)
    await clock.advance(10.0)
    s = rig.tick()
    assert s.battery_w == pytest.approx(-2000.0)
    w_addr = b.address_of(103, "W")
    assert (await read_regs(client, w_addr, 1, 2))[0] == 2000  # W_SF 0, + = discharging
    # Forced charge at 60 %: OutWRte = -60 % with the DISCHARGE bit.
    await _write(client, b.address_of(124, "InWRte"), 10000, 2)
    await _write(client, b.address_of(124, "OutWRte"), -6000, 2)
    await _write(client, b.address_of(124, "StorCtl_Mod"), 3, 2)
    await clock.advance(10.0)
    s = rig.tick()
    assert s.battery_w == pytest.approx(3000.0)
    assert (await read_regs(client, w_addr, 1, 2))[0] == (-3000) & 0xFFFF
    # Back to normal: self-consumption (noon, clear sky: charging from the surplus).
    await _write(client, b.address_of(124, "StorCtl_Mod"), 0, 2)
    await clock.advance(10.0)
    s = rig.tick()
    assert rig.home.battery_window_w is None
    assert s.battery_w > 0 and abs(s.grid_w) < 100


async def test_hil_124_revert_timeout(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    b = rig.sunspec.battery
    await _write(client, b.address_of(124, "InOutWRte_RvrtTms"), 60, 2)
    await _write(client, b.address_of(124, "InWRte"), 0, 2)
    await _write(client, b.address_of(124, "OutWRte"), 0, 2)
    await _write(client, b.address_of(124, "StorCtl_Mod"), 3, 2)  # hold idle
    await clock.advance(40.0)
    assert rig.tick().battery_w == 0.0
    await _write(client, b.address_of(124, "StorCtl_Mod"), 3, 2)  # a new write restarts it
    await clock.advance(40.0)
    assert rig.tick().battery_w == 0.0
    await clock.advance(25.0)
    rig.tick()
    assert rig.home.battery_window_w is None
    mod = (await read_regs(client, b.address_of(124, "StorCtl_Mod"), 1, 2))[0]
    assert mod == 0
    await clock.advance(10.0)
    assert rig.tick().battery_w > 0  # self-consumption again


async def test_hil_123_curtailment_and_its_revert(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    pv = rig.sunspec.pv
    await _write(client, pv.address_of(123, "WMaxLimPct_RvrtTms"), 120, 1)
    await _write(client, pv.address_of(123, "WMaxLimPct"), 2500, 1)  # 25.00 %
    await _write(client, pv.address_of(123, "WMaxLim_Ena"), 1, 1)
    await clock.advance(10.0)
    s = rig.tick()
    assert s.pv_w == pytest.approx(0.25 * 3680.0)
    m103 = (await read_sunspec(client, 1))[103][1]
    assert cval(m103, "W") == pytest.approx(920.0, abs=0.5)
    assert m103.points["St"].value == 5  # THROTTLED
    await clock.advance(130.0)
    s = rig.tick()
    assert s.pv_w > 2000 and rig.home.pv_limit_pct is None
    await _write(client, pv.address_of(123, "Conn"), 0, 1)  # disconnect
    await clock.advance(10.0)
    assert rig.tick().pv_w == 0.0


async def test_hil_bad_writes_get_exceptions_and_change_nothing(
    rig: HilRig, client: AsyncModbusTcpClient
) -> None:
    b = rig.sunspec.battery
    rr = await client.write_register(b.address_of(124, "InWRte"), 20000, device_id=2)
    assert rr.isError() and rr.exception_code == 3  # ILLEGAL DATA VALUE
    rr = await client.write_register(b.address_of(124, "StorCtl_Mod"), 4, device_id=2)
    assert rr.isError() and rr.exception_code == 3
    rr = await client.write_register(b.address_of(124, "ChaState"), 100, device_id=2)
    assert rr.isError() and rr.exception_code == 2  # read-only point
    rr = await client.write_register(
        rig.sunspec.pv.address_of(123, "WMaxLimPct"), 12000, device_id=1
    )
    assert rr.isError() and rr.exception_code == 3
    assert (await read_regs(client, b.address_of(124, "InWRte"), 1, 2))[0] == 10000
    assert rig.home.battery_window_w is None and rig.home.pv_limit_pct is None
    rr = await client.read_holding_registers(40000, count=2, device_id=9)
    assert rr.isError() and rr.exception_code == 0x0B  # unknown unit: gateway, no response
    rr = await client.read_holding_registers(0, count=2, device_id=200)
    assert rr.isError() and rr.exception_code == 0x0B
    rr = await client.read_holding_registers(39000, count=2, device_id=1)
    assert rr.isError() and rr.exception_code == 2


async def test_hil_three_phase_meter_and_scale(clock: ManualClock) -> None:
    cfg = HomeConfig(phases=3, fuse_a=100.0, seed=2)
    async with HilRig(clock, home_config=cfg) as rig:
        rig.home.set_external_load_w("ev", 22000.0)
        await clock.advance(10.0)
        s = rig.tick()
        c = AsyncModbusTcpClient("127.0.0.1", port=rig.sunspec_port, timeout=1, retries=0)
        await c.connect()
        try:
            meter = (await read_sunspec(c, 3))[203][1]
        finally:
            c.close()
    assert meter.points["W_SF"].value == 1  # 100 A x 230 V x 3 x 1.5 does not fit an int16
    for i, ph in enumerate("ABC"):
        assert cval(meter, f"Wph{ph}") == pytest.approx(s.grid_phase_w[i], abs=5.0)
    assert cval(meter, "W") == pytest.approx(s.grid_w, abs=5.0)


async def test_hil_rig_runs_on_an_accelerated_clock() -> None:
    clock = AcceleratedClock(600.0, datetime(2026, 6, 21, 9, 0, tzinfo=UTC))
    async with HilRig(clock, home_config=HomeConfig(seed=1)) as rig:
        assert rig.step_s == pytest.approx(300.0)
        c = AsyncModbusTcpClient("127.0.0.1", port=rig.sunspec_port, timeout=1, retries=0)
        await c.connect()
        try:
            addr = rig.sunspec.meter.address_of(203, "TotWhImp")
            first = await read_regs(c, rig.sunspec.pv.address_of(103, "WH"), 2, 1)
            await asyncio.sleep(1.2)  # 12 simulated minutes, at least two steps
            later = await read_regs(c, rig.sunspec.pv.address_of(103, "WH"), 2, 1)
            assert len(await read_regs(c, addr, 2, 3)) == 2
        finally:
            c.close()
    wh = [(r[0] << 16) | r[1] for r in (first, later)]
    assert wh[1] > wh[0] > 0  # PV energy accumulates as simulated time runs


async def test_hil_meter_flags_over_current(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    rig.home.step_load(20_000.0, duration_s=60.0)  # 20 kW on a 60 A single phase
    await clock.advance(10.0)
    s = rig.tick()
    assert s.over_current
    meter = (await read_sunspec(client, 3))[203][1]
    assert meter.points["Evt"].value & (1 << 5)  # M_EVENT_Over_Current
    assert cval(meter, "A") > 60.0
    await clock.advance(120.0)
    rig.tick()
    meter = (await read_sunspec(client, 3))[203][1]
    assert not meter.points["Evt"].value & (1 << 5)


async def test_hil_records_what_a_client_had_read_when_it_wrote(
    rig: HilRig, client: AsyncModbusTcpClient, clock: ManualClock
) -> None:
    """The soak tells a control fault from a daemon behind the rig by these (hil/soak.py)."""
    server = rig.sunspec
    b = server.battery
    first = rig.tick().at
    await read_regs(client, server.meter.address_of(203, "W"), 1, 3)
    assert server.read_state_at[3] == first
    await clock.advance(200.0)
    second = rig.tick().at
    # A write after the second step, decided on the meter as read before it.
    await _write(client, b.address_of(124, "InWRte"), -4000, 2)
    assert server.write_basis[2] == (second, first)
    await read_regs(client, server.meter.address_of(203, "W"), 1, 3)
    await _write(client, b.address_of(124, "InWRte"), -3000, 2)
    assert server.write_basis[2] == (second, second)
    assert server.read_state_at[3] == second
