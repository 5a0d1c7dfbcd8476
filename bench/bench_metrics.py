"""Issue 14 benchmark: /metrics and /api/v1/health on the real daemon (HIL rig, demo config,
every stage on).

* requests per second for each, from a client in a separate process (keep-alive, a few
  requests in flight), so the client's CPU is not the daemon's;
* the CPU time of one /metrics scrape in the daemon (p50 / p95 / max): the handler timed
  with `time.thread_time` on the daemon's event loop (no uplink in the demo config, so the
  scrape never awaits and nothing else runs inside the measurement).

Run: .venv/bin/python bench/bench_metrics.py [--seconds 5] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from hems.app import Daemon  # noqa: E402
from hems.app.observability import metrics_sources  # noqa: E402
from hems.config import validate  # noqa: E402
from hems.core.clock import AcceleratedClock  # noqa: E402
from hems.web.metrics import metrics_handler  # noqa: E402
from hil.chargepoint import SimChargePoint, SimConfig  # noqa: E402
from hil.ev import EvModel  # noqa: E402
from hil.rig import HilRig  # noqa: E402
from tests.daemon.test_daemon_full_stack import demo_config  # noqa: E402
from tests.testlib import free_port, running, web_credentials  # noqa: E402

IN_FLIGHT = 4


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def hammer(url: str, token: str, seconds: float) -> tuple[int, set[int]]:
    """In a child process: GET `url` for `seconds`; the count and the status codes seen."""

    async def run() -> tuple[int, set[int]]:
        done, codes = 0, set()
        headers = {"Authorization": f"Bearer {token}"}
        # aiohttp's client: httpx's would be the bottleneck at these rates.
        async with aiohttp.ClientSession(headers=headers) as session:
            deadline = time.monotonic() + seconds

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    async with session.get(url) as r:
                        await r.read()
                        codes.add(r.status)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return done, codes

    return asyncio.run(run())


async def main(seconds: float, scrapes: int) -> None:
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock, fault_proxy=False)
    ocpp_port, web_port = free_port(), free_port()
    car = SimChargePoint(
        SimConfig(url=f"ws://127.0.0.1:{ocpp_port}", identity="DEMO-CP1", phases=1),
        clock,
        ev=EvModel(battery_kwh=60, soc_pct=30, max_ac_power_w=7400, phases=1),
        on_power=lambda w: rig.home.set_external_load_w("wallbox", w),
    )
    rig.add_service("car", lambda _: car.run())
    rps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1) as pool:
        async with rig:
            data = demo_config(Path(tmp), rig.sunspec_port, ocpp_port, web_port)
            data["logging"] = {"level": "error"}
            cfg = validate(data)
            token = await web_credentials(cfg.storage.path)
            daemon = Daemon(cfg, clock)
            async with running(daemon):
                await asyncio.wait_for(daemon.started.wait(), 15)
                await asyncio.sleep(5)  # a plan, a connected charger, control cycles
                base = f"http://127.0.0.1:{web_port}"
                async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as c:
                    sample = await c.get(f"{base}/metrics")
                    health = await c.get(f"{base}/api/v1/health")
                loop = asyncio.get_running_loop()
                for path in ("/metrics", "/api/v1/health"):
                    n, codes = await loop.run_in_executor(pool, hammer, base + path, token, seconds)
                    rps[path] = n / seconds
                    assert codes <= {200, 503}, (path, codes)
                handler = metrics_handler(daemon.state, metrics_sources(daemon))
                request = make_mocked_request("GET", "/metrics")
                cpu_ms: list[float] = []
                for _ in range(scrapes):
                    t0 = time.thread_time()
                    await handler(request)
                    cpu_ms.append((time.thread_time() - t0) * 1000)
    print(
        f"hems /metrics and /api/v1/health (demo config, every stage on), {IN_FLIGHT} in flight"
        f", {seconds:.0f} s each; /metrics is {len(sample.content)} bytes, "
        f"{sample.text.count(chr(10) + 'hems_')} samples; health answered {health.status_code}"
    )
    print(f"| /metrics | {rps['/metrics']:.0f} requests/s |")
    print(f"| /api/v1/health | {rps['/api/v1/health']:.0f} requests/s |")
    print(
        f"| CPU time of one /metrics scrape (p50 / p95 / max, {scrapes} scrapes) | "
        f"{statistics.median(cpu_ms):.2f} / {pct(cpu_ms, 0.95):.2f} / {max(cpu_ms):.2f} ms |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.scrapes))
