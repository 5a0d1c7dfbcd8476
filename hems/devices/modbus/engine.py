"""The Modbus engine: exactly one connection per endpoint, shared by every unit id on it.

An endpoint is a TCP host:port, a serial port (RTU), or a serial gateway spoken to as
RTU-over-TCP. All requests on one endpoint are serialised by one lock, optionally paced by an
inter-request delay (RS-485 buses and touchy inverters need a quiet gap), bounded by a
timeout, and mapped to the hems error tree at this one boundary:

* `DeviceTimeout`      no (valid) reply in time
* `DeviceRejected`     a Modbus exception reply (`ModbusRejected.exception_code`) or a write
                       that did not read back
* `DeviceUnreachable`  no connection (refused, down, or still backing off)
* `BadValue`           a short or malformed reply

Every message names the endpoint, the unit, the table and the register.

Reconnects are ours, not pymodbus': clients are built with retries=0 and auto-reconnect off,
and a failed connect schedules the next attempt after a capped, jittered exponential backoff
(pymodbus never retries a failed *first* connect). While backing off, requests fail at once
rather than queueing behind the lock, so pollers notice quickly and the device is not hammered.

Pacing and backoff run on the event loop's clock (real seconds): they protect a physical
device, which lives in real time even when the daemon runs on a simulated clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from hems.errors import BadValue, ConfigError, DeviceRejected, DeviceTimeout, DeviceUnreachable

log = structlog.get_logger(__name__)

Table = Literal["holding", "input"]
Transport = Literal["tcp", "rtu", "rtu-over-tcp"]

MAX_READ_REGISTERS = 125  # Modbus limit for fc3/fc4
MAX_WRITE_REGISTERS = 123  # Modbus limit for fc16

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusRejected(DeviceRejected):
    """A Modbus exception reply; `exception_code` is the code the device sent (None when a
    write did not read back)."""

    def __init__(self, device_id: str, reason: str, exception_code: int | None) -> None:
        super().__init__(device_id, reason)
        self.exception_code = exception_code


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """How to reach one endpoint. Devices on the same bus must agree on every field."""

    transport: Transport = "tcp"
    host: str | None = None  # tcp, rtu-over-tcp
    port: int = 502
    serial_port: str | None = None  # rtu: /dev/ttyUSB0
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    handle_local_echo: bool = False  # rtu: the adapter echoes what we send; drop it
    timeout_s: float = 1.0
    inter_request_delay_s: float = 0.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.transport == "rtu":
            if not self.serial_port:
                raise ConfigError("serial_port", "required for transport rtu")
        elif not self.host:
            raise ConfigError("host", f"required for transport {self.transport}")
        if self.handle_local_echo and self.transport != "rtu":
            raise ConfigError("handle_local_echo", f"only for transport rtu, not {self.transport}")
        if self.timeout_s <= 0 or self.backoff_initial_s <= 0:
            raise ConfigError("timeout_s", "timeout_s and backoff_initial_s must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError("backoff_max_s", "must be >= backoff_initial_s")
        if self.inter_request_delay_s < 0:
            raise ConfigError("inter_request_delay_s", "must be >= 0")

    @property
    def key(self) -> str:
        if self.transport == "rtu":
            return f"rtu://{self.serial_port}"
        scheme = "tcp" if self.transport == "tcp" else "rtu+tcp"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0  # requests sent (reads, writes, verify reads)
    errors: int = 0  # requests that failed for any reason
    timeouts: int = 0
    reconnects: int = 0  # successful connects after the first one
    connect_failures: int = 0
    last_error: str | None = None
    connected: bool = False


def coalesce(
    ranges: Sequence[tuple[int, int]], max_gap: int = 8, max_block: int = MAX_READ_REGISTERS
) -> list[tuple[int, int]]:
    """Merge (address, count) ranges into as few block reads as the limits allow.

    Two ranges join when the hole between them is at most `max_gap` registers and the block
    stays within `max_block`. Overlapping ranges always join (if the block fits). Pure.
    """
    if max_block < 1 or max_block > MAX_READ_REGISTERS:
        raise ValueError(f"max_block: must be 1..{MAX_READ_REGISTERS}")
    cleaned: list[tuple[int, int]] = []
    for address, count in ranges:
        _check_span(address, count, max_block)
        cleaned.append((address, count))
    blocks: list[tuple[int, int]] = []
    for address, count in sorted(cleaned):
        end = address + count
        if blocks:
            start, cur_count = blocks[-1]
            cur_end = start + cur_count
            new_end = max(cur_end, end)
            if address - cur_end <= max_gap and new_end - start <= max_block:
                blocks[-1] = (start, new_end - start)
                continue
        blocks.append((address, count))
    return blocks


def _check_span(address: int, count: int, limit: int) -> None:
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"address {address}: must be 0..65535")
    if not 1 <= count <= limit:
        raise ValueError(f"count {count} at {address}: must be 1..{limit}")
    if address + count > 0x10000:
        raise ValueError(f"registers {address}+{count}: run past 65535")


class Endpoint:
    """One connection, shared by every unit id behind it. Use `EndpointPool.get`."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.key = spec.key
        self.stats = EndpointStats()
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._ever_connected = False
        self._failures = 0  # consecutive connect failures, drives the backoff
        self._next_connect_at = 0.0  # loop time
        self._last_request_end = 0.0
        self._down_logged = False
        self._no_merge: set[tuple[int, str, int, int]] = set()  # blocks the device refused

    # -- public -------------------------------------------------------------------------
    async def read(self, unit_id: int, table: Table, address: int, count: int) -> list[int]:
        """Read `count` registers from `address`; raises a DeviceError naming the register."""
        _check_span(address, count, MAX_READ_REGISTERS)
        what = f"read {table} {address}+{count}"

        async def call(client: Any) -> Any:
            fn = (
                client.read_holding_registers if table == "holding" else client.read_input_registers
            )
            return await fn(address, count=count, device_id=unit_id)

        rr = await self._execute(unit_id, what, call)
        registers = list(getattr(rr, "registers", None) or [])
        if len(registers) < count:
            self._fail(f"unit {unit_id}: {what}: short reply")
            raise BadValue(
                self._who(unit_id),
                f"{what}: short reply, got {len(registers)} of {count} registers",
            )
        return registers[:count]

    async def read_ranges(
        self,
        unit_id: int,
        table: Table,
        ranges: Sequence[tuple[int, int]],
        max_gap: int = 8,
        max_block: int = MAX_READ_REGISTERS,
    ) -> dict[int, int]:
        """Read many (address, count) ranges with as few requests as possible.

        Ranges are coalesced into blocks (see `coalesce`). If the device refuses a merged
        block with "illegal data address/value" (a hole it does not serve), the block is
        split back into its ranges and remembered so later polls do not try it again.
        """
        out: dict[int, int] = {}
        for start, count in coalesce(ranges, max_gap, max_block):
            members = [(a, c) for a, c in ranges if a >= start and a + c <= start + count]
            key = (unit_id, table, start, count)
            if len(members) > 1 and key in self._no_merge:
                await self._read_members(unit_id, table, members, out)
                continue
            try:
                regs = await self.read(unit_id, table, start, count)
            except ModbusRejected as exc:
                if len(members) <= 1 or exc.exception_code not in (2, 3):
                    raise
                self._no_merge.add(key)
                log.info(
                    "modbus block split",
                    endpoint=self.key,
                    unit=unit_id,
                    block=f"{start}+{count}",
                    reason=exc.reason,
                )
                await self._read_members(unit_id, table, members, out)
                continue
            for i, value in enumerate(regs):
                out[start + i] = value
        return out

    async def write(
        self, unit_id: int, address: int, values: Sequence[int], verify: bool = True
    ) -> None:
        """Write holding registers (fc6 for one, fc16 for several), then read them back.

        A read-back refused with "illegal function/address" (write-only registers) counts as
        "cannot verify" and is accepted; a read-back that differs raises `ModbusRejected`
        with `exception_code=None`.
        """
        vals = [int(v) for v in values]
        _check_span(address, len(vals), MAX_WRITE_REGISTERS)
        for v in vals:
            if not 0 <= v <= 0xFFFF:
                raise ValueError(f"register {address}: value {v} is not a 16-bit word")
        what = f"write {address}={vals}"

        async def call(client: Any) -> Any:
            if len(vals) == 1:
                return await client.write_register(address, vals[0], device_id=unit_id)
            return await client.write_registers(address, vals, device_id=unit_id)

        await self._execute(unit_id, what, call)
        if not verify:
            return
        try:
            back = await self.read(unit_id, "holding", address, len(vals))
        except ModbusRejected as exc:
            if exc.exception_code in (1, 2):
                log.debug("modbus write not verifiable", endpoint=self.key, unit=unit_id)
                return
            raise
        if back != vals:
            reason = f"{what}: read back {back}, the device did not take the value"
            self._fail(f"unit {unit_id}: {reason}")
            raise ModbusRejected(self._who(unit_id), reason, None)

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    # -- internals ----------------------------------------------------------------------
    def _who(self, unit_id: int) -> str:
        return f"{self.key} unit {unit_id}"

    def _fail(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = message

    async def _read_members(
        self, unit_id: int, table: Table, members: list[tuple[int, int]], out: dict[int, int]
    ) -> None:
        for a, c in members:
            for i, value in enumerate(await self.read(unit_id, table, a, c)):
                out[a + i] = value

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.spec
        # retries=0 and reconnect_delay=0: the retry/reconnect policy is ours (see module doc).
        if s.transport == "rtu":
            return AsyncModbusSerialClient(
                str(s.serial_port),
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                handle_local_echo=s.handle_local_echo,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusTcpClient(
            str(s.host),
            port=s.port,
            framer=FramerType.SOCKET if s.transport == "tcp" else FramerType.RTU,
            timeout=s.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as exc:  # closing a dead transport must not mask the cause
                log.debug("modbus close failed", endpoint=self.key, error=str(exc))
        self._client = None
        self.stats.connected = False

    def _schedule_reconnect(self, now: float) -> float:
        base = min(self.spec.backoff_max_s, self.spec.backoff_initial_s * 2**self._failures)
        delay = base * random.uniform(0.5, 1.0)  # jitter: many gateways restart together
        self._failures += 1
        self._next_connect_at = now + delay
        return delay

    async def _ensure_connected(self, unit_id: int, what: str) -> Any:
        if self._client is not None and self._client.connected:
            return self._client
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._next_connect_at:
            reason = self.stats.last_error or "not connected"
            raise DeviceUnreachable(
                self._who(unit_id),
                f"{what}: not connected ({reason}); next attempt in "
                f"{self._next_connect_at - now:.1f} s",
            )
        self._drop()
        client = self._new_client()
        try:
            async with asyncio.timeout(self.spec.timeout_s + 1.0):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            delay = self._schedule_reconnect(loop.time())
            self.stats.connect_failures += 1
            message = f"cannot connect to {self.key}"
            self._fail(message)
            if not self._down_logged:
                log.warning("modbus endpoint down", endpoint=self.key, retry_in_s=round(delay, 2))
                self._down_logged = True
            raise DeviceUnreachable(self._who(unit_id), f"{what}: {message}")
        self._client = client
        self._failures = 0
        self.stats.connected = True
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        if self._down_logged:
            log.info("modbus endpoint recovered", endpoint=self.key)
            self._down_logged = False
        return client

    async def _pace(self) -> None:
        gap = self.spec.inter_request_delay_s
        if gap > 0:
            wait = self._last_request_end + gap - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _execute(self, unit_id: int, what: str, call: Callable[[Any], Awaitable[Any]]) -> Any:
        who = self._who(unit_id)
        async with self._lock:
            await self._pace()
            try:
                client = await self._ensure_connected(unit_id, what)
                self.stats.requests += 1
                try:
                    # pymodbus has its own timeout; ours is the hard deadline around it.
                    async with asyncio.timeout(self.spec.timeout_s * 1.5 + 0.2):
                        rr = await call(client)
                except (TimeoutError, ModbusIOException) as exc:
                    self.stats.timeouts += 1
                    reason = f"{what}: no reply within {self.spec.timeout_s} s"
                    self._fail(f"unit {unit_id}: {reason}")
                    if self.spec.transport != "tcp":
                        # RTU has no transaction id: a late reply would be taken as the
                        # answer to the next request, so start from a clean line.
                        self._drop()
                    raise DeviceTimeout(who, reason) from exc
                except ConnectionException as exc:
                    reason = f"{what}: connection lost ({exc})"
                    self._fail(f"unit {unit_id}: {reason}")
                    self._drop()
                    self._next_connect_at = 0.0  # one immediate retry on the next request
                    raise DeviceUnreachable(who, reason) from exc
                except ModbusException as exc:
                    reason = f"{what}: malformed reply ({exc})"
                    self._fail(f"unit {unit_id}: {reason}")
                    self._drop()
                    raise BadValue(who, reason) from exc
            finally:
                self._last_request_end = asyncio.get_running_loop().time()
        if rr is None:
            self._fail(f"unit {unit_id}: {what}: empty reply")
            raise BadValue(who, f"{what}: empty reply")
        if rr.isError():
            code = getattr(rr, "exception_code", None)
            name = EXCEPTION_NAMES.get(code or -1, "unknown")
            reason = f"{what}: exception {code} ({name})"
            self._fail(f"unit {unit_id}: {reason}")
            raise ModbusRejected(who, reason, code)
        return rr


@dataclass(slots=True)
class EndpointPool:
    """Hands out exactly one `Endpoint` per bus. Owned by the Modbus service; closed last."""

    _endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def get(self, spec: EndpointSpec) -> Endpoint:
        existing = self._endpoints.get(spec.key)
        if existing is None:
            existing = self._endpoints[spec.key] = Endpoint(spec)
        elif existing.spec != spec:
            raise ConfigError(
                spec.key,
                "devices on this endpoint disagree on its settings "
                f"({_diff(existing.spec, spec)}); give them the same values",
            )
        return existing

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return dict(self._endpoints)

    async def close(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.close()


def _diff(a: EndpointSpec, b: EndpointSpec) -> str:
    names = [n for n in EndpointSpec.__dataclass_fields__ if getattr(a, n) != getattr(b, n)]
    return ", ".join(f"{n}: {getattr(a, n)!r} vs {getattr(b, n)!r}" for n in names)
