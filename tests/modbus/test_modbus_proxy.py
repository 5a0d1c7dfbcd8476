"""The Modbus TCP proxy: local clients share hems' one connection to the device."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from modbus_sim import free_port
from pymodbus.client import AsyncModbusTcpClient

from hems.core.clock import ManualClock
from hems.core.state import SiteState
from hems.devices.modbus.config import ProxyConfig, SunSpecDeviceConfig
from hems.devices.modbus.engine import EndpointPool, EndpointSpec
from hems.devices.modbus.proxy import ModbusProxy
from hems.devices.modbus.service import ModbusService
from hems.errors import ConfigError

FAST = {"timeout_s": 0.3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2}


async def client(port: int) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await c.connect()
    return c


async def test_modbus_proxy_many_clients_one_upstream_connection(serve, fault_proxy):
    srv = await serve({1: (0, list(range(100))), 2: (0, [7] * 10)})
    relay = await fault_proxy(srv.port)  # counts upstream connections
    ep = EndpointPool().get(EndpointSpec(host="127.0.0.1", port=relay.port, **FAST))
    proxy = ModbusProxy(ep, ProxyConfig(listen_port=free_port()))
    await proxy.start()
    clients = [await client(proxy.port) for _ in range(3)]
    try:
        replies = await asyncio.gather(
            *(c.read_holding_registers(10 * i, count=5, device_id=1) for i, c in enumerate(clients))
        )
        for i, rr in enumerate(replies):
            assert rr.registers == list(range(10 * i, 10 * i + 5))
        rr = await clients[0].read_input_registers(0, count=2, device_id=2)
        assert rr.registers == [7, 7]
        assert relay.connections == 1
        # Exception codes from the device pass through.
        rr = await clients[1].read_holding_registers(500, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        # Writes are refused unless allowed.
        rr = await clients[2].write_register(3, 99, device_id=1)
        assert rr.isError() and rr.exception_code == 1
        assert await srv.get(1, 3, 1) == [3]
        # Device silent: gateway target failed to respond (11).
        relay.swallow = True
        rr = await clients[0].read_holding_registers(0, count=1, device_id=1)
        assert rr.isError() and rr.exception_code == 11
    finally:
        for c in clients:
            c.close()
        await proxy.stop()
        await ep.close()


async def test_modbus_proxy_writes_when_allowed_and_down_endpoint_is_code_10(serve):
    srv = await serve({1: (0, [0] * 10)})
    ep = EndpointPool().get(EndpointSpec(host="127.0.0.1", port=srv.port, **FAST))
    proxy = ModbusProxy(ep, ProxyConfig(listen_port=free_port(), allow_writes=True))
    await proxy.start()
    c = await client(proxy.port)
    try:
        assert not (await c.write_register(3, 99, device_id=1)).isError()
        assert not (await c.write_registers(5, [1, 2], device_id=1)).isError()
        assert await srv.get(1, 3, 4) == [99, 0, 1, 2]
        await srv.stop()
        ep._client.close()  # the device went away
        codes = set()
        for _ in range(3):
            rr = await c.read_holding_registers(0, count=1, device_id=1)
            codes.add(rr.exception_code)
        assert 10 in codes
    finally:
        c.close()
        await proxy.stop()
        await ep.close()


async def test_modbus_service_runs_one_proxy_per_endpoint(serve):
    srv = await serve({1: (0, [0] * 10)})
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    listen = ProxyConfig(listen_port=free_port())
    kw = {"type": "sunspec", "host": "127.0.0.1", "port": srv.port, **FAST}
    a = SunSpecDeviceConfig(id="a", role="grid", unit_id=1, proxy=listen, **kw)
    b = SunSpecDeviceConfig(id="b", role="pv", unit_id=2, proxy=listen, **kw)
    service = ModbusService([a, b], SiteState(clock), clock)
    assert list(service.proxies) == [f"tcp://127.0.0.1:{srv.port}"]
    other = SunSpecDeviceConfig(
        id="c", role="pv", unit_id=3, proxy=ProxyConfig(listen_port=free_port()), **kw
    )
    with pytest.raises(ConfigError, match=r"devices\[c\].proxy: differs"):
        ModbusService([a, other], SiteState(clock), clock)
