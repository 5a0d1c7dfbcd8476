"""A lost session does not lose what was typed: the form's values are kept in the tab, the
owner logs in again, and the same form has them back (not sent until pressed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.async_api import Browser

from hems.core import ManualClock, SiteState
from hems.store.db import Database
from hems.web import WebServer
from hems.web.auth import AuthStore, LoginLimiter
from tests.testlib import OWNER_PASSWORD, log_in

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)


async def test_typed_values_survive_a_lost_session(tmp_path: Path, browser: Browser) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer("127.0.0.1", 0, SiteState(clock), clock, None, "Home", auth=auth,
                    limiter=LoginLimiter(clock))  # fmt: skip
    calls: list[dict[str, Any]] = []

    async def ev_session(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body)
        return {"ok": True}

    web.add_json("chargers", lambda: {"chargers": {"wallbox": {"state": "plugged"}},
                                      "sessions": {}, "pending": [], "modes": {}})  # fmt: skip
    web.add_action("ev-session", ev_session)
    await web.start()
    base = f"http://127.0.0.1:{web.bound_port}"
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await log_in(page, base)
        await page.fill("#ev-form input[name=energy_kwh]", "17.5")
        await page.fill("#ev-form input[name=departure]", "06:45")
        await context.clear_cookies()  # the session is gone (expired, or logged out elsewhere)
        await page.click("#ev-form button")
        await page.wait_for_url(f"{base}/login")
        assert calls == []
        await log_in(page, base)
        await page.wait_for_selector("#ev-result:text('kept from before')")
        assert await page.input_value("#ev-form input[name=energy_kwh]") == "17.5"
        assert await page.input_value("#ev-form input[name=departure]") == "06:45"
        assert calls == []  # nothing is sent again by itself
        await page.click("#ev-form button")
        await page.wait_for_selector("#ev-result:text('saved')")
        assert calls == [{"charger_id": "wallbox", "energy_kwh": "17.5", "departure": "06:45"}]
    finally:
        await web.stop()
        await db.close()
