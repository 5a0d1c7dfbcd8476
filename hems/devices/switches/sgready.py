"""SG-Ready: a heat pump's two-contact input as a switchable load.

States (relay 1, relay 2): 1 blocked (on, off), 2 normal (off, off), 3 recommended on
(off, on), 4 forced on (on, on). `SgReadyLoad` is on in its `on_state` (3, or 4 when
configured) and off in its `off_state` (2, normal; 1 only when configured). It publishes no
power (the contacts carry none), so it is not in SiteState: a relay that fails is logged and
its on/off report is missing; the loop then trusts what it last commanded.
"""

from __future__ import annotations

import asyncio

import structlog

from hems.devices.switches.config import SgReadyConfig
from hems.devices.switches.relay import RelayClient
from hems.errors import BadValue, DeviceError

log = structlog.get_logger(__name__)

RELAYS: dict[int, tuple[bool, bool]] = {
    1: (True, False),
    2: (False, False),
    3: (False, True),
    4: (True, True),
}


def state_of(relay1: bool, relay2: bool) -> int:
    """The SG-Ready state (1..4) the two relays are in (pure)."""
    return next(s for s, pair in RELAYS.items() if pair == (relay1, relay2))


class SgReadyLoad:
    """`SwitchableLoad` over two relays; `state()` reads the SG-Ready state back."""

    def __init__(self, cfg: SgReadyConfig, relay1: RelayClient, relay2: RelayClient) -> None:
        self.device_id = cfg.id
        self.cfg = cfg
        self._relays = (relay1, relay2)

    async def set_state(self, state: int) -> None:
        if state not in RELAYS:
            raise BadValue(self.device_id, f"SG-Ready state {state}: not 1..4")
        want = RELAYS[state]
        # Open the contact that must open first, so a half-done change never passes through
        # state 4 (forced on) or 1 (blocked) on its way between 2 and 3.
        order = sorted(range(2), key=lambda i: want[i])
        for i in order:
            await self._relays[i].set_on(want[i])
        log.info("sg-ready state set", device=self.device_id, state=state)

    async def state(self) -> int:
        s1, s2 = await asyncio.gather(self._relays[0].status(), self._relays[1].status())
        return state_of(s1.on, s2.on)

    async def set_on(self, on: bool) -> None:
        await self.set_state(self.cfg.on_state if on else self.cfg.off_state)

    async def is_on(self) -> bool:
        try:
            return await self.state() in (3, 4)
        except DeviceError as exc:
            log.warning("sg-ready relay unreadable", device=self.device_id, error=str(exc))
            raise

    async def aclose(self) -> None:
        for r in self._relays:
            await r.aclose()
