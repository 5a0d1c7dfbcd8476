"""The `devices:` list: one entry per device, told apart by `type`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hems.devices.modbus.config import SunSpecDeviceConfig

DeviceConfig = Annotated[SunSpecDeviceConfig, Field(discriminator="type")]
