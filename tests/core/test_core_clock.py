import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from hems.core.clock import AcceleratedClock, ManualClock, RealClock

START = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


def test_real_clock_is_aware_utc_and_monotonic() -> None:
    clock = RealClock()
    assert clock.now().tzinfo is not None
    assert clock.now().utcoffset() == timedelta(0)
    a = clock.monotonic()
    assert clock.monotonic() >= a


async def test_accelerated_clock_runs_speed_times_faster() -> None:
    clock = AcceleratedClock(speed=600, start=START)
    t0 = time.monotonic()
    await clock.sleep(60)  # one simulated minute is 0.1 s of real time
    real_s = time.monotonic() - t0
    assert 0.08 <= real_s < 0.5
    assert clock.monotonic() >= 60
    assert clock.now() >= START + timedelta(seconds=60)


def test_accelerated_clock_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speed"):
        AcceleratedClock(speed=0)
    with pytest.raises(ValueError, match="aware"):
        AcceleratedClock(speed=2, start=datetime(2026, 1, 1))


async def test_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(START)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(10)
        woke.append(clock.monotonic())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)  # let it start sleeping
    await clock.advance(5)
    await asyncio.sleep(0)
    assert woke == []
    await clock.advance(5)
    await asyncio.wait_for(task, 1)
    assert woke == [10]
    assert clock.now() == START + timedelta(seconds=10)
