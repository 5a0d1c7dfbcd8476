"""The `devices:` list: one entry per device, told apart by `type`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hems.devices.meters.config import GlowMeterConfig, P1MeterConfig
from hems.devices.modbus.config import SunSpecDeviceConfig
from hems.devices.modbus.profile_config import ProfileDeviceConfig

DeviceConfig = Annotated[
    SunSpecDeviceConfig | ProfileDeviceConfig | P1MeterConfig | GlowMeterConfig,
    Field(discriminator="type"),
]
