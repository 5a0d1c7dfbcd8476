"""The installer's pages in headless Chromium under the real CSP: edit the config with an
error, see check-config's message next to the field, fix it, review the diff, confirm; and
the backup download holds the config and a sound SQLite snapshot."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
from playwright.async_api import Browser

from hems.core import ManualClock, SiteState
from hems.store.db import Database
from hems.store.timeseries import ReadingStore
from hems.web import WebServer, installer
from hems.web.auth import AuthStore, LoginLimiter
from tests.testlib import OWNER_PASSWORD, log_in

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
CONFIG = """\
# The test home: edited by hand and from the installer's page.
site:
  id: home
  name: Test home
  timezone: Europe/London

limits:
  fuse_a: 60          # the main fuse, per phase
  phases: 1
  export_limit_w: 3680
"""


async def serve(tmp_path: Path, restarts: list[str]) -> tuple[WebServer, Database, Path, str]:
    clock = ManualClock(T0)
    state = SiteState(clock)
    db = await Database.open(tmp_path / "hems.db")
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer(
        "127.0.0.1", 0, state, clock, ReadingStore(db, clock), "Test home",
        auth=auth, limiter=LoginLimiter(clock),
    )  # fmt: skip
    path = tmp_path / "etc" / "hems.yaml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    installer.register(web, path, restart=lambda: restarts.append("restart"), db=db, clock=clock)
    await web.start()
    token = await auth.create_token("tests", can_write=False)
    return web, db, path, token


async def test_edit_with_an_error_then_fix_review_and_apply(
    tmp_path: Path, browser: Browser
) -> None:
    restarts: list[str] = []
    web, db, path, _ = await serve(tmp_path, restarts)
    shots = tmp_path / "screenshots"
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await log_in(page, base)
        await page.goto(f"{base}/installer/config")
        fuse = page.locator('[name="limits.fuse_a"]')
        assert await fuse.input_value() == "60"
        assert await page.locator('[name="site.name"]').input_value() == "Test home"

        await fuse.fill("0")
        async with page.expect_response(f"{base}/installer/config") as answer:
            await page.click("form.config button[type=submit]")
        assert (await answer.value).status == 422
        error = page.locator('[id="limits.fuse_a-error"]')
        assert await error.inner_text() == "must be > 0.0"
        # The message sits in the fuse field's own row, and the rejected value stays shown.
        row = page.locator(".field.invalid")
        assert await row.count() == 1
        assert await row.locator('[name="limits.fuse_a"]').input_value() == "0"
        await error.scroll_into_view_if_needed()
        await page.screenshot(path=str(shots / "installer-error.png"))
        assert path.read_text() == CONFIG  # nothing written
        assert not path.with_name("hems.yaml.bak").exists()

        await page.locator('[name="limits.fuse_a"]').fill("80")
        await page.click("form.config button[type=submit]")
        diff = page.locator("pre.diff")
        await diff.wait_for()
        assert await page.locator("pre.diff .del").all_inner_texts() == [
            "-  fuse_a: 60          # the main fuse, per phase"
        ]
        assert await page.locator("pre.diff .add").all_inner_texts() == [
            "+  fuse_a: 80          # the main fuse, per phase"
        ]
        await page.screenshot(path=str(shots / "installer-diff.png"), full_page=True)
        assert path.read_text() == CONFIG and restarts == []

        await page.click("#confirm")
        await page.wait_for_selector("[role=status]")
        await page.screenshot(path=str(shots / "installer-done.png"))
        text = path.read_text()
        assert "  fuse_a: 80          # the main fuse, per phase\n" in text
        assert text.startswith("# The test home: edited by hand and from the installer's page.")
        assert text == CONFIG.replace("fuse_a: 60", "fuse_a: 80")
        assert path.with_name("hems.yaml.bak").read_text() == CONFIG
        assert restarts == ["restart"]
        # The security log says what changed and who, never the value.
        entries = [
            (e.kind, e.detail) for e in await AuthStore(db, ManualClock(T0)).security_log(10)
        ]
        assert (
            "config-changed",
            "config file changed from the page: limits.fuse_a (owner session)",
        ) in entries
        assert not any("80" in detail for _, detail in entries)
    finally:
        await web.stop()
        await db.close()


async def test_apply_refuses_a_review_of_a_file_changed_since(tmp_path: Path) -> None:
    """Confirming a diff made against an older file would silently drop the newer edit."""
    restarts: list[str] = []
    web, db, path, _ = await serve(tmp_path, restarts)
    try:
        base = f"http://127.0.0.1:{web.bound_port}"
        async with httpx.AsyncClient(base_url=base, headers={"Origin": base}) as client:
            await client.post("/login", data={"password": OWNER_PASSWORD})
            page = (await client.get("/installer/config")).text
            csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            review = await client.post(
                "/installer/config", data={"csrf": csrf, "limits.fuse_a": "80"}
            )
            assert review.status_code == 200 and "+  fuse_a: 80" in review.text
            stale = review.text.split('name="base" value="', 1)[1].split('"', 1)[0]
            path.write_text(CONFIG.replace("Test home", "Renamed by hand"))
            r = await client.post(
                "/installer/config",
                data={"csrf": csrf, "limits.fuse_a": "80", "confirm": "1", "base": stale},
            )
            assert r.status_code == 409 and "the file changed since you reviewed it" in r.text
            assert "Renamed by hand" in path.read_text() and "fuse_a: 60" in path.read_text()
            # Without the CSRF token the form post is refused before it is read.
            r = await client.post("/installer/config", data={"limits.fuse_a": "80"})
            assert r.status_code == 403
        assert restarts == []
    finally:
        await web.stop()
        await db.close()


async def test_backup_holds_the_config_and_a_sound_database_snapshot(tmp_path: Path) -> None:
    web, db, _, token = await serve(tmp_path, [])
    try:
        await db.execute("CREATE TABLE marker (v TEXT)")
        await db.execute("INSERT INTO marker VALUES ('kept')")
        base = f"http://127.0.0.1:{web.bound_port}"
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            r = await client.get("/installer/backup")
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "application/zip"
            assert r.headers["Content-Disposition"].startswith("attachment;")
            async with httpx.AsyncClient(base_url=base) as anonymous:
                assert (await anonymous.get("/installer/backup")).status_code == 303
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            assert sorted(z.namelist()) == ["hems.db", "hems.yaml"]
            assert z.read("hems.yaml").decode() == CONFIG
            (tmp_path / "restored").mkdir()
            z.extract("hems.db", tmp_path / "restored")
        snapshot = sqlite3.connect(tmp_path / "restored" / "hems.db")
        try:
            assert snapshot.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert snapshot.execute("SELECT v FROM marker").fetchall() == [("kept",)]
            assert snapshot.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
        finally:
            snapshot.close()
    finally:
        await web.stop()
        await db.close()
