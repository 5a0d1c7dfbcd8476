"""Fixtures for the Modbus tests: real pymodbus servers and a fault-injecting relay."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from modbus_sim import FaultProxy, ModbusServer


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    started: list[ModbusServer] = []

    async def _serve(images: dict[int, Any], **kw: Any) -> ModbusServer:
        srv = await ModbusServer(images, **kw).start()
        started.append(srv)
        return srv

    yield _serve
    for srv in started:
        await srv.stop()


@pytest.fixture
async def fault_proxy() -> AsyncIterator[Callable[[int], Any]]:
    proxies: list[FaultProxy] = []

    async def _make(upstream_port: int) -> FaultProxy:
        p = await FaultProxy(upstream_port).start()
        proxies.append(p)
        return p

    yield _make
    for p in proxies:
        await p.stop()
