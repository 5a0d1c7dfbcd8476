"""What every polled Modbus adapter (SunSpec, profile) shares: its connection, the poll loop,
health bookkeeping and fresh values for the capability methods."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from hems.core.clock import Clock
from hems.core.readings import Quantity, Reading
from hems.core.state import SiteState
from hems.devices.health import PollHealth, fresh_value, poll_forever
from hems.devices.modbus.engine import Endpoint, EndpointPool
from hems.errors import DeviceError

if TYPE_CHECKING:
    from hems.devices.modbus.config import SunSpecDeviceConfig
    from hems.devices.modbus.profile_config import ProfileDeviceConfig

log = structlog.get_logger(__name__)


class PolledDevice:
    """One config entry (one role) polled through the shared endpoint of its bus."""

    kind: str  # "sunspec", "profile": names the log events

    def __init__(
        self,
        cfg: SunSpecDeviceConfig | ProfileDeviceConfig,
        pool: EndpointPool,
        state: SiteState,
        clock: Clock,
    ) -> None:
        self.cfg = cfg
        self.device_id = cfg.id
        self.role = cfg.role
        self._endpoint: Endpoint = pool.get(cfg.endpoint_spec())
        self._state = state
        self._clock = clock
        self._health = PollHealth(cfg.id, state, cfg.stale_after_polls, self.kind)
        self._control_lock = asyncio.Lock()
        state.register_device(
            cfg.id, cfg.role, stale_after_s=cfg.poll_interval_s * (cfg.stale_after_polls + 0.5)
        )

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def misses(self) -> int:
        return self._health.misses

    async def run(self) -> None:
        """Poll every `poll_interval_s` until cancelled; failures are handled here."""
        await poll_forever(self.poll, self.cfg.poll_interval_s, self._clock)

    async def poll(self) -> bool:
        """One poll: read, publish, or count a miss. Returns True if readings were published."""
        try:
            readings = await self.poll_once()
        except DeviceError as exc:
            self._health.missed(exc)
            return False
        except Exception as exc:  # last line of defence: one odd device must not stop hems
            log.exception(f"{self.kind} poll crashed", device=self.device_id)
            self._health.missed(DeviceError(self.device_id, f"internal error: {exc!r}"))
            return False
        self._state.publish(readings)
        self._health.succeeded()
        return True

    async def poll_once(self) -> list[Reading]:
        """Read and convert; raises a DeviceError (nothing published) on any failure."""
        raise NotImplementedError

    def _fresh(self, quantity: Quantity) -> float:
        return fresh_value(self._state, self.device_id, quantity)
