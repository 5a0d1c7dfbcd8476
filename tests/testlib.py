"""Helpers shared by every area's tests: `from tests.testlib import ...`.

A free loopback port, poll-until-true waits (any predicate; an HTTP JSON answer), services
running for a block, and a throwaway Mosquitto (the demo's `hil.aggregator.MosquittoBroker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hil.aggregator import BrokerTls, MosquittoBroker, find_mosquitto


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(
    predicate: Callable[[], Any],
    timeout_s: float = 5.0,
    what: str = "",
    interval_s: float = 0.02,
) -> Any:
    """Poll `predicate` (sync, or returning an awaitable) until it is truthy; return that
    value. Fails the test with `what` on timeout. For state owned by another task or process."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)


async def poll_json(
    client: httpx.AsyncClient,
    path: str,
    predicate: Callable[[Any], bool],
    timeout_s: float,
    interval_s: float = 0.1,
) -> Any:
    """GET `path` until a 200 answer's JSON satisfies `predicate`; return that JSON."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while loop.time() < deadline:
        r = await client.get(path)
        if r.status_code == 200:
            last = r.json()
            if predicate(last):
                return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{path}: condition not met; last answer {str(last)[:800]}")


@contextlib.asynccontextmanager
async def running(*services: Any) -> AsyncIterator[None]:
    """Run each service's `run()` as a task for the block; cancel and await them after."""
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


@contextlib.asynccontextmanager
async def mosquitto(workdir: Path, tls: BrokerTls | None = None) -> AsyncIterator[MosquittoBroker]:
    """A running Mosquitto on a free port; fails the test if the binary is missing."""
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("mosquitto is required for this test (apt-get install mosquitto)")
    async with MosquittoBroker(binary, workdir, tls) as broker:
        yield broker


def sunspec_cfg(
    port: int,
    device_id: str,
    role: str,
    unit: int,
    *,
    timeout_s: float,
    backoff_max_s: float,
    **kw: Any,
) -> Any:
    """A SunSpec device entry on loopback with fast timeouts and backoff, for rig tests."""
    from hems.devices.modbus.config import SunSpecDeviceConfig

    return SunSpecDeviceConfig(
        type="sunspec",
        id=device_id,
        role=role,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        unit_id=unit,
        timeout_s=timeout_s,
        backoff_initial_s=0.05,
        backoff_max_s=backoff_max_s,
        **kw,
    )


OWNER_PASSWORD = "correct horse battery"


async def web_credentials(db_path: Path) -> str:
    """Set the owner's password (OWNER_PASSWORD) in the database the daemon will open and
    return a read-write API token for httpx clients (`Authorization: Bearer …`)."""
    from hems.core.clock import RealClock
    from hems.store.db import Database
    from hems.web.auth import AuthStore

    db = await Database.open(db_path)
    try:
        auth = AuthStore(db, RealClock())
        await auth.set_password(OWNER_PASSWORD, "test")
        return await auth.create_token("tests", can_write=True)
    finally:
        await db.close()


async def log_in(page: Any, base_url: str, password: str = OWNER_PASSWORD) -> None:
    """Log the Playwright page in through the real login form."""
    await page.goto(f"{base_url}/login")
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/")


def rig_with_car(clock: Any, home_config: Any = None) -> tuple[Any, Any, int, int]:
    """The HIL rig with the demo home's car: a simulated charge point `DEMO-CP1` (1 phase,
    60 kWh at 30 %, meter values every 10 s) on a free OCPP port, its draw added to the
    home's meter. Returns (rig, car, ocpp_port, web_port); start the rig with `async with`.
    `home_config`: a `hil.home.HomeConfig` other than the demo home's."""
    from hil.chargepoint import SimChargePoint, SimConfig
    from hil.ev import EvModel
    from hil.rig import HilRig

    rig = HilRig(clock, fault_proxy=False, home_config=home_config)
    ocpp_port, web_port = free_port(), free_port()
    car = SimChargePoint(
        SimConfig(url=f"ws://127.0.0.1:{ocpp_port}", identity="DEMO-CP1", phases=1,
                  meter_interval_s=10),
        clock,
        ev=EvModel(battery_kwh=60, soc_pct=30, max_ac_power_w=7400, phases=1),
        on_power=lambda w: rig.home.set_external_load_w("wallbox", w),
    )  # fmt: skip
    rig.add_service("car", lambda _: car.run())
    return rig, car, ocpp_port, web_port
