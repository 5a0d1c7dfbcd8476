"""Every shipped profile served by hil/profile_server.py over real Modbus TCP and decoded back
by the profile adapter through the engine; controls written and verified end to end."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from hems.core.capabilities import Battery, BatteryControl, BatteryMode, Meter, PvInverter
from hems.core.clock import ManualClock
from hems.core.readings import Quantity, Role
from hems.core.state import SiteState
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.profile import Profile, shipped_profiles
from hems.devices.modbus.profile_config import ProfileDeviceConfig
from hems.devices.modbus.profile_device import (
    ProfileDevice,
    match_profile,
    profile_device,
)
from hems.errors import BadValue, NotSupported
from hil.profile_server import ProfileServer, demo_values

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def expected_readings(profile: Profile, role: Role, values: dict) -> dict[Quantity, float]:
    out: dict[Quantity, float] = {}
    for name, reg in profile.registers.items():
        if reg.role is role and reg.quantity is not None and reg.quantity not in out:
            out[reg.quantity] = float(values[name])
    for d in profile.derived.values():
        if d.role is role and d.quantity not in out:
            out[d.quantity] = sum(float(values[t]) for t in d.add) - sum(
                float(values[t]) for t in d.subtract
            )
    return out


def make(
    server: ProfileServer, role: Role, pool: EndpointPool, state: SiteState, clock, **extra
) -> ProfileDevice:
    cfg = ProfileDeviceConfig.model_validate(
        {
            "type": "modbus-profile",
            "id": f"{server.profile.family}-{role}",
            "role": role,
            "profile": server.profile.family,
            "host": "127.0.0.1",
            "port": server.port,
            "unit_id": server.unit_id,
            "timeout_s": 1.0,
            "stale_after_polls": 2,
            **extra,
        }
    )
    return profile_device(cfg, pool, state, clock)


@pytest.fixture
async def pool() -> AsyncIterator[EndpointPool]:
    p = EndpointPool()
    yield p
    await p.close()


@pytest.mark.parametrize("family", sorted(shipped_profiles()))
async def test_every_profile_decodes_end_to_end(family: str, pool: EndpointPool) -> None:
    profile = shipped_profiles()[family]
    values = demo_values(profile)
    clock = ManualClock(START)
    state = SiteState(clock)
    async with ProfileServer(profile, values) as server:
        for role in sorted(profile.roles()):
            dev = make(server, role, pool, state, clock)
            assert await dev.poll(), f"{family} {role}: {dev._bad}"
            want = expected_readings(profile, role, values)
            got = {q: state.fresh_value(dev.device_id, q) for q in want}
            assert got == pytest.approx(want, rel=1e-6), f"{family} {role}"
            # the role classes implement the capability protocols
            if role is Role.GRID:
                assert isinstance(dev, Meter)
                assert await dev.power_w() == pytest.approx(want[Quantity.POWER_W])
            if role is Role.PV:
                # Curtailable (so counted on for the export limit) only with pv_limit writes.
                assert isinstance(dev, PvInverter) == ("pv_limit" in profile.controls)
                assert await dev.power_w() == pytest.approx(want[Quantity.POWER_W])
            if role is Role.BATTERY:
                assert isinstance(dev, Battery)
                assert isinstance(dev, BatteryControl) == bool(profile.battery_modes)
        assert server.requests > 0


async def test_battery_modes_write_their_sequence_in_order(pool: EndpointPool) -> None:
    profile = shipped_profiles()["sungrow-sh"]
    clock = ManualClock(START)
    state = SiteState(clock)
    async with ProfileServer(profile) as server:
        dev = make(server, Role.BATTERY, pool, state, clock)
        assert isinstance(dev, BatteryControl)
        await dev.set_mode(BatteryMode.POWER_SETPOINT, -1500.0)
        assert server.writes == [(13049, [2]), (13051, [1500]), (13050, [0xBB])]
        server.writes.clear()
        await dev.set_mode(BatteryMode.FORCE_CHARGE, 3000.0)
        assert server.writes == [(13049, [2]), (13051, [3000]), (13050, [0xAA])]
        server.writes.clear()
        # Out of the register's range: refused before anything is written.
        with pytest.raises(BadValue, match=r"charge_power_w: 20000 outside 0\.\.10600"):
            await dev.set_mode(BatteryMode.FORCE_CHARGE, 20000.0)
        assert server.writes == []
        with pytest.raises(BadValue, match="not a finite number"):
            await dev.set_mode(BatteryMode.POWER_SETPOINT, float("nan"))
        assert server.writes == []


async def test_configured_subset_limits_modes(pool: EndpointPool) -> None:
    profile = shipped_profiles()["sma-storage"]
    clock = ManualClock(START)
    state = SiteState(clock)
    async with ProfileServer(profile) as server:
        dev = make(server, Role.BATTERY, pool, state, clock, battery_modes=["normal"])
        assert isinstance(dev, BatteryControl) and dev.modes == {BatteryMode.NORMAL}
        with pytest.raises(NotSupported):
            await dev.set_mode(BatteryMode.FORCE_CHARGE, 1000.0)
        await dev.set_mode(BatteryMode.NORMAL)
        assert server.writes == [(40151, [0, 803])]


async def test_sentinel_and_nan_values_are_dropped_and_device_goes_stale(
    pool: EndpointPool,
) -> None:
    profile = shipped_profiles()["eastron-sdm630"]
    clock = ManualClock(START)
    state = SiteState(clock)
    values = demo_values(profile)
    async with ProfileServer(profile, values) as server:
        dev = make(server, Role.GRID, pool, state, clock)
        assert await dev.poll()
        # A NaN total power: that value is not used, the rest still is.
        await server.update({"power_w": float("nan")})
        await clock.advance(1)
        assert await dev.poll()
        assert state.latest(dev.device_id, Quantity.POWER_W).age_s == 1.0
        assert state.fresh_value(dev.device_id, Quantity.FREQUENCY_HZ) is not None
        assert "power_w" in dev._bad
        # Every value NaN: the poll is a miss; after stale_after_polls the device is down.
        await server.update({n: float("nan") for n in profile.registers})
        assert not await dev.poll()
        assert not await dev.poll()
        assert state.is_stale(dev.device_id)
        assert "no usable value" in (state.down_reason(dev.device_id) or "")
        await server.update(demo_values(profile))
        assert await dev.poll()
        assert not state.is_stale(dev.device_id)


async def test_sign_from_register_and_sunspec_sentinel(pool: EndpointPool) -> None:
    profile = shipped_profiles()["solaredge-storage"]
    clock = ManualClock(START)
    state = SiteState(clock)
    async with ProfileServer(profile) as server:
        dev = make(server, Role.GRID, pool, state, clock)
        assert await dev.poll()
        await server.update({"meter_power_w": -2500.0})  # exporting
        assert await dev.poll()
        assert state.fresh_value(dev.device_id, Quantity.POWER_W) == -2500.0
        # The scale factor is "not implemented" (0x8000): power is not published at all.
        server.values["meter_power_sf"] = 0.0
        await server._server.async_setValues(server.unit_id, 3, 40210, [0x8000])  # type: ignore[union-attr]
        await clock.advance(1)
        assert await dev.poll()  # energy still decodes
        assert state.latest(dev.device_id, Quantity.POWER_W).age_s == 1.0
        assert "meter_power_w" in dev._bad


async def test_match_profile_identifies_the_device(pool: EndpointPool) -> None:
    from hems.devices.modbus.engine import EndpointSpec

    profile = shipped_profiles()["huawei-sun2000"]
    async with ProfileServer(profile) as server:
        endpoint = pool.get(EndpointSpec(host="127.0.0.1", port=server.port, timeout_s=0.5))
        found = await match_profile(endpoint, server.unit_id)
        assert found and found[0].family == "huawei-sun2000"


async def test_pv_without_pv_limit_is_not_offered_for_curtailment(pool: EndpointPool) -> None:
    """Issue 13: a profile PV inverter registered as curtailable though its profile had no
    curtailment writes, so the export limit silently rested on the battery alone."""
    from hems.control.config import ControlConfig
    from hems.control.devices import ControlledDevices

    profile = shipped_profiles()["sungrow-sh"]
    assert "pv_limit" not in profile.controls and "pv-limit" not in profile.capabilities
    clock = ManualClock(START)
    async with ProfileServer(profile) as server:
        dev = make(server, Role.PV, pool, SiteState(clock), clock)
        assert not isinstance(dev, PvInverter)
        assert not hasattr(dev, "set_power_limit_pct")
        devices = ControlledDevices.from_adapters(ControlConfig(), [dev])
        assert dev.device_id not in devices and not devices.spec().pvs


def _with_pv_limit(profile: Profile) -> Profile:
    """`profile` plus a made-up curtailment register (for the adapter, not a real device)."""
    data = profile.model_dump(by_alias=True, exclude_none=True)
    data["capabilities"] = [*profile.capabilities, "pv-limit"]
    data["registers"]["limit_pct"] = {
        "address": 13100, "type": "uint16", "scale": 0.1, "writable": True, "range": [0, 100]
    }  # fmt: skip
    data["controls"] = {"pv_limit": [{"register": "limit_pct", "source": "limit_pct"}]}
    return Profile.model_validate(data)


async def test_pv_limit_in_profile_curtails(pool: EndpointPool) -> None:
    from hems.control.config import ControlConfig
    from hems.control.devices import ControlledDevices
    from hems.devices.modbus.profile_device import ProfileCurtailableInverter

    profile = _with_pv_limit(shipped_profiles()["sungrow-sh"])
    clock = ManualClock(START)
    async with ProfileServer(profile) as server:
        cfg = make(server, Role.PV, pool, SiteState(clock), clock).cfg
        dev = ProfileCurtailableInverter(cfg, pool, SiteState(clock), clock, profile=profile)
        assert isinstance(dev, PvInverter)
        await dev.set_power_limit_pct(42.5)
        assert server.writes == [(13100, [425])]
        with pytest.raises(BadValue, match=r"must be 0\.\.100"):
            await dev.set_power_limit_pct(120.0)
        from hems.control.config import DeviceControlConfig

        ctl = ControlConfig().with_devices({cfg.id: DeviceControlConfig(rated_w=5000)})
        assert cfg.id in ControlledDevices.from_adapters(ctl, [dev]).spec().pvs


def test_capability_and_controls_must_agree() -> None:
    import yaml

    from hems.devices.modbus.profile import ProfileError, parse_profile

    base = shipped_profiles()["sungrow-sh"].model_dump(
        mode="json", by_alias=True, exclude_none=True
    )

    claims = dict(base, capabilities=[*base["capabilities"], "pv-limit"])
    with pytest.raises(
        ProfileError, match=r"'pv-limit' needs write steps under controls\.pv_limit"
    ):
        parse_profile(yaml.safe_dump(claims), "drivers/x.yaml")
    writes = dict(base, controls={"pv_limit": [{"register": "ems_mode", "value": 0}]})
    with pytest.raises(ProfileError, match=r"controls\.pv_limit needs the 'pv-limit' capability"):
        parse_profile(yaml.safe_dump(writes), "drivers/x.yaml")


def test_float_image_matches_eastron_layout() -> None:
    # Independent check of the served image: SDM630 total power at input 0x34, float32 ABCD.
    profile = shipped_profiles()["eastron-sdm630"]
    from hil.profile_server import register_image

    image = register_image(profile, {"power_w": 1234.5})
    hi, lo = struct.unpack(">HH", struct.pack(">f", 1234.5))
    assert image["input"] == {0x34: hi, 0x35: lo}


async def test_exception_reply_and_latency_faults(pool: EndpointPool) -> None:
    from pymodbus.constants import ExcCodes

    profile = shipped_profiles()["huawei-sun2000"]
    clock = ManualClock(START)
    state = SiteState(clock)
    async with ProfileServer(profile) as server:
        dev = make(server, Role.BATTERY, pool, state, clock)
        server.exceptions[37760] = ExcCodes.DEVICE_FAILURE  # SoC register fails
        assert not await dev.poll()  # the block holding SoC and power fails as a whole
        assert "exception 4" in (dev.endpoint.stats.last_error or "")
        server.exceptions.clear()
        server.latency_s = 1.6  # beyond the 1 s timeout (engine deadline 1.7 s)
        assert not await dev.poll()
        assert dev.endpoint.stats.timeouts >= 1
        assert state.is_stale(dev.device_id)  # stale_after_polls=2 misses
        server.latency_s = 0.0
        for _ in range(50):  # the engine backs off after the timeout; poll until it reconnects
            if await dev.poll():
                break
            await asyncio.sleep(0.1)
        assert state.fresh_value(dev.device_id, Quantity.SOC_PCT) == 57.0


async def test_snapshot_for_scan(pool: EndpointPool) -> None:
    from hems.devices.modbus.engine import EndpointSpec
    from hems.devices.modbus.profile_device import profile_snapshot

    profile = shipped_profiles()["victron-gx"]
    async with ProfileServer(profile) as server:
        endpoint = pool.get(EndpointSpec(host="127.0.0.1", port=server.port, timeout_s=0.5))
        values, errors = await profile_snapshot(endpoint, server.unit_id, profile)
        assert errors == {}
        assert values["battery_soc_pct"] == 57.0 and values["grid_power_w"] == 1520.0
        assert values["ess_max_charge_pct"] == 0.0  # control registers are read too


@pytest.mark.parametrize("family", ["sungrow-sh", "sma-storage", "victron-gx", "solis-hybrid"])
async def test_profiles_serve_the_simulated_home(family: str, pool: EndpointPool) -> None:
    from hil.home import Home, HomeConfig
    from hil.profile_server import home_values

    home = Home(HomeConfig(seed=3, cloudiness=0.0, cloud_transients_per_h=0.0))
    clock = ManualClock(START)
    for _ in range(3):
        await clock.advance(60)
        home.step(clock.now(), 60)
    hs = home.state
    profile = shipped_profiles()[family]
    state = SiteState(clock)
    async with ProfileServer(profile, home_values(profile, hs)) as server:
        want = {
            Role.GRID: hs.grid_w,
            Role.BATTERY: hs.battery_w,
            Role.PV: hs.pv_w,
        }
        for role in sorted(profile.roles()):
            dev = make(server, role, pool, state, clock)
            assert await dev.poll()
            got = state.fresh_value(dev.device_id, Quantity.POWER_W)
            assert got == pytest.approx(want[role], abs=1.0), (family, role)
        if Role.BATTERY in profile.roles():
            assert state.fresh_value(f"{family}-battery", Quantity.SOC_PCT) == pytest.approx(
                hs.soc_pct, abs=1.0
            )
