"""Adding a device from the installer's page: scan a real pymodbus SunSpec server, see its
models and a reading, add the suggested entry, review the diff, confirm; the file on disk
gains one valid devices[] entry and keeps its comments, and hems is asked to restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from modbus_sim import common_model, model_regs, sunspec_image
from playwright.async_api import Browser

from hems.config import load_config
from hems.core import ManualClock, SiteState
from hems.store.db import Database
from hems.web import WebServer, installer
from hems.web.auth import AuthStore, LoginLimiter
from tests.testlib import OWNER_PASSWORD, log_in
from tests.web.conftest import browser  # noqa: F401 - the Chromium fixture

CONFIG = """\
# Added to from the installer's page.
site: {id: home}
devices:
  - {type: sunspec, id: grid, role: grid, host: 10.0.0.9}   # the meter, set up by hand
"""


async def test_a_scanned_inverter_is_added_after_review(
    serve,
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    inverter = sunspec_image(
        common_model("Acme", "Sol 5", "SN-42"),
        model_regs(103, W=2750, W_SF=0, WH=12345, WH_SF=0),
        model_regs(123),
    )
    srv = await serve({1: (40000, inverter)})
    clock = ManualClock(datetime(2026, 7, 1, 12, tzinfo=UTC))
    db = await Database.open(tmp_path / "hems.db")
    path = tmp_path / "hems.yaml"
    path.write_text(CONFIG)
    restarts: list[str] = []
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer("127.0.0.1", 0, SiteState(clock), clock, None, "Test home", auth=auth,
                    limiter=LoginLimiter(clock))  # fmt: skip
    installer.register(web, path, restart=lambda: restarts.append("restart"), db=db, clock=clock)
    await web.start()
    base = f"http://127.0.0.1:{web.bound_port}"
    try:
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await log_in(page, base)
        await page.goto(f"{base}/installer/devices")
        await page.fill("input[name=target]", "not a host:99999")
        await page.click("#scan-form button")
        assert "port must be 1..65535" in await page.inner_text("#scan-error")
        await page.fill("input[name=target]", f"127.0.0.1:{srv.port}")
        await page.fill("input[name=units]", "1")
        await page.click("#scan-form button")
        report = await page.inner_text("#scan-report")
        assert "Acme / Sol 5 / SN-42" in report and "2750" in report  # a test reading
        await page.fill(".add-device input[name=id]", "roof")
        await page.click(".add-device button")
        diff = await page.inner_text("pre.diff")
        assert "+  id: roof" in diff.replace("- id", "  id") or "id: roof" in diff
        assert path.read_text() == CONFIG  # nothing written before the confirmation
        await page.click("#confirm")
        await page.wait_for_selector("text=Device added")
        cfg = load_config(path)
        roof = next(d for d in cfg.devices if d.id == "roof")
        assert (roof.type, roof.host, roof.port, roof.unit_id) == (
            "sunspec", "127.0.0.1", srv.port, 1,
        )  # fmt: skip
        assert "# the meter, set up by hand" in path.read_text()  # comments kept
        assert (tmp_path / "hems.yaml.bak").read_text() == CONFIG
        assert restarts == ["restart"]
    finally:
        await web.stop()
        await db.close()
