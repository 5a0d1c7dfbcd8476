"""Builds device adapters from the `devices:` config list."""

from __future__ import annotations

import contextlib
from typing import Protocol

from hems.config import Config
from hems.core.clock import Clock
from hems.core.state import SiteState


class DeviceService(Protocol):
    device_id: str

    async def run(self) -> None: ...


def build_devices(
    cfg: Config, state: SiteState, clock: Clock, stack: contextlib.AsyncExitStack
) -> list[DeviceService]:
    """One adapter per configured device, registered with the site state."""
    devices: list[DeviceService] = []
    return devices
