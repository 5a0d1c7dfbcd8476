"""Helpers for the OCPP tests: a real central system and real simulated chargers,
talking over websockets on 127.0.0.1 with an OS-assigned port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from hems.core.clock import Clock, RealClock
from hems.core.state import SiteState
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.server import OcppCentralSystem
from hems.store.db import Database
from hil.chargepoint import SimChargePoint, SimConfig, SimQuirks
from hil.ev import EvModel
from tests.testlib import wait_until

PASSWORD = "correct-horse-battery-1"


# The shared poll loop, under the name these tests use.
wait_for = wait_until


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel and await a task. Python 3.11's asyncio.wait_for (inside ocpp's `call`) can
    swallow a cancellation that races with an answer, so cancel again until it ends."""
    for _ in range(100):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def ocpp_config(**kw: Any) -> OcppConfig:
    chargers = kw.pop("chargers", [{"id": "cp1", "identity": "CP1", "password": PASSWORD}])
    base = {
        "enabled": True,
        "host": "127.0.0.1",
        "meter_value_sample_interval_s": 1,
        "response_timeout_s": 2,
    }
    base.update(kw)
    cfg = OcppConfig.model_validate(base).model_copy(update={"port": 0})
    return cfg.with_chargers([ChargerConfig.model_validate(c) for c in chargers])


@contextlib.asynccontextmanager
async def central_system(
    cfg: OcppConfig, clock: Clock | None = None, db: Database | None = None, **kw: Any
) -> AsyncIterator[tuple[OcppCentralSystem, SiteState]]:
    clock = clock or RealClock()
    state = SiteState(clock)
    cs = OcppCentralSystem(cfg, state, clock, db, **kw)
    task = asyncio.create_task(cs.run())
    try:
        await asyncio.wait_for(cs.started.wait(), 5)
        yield cs, state
    finally:
        await stop_task(task)


@contextlib.asynccontextmanager
async def charger_sim(
    cs: OcppCentralSystem,
    *,
    version: str = "1.6",
    identity: str = "CP1",
    password: str | None = PASSWORD,
    ev: EvModel | None = None,
    quirks: SimQuirks | None = None,
    clock: Clock | None = None,
    **kw: Any,
) -> AsyncIterator[SimChargePoint]:
    cfg = SimConfig(
        url=f"ws://127.0.0.1:{cs.port}",
        identity=identity,
        version=version,
        password=password,
        meter_interval_s=kw.pop("meter_interval_s", 0.2),
        **kw,
    )
    sim = SimChargePoint(cfg, clock or RealClock(), ev=ev, quirks=quirks)
    task = asyncio.create_task(sim.run())
    try:
        yield sim
    finally:
        await sim.aclose()
        await stop_task(task)
