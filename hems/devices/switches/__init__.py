"""Switchable loads over local HTTP: Shelly Gen2+, Tasmota, SG-Ready through two relays.

Public surface: `SwitchService` (polls, publishes, holds the adapters), the config models.
"""

from hems.devices.switches.config import (
    SgReadyConfig,
    ShellyConfig,
    SwitchConfig,
    TasmotaConfig,
)
from hems.devices.switches.service import SwitchService

__all__ = ["SgReadyConfig", "ShellyConfig", "SwitchConfig", "SwitchService", "TasmotaConfig"]
