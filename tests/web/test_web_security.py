"""The local page's security against real peers: the real WebServer (or the real Daemon on
the HIL rig), headless Chromium under the page's real CSP (no `bypass_csp` here), httpx and
the `hems admin` command in subprocesses.

Bare WebServers get a ManualClock for the login limiter, so lockouts need no sleeping.
Screenshots go to $HEMS_ARTEFACTS (default: the test's tmp_path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from hems.app import Daemon
from hems.config import validate
from hems.core import ManualClock, Quantity, Reading, Role, SiteState
from hems.core.clock import AcceleratedClock
from hems.store.db import Database
from hems.store.timeseries import ReadingStore
from hems.web import WebServer
from hems.web.auth import AuthStore, LoginLimiter, SecurityEntry
from hems.web.tls import ensure_self_signed, server_context
from hil.rig import HilRig
from tests.daemon.test_daemon_full_stack import demo_config
from tests.testlib import OWNER_PASSWORD, free_port, log_in, poll_json, rig_with_car, running

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
HEMS = str(Path(sys.executable).parent / "hems")
NEW_PASSWORD = "a different long password"
VIEWPORTS = [(390, 844), (1280, 800)]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The routes anyone may use (the test's own list: a route added to the server's public set
# without being added here fails test_every_route_refuses_without_credentials).
PUBLIC_GET = {"/login", "/setup", "/api/health", "/api/v1/health"}
PUBLIC_POST = {"/login", "/setup"}  # still refused cross-site (login CSRF)


def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HEMS_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Bare:
    """A bare WebServer on a ManualClock, with one recording action and one JSON endpoint."""

    web: WebServer
    state: SiteState
    clock: ManualClock
    db: Database
    auth: AuthStore
    token: str
    read_only: str
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> str:
        scheme = "https" if self.web._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.web.bound_port}"


@contextlib.asynccontextmanager
async def bare(
    tmp_path: Path, *, password: bool = True, tls: ssl.SSLContext | None = None, start: bool = True
) -> AsyncIterator[Bare]:
    clock = ManualClock(T0)
    state = SiteState(clock, stale_after_s=30)
    state.register_device("grid", Role.GRID)
    state.register_device("pv", Role.PV)
    state.publish([Reading("grid", Quantity.POWER_W, -1234.0, clock.now()),
                   Reading("pv", Quantity.POWER_W, 3700.0, clock.now())])  # fmt: skip
    db = await Database.open(tmp_path / "hems.db")
    auth = AuthStore(db, clock)
    if password:
        await auth.set_password(OWNER_PASSWORD, "test")
    web_server = WebServer(
        "127.0.0.1", 0, state, clock, ReadingStore(db, clock), "Test home",
        auth=auth, limiter=LoginLimiter(clock), tls=tls,
    )  # fmt: skip
    token = await auth.create_token("rw", can_write=True)
    read_only = await auth.create_token("ro", can_write=False)
    s = Bare(web_server, state, clock, db, auth, token, read_only)

    async def record(body: dict[str, Any]) -> dict[str, Any]:
        s.calls.append(body)
        return {"recorded": True}

    web_server.add_action("echo", record)
    web_server.add_json("extra", lambda: {"x": 1})
    if start:
        await web_server.start()
    try:
        yield s
    finally:
        await web_server.stop()
        await db.close()


@contextlib.asynccontextmanager
async def logged_in(base: str, **kw: Any) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An httpx client logged in through the login form (sending our Origin, as a browser
    does), and the session's CSRF token read from the page's <meta>."""
    async with httpx.AsyncClient(base_url=base, headers={"Origin": base}, **kw) as client:
        r = await client.post("/login", data={"password": OWNER_PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        yield client, await csrf_of(client)


async def csrf_of(client: httpx.AsyncClient) -> str:
    """The CSRF token of the client's session, as the page carries it."""
    page = (await client.get("/")).text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match is not None
    return match.group(1)


async def security_log(s: Bare) -> list[SecurityEntry]:
    return await s.auth.security_log(50)


async def hems_admin(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """`hems admin …` in a subprocess (asyncio's, so the server in this loop keeps serving)."""
    proc = await asyncio.create_subprocess_exec(
        HEMS, "admin", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "hems.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def watch_console(page: Page) -> list[str]:
    """Page errors and CSP violations: the page must work under its own CSP."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return problems


async def overflow_px(page: Page) -> int:
    """How far the page scrolls sideways (0: it fits the viewport)."""
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    return int(width) - page.viewport_size["width"]  # type: ignore[index]


async def too_wide(page: Page) -> list[str]:
    """The outermost elements reaching past the viewport's right edge (what scrolls sideways)."""
    found = await page.evaluate(
        """() => [...document.querySelectorAll("body *")]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .filter(e => e.parentElement.getBoundingClientRect().right <= window.innerWidth + 1)
        .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
             + " " + Math.round(e.getBoundingClientRect().width) + "px")"""
    )
    return [str(f) for f in found]


async def submit(page: Page, path: str) -> int:
    """Click the form's submit button; the status of the POST answer to `path`."""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(path)
    ) as info:
        await page.click("button[type=submit]")
    return (await info.value).status


# -- 1. first visit, setup, login, the page at phone and desktop width -----------------------
@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
async def test_first_visit_sets_up_then_logs_in_to_live_page(
    tmp_path: Path, browser: Browser, viewport: tuple[int, int]
) -> None:
    width, height = viewport
    out = artefacts(tmp_path)
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))
    rig, _car, ocpp_port, web_port = rig_with_car(clock)
    async with rig:
        raw = demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port)
        config_path = write_config(tmp_path, raw)
        daemon = Daemon(validate(raw), clock)  # no password set: no web_credentials here
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)
            assert daemon.web is not None
            base = f"http://127.0.0.1:{web_port}"
            page = await browser.new_page(viewport={"width": width, "height": height})
            problems = watch_console(page)
            sizes: dict[str, int] = {}

            await page.goto(f"{base}/")
            await page.wait_for_url(f"{base}/setup")
            await page.fill("input[name=code]", "0000-0000-0000-0000")
            await page.fill("input[name=password]", OWNER_PASSWORD)
            await page.fill("input[name=confirm]", OWNER_PASSWORD)
            assert await submit(page, "/setup") == 400
            await expect(page.locator(".error")).to_contain_text("code: not the setup code")
            sizes["setup"] = await overflow_px(page)
            await page.screenshot(path=out / f"setup-{width}.png", full_page=True)

            # The installer's way to the code: `hems admin setup-code` on the gateway.
            rc, code, err = await hems_admin("setup-code", "-c", str(config_path))
            assert rc == 0, err
            assert re.fullmatch(r"([0-9A-F]{4}-){3}[0-9A-F]{4}\n", code), code
            code = code.strip()
            assert code == await daemon.web.setup_code()
            await page.fill("input[name=code]", code.lower())  # case does not matter
            await page.fill("input[name=password]", OWNER_PASSWORD)
            await page.fill("input[name=confirm]", OWNER_PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/login")
            assert await daemon.web.setup_code() is None  # one-time
            sizes["login"] = await overflow_px(page)
            await page.screenshot(path=out / f"login-{width}.png", full_page=True)

            await log_in(page, base)
            # Live values from the rig, filled by the page's own script under its CSP.
            for key in ("grid_power_w", "pv_power_w", "battery_soc_pct"):
                await expect(page.locator(f"#{key}")).not_to_have_text("–", timeout=15_000)
            await expect(page.locator("#devices tbody tr")).to_have_count(4, timeout=10_000)
            await expect(page.locator("#plan tbody tr")).to_have_count(12, timeout=30_000)
            await page.wait_for_selector("#chargers tr[data-charger='wallbox']")
            for kind in ("setup", "login", "refused"):
                await expect(
                    page.locator("#security-log tbody tr", has_text=kind).first
                ).to_be_visible()
            assert "Demo home" in await page.inner_text("header")
            sizes["main"] = await overflow_px(page)
            wide = await too_wide(page)
            await page.screenshot(path=out / f"main-{width}.png", full_page=True)
            await page.screenshot(path=out / f"main-top-{width}.png")
            await page.locator("#security-section").screenshot(path=out / f"log-{width}.png")
            report = {"overflow_px": sizes, "too_wide": wide}
            (out / f"overflow-{width}.json").write_text(json.dumps(report, indent=1))
            print(f"at {width} px: {report}; screenshots in {out}")
            assert problems == []
            # The login and setup forms are new: they fit a phone.
            assert sizes["setup"] <= 0 and sizes["login"] <= 0, sizes
            await page.close()


# -- 2. the login limiter ------------------------------------------------------------------
async def test_wrong_passwords_lock_out_and_show_in_the_security_log(
    tmp_path: Path, browser: Browser
) -> None:
    async with bare(tmp_path) as s:
        page = await browser.new_page()
        problems = watch_console(page)
        await page.goto(f"{s.base}/login")
        for _ in range(5):
            await page.fill("input[name=password]", "not the password")
            assert await submit(page, "/login") == 401
            await expect(page.locator(".error")).to_have_text("Wrong password")
        await page.fill("input[name=password]", "not the password")
        assert await submit(page, "/login") == 429
        await expect(page.locator(".error")).to_contain_text("locked for 30 s")
        # While locked out even the right password is not checked.
        await page.fill("input[name=password]", OWNER_PASSWORD)
        assert await submit(page, "/login") == 429
        await expect(page.locator(".error")).to_contain_text("try again in 30 s")

        await s.clock.advance(30)
        await page.fill("input[name=password]", "not the password")
        assert await submit(page, "/login") == 429  # the next failure doubles the lockout
        await expect(page.locator(".error")).to_contain_text("locked for 60 s")
        await s.clock.advance(60)

        async with httpx.AsyncClient(
            base_url=s.base, headers={"Authorization": f"Bearer {s.read_only}"}
        ) as client:
            entries = (await client.get("/api/security-log")).json()
        kinds = [e["kind"] for e in entries]
        assert kinds.count("login-failed") == 7
        lockouts = [e for e in entries if e["kind"] == "lockout"]
        assert [e["detail"] for e in lockouts] == ["locked out for 60 s", "locked out for 30 s"]
        assert all(e["client"] == "127.0.0.1" for e in lockouts)

        await log_in(page, s.base)  # the lockout is over; a success clears the count
        rows = page.locator("#security-log tbody tr", has_text="lockout")
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_contain_text("locked out for 60 s")
        assert problems == []


# -- 3. cross-site requests ----------------------------------------------------------------
@contextlib.asynccontextmanager
async def attacker(target: str, fields: dict[str, str]) -> AsyncIterator[int]:
    """Another origin's page whose form posts itself to `target` on load."""
    inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in fields.items())
    html = (
        f'<!doctype html><form id="f" method="post" action="{target}">{inputs}</form>'
        "<script>document.getElementById('f').submit()</script>"
    )

    async def attack(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/attack", attack)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def attack_status(page: Page, url: str, target_path: str) -> int:
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(target_path)
    ) as info:
        await page.goto(url)
    return (await info.value).status


