"""Home Assistant MQTT discovery on a real local Mosquitto."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING

import aiomqtt

from hems.core.clock import RealClock
from hems.core.quantities import SITE_QUANTITIES
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
    state.register_device("bat", Role.BATTERY)
    state.publish([Reading("meter", Quantity.POWER_W, -1500.0, clock.now()),
                   Reading("meter", Quantity.ENERGY_IMPORT_WH, 1_234_500.0, clock.now()),
                   Reading("meter", Quantity.ENERGY_EXPORT_WH, 98_000.0, clock.now()),
                   Reading("inv", Quantity.POWER_W, 3200.0, clock.now())])  # fmt: skip
    cfg = HomeAssistantConfig(enabled=True, broker_port=broker.port, broker_host="127.0.0.1",
                              state_interval_s=1)  # fmt: skip
    bridge = HomeAssistantDiscovery(cfg, "s1", state, clock)
    t0 = clock.now()
    # The battery charges 3.6 kW for 10 s (10 Wh), then gives 7.2 kW for 5 s (10 Wh out).
    for s, w in ((0, 3600.0), (10, -7200.0), (15, 0.0)):
        state.publish([Reading("bat", Quantity.POWER_W, w, t0 + timedelta(seconds=s)),
                       Reading("bat", Quantity.SOC_PCT, 50.0, t0)])  # fmt: skip
    async with running(bridge):
        await asyncio.sleep(0.5)  # discovery is retained: a late subscriber still gets it
        got: dict[str, bytes] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("homeassistant/#")
            await client.subscribe("hems/s1/ha/#")
            async with asyncio.timeout(5):
                async for m in client.messages:
                    got[m.topic.value] = m.payload  # type: ignore[assignment]
                    if len(got) >= len(SENSORS) + 2 + 2 + 3 and "hems/s1/ha/state" in got:
                        break
    grid = json.loads(got["homeassistant/sensor/hems_s1/grid_power_w/config"])
    assert grid["unit_of_measurement"] == "W" and grid["device_class"] == "power"
    assert grid["state_topic"] == "hems/s1/ha/state"
    assert grid["unique_id"] == "hems_s1_grid_power_w"
    assert grid["state_class"] == "measurement"
    # every site quantity is a sensor, with the classes HA's Energy dashboard needs
    for q in SITE_QUANTITIES:
        config = json.loads(got[f"homeassistant/sensor/hems_s1/{q.key}/config"])
        assert (config["unit_of_measurement"], config["device_class"], config["state_class"]) == (
            q.unit, q.device_class, q.state_class,
        )  # fmt: skip
    imported = json.loads(got["homeassistant/sensor/hems_s1/grid_import_energy_kwh/config"])
    assert imported["unit_of_measurement"] == "kWh" and imported["device_class"] == "energy"
    assert imported["state_class"] == "total_increasing"
    assert got["hems/s1/ha/availability"] == b"online"
    values = json.loads(got["hems/s1/ha/state"])
    assert values["grid_power_w"] == -1500.0 and values["pv_power_w"] == 3200.0
    assert values["battery_soc_pct"] == 50.0
    # battery energy in and out, integrated by the bridge, for the Energy dashboard
    for key in ("battery_charge_energy_kwh", "battery_discharge_energy_kwh"):
        config = json.loads(got[f"homeassistant/sensor/hems_s1/{key}/config"])
        assert (config["unit_of_measurement"], config["state_class"]) == ("kWh", "total_increasing")
        assert values[key] == 0.01
    # one availability topic per device, from its health
    assert got["hems/s1/ha/device/meter/availability"] == b"online"
    assert got["hems/s1/ha/device/bat/availability"] == b"online"
    assert values["grid_import_energy_kwh"] == 1234.5 and values["grid_export_energy_kwh"] == 98.0
    assert values["grid_export_power_w"] == 1500.0 and values["load_power_w"] == 1700.0
    assert values["pv_energy_kwh"] is None  # the inverter sent no energy register
