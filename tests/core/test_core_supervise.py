"""Stage supervision: a failing stage is recorded and restarted with backoff while another
task (standing in for the control loop) keeps running; shutdown still cancels it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest

from hems.core.clock import ManualClock
from hems.core.supervise import StageHealth, supervise
from tests.testlib import wait_until


async def test_a_failing_stage_comes_back_with_doubling_backoff_while_control_runs() -> None:
    clock = ManualClock(datetime(2026, 12, 7, tzinfo=UTC))
    starts: list[float] = []
    recovered = asyncio.Event()

    async def flaky() -> None:
        starts.append(clock.monotonic())
        if len(starts) <= 3:
            raise RuntimeError(f"boom {len(starts)}")
        recovered.set()
        await asyncio.Event().wait()  # runs until cancelled

    cycles = 0

    async def control() -> None:
        nonlocal cycles
        while True:
            cycles += 1
            await asyncio.sleep(0)

    health = StageHealth()
    stage = asyncio.create_task(supervise("flex", flaky, clock, health, backoff_min_s=1.0))
    loop = asyncio.create_task(control())
    try:
        await wait_until(lambda: health.failures == 1)
        assert health.last_error == "RuntimeError: boom 1"
        assert health.restarting_in_s == 1.0
        for step_s in (1.0, 2.0, 4.0):  # doubling backoff, on the injected clock
            seen = len(starts)
            await clock.advance(step_s - 0.01)
            assert len(starts) == seen, "restarted before its backoff"
            await clock.advance(0.01)
            await wait_until(lambda n=seen: len(starts) == n + 1)
        await asyncio.wait_for(recovered.wait(), 5)
        assert health.failures == 3 and starts == [0.0, 1.0, 3.0, 7.0]
        assert not loop.done() and cycles > 0, "control must keep going"
    finally:
        stage.cancel()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    with pytest.raises(asyncio.CancelledError):
        await stage  # shutdown propagates through the supervisor


async def test_a_stage_that_ran_long_restarts_from_the_shortest_backoff() -> None:
    clock = ManualClock(datetime(2026, 12, 7, tzinfo=UTC))
    runs = 0

    async def stage() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("early")
        if runs == 2:
            await clock.sleep(1000)  # healthy for longer than healthy_after_s
            raise RuntimeError("late")
        await asyncio.Event().wait()

    health = StageHealth()
    task = asyncio.create_task(
        supervise("uplink", stage, clock, health, backoff_min_s=1.0, healthy_after_s=600)
    )
    await wait_until(lambda: health.failures == 1)
    await clock.advance(1.0)
    await wait_until(lambda: runs == 2)
    await clock.advance(1000)
    await wait_until(lambda: health.failures == 2)
    assert health.restarting_in_s == 1.0  # not 2.0: the long run reset the backoff
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
