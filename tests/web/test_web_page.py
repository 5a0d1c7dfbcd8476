"""The local page in headless Chromium: live values, stale devices, bad API input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from playwright.async_api import Browser

from hems.core import ManualClock, Quantity, Reading, Role, SiteState
from hems.core.quantities import SITE_QUANTITIES
from hems.store.db import Database
from hems.store.timeseries import ReadingStore
from hems.web import WebServer
from hems.web.auth import AuthStore, LoginLimiter
from tests.testlib import OWNER_PASSWORD, log_in

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)


async def serve(tmp_path: Path) -> tuple[WebServer, SiteState, ManualClock, Database, str]:
    clock = ManualClock(T0)
    state = SiteState(clock, stale_after_s=30)
    state.register_device("grid", Role.GRID)
    state.register_device("battery", Role.BATTERY)
    state.register_device("pv", Role.PV, stale_after_s=5)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock)
    state.add_listener(store.add)
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer(
        "127.0.0.1", 0, state, clock, store, "Test home", auth=auth, limiter=LoginLimiter(clock)
    )
    await web.start()
    token = await auth.create_token("tests", can_write=True)
    return web, state, clock, db, token


async def test_page_shows_live_values_and_flags_stale_device(
    tmp_path: Path, browser: Browser
) -> None:
    web, state, clock, db, _token = await serve(tmp_path)
    try:
        state.publish(
            [
                Reading("grid", Quantity.POWER_W, -1234.0, clock.now()),
                Reading("battery", Quantity.POWER_W, 2500.0, clock.now()),
                Reading("battery", Quantity.SOC_PCT, 56.5, clock.now()),
                Reading("pv", Quantity.POWER_W, 3700.0, clock.now()),
            ]
        )
        # Playwright evaluates wait_for_function strings with eval, which our CSP forbids;
        # tests/web/test_web_security.py checks the page under the real CSP.
        page = await browser.new_page(bypass_csp=True)
        await log_in(page, f"http://127.0.0.1:{web.bound_port}")
        await page.wait_for_function("document.getElementById('grid_power_w').textContent !== '–'")
        assert await page.inner_text("#grid_power_w") == "-1.23 kW"
        assert await page.inner_text("#battery_power_w") == "2.50 kW"
        assert await page.inner_text("#battery_soc_pct") == "56.5 %"
        assert await page.inner_text("#pv_power_w") == "3.70 kW"
        assert "Test home" in await page.inner_text("header")

        await clock.advance(10)  # pv's limit is 5 s, the others 30 s
        await page.wait_for_selector("#devices tr.stale", timeout=5000)
        stale_rows = await page.locator("#devices tr.stale td:first-child").all_inner_texts()
        assert stale_rows == ["pv"]
        assert await page.inner_text("#pv_power_w") == "–"  # stale is unknown, not zero
    finally:
        await web.stop()
        await db.close()


async def test_summary_and_cards_follow_the_site_quantity_table(tmp_path: Path) -> None:
    web, state, clock, db, token = await serve(tmp_path)
    state.register_device("battery2", Role.BATTERY)
    try:
        state.publish([Reading("battery", Quantity.SOC_PCT, 56.5, clock.now()),
                       Reading("battery2", Quantity.SOC_PCT, 20.0, clock.now())])  # fmt: skip
        base = f"http://127.0.0.1:{web.bound_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            summary = (await client.get("/api/state")).json()["summary"]
            assert list(summary) == [q.key for q in SITE_QUANTITIES]
            assert summary["battery_soc_pct"] == (56.5 + 20.0) / 2
            await clock.advance(20)
            state.publish([Reading("battery", Quantity.SOC_PCT, 57.0, clock.now())])
            await clock.advance(20)  # battery2 is now 40 s old: stale
            summary = (await client.get("/api/state")).json()["summary"]
            # The site's SoC is unknown while one battery is: the page used to show the
            # fresh battery's 57 % here, disagreeing with the uplink and Home Assistant.
            assert summary["battery_soc_pct"] is None
            page = (await client.get("/")).text
        for q in SITE_QUANTITIES:
            assert f'id="{q.key}" data-unit="{q.unit}"' in page
    finally:
        await web.stop()
        await db.close()


async def test_api_rejects_bad_input_with_the_field_named(tmp_path: Path) -> None:
    web, state, clock, db, token = await serve(tmp_path)
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            r = await client.get("/api/series", params={"device": "grid", "quantity": "volts"})
            assert r.status_code == 400
            assert r.json()["error"].startswith("quantity: unknown quantity")
            r = await client.get("/api/series", params={"device": "grid", "minutes": "-5"})
            assert r.status_code == 400 and r.json()["error"].startswith("minutes:")
            r = await client.post("/api/nothing", json={})
            assert r.status_code == 404
            # Public, and truthful: the grid meter has sent nothing yet, so it is stale.
            async with httpx.AsyncClient(base_url=base) as anon:
                for path in ("/api/health", "/api/v1/health"):
                    r = await anon.get(path)
                    assert r.status_code == 503, path
                    assert r.json()["ok"] is False
                    assert r.json()["reasons"] == [{"code": "grid_meter_stale", "detail": "grid"}]
                state.publish([Reading("grid", Quantity.POWER_W, 100.0, clock.now())])
                r = await anon.get("/api/v1/health")
                assert r.status_code == 200 and r.json()["ok"] is True
                assert r.json()["reasons"] == []
            r = await client.get("/api/health")
            assert r.status_code == 200 and r.json()["ok"] is True
    finally:
        await web.stop()
        await db.close()


async def test_hostile_action_bodies_get_400_or_413_never_500(tmp_path: Path) -> None:
    web, _, _, db, token = await serve(tmp_path)
    seen: list[dict] = []

    async def action(body: dict) -> dict:
        seen.append(body)
        return {}

    web.add_action("echo", action)
    json_type = {"Content-Type": "application/json"}
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            r = await client.post("/api/echo", content=b"[" * 50_000, headers=json_type)
            assert r.status_code == 400 and "nested deeper" in r.json()["error"]
            r = await client.post(
                "/api/echo", content=b"{" + b" " * 70_000 + b"}", headers=json_type
            )
            assert r.status_code == 413 and r.json()["error"].startswith("body:")
            form = {"Content-Type": "application/x-www-form-urlencoded; charset=klingon"}
            r = await client.post("/api/echo", content=b"a=1", headers=form)
            assert r.status_code == 400 and "charset" in r.json()["error"]
            r = await client.post("/api/echo", json={"ok": 1})
            assert r.status_code == 200
        assert seen == [{"ok": 1}]  # nothing hostile reached the handler
    finally:
        await web.stop()
        await db.close()
