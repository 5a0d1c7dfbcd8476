"""Issue 12 benchmark: the owner's page on the real daemon (HIL rig, demo config, every
stage on), in headless Chromium under the real CSP.

* page weight: bytes of the first load (the page, its CSS and script), as sent (gzip) and
  uncompressed;
* time to first render: first-contentful-paint of `/` after login, over --loads reloads
  (p50 / p95 / max), and the server's time to render `/` and one fragment (p50 / p95 / max);
* the process CPU time spent while each of those server requests was in flight (daemon,
  HIL rig and client share the process and its event loop): unlike the wall-clock times it
  hardly moves with the machine's load, so it is the figure to compare across runs on a
  shared machine; the 1-minute load average before and after the run is printed beside it;
* the daemon's RSS with the web page served is in bench_daemon.py --full (a separate
  process); this bench runs the daemon in-process with the browser driver beside it.

Run: .venv/bin/python bench/bench_web.py [--loads 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402

from hems.app import Daemon  # noqa: E402
from hems.config import validate  # noqa: E402
from hems.core.clock import AcceleratedClock  # noqa: E402
from hil.chargepoint import SimChargePoint, SimConfig  # noqa: E402
from hil.ev import EvModel  # noqa: E402
from hil.rig import HilRig  # noqa: E402
from tests.daemon.test_daemon_full_stack import demo_config  # noqa: E402
from tests.testlib import free_port, log_in, running, web_credentials  # noqa: E402
from tests.web.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(loads: int) -> None:
    load_before = os.getloadavg()[0]
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))
    rig = HilRig(clock, fault_proxy=False)
    ocpp_port, web_port = free_port(), free_port()
    car = SimChargePoint(
        SimConfig(url=f"ws://127.0.0.1:{ocpp_port}", identity="DEMO-CP1", phases=1),
        clock,
        ev=EvModel(battery_kwh=60, soc_pct=30, max_ac_power_w=7400, phases=1),
        on_power=lambda w: rig.home.set_external_load_w("wallbox", w),
    )
    rig.add_service("car", lambda _: car.run())
    with tempfile.TemporaryDirectory() as tmp:
        async with rig:
            data = demo_config(Path(tmp), rig.sunspec_port, ocpp_port, web_port)
            data["logging"] = {"level": "error"}
            cfg = validate(data)
            token = await web_credentials(cfg.storage.path)
            daemon = Daemon(cfg, clock)
            async with running(daemon), async_playwright() as p:
                await asyncio.wait_for(daemon.started.wait(), 15)
                await asyncio.sleep(5)  # a plan and some history on the page
                base = f"http://127.0.0.1:{web_port}"
                browser = await p.chromium.launch(
                    executable_path=chromium_path(), args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                await log_in(page, base)
                fcp: list[float] = []
                for _ in range(loads):
                    await page.goto(f"{base}/")
                    await page.wait_for_selector("#frag-live svg")
                    paint = await page.evaluate(
                        "() => performance.getEntriesByName('first-contentful-paint')"
                        ".map(e => e.startTime)"
                    )
                    if paint:
                        fcp.append(float(paint[0]))
                await browser.close()
                headers = {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(base_url=base, headers=headers) as client:
                    raw = gz = 0
                    codings: set[str] = set()
                    for path in ("/", "/static/app.css", "/static/app.js"):
                        r = await client.get(path)  # httpx asks for gzip, as browsers do
                        assert r.headers.get("Content-Encoding") in ("gzip", "deflate"), (
                            path,
                            r.headers.get("Content-Encoding"),
                        )
                        codings.add(str(r.headers.get("Content-Encoding")))
                        raw += len(r.content)
                        gz += r.num_bytes_downloaded
                    server_ms: dict[str, list[float]] = {"/": [], "/fragment/live": []}
                    cpu_ms: dict[str, list[float]] = {"/": [], "/fragment/live": []}
                    for path, samples in server_ms.items():
                        for _ in range(loads):
                            c0, t0 = time.process_time(), time.perf_counter()
                            r = await client.get(path)
                            samples.append((time.perf_counter() - t0) * 1000)
                            cpu_ms[path].append((time.process_time() - c0) * 1000)
                            assert r.status_code == 200, r.status_code
    print(f"hems web page (demo config, every stage on), {loads} loads at 390x844")
    print(f"| first load: page + CSS + script | {raw / 1024:.1f} KiB, {gz / 1024:.1f} KiB as "
          f"sent ({'/'.join(sorted(codings))}) |")  # fmt: skip
    print(f"| first contentful paint (p50 / p95 / max) | {statistics.median(fcp):.0f} / "
          f"{pct(fcp, 0.95):.0f} / {max(fcp):.0f} ms |")  # fmt: skip
    for path, samples in server_ms.items():
        print(f"| server time for {path} (p50 / p95 / max) | {statistics.median(samples):.1f} / "
              f"{pct(samples, 0.95):.1f} / {max(samples):.1f} ms |")  # fmt: skip
    for path, samples in cpu_ms.items():
        print(f"| process CPU during {path} (p50 / p95 / max) | {statistics.median(samples):.1f} / "
              f"{pct(samples, 0.95):.1f} / {max(samples):.1f} ms |")  # fmt: skip
    print(f"| 1-minute load average before / after ({os.cpu_count()} cores) | "
          f"{load_before:.1f} / {os.getloadavg()[0]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=20)
    asyncio.run(main(parser.parse_args().loads))
