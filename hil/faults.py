"""Fault injection for Modbus TCP devices: a small asyncio proxy that mangles frames.

Put a `FaultProxy` in front of any Modbus TCP server (the rig does it for the SunSpec server)
and point the client at the proxy. Each client connection gets its own upstream connection,
as with a real device. Change `proxy.faults` at any time from a test:

    proxy.faults.latency_s = 0.3                 # every answer 300 ms late (real seconds)
    proxy.faults.drop_every_n = 5                # every 5th request: connection closed, no answer
    proxy.faults.exceptions.append(ExceptionRule(40070, 40080, code=4))  # exception replies
    proxy.faults.garbage_every_n = 3             # every 3rd answer: random bytes instead
    proxy.faults.short_every_n = 3               # every 3rd answer: framed but truncated PDU
    proxy.faults.silent_units = {2}              # unit 2 stops answering (others still do)
    await proxy.go_offline("refuse")             # whole device gone: connections closed/refused
    await proxy.go_offline("silent")             # ... or connections stay open, nothing answers
    await proxy.come_back()
    proxy.clear()                                # no faults

Request counting for the `*_every_n` faults is per proxy, across connections, in arrival
order (`proxy.stats.requests`), so tests are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from dataclasses import dataclass, field
from typing import Literal, Self

import structlog

__all__ = ["ExceptionRule", "FaultProxy", "FaultStats", "Faults"]

log = structlog.get_logger(__name__)

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_MAX_ADU = 260


@dataclass(frozen=True)
class ExceptionRule:
    """Answer requests touching registers [start, end) with Modbus exception `code`.

    `unit_id` None matches every unit; `function_codes` None matches every function.
    """

    start: int
    end: int
    code: int = 0x04  # SERVER DEVICE FAILURE
    unit_id: int | None = None
    function_codes: frozenset[int] | None = None

    def matches(self, unit_id: int, fc: int, ranges: list[tuple[int, int]]) -> bool:
        if self.unit_id is not None and unit_id != self.unit_id:
            return False
        if self.function_codes is not None and fc not in self.function_codes:
            return False
        return any(a < self.end and b > self.start for a, b in ranges)


@dataclass
class Faults:
    """What the proxy does wrong. All fields may be changed while it runs."""

    latency_s: float = 0.0  # added before each answer is sent (real seconds)
    drop_every_n: int = 0  # close the client's connection instead of answering
    garbage_every_n: int = 0  # send random bytes instead of the answer
    short_every_n: int = 0  # send the answer framed correctly but with its PDU cut short
    exceptions: list[ExceptionRule] = field(default_factory=list)
    silent_units: set[int] = field(default_factory=set)  # requests to these get no answer
    seed: int = 0  # for the garbage bytes


@dataclass
class FaultStats:
    requests: int = 0
    forwarded: int = 0
    dropped: int = 0
    exceptions: int = 0
    garbage: int = 0
    short: int = 0
    unanswered: int = 0
    connections: int = 0


def _request_ranges(fc: int, pdu: bytes) -> list[tuple[int, int]]:
    """Register/coil ranges a request touches, [start, end)."""
    try:
        if fc in (1, 2, 3, 4, 15, 16):
            addr, count = struct.unpack_from(">HH", pdu, 1)
            return [(addr, addr + count)]
        if fc in (5, 6):
            (addr,) = struct.unpack_from(">H", pdu, 1)
            return [(addr, addr + 1)]
        if fc == 23:
            r_addr, r_count, w_addr, w_count = struct.unpack_from(">HHHH", pdu, 1)
            return [(r_addr, r_addr + r_count), (w_addr, w_addr + w_count)]
    except struct.error:
        return []
    return []


def _every(n: int, k: int) -> bool:
    return n > 0 and k % n == 0


class FaultProxy:
    """Modbus TCP proxy with runtime-configurable faults. `port` is bound after `start()`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "modbus",
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port: int | None = port or None
        self._want_port = port
        self.name = name
        self.faults = Faults()
        self.stats = FaultStats()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._offline: Literal["refuse", "silent"] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen(self._want_port)

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("hil fault proxy listening", name=self.name, port=self.port, target=self.target)

    async def stop(self) -> None:
        await self._close_listener()
        await self._close_connections()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _close_connections(self) -> None:
        for w in list(self._writers):
            w.close()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._conns.clear()
        self._writers.clear()

    # -- runtime control ------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every fault (does not bring an offline device back; see `come_back`)."""
        self.faults = Faults()

    @property
    def offline(self) -> Literal["refuse", "silent"] | None:
        return self._offline

    async def go_offline(self, mode: Literal["refuse", "silent"] = "refuse") -> None:
        """The device disappears. "refuse": open connections are closed and new ones refused
        (powered off); "silent": connections stay up but nothing is answered (hung)."""
        if mode not in ("refuse", "silent"):
            raise ValueError(f"go_offline mode: must be 'refuse' or 'silent', got {mode!r}")
        self._offline = mode
        if mode == "refuse":
            await self._close_listener()
            await self._close_connections()
        log.info("hil device offline", name=self.name, mode=mode)

    async def come_back(self) -> None:
        """The device returns on the same port."""
        was = self._offline
        self._offline = None
        if was == "refuse" and self._server is None and self.port is not None:
            await self._listen(self.port)
        log.info("hil device back", name=self.name)

    # -- the proxy ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        self.stats.connections += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            while True:
                frame = await self._read_frame(reader)
                if frame is None:
                    return
                if not await self._serve_one(frame, writer, up_reader, up_writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._writers.discard(writer)
            self._conns.discard(task)  # type: ignore[arg-type]
            writer.close()
            if up_writer is not None:
                up_writer.close()

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readexactly(_MBAP.size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        _tid, _pid, length, _unit = _MBAP.unpack(head)
        if not 2 <= length <= _MAX_ADU:
            return None  # not Modbus TCP: drop the connection like a device would
        body = await reader.readexactly(length - 1)
        return head + body

    async def _serve_one(
        self,
        frame: bytes,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        """Handle one request; False closes the client connection."""
        f = self.faults
        tid, pid, _length, unit = _MBAP.unpack_from(frame)
        pdu = frame[_MBAP.size :]
        fc = pdu[0]
        if self._offline == "silent" or unit in f.silent_units:
            self.stats.unanswered += 1
            return True
        self.stats.requests += 1
        k = self.stats.requests
        if _every(f.drop_every_n, k):
            self.stats.dropped += 1
            return False
        ranges = _request_ranges(fc, pdu)
        rule = next((r for r in f.exceptions if r.matches(unit, fc, ranges)), None)
        if rule is not None:
            answer = _MBAP.pack(tid, pid, 3, unit) + bytes([fc | 0x80, rule.code & 0xFF])
            self.stats.exceptions += 1
        else:
            up_writer.write(frame)
            await up_writer.drain()
            answer_or_none = await self._read_frame(up_reader)
            if answer_or_none is None:
                return False
            answer = answer_or_none
            self.stats.forwarded += 1
        if f.latency_s > 0:
            await asyncio.sleep(f.latency_s)
        if _every(f.garbage_every_n, k):
            rng = random.Random(f"{f.seed}:{k}")
            answer = bytes(rng.randrange(256) for _ in range(rng.randrange(3, 24)))
            self.stats.garbage += 1
        elif _every(f.short_every_n, k) and len(answer) > _MBAP.size + 2:
            # Keep the MBAP framing consistent (so the stream stays aligned) but cut the PDU:
            # e.g. a read answer whose byte count promises more registers than it carries.
            cut = answer[: _MBAP.size + max(2, (len(answer) - _MBAP.size) // 2)]
            answer = _MBAP.pack(tid, pid, len(cut) - _MBAP.size + 1, unit) + cut[_MBAP.size :]
            self.stats.short += 1
        writer.write(answer)
        await writer.drain()
        return True
