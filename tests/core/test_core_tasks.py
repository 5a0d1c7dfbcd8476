"""Shutdown must finish even when a library swallows one cancellation (Python 3.11's
`asyncio.wait_for` does when the answer arrives in the same loop turn as the cancel)."""

from __future__ import annotations

import asyncio

import pytest

from hems.app.daemon import _reap_stragglers
from hems.core.clock import RealClock
from hems.devices.health import poll_forever


async def _swallow_one_cancel(seen: list[str]) -> None:
    """What a request looks like when wait_for returns the answer instead of cancelling."""
    try:
        await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        seen.append("swallowed")


async def test_poller_stops_although_a_request_swallowed_the_cancel() -> None:
    seen: list[str] = []
    task = asyncio.create_task(poll_forever(lambda: _swallow_one_cancel(seen), 3600, RealClock()))
    await asyncio.sleep(0.01)  # inside the first request
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert seen == ["swallowed"]  # the request did swallow it; the loop still stopped


async def test_daemon_shutdown_cancels_a_straggler_again() -> None:
    seen: list[str] = []

    async def stubborn_service() -> None:
        await _swallow_one_cancel(seen)
        await asyncio.sleep(3600)  # goes on as if never asked to stop

    async def daemon_like() -> None:
        owner = asyncio.current_task()
        assert owner is not None
        tasks: list[asyncio.Task[None]] = []
        reaper = asyncio.create_task(_reap_stragglers(owner, tasks))
        try:
            async with asyncio.TaskGroup() as tg:
                tasks.append(tg.create_task(stubborn_service(), name="stubborn"))
        finally:
            reaper.cancel()

    task = asyncio.create_task(daemon_like())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert seen == ["swallowed"]
