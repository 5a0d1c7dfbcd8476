"""HIL rig throughput: physics steps per second and Modbus reads per second (direct / proxied).

Run: .venv/bin/python bench/bench_hil.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus.client import AsyncModbusTcpClient

from hems.core.clock import ManualClock
from hil.home import Home, HomeConfig
from hil.rig import HilRig

START = datetime(2026, 6, 21, tzinfo=UTC)


def bench_physics(dt_s: float) -> tuple[int, float]:
    home = Home(HomeConfig(seed=1), start=START)
    steps = int(86400 / dt_s)
    t = START
    t0 = time.perf_counter()
    for _ in range(steps):
        t += timedelta(seconds=dt_s)
        home.step(t, dt_s)
    return steps, time.perf_counter() - t0


async def bench_modbus(port: int, n: int) -> float:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await c.connect()
    t0 = time.perf_counter()
    for i in range(n):
        rr = await c.read_holding_registers(40070, count=52, device_id=1 + i % 3)
        assert not rr.isError()
    elapsed = time.perf_counter() - t0
    c.close()
    return elapsed


async def main() -> None:
    rows: list[tuple[str, str]] = []
    for dt in (1.0, 30.0):
        steps, s = bench_physics(dt)
        rows.append(
            (f"physics: 1 simulated day at dt={dt:g} s", f"{s:.2f} s ({steps / s:,.0f} steps/s)")
        )
    async with HilRig(ManualClock(START)) as rig:
        n = 2000
        for name, port in (("direct", rig.sunspec.port), ("via fault proxy", rig.sunspec_port)):
            assert port is not None
            s = await bench_modbus(port, n)
            rows.append(
                (
                    f"modbus {name}: {n} reads x 52 regs",
                    f"{n / s:,.0f} req/s, {1000 * s / n:.2f} ms each",
                )
            )
        t0 = time.perf_counter()
        for _ in range(1000):
            rig.sunspec.refresh()
        rows.append(("sunspec refresh, per call (3 units)", f"{(time.perf_counter() - t0):.3f} ms"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  result")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    asyncio.run(main())
