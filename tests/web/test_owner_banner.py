"""The page's banner says plainly when a hard limit cannot be kept (the health reasons)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx

from hems.core import ManualClock, Reading, Role, SiteState
from hems.core.readings import Quantity
from hems.store.db import Database
from hems.web import WebServer
from hems.web.auth import AuthStore, LoginLimiter
from hems.web.health import HealthReason

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)


async def test_an_unenforceable_export_limit_is_on_the_banner(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    state = SiteState(clock)
    state.register_device("grid", Role.GRID)
    state.publish([Reading("grid", Quantity.POWER_W, 100.0, T0)])
    db = await Database.open(tmp_path / "hems.db")
    auth = AuthStore(db, clock)
    web = WebServer("127.0.0.1", 0, state, clock, None, "Home", auth=auth,
                    limiter=LoginLimiter(clock))  # fmt: skip
    reasons: list[HealthReason] = []
    web.set_health(lambda: reasons)
    await web.start()
    token = await auth.create_token("tests", can_write=False)
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=bearer) as c:
            assert "export limit cannot be enforced" not in (await c.get("/fragment/alerts")).text
            reasons.append(HealthReason("export_limit_unenforceable", "pv"))
            html = (await c.get("/fragment/alerts")).text
            assert "The export limit cannot be enforced: PV pv cannot be curtailed" in html
            assert (await c.get("/api/v1/health")).status_code == 503
            reasons[:] = [
                HealthReason("export_limit_battery_only", "pv"),
                HealthReason("fuse_phases_unmeasured", "grid"),
            ]
            html = (await c.get("/fragment/alerts")).text
            assert "The export limit rests on the battery alone: PV pv cannot be" in html
            assert "The grid meter grid gives no per-phase values" in html
            body = (await c.get("/api/v1/health")).json()
            assert [r["code"] for r in body["reasons"]] == [
                "export_limit_battery_only",
                "fuse_phases_unmeasured",
            ]
    finally:
        await web.stop()
        await db.close()
