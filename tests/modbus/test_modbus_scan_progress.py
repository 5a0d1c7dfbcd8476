"""A scan from the installer's page shows its progress while it runs.

The scan goes through a small Modbus TCP relay in front of a real pymodbus SunSpec server:
unit 1 is forwarded, every request for unit 2 is held until the test lets it go (then answered
"gateway target failed to respond"). While unit 2 is held the page must say that unit 2 of 2
is being asked and already show what unit 1 answered; a second scan is refused while one
runs; once released the page shows the result with its entries. Stopping the web server
cancels a scan that is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from datetime import UTC, datetime
from pathlib import Path

from modbus_sim import common_model, model_regs, sunspec_image
from playwright.async_api import Browser, expect

from hems.core import ManualClock, SiteState
from hems.store.db import Database
from hems.web import WebServer, installer
from hems.web.auth import AuthStore, LoginLimiter
from tests.testlib import OWNER_PASSWORD, log_in
from tests.web.conftest import browser  # noqa: F401 - the Chromium fixture

CONFIG = "site: {id: home}\ndevices: []\n"


class HoldingRelay:
    """Forwards Modbus TCP frames to `upstream_port`, except those for `held_unit`."""

    def __init__(self, upstream_port: int, held_unit: int) -> None:
        self.upstream_port = upstream_port
        self.held_unit = held_unit
        self.release = asyncio.Event()
        self.held = asyncio.Event()  # set once a request for the held unit has arrived
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> HoldingRelay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                if unit == self.held_unit:
                    self.held.set()
                    await self.release.wait()
                    # Modbus exception 0x0B: gateway target device failed to respond.
                    writer.write(struct.pack(">HHHBBB", tid, pid, 3, unit, pdu[0] | 0x80, 0x0B))
                else:
                    up_writer.write(header + pdu)
                    await up_writer.drain()
                    answer = await up_reader.readexactly(7)
                    (answer_length,) = struct.unpack(">H", answer[4:6])
                    writer.write(answer + await up_reader.readexactly(answer_length - 1))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            writer.close()
            self._tasks.discard(task)


async def _installer_web(tmp_path: Path) -> tuple[WebServer, str]:
    clock = ManualClock(datetime(2026, 7, 1, 12, tzinfo=UTC))
    db = await Database.open(tmp_path / "hems.db")
    path = tmp_path / "hems.yaml"
    path.write_text(CONFIG)
    auth = AuthStore(db, clock)
    await auth.set_password(OWNER_PASSWORD, "test")
    web = WebServer("127.0.0.1", 0, SiteState(clock), clock, None, "Test home", auth=auth,
                    limiter=LoginLimiter(clock))  # fmt: skip
    # A long per-request timeout: while the relay holds unit 2, the scan stays on unit 2.
    installer.register(web, path, restart=lambda: None, db=db, clock=clock, scan_timeout_s=60.0)
    await web.start()
    return web, f"http://127.0.0.1:{web.bound_port}"


def _inverter() -> list[int]:
    return sunspec_image(
        common_model("Acme", "Sol 5", "SN-42"),
        model_regs(103, W=2750, W_SF=0, WH=12345, WH_SF=0),
        model_regs(123),
    )


async def test_scan_progress_is_shown_while_units_are_asked(
    serve,
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    srv = await serve({1: (40000, _inverter())})
    relay = await HoldingRelay(srv.port, held_unit=2).start()
    web, base = await _installer_web(tmp_path)
    try:
        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await log_in(page, base)
        await page.goto(f"{base}/installer/devices")
        await page.fill("input[name=target]", f"127.0.0.1:{relay.port}")
        await page.fill("input[name=units]", "1 2")
        await page.click("#scan-form button")
        await page.wait_for_url(f"{base}/installer/scan/*")
        await asyncio.wait_for(relay.held.wait(), 60)
        # The page reloads itself; once on unit 2 it stays there until the relay lets go.
        progress = page.locator("#scan-progress")
        await expect(progress).to_contain_text("unit id 2 (2 of 2)", timeout=30_000)
        await expect(page.locator("#scan-report")).to_contain_text("Acme / Sol 5 / SN-42")
        assert await page.locator("#scan-form").count() == 0
        assert await page.locator(".add-device").count() == 0  # entries only once it is over

        other = await browser.new_page(viewport={"width": 1280, "height": 800})
        await log_in(other, base)
        await other.goto(f"{base}/installer/devices")
        await other.fill("input[name=target]", f"127.0.0.1:{srv.port}")
        async with other.expect_response(lambda r: r.url.endswith("/installer/scan")) as info:
            await other.click("#scan-form button")
        assert (await info.value).status == 409
        assert "another scan is still running" in await other.inner_text("#scan-error")
        assert await other.locator("#scan-running").count() == 1

        relay.release.set()
        await expect(page.locator("#scan-done")).to_contain_text(
            "2 of 2 unit ids asked", timeout=60_000
        )
        report = await page.inner_text("#scan-report")
        assert "Acme / Sol 5 / SN-42" in report and "2750" in report
        assert await page.locator(".add-device").count() >= 1
        assert await page.locator("#scan-progress").count() == 0
        # Over, so a new scan may start.
        await other.goto(f"{base}/installer/devices")
        await other.fill("input[name=target]", f"127.0.0.1:{srv.port}")
        await other.click("#scan-form button")
        await other.wait_for_url(f"{base}/installer/scan/*")
        await expect(other.locator("#scan-done")).to_be_visible(timeout=60_000)
    finally:
        relay.release.set()
        await web.stop()
        await relay.stop()


async def test_an_unknown_scan_is_404_and_stopping_cancels_a_running_scan(
    serve,
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    srv = await serve({1: (40000, _inverter())})
    relay = await HoldingRelay(srv.port, held_unit=1).start()
    web, base = await _installer_web(tmp_path)
    stopped = False
    try:
        page = await browser.new_page()
        await log_in(page, base)
        gone = await page.goto(f"{base}/installer/scan/no-such-job")
        assert gone is not None and gone.status == 404
        assert "scan again" in await page.inner_text("#scan-error")
        await page.goto(f"{base}/installer/devices")
        await page.fill("input[name=target]", f"127.0.0.1:{relay.port}")
        await page.click("#scan-form button")
        await asyncio.wait_for(relay.held.wait(), 60)
        assert [t for t in asyncio.all_tasks() if t.get_name() == "installer-scan"]
        await web.stop()
        stopped = True
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "installer-scan"]
    finally:
        relay.release.set()
        if not stopped:
            await web.stop()
        await relay.stop()
