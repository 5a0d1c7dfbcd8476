"""Modbus engine benchmark: 30 simulated devices x ~40 registers polled every second.

    .venv/bin/python bench/bench_modbus.py [--seconds 15] [--devices 30]

The simulated devices run in a child process (pymodbus TCP servers on loopback), so the CPU
figures are the polling side only (engine + decoding), measured with process_time.

Scenarios
* raw-coalesced : one endpoint per device, 40 registers in 7 ranges, `read_ranges` (gap 8)
* raw-per-range : the same ranges, one request per range (what coalescing saves)
* gateway       : 30 devices as unit ids 1..10 behind 3 endpoints (RS-485 gateways), coalesced
* sunspec       : 30 SunSpec inverters (models 1, 103, 123): the full adapter, pysunspec2
                  decode, readings into SiteState
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# 40 registers of a typical device map, in 7 ranges with small holes between them.
RANGES = [(0, 8), (10, 6), (20, 4), (30, 10), (44, 4), (50, 4), (60, 4)]


def _sunspec_image() -> list[int]:
    from sunspec2 import device as ss

    out = [0x5375, 0x6E53]
    for mid, pts in (
        (1, {"Mn": "Bench", "Md": "Inv", "SN": "1"}),
        (103, {"W": 2500, "W_SF": 0, "WH": 10**6, "WH_SF": 0, "Hz": 5000, "Hz_SF": -2}),
        (123, {"WMaxLimPct": 100, "WMaxLimPct_SF": 0, "WMaxLim_Ena": 0}),
    ):
        m = ss.Model(model_id=mid)
        for k, v in pts.items():
            getattr(m, k).set_value(v)
        m.ID.set_value(mid)
        m.L.set_value(len(m.get_mb()) // 2 - 2)
        raw = m.get_mb()
        out += list(struct.unpack(f">{len(raw) // 2}H", raw))
    return [*out, 0xFFFF, 0]


async def _serve(n_devices: int) -> None:
    """Child process: serve every scenario's devices, print the ports, run until stdin ends."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def dev(unit: int, base: int, regs: list[int]) -> SimDevice:
        return SimDevice(id=unit, simdata=[SimData(base, values=regs, datatype=DataType.REGISTERS)])

    servers: list[ModbusTcpServer] = []

    async def start(devices: list[SimDevice]) -> int:
        srv = ModbusTcpServer(devices, address=("127.0.0.1", 0))
        await srv.serve_forever(background=True)
        servers.append(srv)
        return int(srv.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    plain = list(range(70))
    ports = {
        "raw": [await start([dev(1, 0, plain)]) for _ in range(n_devices)],
        "gateway": [
            await start([dev(u, 0, plain) for u in range(1, 11)])
            for _ in range((n_devices + 9) // 10)
        ],
        "sunspec": [await start([dev(1, 40000, _sunspec_image())]) for _ in range(n_devices)],
    }
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for srv in servers:
        await srv.shutdown()


class Poller:
    def __init__(self, poll, interval_s: float = 1.0) -> None:
        self.poll = poll
        self.interval_s = interval_s
        self.starts: list[float] = []
        self.latencies: list[float] = []
        self.errors = 0

    async def run(self, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while loop.time() < stop_at:
            t0 = loop.time()
            self.starts.append(t0)
            try:
                await self.poll()
            except Exception:
                self.errors += 1
            self.latencies.append(loop.time() - t0)
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))


async def _measure(name: str, pollers: list[Poller], endpoints: list, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    # Warm up (connect, discover) outside the measurement.
    await asyncio.gather(*(p.poll() for p in pollers))
    for p in pollers:
        p.starts.clear()
        p.latencies.clear()
    requests0 = sum(e.stats.requests for e in endpoints)
    cpu0, wall0 = time.process_time(), time.monotonic()
    stop_at = loop.time() + seconds

    # Spread the pollers over the second, as a real daemon's jittered schedule would.
    async def staggered(i: int, p: Poller) -> None:
        await asyncio.sleep(i / len(pollers))
        await p.run(stop_at)

    await asyncio.gather(*(staggered(i, p) for i, p in enumerate(pollers)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    polls = sum(len(p.starts) for p in pollers)
    requests = sum(e.stats.requests for e in endpoints) - requests0
    intervals = [b - a for p in pollers for a, b in zip(p.starts, p.starts[1:], strict=False)]
    lat = sorted(x for p in pollers for x in p.latencies)
    return {
        "scenario": name,
        "devices": len(pollers),
        "polls": polls,
        "errors": sum(p.errors for p in pollers),
        "cadence_hz": 1.0 / statistics.fmean(intervals) if intervals else float("nan"),
        "interval_p95_ms": 1000 * _pct(sorted(intervals), 0.95),
        "latency_p50_ms": 1000 * _pct(lat, 0.5),
        "latency_p95_ms": 1000 * _pct(lat, 0.95),
        "req_per_poll": requests / max(1, polls),
        "cpu_ms_per_s": 1000 * cpu / wall,
    }


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _bench(ports: dict, seconds: float) -> list[dict]:
    from hems.core.clock import RealClock
    from hems.core.state import SiteState
    from hems.devices.modbus.config import SunSpecDeviceConfig
    from hems.devices.modbus.engine import EndpointPool, EndpointSpec
    from hems.devices.modbus.sunspec_device import sunspec_device

    results = []

    # raw-coalesced and raw-per-range
    for name in ("raw-coalesced", "raw-per-range"):
        pool = EndpointPool()
        eps = [pool.get(EndpointSpec(host="127.0.0.1", port=p, timeout_s=1)) for p in ports["raw"]]

        def make(ep, coalesced=name == "raw-coalesced"):
            async def poll() -> None:
                if coalesced:
                    await ep.read_ranges(1, "holding", RANGES)
                else:
                    for a, c in RANGES:
                        await ep.read(1, "holding", a, c)

            return poll

        results.append(await _measure(name, [Poller(make(e)) for e in eps], eps, seconds))
        await pool.close()

    # gateway: 10 units per endpoint
    pool = EndpointPool()
    eps = [pool.get(EndpointSpec(host="127.0.0.1", port=p, timeout_s=1)) for p in ports["gateway"]]
    pollers = []
    for ep in eps:
        for unit in range(1, 11):

            async def poll(ep=ep, unit=unit) -> None:
                await ep.read_ranges(unit, "holding", RANGES)

            pollers.append(Poller(poll))
    results.append(await _measure("gateway", pollers[: len(ports["raw"])], eps, seconds))
    await pool.close()

    # sunspec: full adapters into SiteState
    clock = RealClock()
    state = SiteState(clock)
    pool = EndpointPool()
    devs = [
        sunspec_device(
            SunSpecDeviceConfig(type="sunspec", id=f"pv{i}", role="pv", host="127.0.0.1", port=p),
            pool,
            state,
            clock,
        )
        for i, p in enumerate(ports["sunspec"])
    ]

    def adapter_poll(d):
        async def poll() -> None:
            if not await d.poll():
                raise RuntimeError("poll failed")

        return poll

    results.append(
        await _measure(
            "sunspec",
            [Poller(adapter_poll(d)) for d in devs],
            list(pool.endpoints.values()),
            seconds,
        )
    )
    assert all(state.fresh_value(d.device_id, "power_w") == 2500 for d in devs)
    await pool.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.devices))
        return 0
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--devices", str(args.devices)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        import logging

        from hems.logs import configure

        configure(level="warning", fmt="console")
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        results = asyncio.run(_bench(ports, args.seconds))
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=10)
    cols = [
        ("scenario", "{:<14}"),
        ("devices", "{:>7}"),
        ("polls", "{:>6}"),
        ("errors", "{:>6}"),
        ("cadence_hz", "{:>10.3f}"),
        ("interval_p95_ms", "{:>15.1f}"),
        ("latency_p50_ms", "{:>14.2f}"),
        ("latency_p95_ms", "{:>14.2f}"),
        ("req_per_poll", "{:>12.2f}"),
        ("cpu_ms_per_s", "{:>12.1f}"),
    ]
    print(f"# {args.devices} devices, polled every 1 s for {args.seconds:g} s over loopback")
    print(" ".join(f"{c:>{len(f.format(0)) if c != 'scenario' else 14}}" for c, f in cols))
    for r in results:
        print(" ".join(f.format(r[c]) for c, f in cols))
    print(
        "# cpu_ms_per_s: CPU time of the polling process per wall second "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
