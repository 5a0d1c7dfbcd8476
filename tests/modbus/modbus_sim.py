"""Real Modbus peers for the engine and SunSpec tests (helpers; fixtures in conftest).

* `sunspec_regs(...)` builds a SunSpec register image with pysunspec2 (`Model(...).get_mb()`).
* `ModbusServer` serves images with a real pymodbus TCP (or RTU-framed TCP) server.
* `FaultProxy` sits between client and server on loopback and misbehaves on demand: delays,
  swallowed requests, dropped connections, short or garbage replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2 import device as ss_device

from tests.testlib import free_port

END = [0xFFFF, 0]
SUNS = [0x5375, 0x6E53]


def model_regs(model_id: int, repeats: int | None = None, **points: Any) -> list[int]:
    """One model's registers (header included); `points` are raw values by point name.

    A `groupname=[{point: raw}, ...]` keyword fills repeating groups (e.g. 160 modules).
    """
    groups = {k: v for k, v in points.items() if isinstance(v, list)}
    plain = {k: v for k, v in points.items() if not isinstance(v, list)}
    if groups:
        data = {**plain, **groups}
        m = ss_device.Model(model_id=model_id, data=data)
    else:
        m = ss_device.Model(model_id=model_id)
        for name, raw in plain.items():
            getattr(m, name).set_value(raw)
    length = len(m.get_mb()) // 2 - 2
    m.ID.set_value(model_id)
    m.L.set_value(length)
    raw_bytes = m.get_mb()
    return list(struct.unpack(f">{len(raw_bytes) // 2}H", raw_bytes))


def sunspec_image(*models: list[int]) -> list[int]:
    """`SunS` + models + end marker, to be served at the base address."""
    out = list(SUNS)
    for m in models:
        out.extend(m)
    return out + END


def common_model(mn: str = "Acme", md: str = "Sol 5", sn: str = "SN123") -> list[int]:
    return model_regs(1, Mn=mn, Md=md, SN=sn, Vr="1.0", DA=1)


@dataclass
class ModbusServer:
    """A pymodbus TCP server holding register images per unit id."""

    # unit -> (base address, registers), or a list of such blocks (holes between them)
    images: dict[int, Any]
    framer: FramerType = FramerType.SOCKET
    action: Callable[..., Any] | None = None
    port: int = field(default_factory=free_port)
    server: ModbusTcpServer | None = None

    async def start(self) -> ModbusServer:
        devices = []
        for unit, blocks in self.images.items():
            if isinstance(blocks, tuple):
                blocks = [blocks]
            simdata = [SimData(b, values=r, datatype=DataType.REGISTERS) for b, r in blocks]
            devices.append(SimDevice(id=unit, simdata=simdata, action=self.action))
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port), framer=self.framer)
        await self.server.serve_forever(background=True)
        return self

    async def set(self, unit: int, address: int, values: list[int]) -> None:
        assert self.server is not None
        await self.server.async_setValues(unit, 16, address, values)

    async def get(self, unit: int, address: int, count: int) -> list[int]:
        assert self.server is not None
        return list(await self.server.async_getValues(unit, 3, address, count))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


class FaultProxy:
    """A TCP relay with switchable faults, between the engine and a real server."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.delay_s = 0.0
        self.swallow = False  # read requests, never answer
        self.mangle: Callable[[bytes], bytes] | None = None  # rewrite replies
        self.drop_every: int | None = None  # close the connection on every Nth request
        self.requests = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.kill_connections()
            await self._server.wait_closed()
            self._server = None

    def kill_connections(self) -> None:
        for w in list(self._writers):
            w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            while True:
                header = await reader.readexactly(6)
                (length,) = struct.unpack(">H", header[4:6])
                body = await reader.readexactly(length)
                self.requests += 1
                if self.drop_every and self.requests % self.drop_every == 0:
                    break
                if self.swallow:
                    continue
                up_w.write(header + body)
                await up_w.drain()
                rh = await up_r.readexactly(6)
                (rlen,) = struct.unpack(">H", rh[4:6])
                reply = rh + await up_r.readexactly(rlen)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.mangle is not None:
                    reply = self.mangle(reply)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            up_w.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class PtyPair:
    """Two pseudo-terminals joined back to back: a null-modem cable in software.

    Each side is a pty slave path a serial client or server can open; a relay on the event
    loop copies bytes between the masters (what `socat pty pty` does, without socat).
    `echo_b`: side b also reads back what it writes, like an RS-485 adapter whose receiver
    stays on while it transmits.
    """

    def __init__(self, echo_b: bool = False) -> None:
        import os
        import tty

        self._os = os
        self._echo_b = echo_b
        self._master_a, slave_a = os.openpty()
        self._master_b, slave_b = os.openpty()
        for fd in (slave_a, slave_b):
            tty.setraw(fd)  # no echo, no line editing: bytes pass unchanged
        self.path_a, self.path_b = os.ttyname(slave_a), os.ttyname(slave_b)
        self._slaves = (slave_a, slave_b)  # held open so the masters never see EIO
        for fd in (self._master_a, self._master_b):
            os.set_blocking(fd, False)

    def start(self) -> PtyPair:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._master_a, self._copy, self._master_a, self._master_b)
        loop.add_reader(self._master_b, self._copy, self._master_b, self._master_a)
        return self

    def _copy(self, src: int, dst: int) -> None:
        try:
            data = self._os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            if self._echo_b and src == self._master_b:
                self._os.write(src, data)  # the echo comes back before any answer
            self._os.write(dst, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self._master_a, self._master_b):
            loop.remove_reader(fd)
        for fd in (self._master_a, self._master_b, *self._slaves):
            self._os.close(fd)
