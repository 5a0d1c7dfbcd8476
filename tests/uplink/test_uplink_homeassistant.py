"""Home Assistant MQTT discovery on a real local Mosquitto."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiomqtt

from hems.core.clock import RealClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.uplink.config import HomeAssistantConfig
from hems.uplink.homeassistant import SENSORS, HomeAssistantDiscovery
from tests.testlib import running

if TYPE_CHECKING:  # fixtures come from conftest.py
    from hil.aggregator import MosquittoBroker


async def test_discovery_configs_are_retained_and_state_follows(broker: MosquittoBroker) -> None:
    clock = RealClock()
    state = SiteState(clock)
    state.register_device("meter", Role.GRID)
    state.register_device("inv", Role.PV)
    state.publish([Reading("meter", Quantity.POWER_W, -1500.0, clock.now()),
                   Reading("inv", Quantity.POWER_W, 3200.0, clock.now())])  # fmt: skip
    cfg = HomeAssistantConfig(enabled=True, broker_port=broker.port, broker_host="127.0.0.1",
                              state_interval_s=1)  # fmt: skip
    async with running(HomeAssistantDiscovery(cfg, "s1", state, clock)):
        await asyncio.sleep(0.5)  # discovery is retained: a late subscriber still gets it
        got: dict[str, bytes] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("homeassistant/#")
            await client.subscribe("hems/s1/ha/#")
            async with asyncio.timeout(5):
                async for m in client.messages:
                    got[m.topic.value] = m.payload  # type: ignore[assignment]
                    if len(got) >= len(SENSORS) + 2 and "hems/s1/ha/state" in got:
                        break
    grid = json.loads(got["homeassistant/sensor/hems_s1/grid_power_w/config"])
    assert grid["unit_of_measurement"] == "W" and grid["device_class"] == "power"
    assert grid["state_topic"] == "hems/s1/ha/state"
    assert grid["unique_id"] == "hems_s1_grid_power_w"
    assert got["hems/s1/ha/availability"] == b"online"
    values = json.loads(got["hems/s1/ha/state"])
    assert values["grid_power_w"] == -1500.0 and values["pv_power_w"] == 3200.0
    assert values["battery_soc_pct"] is None  # no battery: unknown, never 0
