"""A Modbus TCP proxy: other local clients read through hems' one connection.

Many inverters accept one or two Modbus TCP sessions; Home Assistant or a vendor app then
fights hems for them. The proxy listens on a local port and forwards each request through
the shared `Endpoint` (same lock, pacing and reconnect policy as hems' own polls), so the
device sees exactly one client.

Function codes 3 and 4 are forwarded. Writes (6, 16) are refused with "illegal function"
unless `allow_writes` is set, so a second controller cannot silently fight hems' setpoints.
Failures become Modbus exception replies: the device's own code when it sent one,
10 (gateway path unavailable) when the endpoint is down, 11 (gateway target failed to
respond) on a timeout, 4 (server device failure) on a malformed reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import structlog

from hems.core.tasks import raise_if_cancelling
from hems.devices.modbus.config import ProxyConfig
from hems.devices.modbus.engine import Endpoint, ModbusRejected
from hems.errors import BadValue, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

_MAX_PDU = 253


def exception_pdu(function_code: int, code: int) -> bytes:
    return bytes([function_code | 0x80, code])


class ModbusProxy:
    def __init__(self, endpoint: Endpoint, cfg: ProxyConfig) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with listen_port 0 in tests)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.cfg.listen_host, self.cfg.listen_port
        )
        log.info(
            "modbus proxy listening",
            endpoint=self.endpoint.key,
            listen=f"{self.cfg.listen_host}:{self.port}",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                raise_if_cancelling()
                header = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", header)
                if pid != 0 or not 2 <= length <= _MAX_PDU + 1:
                    log.warning("modbus proxy bad frame", peer=str(peer), length=length)
                    break
                pdu = await reader.readexactly(length - 1)
                reply = await self.answer(unit, pdu)
                writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, unit: int, pdu: bytes) -> bytes:
        """The reply PDU for one request PDU."""
        self.requests += 1
        fc = pdu[0]
        try:
            if fc in (3, 4) and len(pdu) == 5:
                address, count = struct.unpack(">HH", pdu[1:5])
                if not 1 <= count <= 125 or address + count > 0x10000:
                    return exception_pdu(fc, 3)
                table = "holding" if fc == 3 else "input"
                regs = await self.endpoint.read(unit, table, address, count)
                return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *regs)
            if fc in (6, 16) and self.cfg.allow_writes:
                return await self._write(unit, fc, pdu)
            return exception_pdu(fc, 1)
        except ModbusRejected as exc:
            return exception_pdu(fc, exc.exception_code or 4)
        except DeviceUnreachable:
            return exception_pdu(fc, 10)
        except DeviceTimeout:
            return exception_pdu(fc, 11)
        except (BadValue, ValueError):
            return exception_pdu(fc, 4)

    async def _write(self, unit: int, fc: int, pdu: bytes) -> bytes:
        if fc == 6 and len(pdu) == 5:
            address, value = struct.unpack(">HH", pdu[1:5])
            await self.endpoint.write(unit, address, [value], verify=False)
            return pdu
        if fc == 16 and len(pdu) >= 6:
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            if nbytes != 2 * count or len(pdu) != 6 + nbytes or not 1 <= count <= 123:
                return exception_pdu(fc, 3)
            values = list(struct.unpack(f">{count}H", pdu[6:]))
            await self.endpoint.write(unit, address, values, verify=False)
            return pdu[:5]
        return exception_pdu(fc, 3)