async def test_cross_site_form_post_is_refused_and_logged(tmp_path: Path, browser: Browser) -> None:
    async with bare(tmp_path) as s:
        page = await browser.new_page()
        await log_in(page, s.base)
        async with attacker(f"{s.base}/api/echo", {"device_id": "battery"}) as port:
            # Another site (localhost is not 127.0.0.1): the browser withholds the
            # SameSite=Strict cookie, so the post arrives without a session.
            status = await attack_status(page, f"http://localhost:{port}/attack", "/api/echo")
            assert status == 401
            # The same site on another port (another service on the gateway): the cookie
            # goes along, Sec-Fetch-Site says same-site, the origin check refuses it.
            status = await attack_status(page, f"http://127.0.0.1:{port}/attack", "/api/echo")
            assert status == 403
        assert s.calls == []
        refused = [e.detail for e in await security_log(s) if e.kind == "refused"]
        assert "cross-site POST /api/echo" in refused
        assert "cross-site POST /api/echo without a session" in refused

        # Same origin but no CSRF token (a script with the cookie): refused too.
        async with logged_in(s.base) as (client, csrf):
            r = await client.post("/api/echo", json={"a": 1})
            assert r.status_code == 403 and r.json()["error"].startswith("csrf:")
            r = await client.post("/api/echo", json={"a": 1}, headers={"X-CSRF-Token": "x" * 43})
            assert r.status_code == 403
            assert s.calls == []
            r = await client.post("/api/echo", json={"a": 1}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200
            r = await client.post("/api/echo", data={"csrf": csrf, "b": "2"})  # a form post
            assert r.status_code == 200
        assert s.calls == [{"a": 1}, {"csrf": csrf, "b": "2"}]
        refused = [e.detail for e in await security_log(s) if e.kind == "refused"]
        assert "missing or wrong CSRF token on /api/echo" in refused


async def test_cross_site_override_on_the_daemon_changes_nothing(
    tmp_path: Path, browser: Browser
) -> None:
    clock = AcceleratedClock(30, datetime(2026, 6, 10, 18, 0, tzinfo=UTC))
    rig = HilRig(clock, fault_proxy=False)
    ocpp_port, web_port = free_port(), free_port()
    async with rig:
        cfg = validate(demo_config(tmp_path, rig.sunspec_port, ocpp_port, web_port))
        db = await Database.open(cfg.storage.path)
        auth = AuthStore(db, clock)
        await auth.set_password(OWNER_PASSWORD, "test")
        token = await auth.create_token("tests", can_write=True)
        await db.close()
        daemon = Daemon(cfg, clock)
        async with running(daemon):
            await asyncio.wait_for(daemon.started.wait(), 15)
            base = f"http://127.0.0.1:{web_port}"
            page = await browser.new_page()
            await log_in(page, base)
            fields = {"device_id": "battery", "target": "-3000", "minutes": "30"}
            async with attacker(f"{base}/api/override", fields) as port:
                for host, expected in (("localhost", 401), ("127.0.0.1", 403)):
                    url = f"http://{host}:{port}/attack"
                    assert await attack_status(page, url, "/api/override") == expected
            async with httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}
            ) as client:
                control = await poll_json(
                    client, "/api/control", lambda c: c["status"]["cycles"] > 0, 20
                )
                assert control["status"]["overrides"] == {}
                entries = (await client.get("/api/security-log")).json()
            refused = {e["detail"] for e in entries if e["kind"] == "refused"}
            assert {
                "cross-site POST /api/override",
                "cross-site POST /api/override without a session",
            } <= refused
            # ...and the owner sees it on the page.
            await page.goto(f"{base}/")
            await expect(
                page.locator("#security-log tbody tr", has_text="cross-site POST /api/override")
            ).to_have_count(2)


