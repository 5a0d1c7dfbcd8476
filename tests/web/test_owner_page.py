"""The owner's page as rendered by the server, under the real CSP, on a phone and a laptop:
the flow diagram and charts are drawn, times are 24-hour in the site's zone, nothing scrolls
sideways at 360 or 390 px, and the banner names what is unsafe."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.async_api import Browser, ConsoleMessage
from playwright.async_api import Error as PlaywrightError

from hems.core import ManualClock, Quantity, Reading, Role, SiteState
from hems.core.plan import Plan, PlanSlot
from hems.store.db import Database
from hems.store.timeseries import ReadingStore
from hems.web import WebServer
from hems.web.auth import AuthStore, LoginLimiter
from hems.web.pages import SiteView
from tests.testlib import OWNER_PASSWORD, log_in

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)  # 13:00 in London (BST)
EVENT = (NOW + timedelta(hours=4), NOW + timedelta(hours=5))  # 17:00–18:00 London


def the_plan() -> Plan:
    slots = tuple(
        PlanSlot(
            start=NOW + timedelta(minutes=30 * i),
            duration_s=1800,
            price_import_per_kwh=0.32 if 8 <= i < 14 else 0.14,
            price_export_per_kwh=0.05,
            grid_import_w=max(0.0, 1500.0 - 300 * i),
            grid_export_w=max(0.0, 300 * i - 1500.0),
            targets_w={"battery": 2500.0 if i < 6 else -1500.0, "wallbox": 7000.0 if i < 3 else 0},
            soc_pct={"battery": min(95.0, 30.0 + 5 * i)},
        )
        for i in range(48)
    )
    notes = ("PV forecast offline: history used", "EV wallbox: 15 kWh by 07:00")
    return Plan(NOW - timedelta(minutes=3), slots, cost=2.34, status="optimal", notes=notes)


async def serve(tmp_path: Path) -> tuple[WebServer, Database]:
    clock = ManualClock(NOW - timedelta(hours=30))
    state = SiteState(clock, stale_after_s=600)
    for device_id, role in (("grid", Role.GRID), ("pv", Role.PV), ("battery", Role.BATTERY),
                            ("wallbox", Role.EV)):  # fmt: skip
        state.register_device(device_id, role)
    db = await Database.open(tmp_path / "hems.db")
    store = ReadingStore(db, clock)
    state.add_listener(store.add)
    # Thirty hours of readings every 5 min: yesterday and today have half-hour roll-ups.
    while clock.now() < NOW:
        hour = clock.now().astimezone(LONDON).hour + clock.now().minute / 60
        pv_w = max(0.0, 4000 * math.sin(math.pi * (hour - 5) / 16))
        battery_w = 1500.0 if 10 <= hour < 14 else (-1200.0 if 18 <= hour < 22 else 0.0)
        ev_w = 7000.0 if 1 <= hour < 3 else 0.0
        grid_w = 600 - pv_w + battery_w + ev_w
        at = clock.now()
        state.publish([Reading("grid", Quantity.POWER_W, grid_w, at),
                       Reading("pv", Quantity.POWER_W, pv_w, at),
                       Reading("battery", Quantity.POWER_W, battery_w, at),
                       Reading("battery", Quantity.SOC_PCT, 40 + hour, at),
                       Reading("wallbox", Quantity.POWER_W, ev_w, at)])  # fmt: skip
        await clock.advance(300)
    await store.flush()
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer(
        "127.0.0.1", 0, state, clock, store, "Test home", auth=auth, limiter=LoginLimiter(clock)
    )
    web.set_site_view(
        SiteView(
            timezone=LONDON,
            plan=the_plan,
            uplink_connected=lambda: False,
            import_prices=lambda start, n: [0.14 + 0.1 * (i % 8 == 0) for i in range(n)],
        )
    )
    web.add_json("stages", lambda: {"stages": ["planner"], "failures": {}})
    web.add_json("events", lambda: [])
    web.add_json(
        "flex-events",
        lambda: {
            "events": [
                {"event_id": "evt-7", "modification_number": 0, "kind": "import-cap",
                 "start": EVENT[0].isoformat(), "end": EVENT[1].isoformat(),
                 "status": "accepted", "reasons": [], "requested": {"import_cap_w": 500},
                 "effective": {"import_cap_w": 500}}
            ],
            "rejected": [],
        },
    )  # fmt: skip
    await web.start()
    return web, db


async def test_owner_page_on_a_phone_and_a_laptop(tmp_path: Path, browser: Browser) -> None:
    web, db = await serve(tmp_path)
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        for width, height in ((360, 740), (390, 844), (1280, 800)):
            page = await browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m, seen=errors: _console_error(m, seen))
            await log_in(page, base)
            flow = page.locator("#frag-live svg.flow")
            await flow.wait_for()
            assert await flow.is_visible()
            # The grid imports 600 − PV (+ battery) at 13:00 London: an arrow into the house.
            grid_edge = page.locator("svg.flow g.edge[data-node='grid']")
            assert await grid_edge.get_attribute("data-direction") in ("to-house", "from-house")
            assert await page.locator("svg.flow g.edge[data-node='wallbox'], "
                                      "svg.flow g.edge[data-node='ev']").count() == 1  # fmt: skip
            plan_chart = page.locator("#plan-chart svg")
            assert await plan_chart.is_visible()
            assert await page.locator("#plan-chart rect.event-window").count() == 3
            assert "17:00–18:00" in await page.inner_text("#plan-section")
            assert "PV forecast offline" in await page.inner_text("#plan-notes")
            assert await page.locator("#plan tbody tr").count() == 12
            # 24-hour times in Europe/London: the first slot starts at 12:00 UTC = 13:00 BST.
            first_rows = await page.locator("#plan tbody tr td:first-child").all_inner_texts()
            assert first_rows[:3] == ["13:00", "13:30", "14:00"]
            assert "optimal" in await page.inner_text("#plan-meta")
            assert "12:57" in await page.inner_text("#plan-meta")
            assert (await page.inner_text("#now")).endswith("13:00")
            ticks = await page.locator("#plan-chart text.tick").all_text_contents()
            assert "15:00" in ticks and "00:00" in ticks
            history = page.locator("#history-chart svg path.series")
            assert await history.count() >= 4
            assert "Import price" in (await page.locator("#history-chart svg").text_content() or "")
            banner = page.locator("#banner")
            assert await banner.is_visible()
            assert "uplink is not connected" in await banner.inner_text()
            scroll_w = await page.evaluate("document.documentElement.scrollWidth")
            inner_w = await page.evaluate("window.innerWidth")
            if width < 400:  # a phone: no sideways scroll
                assert scroll_w <= inner_w, (scroll_w, inner_w)
            await page.screenshot(path=tmp_path / f"owner-{width}.png", full_page=True)
            for part in ("frag-live", "plan-chart", "history-chart"):
                for attempt in range(3):  # the live refresh may swap the part mid-shot
                    try:
                        shot = tmp_path / f"{part}-{width}.png"
                        await page.locator(f"#{part}").screenshot(path=shot, timeout=5000)
                        break
                    except PlaywrightError:
                        if attempt == 2:
                            raise
            # Yesterday's history, by a plain link (no script needed).
            await page.click("nav.ranges a:has-text('Yesterday')")
            await page.wait_for_url("**/?history=yesterday*")
            assert "Tue 30 Jun 00:00" in await page.inner_text("#history-span")
            assert await page.locator("#history-chart svg path.series").count() >= 4
            # The live refresh swaps a fragment in under the real CSP: on a live event while
            # the stream is open (its polling is only the fallback).
            await page.wait_for_selector("body[data-stream=open]")
            await page.locator("#frag-live").evaluate("el => el.setAttribute('data-old', '1')")
            web.events.publish("site", {"summary": {}})
            await page.wait_for_selector("#frag-live:not([data-old])", timeout=5000)
            assert not errors, errors
            await page.close()
    finally:
        await web.stop()
        await db.close()


def _console_error(message: ConsoleMessage, seen: list[str]) -> None:
    """A script or CSP error on the page (the browser's own favicon probe is not one)."""
    if message.type == "error" and not message.location.get("url", "").endswith("favicon.ico"):
        seen.append(f"{message.text} {message.location}")
