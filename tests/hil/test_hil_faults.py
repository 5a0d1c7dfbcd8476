"""Fault injection: each fault class as a plain pymodbus client sees it."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from hil.faults import ExceptionRule, FaultProxy
from hil.rig import HilRig


@pytest.fixture
def proxy(rig: HilRig) -> FaultProxy:
    assert rig.sunspec_faults is not None
    return rig.sunspec_faults


def fresh_client(rig: HilRig, timeout_s: float = 0.5) -> AsyncModbusTcpClient:
    return AsyncModbusTcpClient(
        "127.0.0.1", port=rig.sunspec_port, timeout=timeout_s, retries=0, reconnect_delay=0.05
    )


async def read_ok(c: AsyncModbusTcpClient, unit: int = 3) -> bool:
    """One read of the SunS marker: True if answered correctly, False on any failure."""
    try:
        rr = await c.read_holding_registers(40000, count=2, device_id=unit)
    except ModbusException:
        return False
    return not rr.isError() and rr.registers == [0x5375, 0x6E53]


async def test_hil_fault_latency(rig: HilRig, proxy: FaultProxy) -> None:
    c = fresh_client(rig, timeout_s=2.0)
    await c.connect()
    try:
        t0 = time.perf_counter()
        assert await read_ok(c)
        fast_s = time.perf_counter() - t0
        proxy.faults.latency_s = 0.3
        t0 = time.perf_counter()
        assert await read_ok(c)
        slow_s = time.perf_counter() - t0
    finally:
        c.close()
    assert slow_s >= 0.3 > fast_s


async def test_hil_fault_drop_every_n_requests(rig: HilRig, proxy: FaultProxy) -> None:
    proxy.faults.drop_every_n = 3
    c = fresh_client(rig)
    await c.connect()
    try:
        results = []
        for _ in range(6):
            results.append(await read_ok(c))
            if not c.connected:  # the client reconnects in the background
                for _ in range(50):
                    await asyncio.sleep(0.02)
                    if c.connected:
                        break
    finally:
        c.close()
    assert results == [True, True, False, True, True, False]
    assert proxy.stats.dropped == 2
    assert proxy.stats.connections >= 3  # it came back after each drop


async def test_hil_fault_exception_replies_for_chosen_addresses(
    rig: HilRig, proxy: FaultProxy, client: AsyncModbusTcpClient
) -> None:
    soc = rig.sunspec.battery.address_of(124, "ChaState")
    proxy.faults.exceptions.append(ExceptionRule(soc, soc + 1, code=4, unit_id=2))
    rr = await client.read_holding_registers(soc - 2, count=4, device_id=2)
    assert rr.isError() and rr.exception_code == 4
    rr = await client.read_holding_registers(soc, count=1, device_id=3)  # other unit: fine
    assert not rr.isError()
    rr = await client.read_holding_registers(soc + 1, count=2, device_id=2)  # other address
    assert not rr.isError()
    proxy.clear()
    rr = await client.read_holding_registers(soc, count=1, device_id=2)
    assert not rr.isError()


async def test_hil_fault_garbage_frames(rig: HilRig, proxy: FaultProxy) -> None:
    proxy.faults.garbage_every_n = 2
    c = fresh_client(rig)
    await c.connect()
    try:
        assert await read_ok(c)
        assert not await read_ok(c)  # random bytes: no valid answer
    finally:
        c.close()
    assert proxy.stats.garbage == 1
    proxy.clear()
    c = fresh_client(rig)
    await c.connect()
    try:
        assert await read_ok(c)  # a new connection is clean again
    finally:
        c.close()


async def test_hil_fault_short_frames(rig: HilRig, proxy: FaultProxy) -> None:
    proxy.faults.short_every_n = 2
    c = fresh_client(rig)
    await c.connect()
    try:
        assert await read_ok(c)
        assert not await read_ok(c)  # byte count promises more than the frame carries
        assert proxy.stats.short == 1
        assert await read_ok(c)  # framing stayed aligned: the same connection recovers
    finally:
        c.close()


async def test_hil_fault_device_disappears_and_returns(rig: HilRig, proxy: FaultProxy) -> None:
    c = fresh_client(rig)
    await c.connect()
    try:
        assert await read_ok(c)
        await proxy.go_offline("refuse")
        assert not await read_ok(c)
        c2 = fresh_client(rig)
        assert not await c2.connect()  # connection refused while gone
        c2.close()
        await proxy.come_back()
    finally:
        c.close()
    c = fresh_client(rig)
    try:
        assert await c.connect()
        assert await read_ok(c)
    finally:
        c.close()


async def test_hil_fault_device_hangs_silently_then_answers(rig: HilRig, proxy: FaultProxy) -> None:
    c = fresh_client(rig, timeout_s=0.3)
    await c.connect()
    try:
        await proxy.go_offline("silent")
        assert not await read_ok(c)  # no answer: timeout
        assert proxy.stats.unanswered >= 1
        await proxy.come_back()
        c2 = fresh_client(rig)
        await c2.connect()
        try:
            assert await read_ok(c2)
        finally:
            c2.close()
    finally:
        c.close()


async def test_hil_fault_one_unit_silent_others_answer(rig: HilRig, proxy: FaultProxy) -> None:
    proxy.faults.silent_units = {2}
    c = fresh_client(rig, timeout_s=0.3)
    await c.connect()
    try:
        assert not await read_ok(c, unit=2)
    finally:
        c.close()
    c = fresh_client(rig, timeout_s=0.3)
    await c.connect()
    try:
        assert await read_ok(c, unit=3)
        proxy.faults.silent_units.clear()
        assert await read_ok(c, unit=2)
    finally:
        c.close()


async def test_hil_fault_proxy_rejects_bad_mode(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="go_offline mode"):
        await proxy.go_offline("exploded")  # type: ignore[arg-type]
