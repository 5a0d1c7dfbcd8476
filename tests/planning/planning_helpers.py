"""Helpers shared by the planning tests (a unique module name, importable from the tests)."""

from __future__ import annotations

from hems.core.clock import ManualClock


class AutoClock(ManualClock):
    """A manual clock whose sleeps advance time at once: backoffs take no real time."""

    async def sleep(self, seconds: float) -> None:
        await self.advance(max(0.0, seconds))
