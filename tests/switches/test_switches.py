"""Shelly Gen2+, Tasmota and SG-Ready loads against the simulators over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError
from structlog.testing import capture_logs

from hems.core.clock import ManualClock
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.devices.config import DeviceConfig
from hems.devices.factory import build_devices
from hems.devices.switches.config import SgReadyConfig, ShellyConfig, TasmotaConfig
from hems.devices.switches.service import SwitchLoad, SwitchService
from hems.devices.switches.sgready import SgReadyLoad, state_of
from hems.errors import DeviceRejected, DeviceTimeout
from hil.switch_sim import ShellySim, TasmotaSim
from tests.testlib import wait_until

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
DEVICE = TypeAdapter(DeviceConfig)


def shelly(port: int, **kw: object) -> ShellyConfig:
    return ShellyConfig.model_validate(
        {
            "type": "shelly",
            "id": "boiler",
            "host": "127.0.0.1",
            "port": port,
            "load": {"power_w": 2000},
            **kw,
        }
    )


def rig(cfg: ShellyConfig | TasmotaConfig) -> tuple[SwitchLoad, SiteState, ManualClock]:
    clock = ManualClock(T0)
    state = SiteState(clock)
    return SwitchLoad(cfg, state, clock), state, clock


async def test_shelly_switches_and_reports_measured_power() -> None:
    async with ShellySim({0: 1800.0}) as sim:
        load, state, _ = rig(shelly(sim.port))
        assert await load.is_on() is False
        await load.set_on(True)
        assert sim.on[0] is True
        sim.energy_wh[0] = 1234.5
        s = await load.poll()
        assert s is not None and s.on and s.power_w == 1800.0
        assert state.fresh_value("boiler", Quantity.POWER_W) == 1800.0
        assert state.fresh_value("boiler", Quantity.ENERGY_IMPORT_WH) == 1234.5
        assert await load.is_on() is True
        await load.set_on(False)
        assert await load.is_on() is False
        assert state.fresh_value("boiler", Quantity.POWER_W) == 0.0
        assert "/rpc/Switch.Set?id=0&on=true" in sim.requests
        await load.aclose()


async def test_a_load_drawing_power_is_on_whatever_the_relay_says() -> None:
    async with ShellySim() as sim:
        load, _, _ = rig(shelly(sim.port))
        sim.drawing[0] = 1500.0  # relay reports off, yet the load draws: welded contact
        assert await load.is_on() is True
        sim.drawing[0] = 5.0  # standby below on_threshold_w
        assert await load.is_on() is False
        await load.aclose()


async def test_tasmota_switches_and_reports_energy_with_credentials() -> None:
    async with TasmotaSim({1: 900.0, 2: 2500.0}, user="admin", password="s3cret") as sim:
        cfg = TasmotaConfig.model_validate(
            {
                "type": "tasmota",
                "id": "heater",
                "host": "127.0.0.1",
                "port": sim.port,
                "channel": 2,
                "username": "admin",
                "password": "s3cret",
            }
        )
        load, state, _ = rig(cfg)
        assert await load.is_on() is False
        await load.set_on(True)
        assert sim.on == {1: False, 2: True}
        sim.energy_wh[2] = 4321.0
        s = await load.poll()
        assert s is not None and s.on and s.power_w == 2500.0 and s.energy_wh == 4321.0
        assert state.fresh_value("heater", Quantity.POWER_W) == 2500.0
        await load.aclose()
        # A wrong password is refused with a clear reason.
        bad, _, _ = rig(cfg.model_copy(update={"password": None}))
        with pytest.raises(DeviceRejected, match="HTTP 401"):
            await bad.set_on(True)
        await bad.aclose()


async def test_tasmota_one_relay_answers_power() -> None:
    async with TasmotaSim({1: 700.0}) as sim:
        cfg = TasmotaConfig(type="tasmota", id="pump", host="127.0.0.1", port=sim.port)
        load, state, _ = rig(cfg)
        await load.set_on(True)
        assert await load.is_on() is True
        assert state.fresh_value("pump", Quantity.POWER_W) == 700.0
        await load.aclose()


@pytest.mark.parametrize("fault", ["http500", "hang"])
async def test_a_failing_shelly_is_logged_marked_down_and_polling_goes_on(fault: str) -> None:
    async with ShellySim() as sim:
        load, state, _ = rig(shelly(sim.port, timeout_s=0.2, stale_after_polls=2))
        assert await load.poll() is not None
        assert not state.is_stale("boiler")
        sim.set_fault(fault)  # type: ignore[arg-type]
        with capture_logs() as logs:
            assert await load.poll() is None
            assert await load.poll() is None
        events = [(e["event"], e["log_level"]) for e in logs]
        assert ("shelly poll failed", "warning") in events
        assert ("shelly device down", "error") in events
        reason = state.down_reason("boiler")
        assert reason is not None
        assert ("HTTP 500" if fault == "http500" else "timed out") in reason
        assert state.is_stale("boiler")
        if fault == "hang":
            with pytest.raises(DeviceTimeout):
                await load.is_on()
        # It answers again: readings are fresh and the device is no longer down.
        sim.set_fault(None)
        with capture_logs() as logs:
            assert await load.poll() is not None
        assert logs[0]["event"] == "shelly device recovered"
        assert not state.is_stale("boiler") and state.down_reason("boiler") is None
        await load.aclose()


async def test_the_service_keeps_polling_through_faults() -> None:
    async with ShellySim() as sim:
        clock = ManualClock(T0)
        state = SiteState(clock)
        cfg = shelly(sim.port, timeout_s=0.2, stale_after_polls=1, poll_interval_s=5)
        svc = SwitchService([cfg], state, clock)
        sim.set_fault("http500")
        task = asyncio.create_task(svc.run())
        await wait_until(lambda: state.down_reason("boiler"), what="marked down")
        sim.set_fault(None)
        await clock.advance(5)
        await wait_until(lambda: state.fresh_value("boiler", Quantity.POWER_W) is not None)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def sg_cfg(port: int, **kw: object) -> SgReadyConfig:
    relay = {"protocol": "shelly", "host": "127.0.0.1", "port": port}
    return SgReadyConfig.model_validate(
        {
            "type": "sg-ready",
            "id": "heatpump",
            "relay1": {**relay, "channel": 0},
            "relay2": {**relay, "channel": 1},
            "load": {"power_w": 3000},
            **kw,
        }
    )


def test_sg_ready_states_are_the_standard_relay_pairs() -> None:
    assert [state_of(a, b) for a, b in ((1, 0), (0, 0), (0, 1), (1, 1))] == [1, 2, 3, 4]


async def test_sg_ready_on_is_recommended_and_off_is_normal() -> None:
    async with ShellySim({0: 0.0, 1: 0.0}) as sim:
        svc = SwitchService([sg_cfg(sim.port)], SiteState(ManualClock(T0)), ManualClock(T0))
        hp = svc.devices["heatpump"]
        assert isinstance(hp, SgReadyLoad)
        assert await hp.is_on() is False and await hp.state() == 2
        await hp.set_on(True)
        assert (sim.on[0], sim.on[1]) == (False, True) and await hp.state() == 3
        assert await hp.is_on() is True
        await hp.set_on(False)
        assert (sim.on[0], sim.on[1]) == (False, False) and await hp.state() == 2
        await hp.aclose()


async def test_sg_ready_forced_and_blocked_when_configured() -> None:
    async with ShellySim({0: 0.0, 1: 0.0}) as sim:
        hp = SwitchService(
            [sg_cfg(sim.port, on_state=4, off_state=1)], SiteState(ManualClock(T0)), ManualClock(T0)
        ).devices["heatpump"]
        await hp.set_on(True)
        assert (sim.on[0], sim.on[1]) == (True, True)
        await hp.set_on(False)
        assert (sim.on[0], sim.on[1]) == (True, False)
        # From blocked (1, 0) to recommended (0, 1): relay 1 opens first, never state 4.
        sim.requests.clear()
        assert isinstance(hp, SgReadyLoad)
        await hp.set_state(3)
        sets = [r for r in sim.requests if "Switch.Set" in r]
        assert sets == ["/rpc/Switch.Set?id=0&on=false", "/rpc/Switch.Set?id=1&on=true"]
        await hp.aclose()


def test_build_devices_offers_switchable_loads() -> None:
    from hems.core.capabilities import SwitchableLoad

    clock = ManualClock(T0)
    state = SiteState(clock)
    entries = [
        DEVICE.validate_python(
            {"type": "shelly", "id": "boiler", "host": "10.0.0.5", "load": {"power_w": 2000}}
        ),
        DEVICE.validate_python(sg_cfg(80).model_dump(mode="json")),
    ]
    layer = build_devices(entries, state, clock, None)
    assert "switches" in layer.services
    assert all(isinstance(layer.devices[d], SwitchableLoad) for d in ("boiler", "heatpump"))
    assert "boiler" in state.devices


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"type": "shelly", "host": "http://10.0.0.5/"}, "host", "not a host name"),
        ({"type": "shelly", "host": "10.0.0.5:80"}, "host", "not a host name"),
        (
            {"type": "shelly", "host": "10.0.0.5", "channel": 4},
            "channel",
            "less than or equal to 3",
        ),
        (
            {"type": "tasmota", "host": "plug", "channel": 0},
            "channel",
            "greater than or equal to 1",
        ),
        ({"type": "shelly", "host": "plug", "role": "pv"}, "role", "role load"),
    ],
)
def test_bad_switch_entries_name_the_field(
    entry: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as info:
        DEVICE.validate_python({"id": "x", **entry})
    text = str(info.value)
    assert field in text and words in text


def test_sg_ready_relays_must_differ() -> None:
    relay = {"protocol": "tasmota", "host": "10.0.0.9", "channel": 1}
    with pytest.raises(ValidationError, match="relay2: must be another relay channel"):
        DEVICE.validate_python({"type": "sg-ready", "id": "hp", "relay1": relay, "relay2": relay})
