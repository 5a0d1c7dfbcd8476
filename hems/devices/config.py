"""The `devices:` list: one entry per device, told apart by `type`.

Each entry states the device once: how it is reached, its role, and the facts the stages
need (ratings, the owner's needs, control tuning; see hems.core.assets). OCPP chargers are
entries of `type: ocpp`; they connect to us, so they have an identity instead of an address.
Switchable loads over local HTTP are `type: shelly`, `tasmota` and `sg-ready`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hems.devices.meters.config import GlowMeterConfig, P1MeterConfig
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.profile_config import ProfileDeviceConfig
from hems.devices.ocpp.config import ChargerConfig
from hems.devices.switches.config import SgReadyConfig, ShellyConfig, TasmotaConfig

DeviceConfig = Annotated[
    SunSpecDeviceConfig
    | ProfileDeviceConfig
    | P1MeterConfig
    | GlowMeterConfig
    | ChargerConfig
    | ShellyConfig
    | TasmotaConfig
    | SgReadyConfig,
    Field(discriminator="type"),
]
