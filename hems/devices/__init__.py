"""Device adapters: protocol engines that turn the outside world into core capabilities.

* `modbus/` — one connection per TCP endpoint or serial bus, SunSpec discovery and decoding,
  profile-driven devices from `drivers/*.yaml`, the optional Modbus proxy;
* `meters/` — DSMR P1, the GB CAD (Glow, local MQTT), half-hourly import/export intervals;
* `ocpp/` — the OCPP central system (1.6J and 2.0.1) for the home's chargers;
* `config.py` — the `devices[]` entry of each type; `factory.py` — builds the services.

Public surface: `build_devices` (the Modbus and meter services for a `devices[]` list) and
`DeviceConfig`; the OCPP central system is `hems.devices.ocpp.OcppCentralSystem`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hems.devices.config import DeviceConfig
    from hems.devices.factory import DeviceLayer, build_devices

_HOMES = {
    "DeviceConfig": "hems.devices.config",
    "DeviceLayer": "hems.devices.factory",
    "build_devices": "hems.devices.factory",
}
__all__ = ["DeviceConfig", "DeviceLayer", "build_devices"]


def __getattr__(name: str) -> object:
    # Lazy: importing one driver (e.g. hems.devices.ocpp.events) must not load them all.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hems.devices' has no attribute {name!r}")
    return getattr(import_module(home), name)
