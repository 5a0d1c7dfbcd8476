"""The owner's controls on the real daemon (HIL rig), from the page under its real CSP: a
charging mode per charger, an EV target as a SoC, a battery held in one of its own modes
until an expiry, and the money section."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
from playwright.async_api import async_playwright

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import log_in, rig_with_car, running, wait_until, web_credentials
from tests.web.conftest import CHROMIUM_ARGS, chromium_path


async def test_the_owner_sets_a_mode_and_holds_the_battery_from_the_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = AcceleratedClock(10, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        bearer = {"Authorization": f"Bearer {await web_credentials(cfg.storage.path)}"}
        daemon = Daemon(cfg, clock)
        async with running(daemon), async_playwright() as p:
            await asyncio.wait_for(daemon.started.wait(), 15)
            browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 390, "height": 844})
                errors: list[str] = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                base = f"http://127.0.0.1:{web_port}"
                await log_in(page, base)
                await page.wait_for_selector("#chargers tr[data-charger='wallbox']")
                await page.select_option("#ev-mode-form select[name=mode]", "pv-only")
                await page.click("#ev-mode-form button")
                await page.wait_for_selector("#ev-mode-form .result:text('done')")
                await page.wait_for_selector("#chargers td[data-mode='pv-only']", timeout=15_000)
                assert daemon.control is not None and daemon.control.ev_mode("wallbox") == "pv-only"

                # A target as a SoC: the car's SoC read by the owner, the SoC wanted. The
                # simulated car reports its SoC too (MeterValues): the measured one wins.
                await page.fill("#ev-form input[name=soc_pct]", "20")
                await page.fill("#ev-form input[name=target_soc_pct]", "80")
                await page.fill("#ev-form input[name=departure]", "06:00")
                await page.click("#ev-form button")
                await page.wait_for_selector("#ev-result:text('saved')")
                await page.wait_for_selector(
                    "#chargers tr[data-charger='wallbox']:has-text('% measured → 80 %)')"
                )
                assert daemon.ev_sessions is not None
                session = daemon.ev_sessions.session("wallbox")
                assert session is not None and session.soc_source == "measured"
                assert session.soc_pct is not None and 29 <= session.soc_pct < 40  # not 20
                # 80 % - the car's SoC of 60 kWh, plus what the session had delivered.
                assert session.energy_wh is not None
                assert session.energy_wh >= (80 - session.soc_pct) / 100 * 60_000

                form = page.locator("form[data-battery='battery']")
                await form.locator("select[name=mode]").select_option("idle")
                await form.locator("input[name=minutes]").fill("30")
                await form.locator("button").click()
                await page.wait_for_selector("form[data-battery='battery'] [data-held]",
                                             timeout=15_000)  # fmt: skip
                held = await page.inner_text("form[data-battery='battery'] [data-held]")
                assert held.startswith("held: idle until ")
                await wait_until(
                    lambda: (
                        daemon.control.status()["overrides"].get("battery", {}).get("mode")  # type: ignore[union-attr]
                        == "idle"
                    ),
                    10,
                )
                # A mode that does not exist is refused by name (the same action the form
                # posts; through the API, as the form's section is re-rendered every 10 s).
                async with httpx.AsyncClient(base_url=base, headers=bearer) as client:
                    r = await client.post(
                        "/api/battery-mode",
                        json={"device_id": "battery", "mode": "turbo", "minutes": 5},
                    )
                assert r.status_code == 400
                assert r.json()["error"] == "mode: unknown battery mode 'turbo'"
                assert await page.locator("#money tr[data-period='today']").count() == 1
                assert "without the battery" in await page.inner_text("#money-method")
                assert errors == [], errors
            finally:
                await browser.close()