# -- 4. every route, enumerated -------------------------------------------------------------
def route_paths(template: str, names: list[str]) -> list[str]:
    """Concrete paths for a route template: each `{param}` filled with each name."""
    if "{" not in template:
        return [template]
    return [re.sub(r"\{[^}]+\}", name, template) for name in names]


async def test_every_route_refuses_without_credentials(tmp_path: Path) -> None:
    async with bare(tmp_path, start=False) as s:
        app = s.web.app()  # the very app that is served and enumerated
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        names = ["echo", "extra", "no-such-thing"]  # an action, a JSON endpoint, neither
        checked: list[tuple[str, str]] = []
        try:
            async with logged_in(base) as (session, csrf), httpx.AsyncClient(base_url=base) as anon:
                for route in app.router.routes():
                    info = route.resource.get_info() if route.resource else {}
                    template = str(info.get("path") or info.get("formatter"))
                    method = "POST" if route.method == "*" else route.method
                    unsafe = method not in ("GET", "HEAD", "OPTIONS")
                    public = (unsafe and template in PUBLIC_POST) or (
                        not unsafe and (template in PUBLIC_GET or template.startswith("/static/"))
                    )
                    for path in route_paths(template, names):
                        checked.append((method, path))
                        what = f"{method} {path}"
                        if public and not unsafe:
                            continue
                        r = await anon.request(method, path)
                        assert_refused(r, what + " (no credentials)")
                        if public:
                            continue  # a public form: refused without our Origin (above)
                        r = await anon.request(method, path, headers={"Origin": base})
                        assert_refused(r, what + " (no credentials, our Origin)")
                        bad = {"Authorization": "Bearer hems_not-a-token"}
                        r = await anon.request(method, path, headers=bad)
                        assert r.status_code == 401, what + " (unknown token)"
                        if not unsafe:
                            continue
                        ro = {"Authorization": f"Bearer {s.read_only}"}
                        r = await anon.request(method, path, headers=ro, json={})
                        assert r.status_code == 403, what + " (read-only token)"
                        r = await session.request(method, path, json={})
                        assert r.status_code == 403, what + " (session, no CSRF)"
                        r = await session.request(
                            method, path, json={},
                            headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
                        )  # fmt: skip
                        assert r.status_code == 403, what + " (session, CSRF, cross-site)"
                assert s.calls == []  # no refused request reached an action
                # The checks can pass: the same action with the session and its token works.
                r = await session.post("/api/echo", json={"ok": 1}, headers={"X-CSRF-Token": csrf})
                assert r.status_code == 200 and s.calls == [{"ok": 1}]
        finally:
            await runner.cleanup()
        # The enumeration saw the routes that matter (guards against a vacuous pass).
        assert {("POST", "/api/echo"), ("POST", "/logout"), ("GET", "/"),
                ("GET", "/api/security-log"), ("GET", "/api/extra"),
                ("GET", "/api/v1/site"), ("GET", "/api/v1/stream"), ("GET", "/api/v1/docs"),
                ("GET", "/api/v1/openapi.json"), ("POST", "/api/v1/chargers/echo/mode"),
                ("POST", "/api/v1/flex/events/echo/opt-out")} <= set(checked)  # fmt: skip


