"""Benchmark of the profile decoder, the P1 parser and a profile poll over loopback TCP.

Run: .venv/bin/python bench/bench_meters.py
Prints a small table: per-operation time and CPU, which bounds how many devices a Pi can poll.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hems.core.clock import ManualClock
from hems.core.state import SiteState
from hems.devices.meters.glow import parse_glow
from hems.devices.meters.p1 import parse_telegram
from hems.devices.modbus.engine import EndpointPool
from hems.devices.modbus.profile import shipped_profiles
from hems.devices.modbus.profile_config import ProfileDeviceConfig
from hems.devices.modbus.profile_decode import decode_all
from hems.devices.modbus.profile_device import profile_device
from hil.p1_server import P1Values, build_telegram
from hil.profile_server import ProfileServer, demo_values, register_image


def timed(fn, n: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def poll_all(rounds: int) -> tuple[float, float, int, int]:
    clock = ManualClock(datetime(2026, 6, 1, tzinfo=UTC))
    state = SiteState(clock)
    pool = EndpointPool()
    servers, devices = [], []
    for family, profile in shipped_profiles().items():
        server = ProfileServer(profile)
        await server.start()
        servers.append(server)
        for role in sorted(profile.roles()):
            cfg = ProfileDeviceConfig.model_validate(
                {
                    "type": "modbus-profile",
                    "id": f"{family}-{role}",
                    "role": role,
                    "profile": family,
                    "host": "127.0.0.1",
                    "port": server.port,
                    "unit_id": server.unit_id,
                }
            )
            devices.append(profile_device(cfg, pool, state, clock))
    for d in devices:  # first poll learns which blocks to split
        await d.poll()
    before = sum(s.requests for s in servers)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        ok = await asyncio.gather(*(d.poll() for d in devices))
        assert all(ok)
    wall_ms = (time.perf_counter() - wall) / rounds * 1e3
    cpu_ms = (time.process_time() - cpu) / rounds * 1e3
    requests = (sum(s.requests for s in servers) - before) // rounds
    await pool.close()
    for s in servers:
        await s.stop()
    return wall_ms, cpu_ms, len(devices), requests


def main() -> None:
    profiles = shipped_profiles()
    images = {f: register_image(p, demo_values(p)) for f, p in profiles.items()}
    telegram = build_telegram(P1Values(datetime(2026, 6, 1, tzinfo=UTC), 850.0, 1e6, 2e6, 3e5, 4e5))
    glow = Path(__file__).resolve().parents[2] / "shared/testdata/meters/glow/electricitymeter.json"
    rows = [
        (
            "decode all registers of all 13 profiles",
            *timed(lambda: [decode_all(p, images[f]) for f, p in profiles.items()], 200),
        ),
        ("parse + CRC-check one DSMR5 telegram", *timed(lambda: parse_telegram(telegram), 500)),
    ]
    if glow.exists():
        payload = glow.read_bytes()
        rows.append(("parse one Glow payload", *timed(lambda: parse_glow(payload), 5000)))
    wall_ms, cpu_ms, n, req = asyncio.run(poll_all(20))
    print(f"{'operation':<52} {'wall us':>10} {'cpu us':>10}")
    for name, wall, cpu in rows:
        print(f"{name:<52} {wall:>10.1f} {cpu:>10.1f}")
    print(
        f"{f'poll {n} profile devices (13 servers), loopback TCP':<52} "
        f"{wall_ms * 1e3:>10.1f} {cpu_ms * 1e3:>10.1f}"
    )
    print(
        f"requests per poll round (coalesced): {req} for {n} devices;"
        " servers run in the same process, so the poll CPU includes them"
    )


if __name__ == "__main__":
    main()
