"""Health of one device: counts failures, logs transitions, marks it down.

Shared by every adapter so they all behave alike, logging the transition, never a line per
failure:
- `PollHealth` (polled devices, Modbus): one warning when polling starts to fail, one error
  when the device is marked down after `stale_after_polls` misses, one info line when it
  recovers.
- `PushHealth` (devices that push, P1 telegrams, Glow MQTT payloads): one warning when the
  link goes down (marked down at once), one when input starts being rejected, one info line
  when good input flows again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from hems.core.clock import Clock
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import DeviceError, DeviceUnreachable

log = structlog.get_logger(__name__)


class PollHealth:
    def __init__(self, device_id: str, state: SiteState, stale_after_polls: int, kind: str) -> None:
        self.device_id = device_id
        self._state = state
        self._limit = stale_after_polls
        self._kind = kind  # "sunspec", "profile": names the log events
        self.misses = 0
        self._failing = False
        self._down = False

    def missed(self, exc: DeviceError) -> None:
        self.misses += 1
        if not self._failing:
            log.warning(f"{self._kind} poll failed", device=self.device_id, error=str(exc))
            self._failing = True
        if self.misses >= self._limit and not self._down:
            reason = f"{self.misses} polls missed: {exc}"
            self._state.mark_down(self.device_id, reason)
            log.error(f"{self._kind} device down", device=self.device_id, reason=reason)
            self._down = True

    def succeeded(self) -> None:
        self.misses = 0
        if self._failing:
            log.info(f"{self._kind} device recovered", device=self.device_id)
        self._failing = self._down = False


class PushHealth:
    """Link and input health of one push device; counts accepted and rejected input.

    `kind` names the log events ("p1" -> "p1 meter down"), `item` the unit of input
    ("telegram" -> "p1 telegram rejected").
    """

    def __init__(self, device_id: str, state: SiteState, kind: str, item: str) -> None:
        self.device_id = device_id
        self._state = state
        self._kind = kind
        self._item = item
        self.accepted = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._rejecting = False
        self._down = False

    def link_down(self, reason: str) -> None:
        """The connection is gone: mark the device down (once per outage)."""
        if not self._down:
            log.warning(f"{self._kind} meter down", device=self.device_id, reason=reason)
            self._state.mark_down(self.device_id, reason)
            self._down = True

    def input_rejected(self, reason: str) -> None:
        """One unusable telegram/payload: counted, logged when rejecting starts."""
        self.rejected += 1
        self.last_error = reason
        if not self._rejecting:
            log.warning(f"{self._kind} {self._item} rejected", device=self.device_id, reason=reason)
            self._rejecting = True

    def input_accepted(self) -> None:
        """One good telegram/payload was published: recovered if it was down or rejecting."""
        self.accepted += 1
        if self._rejecting or self._down:
            log.info(f"{self._kind} meter recovered", device=self.device_id)
        self._rejecting = self._down = False


def fresh_value(state: SiteState, device_id: str, quantity: Quantity) -> float:
    """The device's fresh value, or DeviceUnreachable naming why there is none."""
    value = state.fresh_value(device_id, quantity)
    if value is None:
        reason = state.down_reason(device_id) or "no fresh reading"
        raise DeviceUnreachable(device_id, f"{quantity}: {reason}")
    return value


async def poll_forever(
    poll: Callable[[], Awaitable[object]], interval_s: float, clock: Clock
) -> None:
    """Call `poll` every `interval_s` of clock time (start to start) until cancelled."""
    while True:
        started = clock.monotonic()
        await poll()
        raise_if_cancelling()  # a cancel swallowed inside the request must still stop us
        elapsed = clock.monotonic() - started
        await clock.sleep(max(0.0, interval_s - elapsed))