def assert_refused(r: httpx.Response, what: str) -> None:
    if r.status_code == 303:
        assert r.headers["location"] in ("/login", "/setup"), what
        return
    assert r.status_code in (401, 403), f"{what}: {r.status_code} {r.text[:200]}"


# -- 5. sessions end -------------------------------------------------------------------------
async def test_logout_and_password_change_end_sessions(tmp_path: Path, browser: Browser) -> None:
    async with bare(tmp_path) as s:
        context = await browser.new_context()
        page = await context.new_page()
        await log_in(page, s.base)
        cookie = next(c for c in await context.cookies() if c["name"] == "hems_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
        old = {"Cookie": f"hems_session={cookie['value']}"}
        async with httpx.AsyncClient(base_url=s.base) as anon:
            assert (await anon.get("/api/state", headers=old)).status_code == 200
            await page.click("#logout")  # the page's form, with its CSRF field
            await page.wait_for_url(f"{s.base}/login")
            assert (await anon.get("/api/state", headers=old)).status_code == 401
            r = await anon.get("/", headers=old)
            assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "logout" in [e.kind for e in await security_log(s)]

        # A new password logs out every session, the browser's and a script's.
        await log_in(page, s.base)
        async with logged_in(s.base) as (client, _csrf):
            assert (await client.get("/api/state")).status_code == 200
            await s.auth.set_password(NEW_PASSWORD, "test")
            assert (await client.get("/api/state")).status_code == 401
            r = await client.post("/login", data={"password": OWNER_PASSWORD})
            assert r.status_code == 401
        await page.reload()
        await page.wait_for_url(f"{s.base}/login")
        await log_in(page, s.base, NEW_PASSWORD)
        assert "password-changed" in [e.kind for e in await security_log(s)]
        await context.close()


# -- 6. API tokens and `hems admin` -------------------------------------------------------------
async def test_admin_tokens_and_password_through_the_cli(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, demo_config(tmp_path, 5020, 9000, 8080))
    cfg = ["-c", str(config_path)]
    rc, out, err = await hems_admin("token", "create", "ha", "--read-only", *cfg)
    assert rc == 0 and "read-only" in err and "shown once" in err
    # stdout is the token alone (logs go to stderr), so `TOKEN=$(hems admin …)` works.
    assert re.fullmatch(r"hems_[\w-]{43}\n", out), out
    read_only = out.strip()
    rc, out, _ = await hems_admin("token", "create", "script", *cfg)
    assert rc == 0
    read_write = out.strip()
    rc, _, err = await hems_admin("token", "create", "ha", *cfg)
    assert rc == 1 and "name: a token named 'ha' exists" in err
    rc, out, _ = await hems_admin("password", *cfg, stdin=f"{NEW_PASSWORD}\n".encode())
    assert rc == 0 and "every session was logged out" in out
    rc, _, err = await hems_admin("password", *cfg, stdin=b"short\n")
    assert rc == 1 and "password: must be 10..256 characters" in err
    rc, out, _ = await hems_admin("setup-code", *cfg)
    assert rc == 1 and "password is set" in out

    async with bare(tmp_path, password=False) as s:  # the same database file
        async with httpx.AsyncClient(base_url=s.base) as client:
            ro = {"Authorization": f"Bearer {read_only}"}
            rw = {"Authorization": f"Bearer {read_write}"}
            r = await client.get("/api/state", headers=ro)
            assert r.status_code == 200 and r.json()["site"] == "Test home"
            r = await client.post("/api/echo", headers=ro, json={"a": 1})
            assert r.status_code == 403 and "read-only" in r.json()["error"]
            assert s.calls == []
            r = await client.post("/api/echo", headers=rw, json={"a": 1})
            assert r.status_code == 200 and s.calls == [{"a": 1}]

            rc, out, _ = await hems_admin("token", "list", *cfg)
            assert rc == 0
            listing = {line.split()[0]: line for line in out.splitlines()}
            assert "read-only" in listing["ha"] and "active" in listing["ha"]
            assert "read-write" in listing["script"]
            assert "last used never" not in listing["ha"]  # it was just used

            rc, out, _ = await hems_admin("token", "revoke", "ha", *cfg)
            assert rc == 0 and "revoked" in out
            r = await client.get("/api/state", headers=ro)
            assert r.status_code == 401 and r.json()["error"].startswith("auth:")
            rc, _, err = await hems_admin("token", "revoke", "ha", *cfg)
            assert rc == 1 and "no active token named 'ha'" in err
            rc, out, _ = await hems_admin("token", "list", *cfg)
            assert "revoked" in next(line for line in out.splitlines() if line.startswith("ha"))

            # The password set from the terminal is the one the page takes.
            login = {"Origin": s.base}
            r = await client.post("/login", data={"password": OWNER_PASSWORD}, headers=login)
            assert r.status_code == 401
            r = await client.post("/login", data={"password": NEW_PASSWORD}, headers=login)
            assert r.status_code == 303
        kinds = [e.kind for e in await security_log(s)]
        assert {"token-created", "token-revoked", "password-changed", "refused"} <= set(kinds)


# -- 7. response headers, TLS ------------------------------------------------------------------
def assert_security_headers(r: httpx.Response, what: str) -> None:
    h = r.headers
    assert h.get("content-security-policy") == CSP, what
    assert h.get("x-frame-options") == "DENY", what
    assert h.get("x-content-type-options") == "nosniff", what
    assert h.get("referrer-policy") == "same-origin", what


async def test_security_headers_on_page_api_and_errors(tmp_path: Path) -> None:
    async with bare(tmp_path) as s:
        async with logged_in(s.base) as (client, _):
            responses = {
                "page": await client.get("/"),
                "login page": await client.get("/login", follow_redirects=False),
                "api": await client.get("/api/state"),
                "static": await client.get("/static/app.js"),
                "static 404": await client.get("/static/nope.js"),
                "api 404": await client.get("/api/no-such-thing"),
                "route 404": await client.get("/no/such/route"),
                "refused": await client.post("/api/echo", json={}),
                "redirect": await httpx.AsyncClient(base_url=s.base).get("/"),
            }
        assert responses["page"].status_code == 200
        assert responses["static 404"].status_code == 404
        assert responses["api 404"].status_code == 404
        assert responses["route 404"].status_code == 404
        assert responses["refused"].status_code == 403
        assert responses["redirect"].status_code == 303
        for what, r in responses.items():
            assert_security_headers(r, what)
            assert "strict-transport-security" not in r.headers, what  # plain HTTP
        # No inline script in the page: the CSP would block it.
        assert re.search(r"<script(?![^>]*\bsrc=)", responses["page"].text) is None


async def test_tls_sends_secure_cookie_and_hsts(tmp_path: Path, browser: Browser) -> None:
    cert, key = ensure_self_signed(tmp_path / "tls", datetime.now(UTC))
    assert ensure_self_signed(tmp_path / "tls", datetime.now(UTC)) == (cert, key)  # reused
    assert (key.stat().st_mode & 0o777) == 0o600
    async with bare(tmp_path, tls=server_context(cert, key)) as s:
        assert s.base.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        async with logged_in(s.base, verify=trust) as (client, csrf):
            r = await client.post("/login", data={"password": OWNER_PASSWORD})
            set_cookie = r.headers["set-cookie"]
            assert set_cookie.startswith("hems_session=")
            for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
                assert attribute in set_cookie, set_cookie
            csrf = await csrf_of(client)  # this login's session replaced the first
            for r in (await client.get("/"), await client.get("/api/state"),
                      await client.get("/static/nope.js")):  # fmt: skip
                assert r.headers["strict-transport-security"] == "max-age=31536000"
                assert_security_headers(r, str(r.url))
            # The origin check uses https: an http:// Origin is another origin.
            r = await client.post(
                "/api/echo", json={}, headers={"X-CSRF-Token": csrf,
                                               "Origin": s.base.replace("https", "http")},
            )  # fmt: skip
            assert r.status_code == 403
            r = await client.post("/api/echo", json={}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200
        # Plain HTTP to the TLS port gets nowhere.
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(s.base.replace("https", "http") + "/api/health")
        # A browser (certificate accepted) logs in and the page works over TLS.
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        await log_in(page, s.base)
        await expect(page.locator("#grid_power_w")).to_have_text("-1.23 kW")
        cookie = next(c for c in await context.cookies() if c["name"] == "hems_session")
        assert cookie["secure"] and cookie["httpOnly"]
        await context.close()
