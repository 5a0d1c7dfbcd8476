"""The Modbus engine against real pymodbus servers (and a fault-injecting relay)."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from modbus_sim import PtyPair, free_port
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hems.devices.modbus.engine import (
    EndpointPool,
    EndpointSpec,
    ModbusRejected,
    coalesce,
)
from hems.errors import BadValue, ConfigError, DeviceTimeout, DeviceUnreachable

FAST = {"timeout_s": 0.3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}


def tcp(port: int, **kw: object) -> EndpointSpec:
    return EndpointSpec(host="127.0.0.1", port=port, **{**FAST, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ranges", "max_gap", "max_block", "blocks"),
    [
        ([], 8, 125, []),
        ([(10, 2)], 8, 125, [(10, 2)]),
        ([(10, 2), (12, 3)], 0, 125, [(10, 5)]),  # adjacent
        ([(10, 2), (20, 2)], 8, 125, [(10, 12)]),  # hole of 8 joins
        ([(10, 2), (21, 2)], 8, 125, [(10, 2), (21, 2)]),  # hole of 9 does not
        ([(30, 5), (10, 2), (12, 1)], 8, 125, [(10, 3), (30, 5)]),  # unsorted in
        ([(10, 10), (12, 3)], 0, 125, [(10, 10)]),  # overlap swallowed
        ([(0, 100), (100, 30)], 8, 125, [(0, 100), (100, 30)]),  # would exceed 125
        ([(0, 60), (60, 60)], 8, 120, [(0, 120)]),
    ],
)
def test_modbus_coalesce_table(ranges, max_gap, max_block, blocks):
    assert coalesce(ranges, max_gap, max_block) == blocks


@pytest.mark.parametrize("bad", [[(-1, 2)], [(65535, 2)], [(0, 0)], [(0, 126)]])
def test_modbus_coalesce_rejects_impossible_ranges(bad):
    with pytest.raises(ValueError, match=r"count|address|past"):
        coalesce(bad)


def test_modbus_pool_one_endpoint_per_bus_and_conflicts_named():
    pool = EndpointPool()
    a = pool.get(tcp(1502))
    assert pool.get(tcp(1502)) is a
    assert pool.get(tcp(1503)) is not a
    with pytest.raises(ConfigError, match=r"tcp://127.0.0.1:1502.*timeout_s: 0.3 vs 2.0"):
        pool.get(tcp(1502, timeout_s=2.0))
    with pytest.raises(ConfigError, match="serial_port"):
        EndpointSpec(transport="rtu")


async def test_modbus_units_share_one_connection_and_requests_serialise(serve, fault_proxy):
    srv = await serve({1: (100, list(range(50))), 2: (100, list(range(1000, 1050)))})
    proxy = await fault_proxy(srv.port)
    pool = EndpointPool()
    ep = pool.get(tcp(proxy.port))
    results = await asyncio.gather(*(ep.read(1 + i % 2, "holding", 100 + i, 3) for i in range(30)))
    for i, regs in enumerate(results):
        base = 0 if i % 2 == 0 else 1000
        assert regs == [base + i, base + i + 1, base + i + 2]
    assert proxy.connections == 1
    assert ep.stats.requests == 30 and ep.stats.errors == 0
    await pool.close()


async def test_modbus_read_ranges_coalesces_into_few_requests(serve):
    srv = await serve({1: (0, list(range(300)))})
    ep = EndpointPool().get(tcp(srv.port))
    ranges = [(0, 2), (4, 2), (10, 1), (100, 10), (105, 2), (200, 100)]
    values = await ep.read_ranges(1, "holding", ranges)
    assert ep.stats.requests == 3  # 0..10, 100..109, 200..299
    for a, c in ranges:
        for addr in range(a, a + c):
            assert values[addr] == addr
    await ep.close()


async def test_modbus_read_ranges_splits_a_block_over_a_hole_and_remembers(serve):
    # Two islands of registers with a hole the device refuses (exception 2).
    srv = await serve({1: [(0, list(range(10))), (14, list(range(14, 20)))]})
    ep = EndpointPool().get(tcp(srv.port))
    ranges = [(0, 10), (14, 6)]
    values = await ep.read_ranges(1, "holding", ranges)
    assert [values[a] for a in (0, 9, 14, 19)] == [0, 9, 14, 19]
    assert ep.stats.requests == 3  # merged try + two split reads
    await ep.read_ranges(1, "holding", ranges)
    assert ep.stats.requests == 5  # remembered: straight to the split reads
    await ep.close()


async def test_modbus_exception_reply_names_endpoint_unit_register_and_code(serve):
    srv = await serve({1: (100, [1, 2, 3])})
    ep = EndpointPool().get(tcp(srv.port))
    with pytest.raises(ModbusRejected) as info:
        await ep.read(1, "holding", 500, 2)
    assert info.value.exception_code == 2
    text = str(info.value)
    assert f"tcp://127.0.0.1:{srv.port} unit 1" in text
    assert "read holding 500+2" in text and "illegal data address" in text
    # The connection survives an exception reply.
    assert await ep.read(1, "holding", 100, 3) == [1, 2, 3]
    await ep.close()


async def test_modbus_device_failure_code_from_action(serve):
    async def action(fc, start, address, count, regs, set_values):
        return ExcCodes.DEVICE_BUSY if address == 101 else None

    srv = await serve({1: (100, [1, 2, 3])}, action=action)
    ep = EndpointPool().get(tcp(srv.port))
    with pytest.raises(ModbusRejected, match="server device busy") as info:
        await ep.read(1, "holding", 101, 1)
    assert info.value.exception_code == 6
    await ep.close()


async def test_modbus_timeout_is_device_timeout_and_bounded(serve, fault_proxy):
    srv = await serve({1: (0, [7] * 10)})
    proxy = await fault_proxy(srv.port)
    ep = EndpointPool().get(tcp(proxy.port))
    assert await ep.read(1, "holding", 0, 2) == [7, 7]
    proxy.swallow = True
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"unit 1: read holding 0\+2: no reply within 0.3 s"):
        await ep.read(1, "holding", 0, 2)
    assert time.monotonic() - t0 < 1.5
    proxy.swallow = False
    assert await ep.read(1, "holding", 0, 2) == [7, 7]
    assert ep.stats.timeouts == 1
    await ep.close()


async def test_modbus_short_reply_is_bad_value(serve, fault_proxy):
    srv = await serve({1: (0, [5] * 10)})
    proxy = await fault_proxy(srv.port)

    def cut_to_one_register(reply: bytes) -> bytes:
        # MBAP(7) fc(1) bytecount(1) data: keep one register, fix lengths so it parses.
        tid, pid, _length, unit, fc = struct.unpack(">HHHBB", reply[:8])
        return struct.pack(">HHHBBB", tid, pid, 5, unit, fc, 2) + reply[9:11]

    proxy.mangle = cut_to_one_register
    ep = EndpointPool().get(tcp(proxy.port))
    with pytest.raises(BadValue, match=r"read holding 0\+4: short reply, got 1 of 4"):
        await ep.read(1, "holding", 0, 4)
    await ep.close()


async def test_modbus_garbage_reply_fails_clearly_then_recovers(serve, fault_proxy):
    srv = await serve({1: (0, [5] * 10)})
    proxy = await fault_proxy(srv.port)
    ep = EndpointPool().get(tcp(proxy.port))
    proxy.mangle = lambda reply: b"\x00\x01garbage!!"
    with pytest.raises((DeviceTimeout, BadValue), match="read holding 0"):
        await ep.read(1, "holding", 0, 2)
    proxy.mangle = None
    proxy.kill_connections()  # a device sending garbage is usually reset
    for _ in range(20):
        try:
            assert await ep.read(1, "holding", 0, 2) == [5, 5]
            break
        except (DeviceTimeout, DeviceUnreachable, BadValue):
            await asyncio.sleep(0.05)
    else:
        pytest.fail("no recovery after garbage")
    await ep.close()


async def test_modbus_unreachable_backs_off_then_connects_when_device_appears(serve):

    port = free_port()
    ep = EndpointPool().get(tcp(port))
    with pytest.raises(DeviceUnreachable, match=f"cannot connect to tcp://127.0.0.1:{port}"):
        await ep.read(1, "holding", 0, 1)
    with pytest.raises(DeviceUnreachable, match="next attempt in"):
        await ep.read(1, "holding", 0, 1)  # fails fast while backing off
    assert ep.stats.connect_failures == 1  # no second attempt: refused from the backoff alone
    await serve({1: (0, [42])}, port=port)
    for _ in range(40):
        try:
            assert await ep.read(1, "holding", 0, 1) == [42]
            break
        except DeviceUnreachable:
            await asyncio.sleep(0.02)
    else:
        pytest.fail("never reconnected")
    assert ep.stats.connected
    await ep.close()


async def test_modbus_backoff_grows_and_is_capped():

    spec = EndpointSpec(
        host="127.0.0.1",
        port=free_port(),
        timeout_s=0.2,
        backoff_initial_s=0.01,
        backoff_max_s=0.04,
    )
    ep = EndpointPool().get(spec)
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(6):
        with pytest.raises(DeviceUnreachable):
            await ep.read(1, "holding", 0, 1)
        delays.append(ep._next_connect_at - loop.time())
        await asyncio.sleep(max(0.0, delays[-1]) + 0.005)
    assert all(d <= 0.04 + 1e-3 for d in delays)
    assert max(delays[3:]) > 0.015  # grew beyond the first step (jitter is 0.5..1x)
    assert ep.stats.connect_failures == 6


async def test_modbus_dropped_connection_reconnects(serve, fault_proxy):
    srv = await serve({1: (0, [9, 8])})
    proxy = await fault_proxy(srv.port)
    ep = EndpointPool().get(tcp(proxy.port))
    proxy.drop_every = 3
    ok = failed = 0
    for _ in range(12):
        try:
            assert await ep.read(1, "holding", 0, 2) == [9, 8]
            ok += 1
        except (DeviceTimeout, DeviceUnreachable):
            failed += 1
            await asyncio.sleep(0.06)
    assert ok >= 6 and failed >= 2
    assert ep.stats.reconnects >= 2
    assert proxy.connections >= 3
    await ep.close()


async def test_modbus_write_single_and_multiple_verified(serve):
    srv = await serve({1: (0, [0] * 20)})
    ep = EndpointPool().get(tcp(srv.port))
    await ep.write(1, 3, [1234])
    await ep.write(1, 10, [1, 2, 3])
    assert await srv.get(1, 3, 1) == [1234]
    assert await srv.get(1, 10, 3) == [1, 2, 3]
    assert ep.stats.requests == 4  # two writes, two read-backs
    with pytest.raises(ValueError, match="16-bit"):
        await ep.write(1, 3, [70000])
    await ep.close()


async def test_modbus_write_that_does_not_stick_is_rejected(serve):
    async def clamp(fc, start, address, count, regs, set_values):
        if set_values is not None and address == 5:
            set_values[0] = min(set_values[0], 100)  # device clamps silently
        return None

    srv = await serve({1: (0, [0] * 10)}, action=clamp)
    ep = EndpointPool().get(tcp(srv.port))
    await ep.write(1, 5, [50])
    with pytest.raises(ModbusRejected, match=r"write 5=\[500\]: read back \[100\]") as info:
        await ep.write(1, 5, [500])
    assert info.value.exception_code is None
    await ep.close()


async def test_modbus_write_to_write_only_register_is_accepted_unverified(serve):
    written: list[list[int]] = []

    async def write_only(fc, start, address, count, regs, set_values):
        if set_values is not None:
            written.append(list(set_values))
        elif fc == 3 and address == 2:
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    srv = await serve({1: (0, [0] * 10)}, action=write_only)
    ep = EndpointPool().get(tcp(srv.port))
    await ep.write(1, 2, [77])
    assert written == [[77]]
    assert ep.stats.requests == 2 and ep.stats.errors == 1  # the refused read-back
    await ep.close()


async def test_modbus_inter_request_delay_paces_the_bus(serve):
    srv = await serve({1: (0, [1] * 10)})
    ep = EndpointPool().get(tcp(srv.port, inter_request_delay_s=0.05))
    t0 = time.monotonic()
    for _ in range(5):
        await ep.read(1, "holding", 0, 1)
    assert time.monotonic() - t0 >= 0.2
    await ep.close()


async def test_modbus_rtu_over_tcp(serve):
    srv = await serve({3: (0, [11, 22, 33])}, framer=FramerType.RTU)
    ep = EndpointPool().get(tcp(srv.port, transport="rtu-over-tcp"))
    assert ep.key == f"rtu+tcp://127.0.0.1:{srv.port}"
    assert await ep.read(3, "holding", 0, 3) == [11, 22, 33]
    await ep.write(3, 1, [99])
    assert await ep.read(3, "holding", 0, 3) == [11, 99, 33]
    await ep.close()


@pytest.fixture
async def pty_pair():
    pair = PtyPair().start()
    yield pair.path_a, pair.path_b
    pair.close()


async def test_modbus_rtu_over_serial_pty(pty_pair):
    server_port, client_port = pty_pair
    dev = SimDevice(id=7, simdata=[SimData(0, values=[5, 6, 7, 8], datatype=DataType.REGISTERS)])
    server = ModbusSerialServer(dev, port=server_port, framer=FramerType.RTU, baudrate=19200)
    await server.serve_forever(background=True)
    try:
        spec = EndpointSpec(
            transport="rtu",
            serial_port=client_port,
            baudrate=19200,
            timeout_s=0.5,
            inter_request_delay_s=0.005,
        )
        ep = EndpointPool().get(spec)
        assert ep.key == f"rtu://{client_port}"
        assert await ep.read(7, "holding", 0, 4) == [5, 6, 7, 8]
        await ep.write(7, 2, [70, 80])
        assert await ep.read(7, "holding", 0, 4) == [5, 6, 70, 80]
        with pytest.raises(ModbusRejected, match=r"unit 9: read holding 0\+1: exception 4"):
            await ep.read(9, "holding", 0, 1)  # pymodbus answers 4 for unknown units
        assert await ep.read(7, "holding", 1, 1) == [6]
    finally:
        await server.shutdown()
    with pytest.raises(DeviceTimeout, match="unit 7"):
        await ep.read(7, "holding", 0, 1)  # nobody on the bus any more
    await ep.close()
