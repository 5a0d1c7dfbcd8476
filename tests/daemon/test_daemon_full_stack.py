"""Every stage together on one simulated clock: Modbus + OCPP devices from the HIL rig,
planner, control loop and web API. An EV plugs in; the planner gets its session, plans
charging before departure, and the control loop drives the real charger over OCPP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import yaml
from playwright.async_api import async_playwright

from hems.app import Daemon
from hems.config import validate
from hems.core.clock import AcceleratedClock
from tests.conftest import REPO
from tests.testlib import log_in, poll_json, rig_with_car, running, web_credentials
from tests.web.conftest import CHROMIUM_ARGS, chromium_path


def demo_config(tmp_path: Path, modbus_port: int, ocpp_port: int, web_port: int) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for device in cfg["devices"]:
        if device["type"] == "sunspec":
            device["port"] = modbus_port
    cfg["ocpp"]["port"] = ocpp_port
    cfg["web"]["port"] = web_port
    cfg["storage"]["path"] = str(tmp_path / "hems.db")
    cfg["storage"]["batch_interval_s"] = 1
    cfg["planner"]["forecast"]["base_url"] = "http://127.0.0.1:9"  # offline: history fallback
    return cfg


async def check_page(web_port: int) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            # Playwright evaluates wait_for_function strings with eval, which our CSP forbids;
            # tests/web/test_web_security.py checks the page under the real CSP.
            page = await browser.new_page(bypass_csp=True)
            await log_in(page, f"http://127.0.0.1:{web_port}")
            await page.wait_for_selector("#plan tbody tr")
            assert await page.locator("#plan tbody tr").count() == 12
            assert "optimal" in await page.inner_text("#plan-meta")
            await page.wait_for_selector("#chargers tr[data-charger='wallbox']")
            assert await page.inner_text("#control-health") == "healthy"
            assert "15.0 kWh" in await page.inner_text("#chargers tr[data-charger='wallbox']")
            await page.fill("#ev-form input[name=energy_kwh]", "22")
            await page.fill("#ev-form input[name=departure]", "06:15")
            await page.click("#ev-form button")
            await page.wait_for_function(
                "document.getElementById('ev-result').textContent === 'saved'"
            )
            await page.wait_for_function(
                "document.querySelector(\"#chargers tr[data-charger='wallbox']\")"
                ".textContent.includes('22.0 kWh')"
            )
            assert await page.locator("#keys-section").is_hidden()  # no uplink configured
        finally:
            await browser.close()


def in_cheap_band(t: datetime) -> bool:
    """00:30–05:30 Europe/London, the demo tariff's cheap band."""
    local = t.astimezone(ZoneInfo("Europe/London"))
    minutes = local.hour * 60 + local.minute
    return 30 <= minutes < 330


async def test_ev_session_flows_from_ocpp_to_planner_to_control(tmp_path: Path) -> None:
    start = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)  # evening: the car waits for the night
    clock = AcceleratedClock(30, start)
    rig, car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        token = await web_credentials(cfg.storage.path)
        daemon = Daemon(cfg, clock)
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                chargers = await poll_json(
                    client, "/api/chargers", lambda c: "wallbox" in c["sessions"], 20
                )
                session = chargers["sessions"]["wallbox"]
                assert session["energy_wh"] == 15000
                departure = datetime.fromisoformat(session["departure"])
                assert departure.astimezone(UTC).hour == 6  # 07:30 BST the next morning
                assert departure.minute == 30 and departure > clock.now()

                plan = await poll_json(
                    client,
                    "/api/plan",
                    lambda p: (
                        p is not None
                        and any(s["targets_w"].get("wallbox", 0) > 0 for s in p["slots"])
                    ),
                    30,
                )
                before = [
                    s for s in plan["slots"]
                    if datetime.fromisoformat(s["start"]) < departure
                ]  # fmt: skip
                planned_kwh = sum(s["targets_w"].get("wallbox", 0) * 0.5 for s in before) / 1000
                assert planned_kwh >= 14.9  # the whole 15 kWh before 07:30
                # All of it in the cheap band (00:30–05:30 local = 23:30–04:30 UTC in June).
                cheap = [s for s in before if in_cheap_band(datetime.fromisoformat(s["start"]))]
                cheap_kwh = sum(s["targets_w"].get("wallbox", 0) * 0.5 for s in cheap) / 1000
                assert cheap_kwh >= 14.9

                control = await poll_json(
                    client,
                    "/api/control",
                    lambda c: c["status"]["cycles"] > 20 and "wallbox" in c["status"]["devices"],
                    20,
                )
                assert control["status"]["healthy"] is True
                # The control loop's command reached the real charger over OCPP.
                await poll_json(
                    client,
                    "/api/chargers",
                    lambda c: c["chargers"]["wallbox"]["limit_a"] is not None,
                    20,
                )
                assert car.limit_a is not None

                # Bad input on the API: named field, nothing applied.
                r = await client.post(
                    "/api/ev-session", json={"charger_id": "wallbox", "energy_kwh": "lots"}
                )
                assert r.status_code == 400 and r.json()["error"].startswith("energy_kwh:")
                r = await client.post(
                    "/api/ev-session",
                    json={"charger_id": "wallbox", "energy_kwh": 5, "departure": "25:99"},
                )
                assert r.status_code == 400 and r.json()["error"].startswith("departure:")
                r = await client.post(
                    "/api/override", json={"device_id": "battery", "target": 1e9, "minutes": 5}
                )
                assert r.status_code == 400 and "battery" in r.json()["error"]
                # The owner's page shows the plan, the control loop and the charger, and its
                # form sets a session (headless Chromium).
                await check_page(web_port)

                # A good request changes the session.
                r = await client.post(
                    "/api/ev-session",
                    json={"charger_id": "wallbox", "energy_kwh": 5, "departure": "06:00"},
                )
                assert r.status_code == 200, r.text
                assert r.json()["result"]["energy_wh"] == 5000
    assert clock.now() - start < timedelta(days=1)
