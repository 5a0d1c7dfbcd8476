"""The control loop over real Modbus TCP: hems' SunSpec adapters against the HIL SunSpec
server (hil/sunspec_server.py) with a fault proxy (hil/faults.py) in between.

Closed loop every simulated second: export limit held by filling the battery and then
curtailing PV (SunSpec 123 writes), a load step over a 40 A fuse met by discharging the
battery (SunSpec 124 writes), and the battery's unit going silent for a while (stale → safe
state, clean recovery). Asserted on the physics.
"""

from __future__ import annotations

from datetime import UTC, datetime

import hil.faults as hil_faults
import hil.home as hil_home
import hil.sunspec_server as hil_server
from hems.control.config import ControlConfig, DeviceControlConfig, StageBudgets
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.clock import ManualClock
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.sunspec_device import sunspec_device
from tests.testlib import sunspec_cfg

NOON = datetime(2026, 6, 21, 11, 0, tzinfo=UTC)
FUSE_A = 40.0
EXPORT_LIMIT_W = 2000.0


def _cfg(port: int, device_id: str, role: str, unit: int) -> SunSpecDeviceConfig:
    return sunspec_cfg(
        port, device_id, role, unit, timeout_s=0.2, backoff_max_s=0.2, control_revert_s=60
    )


async def test_control_loop_over_sunspec_modbus() -> None:
    clock = ManualClock(NOON)
    home = hil_home.Home(
        hil_home.HomeConfig(
            pv_kwp=6.5,
            pv_inverter_max_w=6000,
            fuse_a=FUSE_A,
            battery_initial_soc_pct=98,
            cloudiness=0.0,
            cloud_transients_per_h=0,
        ),
        start=NOON,
    )
    server = hil_server.SunSpecServer(home, clock)
    await server.start()
    proxy = hil_faults.FaultProxy("127.0.0.1", server.port)
    await proxy.start()
    state = SiteState(clock)
    pool = EndpointPool()
    try:
        port = proxy.port
        pv = sunspec_device(_cfg(port, "pv", "pv", 1), pool, state, clock)
        bat = sunspec_device(_cfg(port, "bat", "battery", 2), pool, state, clock)
        grid = sunspec_device(_cfg(port, "grid", "grid", 3), pool, state, clock)
        devs = ControlledDevices()
        devs.add_battery(bat, max_charge_w=5000, max_discharge_w=5000)  # type: ignore[arg-type]
        devs.add_pv(pv, rated_w=6000)  # type: ignore[arg-type]
        limits = LimitsConfig(
            fuse_a=FUSE_A, phases=1, export_limit_w=EXPORT_LIMIT_W, battery_reserve_pct=10
        )
        cfg = ControlConfig(
            strategy="self-consumption", write_timeout_s=0.3, budgets=StageBudgets(write_s=0.1)
        )
        loop = ControlLoop(cfg, limits, state, devs, clock, lambda: None)

        over_fuse = longest_fuse = over_export = longest_export = 0
        curtailed = discharged = stale_seen = False
        for t in range(1, 301):
            await clock.advance(1.0)
            now = clock.now()
            if t == 150:
                home.step_load(10_000, 40)
                home.kettle(60)
            if t == 220:
                proxy.faults.silent_units = {2}  # the battery stops answering
            if t == 232:
                proxy.faults.silent_units = set()
            truth = home.step(now, 1.0)
            server.refresh(now)
            for dev in (grid, pv, bat):
                if not (t > 220 and t <= 232 and dev is bat):
                    await dev.poll()
            await loop.step()
            amps = max(truth.current_phase_a) if truth.grid_w > 0 else 0.0
            over_fuse = over_fuse + 1 if amps > FUSE_A else 0
            longest_fuse = max(longest_fuse, over_fuse)
            over_export = over_export + 1 if -truth.grid_w > EXPORT_LIMIT_W else 0
            longest_export = max(longest_export, over_export)
            curtailed = curtailed or (home.pv_limit_pct or 100) < 100
            discharged = discharged or (150 < t < 190 and truth.battery_w < -3000)
            stale_seen = stale_seen or loop.status()["devices"]["bat"]["stale"]
        st = loop.status()
        print(st["fuse"], st["export"], longest_fuse, longest_export)
        assert longest_fuse <= 2, longest_fuse
        assert longest_export <= 15, longest_export
        assert curtailed, "PV was never curtailed over SunSpec"
        assert discharged, "the battery never covered the load step over SunSpec"
        assert stale_seen
        assert st["devices"]["bat"]["stale"] is False  # recovered
        assert st["devices"]["bat"]["write_error"] is None
        assert st["errors"] == 0
        assert st["fuse"]["excursions"] >= 1
    finally:
        await pool.close()
        await proxy.stop()
        await server.stop()


async def test_a_sunspec_pv_joins_control_only_once_its_map_shows_a_limit_model() -> None:
    """Issue 13: curtailment comes from the models read, not from the adapter's class. A PV
    whose map is not read yet (its unit silent at start) is measured only; its first poll
    reads the map and, with model 123, it joins control; without a limit model it never
    does, so the loop never writes to it even with export over the limit."""
    clock = ManualClock(NOON)
    for has_123 in (True, False):
        home = hil_home.Home(
            hil_home.HomeConfig(pv_kwp=6.5, pv_inverter_max_w=6000, battery_initial_soc_pct=100,
                                cloudiness=0.0, cloud_transients_per_h=0),
            start=NOON,
        )  # fmt: skip
        server = hil_server.SunSpecServer(home, clock, pv_curtailment=has_123)
        await server.start()
        state = SiteState(clock)
        pool = EndpointPool()
        try:
            pv = sunspec_device(_cfg(server.port, "pv", "pv", 1), pool, state, clock)
            grid = sunspec_device(_cfg(server.port, "grid", "grid", 3), pool, state, clock)
            assert pv.curtailable is None  # type: ignore[attr-defined]
            cfg = ControlConfig(strategy="self-consumption", write_timeout_s=0.3).with_devices(
                {"pv": DeviceControlConfig(rated_w=6000)}
            )
            limits = LimitsConfig(fuse_a=FUSE_A, phases=1, export_limit_w=EXPORT_LIMIT_W)
            loop = ControlLoop(
                cfg, limits, state, ControlledDevices.from_adapters(cfg, [pv]), clock, lambda: None
            )
            assert not loop.controls("pv")  # not read yet: nothing to count on
            pv.on_map_found(loop.add_device)  # type: ignore[attr-defined]
            for _ in range(20):
                await clock.advance(1.0)
                home.step(clock.now(), 1.0)
                server.refresh(clock.now())
                assert await pv.poll() and await grid.poll()
                await loop.step()
            assert pv.curtailable is has_123  # type: ignore[attr-defined]
            assert loop.controls("pv") is has_123
            assert -home.state.grid_w > EXPORT_LIMIT_W or has_123  # over the limit without it
            if has_123:
                assert (home.pv_limit_pct or 100) < 100  # curtailed over SunSpec 123
            else:
                assert home.pv_limit_pct is None  # never limited
                assert "pv" not in loop.status()["devices"]
                assert loop.status()["errors"] == 0
        finally:
            await pool.close()
            await server.stop()
