"""`SwitchService`: polls every Shelly / Tasmota load and hands the loop their adapters.

Each poll publishes the channel's measured power (POWER_W, + = consuming) and energy
(ENERGY_IMPORT_WH) so the guard sees the load and the loop can verify it; a poll that times
out or gets HTTP 500 is logged once (`PollHealth`), and after `stale_after_polls` misses the
device is marked down with the reason (shown on the page). Without fresh readings the
loop's stale rule switches a deferrable load off; the service itself keeps polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading
from hems.core.state import SiteState
from hems.devices.health import PollHealth, poll_forever
from hems.devices.switches.config import (
    SgReadyConfig,
    ShellyConfig,
    ShellyRelay,
    TasmotaConfig,
    TasmotaRelay,
)
from hems.devices.switches.relay import RelayClient, RelayStatus
from hems.devices.switches.sgready import SgReadyLoad
from hems.devices.switches.shelly import ShellyClient
from hems.devices.switches.tasmota import TasmotaClient
from hems.errors import DeviceError


def relay_client(device_id: str, cfg: ShellyRelay | TasmotaRelay) -> RelayClient:
    if isinstance(cfg, ShellyRelay):
        return ShellyClient(device_id, cfg)
    return TasmotaClient(device_id, cfg)


class SwitchLoad:
    """One Shelly or Tasmota channel as a `SwitchableLoad`."""

    def __init__(self, cfg: ShellyConfig | TasmotaConfig, state: SiteState, clock: Clock) -> None:
        self.device_id = cfg.id
        self.cfg = cfg
        self._state = state
        self._clock = clock
        self._client = relay_client(cfg.id, cfg)
        self.health = PollHealth(cfg.id, state, cfg.stale_after_polls, cfg.type)
        state.register_device(
            cfg.id, cfg.role, stale_after_s=cfg.poll_interval_s * cfg.stale_after_polls
        )

    def _publish(self, s: RelayStatus) -> None:
        now = self._clock.now()
        out = (
            [Reading(self.device_id, Quantity.POWER_W, s.power_w, now)]
            if s.power_w is not None
            else []
        )
        if s.energy_wh is not None:
            out.append(Reading(self.device_id, Quantity.ENERGY_IMPORT_WH, s.energy_wh, now))
        if out:
            self._state.publish(out)

    async def poll(self) -> RelayStatus | None:
        """One status read: published, or counted as a miss (logged, never raised)."""
        try:
            s = await self._client.status()
        except DeviceError as exc:
            self.health.missed(exc)
            return None
        self.health.succeeded()
        self._publish(s)
        return s

    async def set_on(self, on: bool) -> None:
        await self._client.set_on(on)

    async def is_on(self) -> bool:
        """The relay's output, checked against measured power: a load drawing more than
        `on_threshold_w` is on even if the relay says off (a welded contact, a bypass)."""
        s = await self._client.status()
        self._publish(s)
        return s.on or (s.power_w is not None and s.power_w > self.cfg.on_threshold_w)

    async def run(self) -> None:
        await poll_forever(self.poll, self.cfg.poll_interval_s, self._clock)

    async def aclose(self) -> None:
        await self._client.aclose()


class SwitchService:
    def __init__(self, devices: Iterable[object], state: SiteState, clock: Clock) -> None:
        """`devices`: every entry of `Config.devices`; the switch entries are taken."""
        self.switches: dict[str, SwitchLoad] = {}
        self.sg_ready: dict[str, SgReadyLoad] = {}
        for cfg in devices:
            if isinstance(cfg, ShellyConfig | TasmotaConfig):
                self.switches[cfg.id] = SwitchLoad(cfg, state, clock)
            elif isinstance(cfg, SgReadyConfig):
                self.sg_ready[cfg.id] = SgReadyLoad(
                    cfg, relay_client(cfg.id, cfg.relay1), relay_client(cfg.id, cfg.relay2)
                )

    @property
    def devices(self) -> dict[str, SwitchLoad | SgReadyLoad]:
        return {**self.switches, **self.sg_ready}

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for device_id, sw in self.switches.items():
                    tg.create_task(sw.run(), name=f"switch:{device_id}")
        finally:
            for dev in self.devices.values():
                await dev.aclose()
