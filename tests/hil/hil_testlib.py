"""Helpers for the HIL tests: read a SunSpec map with a plain pymodbus client."""

from __future__ import annotations

import struct

from pymodbus.client import AsyncModbusTcpClient
from sunspec2 import device as ss


async def read_regs(c: AsyncModbusTcpClient, address: int, count: int, unit: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        n = min(125, count - len(out))
        rr = await c.read_holding_registers(address + len(out), count=n, device_id=unit)
        assert not rr.isError(), f"read {address + len(out)} x{n} unit {unit}: {rr}"
        out += rr.registers
    return out


async def read_sunspec(
    c: AsyncModbusTcpClient, unit: int, base: int = 40000
) -> dict[int, tuple[int, ss.Model]]:
    """Walk the model chain like a SunSpec client: {model id: (address of ID, decoded model)}."""
    assert await read_regs(c, base, 2, unit) == [0x5375, 0x6E53]
    models: dict[int, tuple[int, ss.Model]] = {}
    addr = base + 2
    while True:
        mid, length = await read_regs(c, addr, 2, unit)
        if mid == 0xFFFF:
            assert length == 0
            return models
        regs = await read_regs(c, addr, length + 2, unit)
        models[mid] = (addr, ss.Model(model_id=mid, data=struct.pack(f">{len(regs)}H", *regs)))
        addr += length + 2


def cval(model: ss.Model, point: str) -> float:
    """Point value with its scale factor applied."""
    v = model.points[point].cvalue
    assert v is not None, f"{point} not implemented"
    return float(v)
