"""The rig's extension points and the `python -m hil` runner."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from hems.core.clock import ManualClock
from hil.faults import ExceptionRule
from hil.home import Home, HomeConfig, HomeState
from hil.rig import HilRig
from hil.sunspec_server import SunSpecServer

REPO = Path(__file__).resolve().parents[2]


class EchoServer:
    """A stand-in sub-server (a P1 or OCPP sim would look the same to the rig)."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._srv: asyncio.Server | None = None
        self.stopped = False

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.readline())
        await w.drain()
        w.close()

    async def start(self) -> None:
        self._srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._srv.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._srv is not None
        self._srv.close()
        self.stopped = True


async def test_hil_rig_extension_points(clock: ManualClock) -> None:
    rig = HilRig(clock)
    echo = EchoServer()
    seen: list[HomeState] = []
    ev_runs = asyncio.Event()

    async def ev_sim(r: HilRig) -> None:
        # What the charge-point sim does: feed its power into the home's balance.
        r.home.set_external_load_w("ev", 7000.0)
        ev_runs.set()
        await asyncio.Event().wait()

    rig.add_server("echo", echo)
    rig.add_service("ev", ev_sim)
    rig.on_step(seen.append)
    with pytest.raises(ValueError, match="already registered"):
        rig.add_service("ev", ev_sim)
    async with rig:
        assert set(rig.ports) == {"sunspec", "echo"}
        r, w = await asyncio.open_connection("127.0.0.1", rig.ports["echo"])
        w.write(b"ping\n")
        assert await r.readline() == b"ping\n"
        w.close()
        await asyncio.wait_for(ev_runs.wait(), 2)
        await clock.advance(5.0)
        state = rig.tick()
        assert state.external_w == pytest.approx(7000.0)
        assert seen and seen[-1] is state
        with pytest.raises(RuntimeError, match="before starting"):
            rig.add_server("late", EchoServer())
    assert echo.stopped


async def test_hil_step_loop_follows_the_clock(clock: ManualClock) -> None:
    async with HilRig(clock, step_s=5.0) as rig:
        before = rig.home.state.at
        for _ in range(5):  # let the step loop reach its clock.sleep
            await asyncio.sleep(0)
        await clock.advance(5.0)
        for _ in range(20):  # the loop task runs once the clock passed its deadline
            await asyncio.sleep(0)
            if rig.home.state.at != before:
                break
        assert (rig.home.state.at - before).total_seconds() == pytest.approx(5.0)


async def test_hil_cli_serves_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil",
        "--speed",
        "60",
        "--port",
        "0",
        "--seed",
        "3",
        "--start",
        "2026-06-21T10:00:00+00:00",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = None
        async with asyncio.timeout(20):
            while port is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "hil exited before printing its ports"
                if m := re.search(r"hil: sunspec tcp://127\.0\.0\.1:(\d+)", line):
                    port = int(m.group(1))
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        assert await c.connect()
        rr = await c.read_holding_registers(40000, count=2, device_id=1)
        c.close()
        assert rr.registers == [0x5375, 0x6E53]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            out, _err = await proc.communicate()
        assert proc.returncode == 0
        assert b"hil: stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_hil_cli_rejects_bad_arguments() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil",
        "--speed",
        "-2",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"--speed: must be > 0" in err


async def test_hil_extra_modbus_server_gets_its_own_fault_proxy(clock: ManualClock) -> None:
    rig = HilRig(clock)
    other = SunSpecServer(Home(HomeConfig(seed=9), start=clock.now()), clock)
    rig.add_server("second", other, modbus_faults=True)
    async with rig:
        assert rig.ports["second"] != other.port  # clients go through the proxy
        proxy = rig.faults["second"]
        proxy.faults.exceptions.append(ExceptionRule(40000, 40002, code=6))
        c = AsyncModbusTcpClient("127.0.0.1", port=rig.ports["second"], timeout=1, retries=0)
        s = AsyncModbusTcpClient("127.0.0.1", port=rig.ports["sunspec"], timeout=1, retries=0)
        await c.connect()
        await s.connect()
        try:
            rr = await c.read_holding_registers(40000, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 6
            rr = await s.read_holding_registers(40000, count=2, device_id=1)  # not affected
            assert rr.registers == [0x5375, 0x6E53]
        finally:
            c.close()
            s.close()
