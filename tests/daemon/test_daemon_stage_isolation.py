"""A stage that raises inside the real daemon is restarted while the control loop keeps
cycling against the HIL rig; the failure is shown in the web API's stage list and on the page."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from hems.planning.service import PlannerService
from hil.rig import HilRig
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import free_port, log_in, poll_json, wait_until, web_credentials
from tests.web.conftest import CHROMIUM_ARGS, chromium_path


async def test_a_failing_planner_comes_back_while_control_keeps_cycling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PlannerService.plan_once
    calls = 0

    async def failing_twice(self: PlannerService, reason: str) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"planner bug {calls}")
        return await real(self, reason)

    monkeypatch.setattr(PlannerService, "plan_once", failing_twice)
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    rig = HilRig(clock, fault_proxy=False)
    web_port = free_port()
    async with rig:
        data = demo_config(tmp_path, rig.sunspec_port, free_port(), web_port)
        data["ocpp"]["enabled"] = False
        data["devices"] = [d for d in data["devices"] if d["type"] != "ocpp"]
        cfg = validate(data)
        token = await web_credentials(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.started.wait(), 15)
            assert daemon.control is not None and daemon.planner is not None
            await wait_until(lambda: daemon.stage_health["planner"].failures >= 1, 20)
            cycles = daemon.control.status()["cycles"]
            await wait_until(lambda: daemon.planner.plans_made >= 1, 60, "planner came back")
            assert daemon.stage_health["planner"].failures == 2
            assert daemon.control.status()["cycles"] > cycles, "control kept cycling"
            assert not task.done()
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                stages = await poll_json(client, "/api/stages", lambda s: "failures" in s, 10)
            assert stages["failures"]["planner"]["last_error"] == "RuntimeError: planner bug 2"
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                health = (await client.get("/api/health")).json()
            assert health["stage_failures"]["planner"]["failures"] == 2
            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=chromium_path(), args=CHROMIUM_ARGS
                )
                try:
                    page = await browser.new_page()
                    await log_in(page, f"http://127.0.0.1:{web_port}")
                    banner = page.locator("#stage-failures p[data-stage='planner']")
                    await banner.wait_for(timeout=15_000)
                    assert "planner bug 2" in await banner.inner_text()
                finally:
                    await browser.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
