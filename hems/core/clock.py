"""Injected time. Every loop takes a Clock so the HIL rig can run a day in a minute."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic scale (simulated seconds for accelerated clocks)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""
        ...

    @property
    def speed(self) -> float:
        """Simulated seconds per real second (1 for the real clock)."""
        ...


class RealClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class AcceleratedClock:
    """Simulated time running `speed` times faster than real time from `start`.

    Shared by the HIL rig and the daemon in the demo so both see the same simulated day.
    """

    def __init__(self, speed: float, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed: must be > 0")
        if start is not None and start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self.speed = float(speed)
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._t0 = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """A clock that moves only when told to; for deterministic tests.

    `sleep` returns once `advance` has moved time past the sleeper's deadline.
    """

    speed = float("inf")

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start: must be timezone-aware")
        self._start = start.astimezone(UTC)
        self._elapsed_s = 0.0
        self._changed = asyncio.Condition()

    def monotonic(self) -> float:
        return self._elapsed_s

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed_s)

    async def sleep(self, seconds: float) -> None:
        deadline = self._elapsed_s + max(0.0, seconds)
        async with self._changed:
            await self._changed.wait_for(lambda: self._elapsed_s >= deadline)

    async def advance(self, seconds: float) -> None:
        """Move time forward and let sleepers whose deadline passed run."""
        async with self._changed:
            self._elapsed_s += seconds
            self._changed.notify_all()
        # Woken sleepers need a few loop turns to re-take the lock and run on.
        for _ in range(4):
            await asyncio.sleep(0)
