"""Issue 14 benchmark: GET /api/v1/site on the real daemon (HIL rig, demo config, every
stage on).

* requests per second, from a client in a separate process (aiohttp, keep-alive, a few
  requests in flight, an API token), so the client's CPU is not the daemon's;
* the daemon's CPU per request under that load: the daemon process's CPU time (every
  thread: the event loop and SQLite's, which looks the token up) during the run, less the
  same length of time idle, divided by the requests (a mean: HTTP parsing, the guard, the
  handler, JSON);
* the CPU time of the v1 handler alone (p50 / p95 / max): the endpoint called on the
  daemon's loop with a mocked request, timed with `time.thread_time` (it never awaits).

Run: .venv/bin/python bench/bench_api.py [--seconds 5] [--calls 500]
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

from aiohttp.test_utils import make_mocked_request  # noqa: E402

from bench.bench_metrics import IN_FLIGHT, hammer, pct  # noqa: E402
from hems.app import Daemon  # noqa: E402
from hems.config import validate  # noqa: E402
from hems.core.clock import AcceleratedClock  # noqa: E402
from hems.web.api import ROUTES  # noqa: E402
from tests.daemon.test_daemon_full_stack import demo_config  # noqa: E402
from tests.testlib import poll_json, rig_with_car, running, web_credentials  # noqa: E402

PATH = "/api/v1/site"


async def main(seconds: float, calls: int) -> None:
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1) as pool:
        async with rig:
            data = demo_config(Path(tmp), rig.sunspec_port, ocpp_port, web_port)
            data["logging"] = {"level": "error"}
            cfg = validate(data)
            token = await web_credentials(cfg.storage.path)
            daemon = Daemon(cfg, clock)
            async with running(daemon):
                await asyncio.wait_for(daemon.started.wait(), 30)
                base = f"http://127.0.0.1:{web_port}"
                import httpx

                async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as c:
                    await poll_json(c, f"{base}/api/v1/plan", lambda b: b["plan"] is not None, 60)
                    sample = await c.get(base + PATH)
                loop = asyncio.get_running_loop()
                # Idle first: what the daemon spends anyway (control, polling, the planner).
                cpu0 = time.process_time()
                await asyncio.sleep(seconds)
                idle_cpu_s = time.process_time() - cpu0
                cpu0 = time.process_time()
                n, codes = await loop.run_in_executor(pool, hammer, base + PATH, token, seconds)
                busy_cpu_s = time.process_time() - cpu0
                assert codes == {200}, codes
                assert daemon.web is not None
                op = next(o for o in ROUTES if o.path == "/site")
                handler = daemon.web._v1._endpoint(op)
                request = make_mocked_request("GET", PATH)
                cpu_ms: list[float] = []
                for _ in range(calls):
                    t0 = time.thread_time()
                    await handler(request)
                    cpu_ms.append((time.thread_time() - t0) * 1000)
    per_request_ms = (busy_cpu_s - idle_cpu_s) / n * 1000
    print(
        f"hems {PATH} (demo config, every stage on), {IN_FLIGHT} in flight, {seconds:.0f} s; "
        f"the answer is {len(sample.content)} bytes with {len(sample.json()['readings'])} "
        f"readings"
    )
    print(f"| {PATH} | {n / seconds:.0f} requests/s |")
    print(f"| daemon CPU per request, all threads, less idle (mean) | {per_request_ms:.2f} ms |")
    print(
        f"| CPU time of the v1 handler (p50 / p95 / max, {calls} calls) | "
        f"{statistics.median(cpu_ms):.2f} / {pct(cpu_ms, 0.95):.2f} / {max(cpu_ms):.2f} ms |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.calls))
