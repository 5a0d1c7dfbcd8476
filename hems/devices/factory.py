"""Builds the device services from the `devices:` config list.

Modbus devices (SunSpec and profiles) share one `ModbusService`, which owns one connection
per bus; smart meters (P1, Glow) and the half-hour interval recorder run in `MeterService`;
Shelly / Tasmota / SG-Ready loads in `SwitchService`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hems.core.clock import Clock
from hems.core.state import SiteState
from hems.devices.config import DeviceConfig
from hems.devices.meters.service import MeterService
from hems.devices.modbus.service import ModbusService
from hems.devices.switches.service import SwitchService
from hems.store.db import Database


class Service(Protocol):
    async def run(self) -> None: ...


@dataclass
class DeviceLayer:
    services: dict[str, Service] = field(default_factory=dict)
    # device id -> adapter object, for capability look-ups (isinstance(dev, BatteryControl))
    devices: dict[str, Any] = field(default_factory=dict)

    async def scan(self, timeout_s: float = 5.0) -> None:
        """What the devices can do, read before the stages are built (`ModbusService.scan`)."""
        modbus = self.services.get("modbus")
        if isinstance(modbus, ModbusService):
            await modbus.scan(timeout_s)


def build_devices(
    devices: list[DeviceConfig], state: SiteState, clock: Clock, db: Database | None
) -> DeviceLayer:
    layer = DeviceLayer()
    modbus = ModbusService(devices, state, clock)
    if modbus.devices:
        layer.services["modbus"] = modbus
        layer.devices.update(modbus.devices)
    meters = MeterService(devices, state, clock, db)
    if meters.meters or meters.recorders:
        layer.services["meters"] = meters
        layer.devices.update(meters.meters)
    switches = SwitchService(devices, state, clock)
    if switches.devices:
        layer.services["switches"] = switches
        layer.devices.update(switches.devices)
    return layer
