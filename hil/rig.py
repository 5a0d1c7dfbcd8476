"""The HIL rig: one simulated home, stepped by an injected clock, served over real protocols.

    clock = AcceleratedClock(60, start)
    async with HilRig(clock) as rig:          # servers bound, stepping started
        print(rig.ports)                      # {"sunspec": 40123, ...}
        rig.home.kettle()
        rig.sunspec_faults.faults.latency_s = 0.2

Extending it (P1 telegram server, profile-based Modbus servers, the OCPP charge-point sim):

* `rig.add_server(name, server, modbus_faults=False)`: an object with `async start()`,
  `async stop()` and an int `port` after start. Started (in order added) when the rig starts,
  stopped in reverse; its port is listed in `rig.ports[name]`. With `modbus_faults=True` a
  `FaultProxy` sits in front: `rig.ports[name]` is the proxy, `rig.faults[name]` steers it.
* `rig.add_service(name, factory)`: `factory(rig)` returns a coroutine that runs for the rig's
  lifetime in the rig's TaskGroup (cancelled on exit; an exception in it stops the rig).
* `rig.on_step(callback)`: `callback(state)` after every physics step, e.g. to push values into
  a server's registers. External loads (EV power) go in via
  `rig.home.set_external_load_w("ev", power_w)`.

Add these before entering the rig.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol, Self

import structlog

from hems.core.clock import Clock
from hil.faults import FaultProxy
from hil.home import Home, HomeConfig, HomeState
from hil.sunspec_server import SunSpecServer, UnitIds

__all__ = ["HilRig", "SubServer"]

log = structlog.get_logger(__name__)


class SubServer(Protocol):
    port: int | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ServiceFactory = Callable[["HilRig"], Awaitable[None]]
StepCallback = Callable[[HomeState], None]


class HilRig:
    """Runs the home physics at the clock's pace and serves it.

    step_s: simulated seconds per physics step; default 0.5 s of real time at the clock's
        speed (30 s at 60x), or 1 s for a ManualClock.
    unit_ids: the SunSpec unit ids; `UnitIds(hybrid=4)` also serves PV + battery as one hybrid
        inverter (`hil.sunspec_server.HybridUnit`, with 802 or `hybrid_storage_model=713`).
    sunspec_port: the port clients use (0 = pick one). With `fault_proxy` (default) that is the
        fault proxy's port and the SunSpec server itself listens on a free port behind it.
    pv_curtailment: False serves the PV unit without model 123 (it cannot be curtailed).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        home_config: HomeConfig | None = None,
        host: str = "127.0.0.1",
        sunspec_port: int = 0,
        unit_ids: UnitIds | None = None,
        step_s: float | None = None,
        fault_proxy: bool = True,
        hybrid_storage_model: int = 802,
        pv_curtailment: bool = True,
    ) -> None:
        self.clock = clock
        self.host = host
        if step_s is None:
            speed = clock.speed
            step_s = 1.0 if math.isinf(speed) else max(0.05, 0.5 * speed)
        if step_s <= 0:
            raise ValueError(f"step_s: must be > 0, got {step_s}")
        self.step_s = step_s
        self.home = Home(home_config, start=clock.now())
        self.sunspec = SunSpecServer(
            self.home,
            clock,
            host=host,
            port=0 if fault_proxy else sunspec_port,
            unit_ids=unit_ids,
            hybrid_storage_model=hybrid_storage_model,
            pv_curtailment=pv_curtailment,
        )
        self._sunspec_public_port = sunspec_port
        self._fault_proxy = fault_proxy
        self.sunspec_faults: FaultProxy | None = None
        self._servers: list[tuple[str, SubServer]] = []
        self._proxied: set[str] = set()
        self.faults: dict[str, FaultProxy] = {}  # server name -> its fault proxy
        self._services: list[tuple[str, ServiceFactory]] = []
        self._on_step: list[StepCallback] = []
        self._last_mono = clock.monotonic()
        self._runner: asyncio.Task[None] | None = None
        self._started = False
        self.ports: dict[str, int] = {}

    # -- extension points -----------------------------------------------------------------

    def add_server(self, name: str, server: SubServer, *, modbus_faults: bool = False) -> None:
        """Register a server with async start()/stop() and a `port` (see module doc).

        modbus_faults: put a `FaultProxy` in front of it (a Modbus TCP server); clients then
        use `rig.ports[name]` (the proxy) and tests steer faults via `rig.faults[name]`.
        """
        self._check_not_started(name)
        self._servers.append((name, server))
        if modbus_faults:
            self._proxied.add(name)

    def add_service(self, name: str, factory: ServiceFactory) -> None:
        """Register `factory(rig)` -> coroutine run for the rig's lifetime."""
        self._check_not_started(name)
        self._services.append((name, factory))

    def on_step(self, callback: StepCallback) -> None:
        self._on_step.append(callback)

    def _check_not_started(self, name: str) -> None:
        if self._started:
            raise RuntimeError(f"hil rig: add {name!r} before starting the rig")
        taken = {n for n, _ in self._servers} | {n for n, _ in self._services} | {"sunspec"}
        if name in taken:
            raise ValueError(f"hil rig: a service named {name!r} is already registered")

    # -- stepping -------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> HomeState:
        """Advance the physics to the clock's present and refresh every server's registers.

        The step loop calls this; tests with a ManualClock may call it right after
        `await clock.advance(s)` to see the effect without waiting for the loop.
        """
        mono = self.clock.monotonic()
        dt_s = max(0.0, mono - self._last_mono)
        self._last_mono = mono
        now = now or self.clock.now()
        self.sunspec.check_reverts(now)  # a control that timed out no longer applies
        state = self.home.step(now, dt_s)
        self.sunspec.refresh(now)
        for cb in self._on_step:
            cb(state)
        return state

    async def _step_loop(self) -> None:
        while True:
            await self.clock.sleep(self.step_s)
            self.tick()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every server and start stepping (returns once all ports are bound)."""
        self._started = True
        await self.sunspec.start()
        assert self.sunspec.port is not None
        if self._fault_proxy:
            self.sunspec_faults = FaultProxy(
                self.host, self.sunspec.port, host=self.host, port=self._sunspec_public_port
            )
            await self.sunspec_faults.start()
            assert self.sunspec_faults.port is not None
            self.faults["sunspec"] = self.sunspec_faults
            self.ports["sunspec"] = self.sunspec_faults.port
        else:
            self.ports["sunspec"] = self.sunspec.port
        for name, server in self._servers:
            await server.start()
            if server.port is None:
                continue
            if name in self._proxied:
                proxy = FaultProxy(self.host, int(server.port), host=self.host, name=name)
                await proxy.start()
                assert proxy.port is not None
                self.faults[name] = proxy
                self.ports[name] = proxy.port
            else:
                self.ports[name] = int(server.port)
        self._runner = asyncio.create_task(self._run_tasks(), name="hil-rig")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for proxy in self.faults.values():
            await proxy.stop()
        for _name, server in reversed(self._servers):
            with contextlib.suppress(Exception):
                await server.stop()
        await self.sunspec.stop()

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._step_loop(), name="hil-step")
            for name, factory in self._services:
                tg.create_task(_awaitable(factory(self)), name=f"hil-{name}")

    async def wait(self) -> None:
        """Return when the rig's tasks end: only if a service fails (its error is raised)."""
        if self._runner is None:
            raise RuntimeError("hil rig: not started")
        await asyncio.shield(self._runner)

    async def run(self) -> None:
        """Start, run until cancelled (or a service fails), then stop cleanly."""
        await self.start()
        try:
            await self.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def sunspec_port(self) -> int:
        return self.ports["sunspec"]


async def _awaitable(aw: Awaitable[None]) -> None:
    await aw
