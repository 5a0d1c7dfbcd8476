"""OCPP central system benchmark: N simulated chargers on loopback sending MeterValues.

    .venv/bin/python bench/bench_ocpp.py [--chargers 50] [--interval 10] [--seconds 60]
    .venv/bin/python bench/bench_ocpp.py --fast      # interval 1 s, 20 s: a 10x heavier load

The chargers (hil.chargepoint, half 1.6J, half 2.0.1, EVs charging) run in a child process,
so the CPU and memory figures are the central system only: websockets, ocpp routing and
schema checks, meter parsing, SiteState, SQLite bookkeeping (a real file in a temp dir).
CPU is process_time over the steady-state window divided by wall time (% of one core).
SetChargingProfile round trip: `OcppCharger.set_limit` to the Accepted answer (includes
the SQLite command row), sequentially over all chargers and then all at once, 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)


def _rss_kib() -> tuple[int, int]:
    fields = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def _sims(port: int, count: int, interval_s: float, seconds: float) -> None:
    from hems.core.clock import RealClock
    from hil.chargepoint import SimChargePoint, SimConfig
    from hil.ev import EvModel

    clock = RealClock()
    sims = [
        SimChargePoint(
            SimConfig(
                url=f"ws://127.0.0.1:{port}",
                identity=f"CP{i:03d}",
                version="1.6" if i % 2 else "2.0.1",
                password=f"bench-password-{i:04d}",
                meter_interval_s=interval_s,
                seed=i,
            ),
            clock,
            ev=EvModel(soc_pct=20, battery_kwh=75),
        )
        for i in range(count)
    ]
    tasks = [asyncio.create_task(s.run()) for s in sims]
    await asyncio.sleep(seconds)
    for s in sims:
        s.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def _bench(args: argparse.Namespace) -> None:
    import logging

    import structlog

    from hems.core.clock import RealClock
    from hems.core.state import SiteState
    from hems.devices.ocpp.config import ChargerConfig, OcppConfig
    from hems.devices.ocpp.server import OcppCentralSystem
    from hems.store.db import Database

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    n = args.chargers
    cfg = OcppConfig(
        enabled=True,
        host="127.0.0.1",
        meter_value_sample_interval_s=max(1, int(args.interval)),
        max_connects_per_window=1000,
        max_handshakes_per_address=10_000,  # every simulated charger is on 127.0.0.1
    ).model_copy(update={"port": 0})
    cfg = cfg.with_chargers(
        [
            ChargerConfig.model_validate(
                {
                    "id": f"cp{i:03d}",
                    "identity": f"CP{i:03d}",
                    "password": f"bench-password-{i:04d}",
                }
            )
            for i in range(n)
        ]
    )
    clock = RealClock()
    state = SiteState(clock)
    meter_count = 0

    def count(batch: list) -> None:
        nonlocal meter_count
        meter_count += 1

    state.add_listener(count)
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database.open(Path(tmp) / "bench.db")
        cs = OcppCentralSystem(cfg, state, clock, db)
        server = asyncio.create_task(cs.run())
        await cs.started.wait()
        rss_idle, _ = _rss_kib()
        total_s = args.seconds + 3 * args.interval + 60  # outlives the whole run
        child = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [
                sys.executable,
                __file__,
                "--child",
                str(cs.port),
                str(n),
                str(args.interval),
                str(total_s),
            ],
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        t0 = time.monotonic()
        chargers = list(cs.chargers.values())
        while not all(c.booted and c.transaction for c in chargers):
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"only {sum(c.booted for c in chargers)}/{n} booted in 30 s")
            await asyncio.sleep(0.05)
        boot_s = time.monotonic() - t0
        await asyncio.sleep(1)
        # Steady state: MeterValues only.
        cpu0, wall0, meter0 = time.process_time(), time.monotonic(), meter_count
        await asyncio.sleep(args.seconds)
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        meters = meter_count - meter0
        rss_steady, _ = _rss_kib()
        # SetChargingProfile round trips.
        seq: list[float] = []
        conc: list[float] = []
        for rnd in range(5):
            for c in chargers:
                t = time.perf_counter()
                await c.set_limit(8.0 + rnd, 3)
                seq.append(time.perf_counter() - t)

            async def one(c, amps: float) -> float:
                t = time.perf_counter()
                await c.set_limit(amps, 3)
                return time.perf_counter() - t

            conc += await asyncio.gather(*(one(c, 12.0 + rnd) for c in chargers))
        _, rss_peak = _rss_kib()
        await asyncio.sleep(1.5 * args.interval + 1)  # let the next MeterValues judge it
        followed = sum(1 for c in chargers if c.limit and c.limit.outcome is True)
        child.terminate()
        child.wait(10)
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        await db.close()

    ms = 1000.0
    print(
        f"OCPP central system, {n} chargers (half 1.6J, half 2.0.1), MeterValues every "
        f"{args.interval:g} s, steady window {wall_s:.0f} s, python {sys.version.split()[0]}"
    )
    print(f"{'metric':44} {'value':>12}")
    rows = [
        ("all chargers booted + transaction [s]", f"{boot_s:.2f}"),
        ("MeterValues handled [per s]", f"{meters / wall_s:.1f}"),
        ("CPU, steady state [% of one core]", f"{100 * cpu_s / wall_s:.1f}"),
        ("RSS idle (no chargers) [MiB]", f"{rss_idle / 1024:.1f}"),
        (f"RSS with {n} chargers [MiB]", f"{rss_steady / 1024:.1f}"),
        ("RSS peak [MiB]", f"{rss_peak / 1024:.1f}"),
        ("SetChargingProfile RTT, one at a time p50 [ms]", f"{statistics.median(seq) * ms:.1f}"),
        ("SetChargingProfile RTT, one at a time p95 [ms]", f"{_pct(seq, 0.95) * ms:.1f}"),
        (f"SetChargingProfile RTT, {n} at once p50 [ms]", f"{statistics.median(conc) * ms:.1f}"),
        (f"SetChargingProfile RTT, {n} at once p95 [ms]", f"{_pct(conc, 0.95) * ms:.1f}"),
        (f"SetChargingProfile RTT, {n} at once max [ms]", f"{max(conc) * ms:.1f}"),
        ("last limit confirmed by the next MeterValues", f"{followed}/{n}"),
    ]
    for name, value in rows:
        print(f"{name:44} {value:>12}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        port, count, interval, seconds = sys.argv[2:6]
        asyncio.run(_sims(int(port), int(count), float(interval), float(seconds)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="MeterValues period [s]")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state window [s]")
    parser.add_argument("--fast", action="store_true", help="interval 1 s, 20 s window")
    args = parser.parse_args()
    if args.fast:
        args.interval, args.seconds = 1.0, 20.0
    asyncio.run(_bench(args))


if __name__ == "__main__":
    main()
