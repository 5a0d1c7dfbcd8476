"""`ModbusService`: the one entry point the app runs for every Modbus device.

It owns the `EndpointPool` (one connection per bus), builds one adapter per `devices:` entry
of a Modbus type, runs their pollers (and any configured proxies) in one TaskGroup and closes
the connections when cancelled. `devices` maps device id to adapter, so the control loop can
look up capabilities (`isinstance(dev, BatteryControl)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from hems.core.clock import Clock
from hems.core.state import SiteState
from hems.devices.modbus.config import ModbusConnection
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.proxy import ModbusProxy
from hems.devices.modbus.sunspec_device import SunSpecInverter, sunspec_device
from hems.errors import ConfigError, DeviceError

log = structlog.get_logger(__name__)

# type -> factory(cfg, pool, state, clock) -> adapter with `device_id` and `async run()`.
Factory = Callable[[Any, EndpointPool, SiteState, Clock], Any]


def _profile_device(cfg: Any, pool: EndpointPool, state: SiteState, clock: Clock) -> Any:
    # Imported on first use: a SunSpec-only site never loads the profile layer.
    from hems.devices.modbus.profile_device import profile_device

    return profile_device(cfg, pool, state, clock)


class ModbusService:
    def __init__(
        self,
        devices: Iterable[Any],
        state: SiteState,
        clock: Clock,
        factories: dict[str, Factory] | None = None,
    ) -> None:
        """`devices`: every entry of `Config.devices`; entries of other types are skipped.

        `factories` adds or replaces builders per device `type`; "sunspec" and
        "modbus-profile" are built in. Raises `ConfigError` if devices sharing a bus disagree on its
        settings or proxy.
        """
        self.pool = EndpointPool()
        self._factories: dict[str, Factory] = {
            "sunspec": sunspec_device,
            "modbus-profile": _profile_device,
            **(factories or {}),
        }
        self.devices: dict[str, Any] = {}
        self.proxies: dict[str, ModbusProxy] = {}
        for cfg in list(devices):
            factory = self._factories.get(getattr(cfg, "type", ""))
            if factory is None:
                continue
            self.devices[cfg.id] = factory(cfg, self.pool, state, clock)
            if isinstance(cfg, ModbusConnection) and cfg.proxy is not None:
                endpoint = self.pool.get(cfg.endpoint_spec())
                existing = self.proxies.get(endpoint.key)
                if existing is not None and existing.cfg != cfg.proxy:
                    raise ConfigError(
                        f"devices[{cfg.id}].proxy", f"differs from another device on {endpoint.key}"
                    )
                self.proxies[endpoint.key] = ModbusProxy(endpoint, cfg.proxy)

    async def scan(self, timeout_s: float) -> None:
        """Read every SunSpec inverter's model map once, all at once, before the stages are
        built: whether it can be curtailed (models 123/704) decides what the control loop
        and the uplink count on. One that does not answer within `timeout_s` is read by its
        first poll instead (and joins control then, through `on_map_found`)."""

        async def one(dev: SunSpecInverter) -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    await dev.ensure_map()
            except (DeviceError, TimeoutError) as exc:
                log.warning("sunspec scan at start failed", device=dev.device_id, error=str(exc))

        async with asyncio.TaskGroup() as tg:
            for device_id, dev in self.devices.items():
                if isinstance(dev, SunSpecInverter):
                    tg.create_task(one(dev), name=f"modbus-scan:{device_id}")

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for device_id, device in self.devices.items():
                    tg.create_task(device.run(), name=f"modbus:{device_id}")
                for key, proxy in self.proxies.items():
                    tg.create_task(proxy.run(), name=f"modbus-proxy:{key}")
        finally:
            await self.pool.close()
