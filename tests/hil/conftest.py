"""Fixtures for the HIL rig tests: a manual clock, a running rig and a plain pymodbus client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymodbus.client import AsyncModbusTcpClient

from hems.core.clock import ManualClock
from hil.home import HomeConfig
from hil.rig import HilRig

NOON = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOON)


@pytest.fixture
async def rig(clock: ManualClock) -> AsyncIterator[HilRig]:
    # Clear sky so PV is predictable; the seed still drives load noise.
    cfg = HomeConfig(seed=7, cloudiness=0.0, cloud_transients_per_h=0.0)
    async with HilRig(clock, home_config=cfg) as r:
        await clock.advance(1.0)
        r.tick()
        yield r


@pytest.fixture
async def client(rig: HilRig) -> AsyncIterator[AsyncModbusTcpClient]:
    c = AsyncModbusTcpClient("127.0.0.1", port=rig.sunspec_port, timeout=1, retries=0)
    assert await c.connect()
    yield c
    c.close()
