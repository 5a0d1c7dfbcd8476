"""The whole chain over real TCP: HIL rig → `hems run` (a real process) → SQLite → web page.

The rig runs in the test process; the daemon is started exactly as systemd starts it, with a
NOTIFY_SOCKET to receive READY/WATCHDOG, and stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright

from hems.core.clock import RealClock
from hil.rig import HilRig
from tests.testlib import free_port, log_in, wait_until, web_credentials
from tests.web.conftest import CHROMIUM_ARGS, chromium_path

CONFIG = """\
site: {{id: e2e, name: End to end}}
devices:
  - {{type: sunspec, id: pv, role: pv, host: 127.0.0.1, port: {port}, unit_id: 1}}
  - {{type: sunspec, id: battery, role: battery, host: 127.0.0.1, port: {port}, unit_id: 2}}
  - {{type: sunspec, id: grid, role: grid, host: 127.0.0.1, port: {port}, unit_id: 3}}
  - {{type: sunspec, id: ghost, role: load, host: 127.0.0.1, port: {dead}, unit_id: 1,
      timeout_s: 0.3, backoff_initial_s: 0.2, backoff_max_s: 1}}
storage: {{path: {db}, batch_interval_s: 1}}
web: {{host: 127.0.0.1, port: {web}}}
logging: {{level: info, format: json}}
"""


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def notify_socket(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield path, sock
    sock.close()


async def test_readings_reach_sqlite_and_the_page_and_sigterm_flushes(
    tmp_path: Path, notify_socket: tuple[Path, socket.socket]
) -> None:
    notify_path, notify = notify_socket
    async with HilRig(RealClock(), fault_proxy=False) as rig:
        db = tmp_path / "hems.db"
        token = await web_credentials(db)
        web_port = free_port()
        cfg = tmp_path / "hems.yaml"
        cfg.write_text(CONFIG.format(port=rig.sunspec_port, dead=free_port(), db=db, web=web_port))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="1000000")
        env.pop("WATCHDOG_PID", None)
        # The daemon's log goes to a file: a pipe nobody reads while the test runs fills up
        # (64 KiB) on a slow machine and blocks the daemon in the middle of its work.
        log_path = tmp_path / "daemon.log"
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hems.cli", "run", "-c", str(cfg),
                stdout=log_file, stderr=log_file, env=env,
            )  # fmt: skip
        drainer: asyncio.Task[None] | None = None
        try:
            messages: list[bytes] = []

            def got(prefix: bytes) -> bool:
                try:
                    while True:
                        messages.append(notify.recv(256))
                except BlockingIOError:
                    pass
                return any(m.startswith(prefix) for m in messages)

            async def drain() -> None:
                # Read the notices as systemd does, all along: a queue left full would drop
                # the daemon's STOPPING=1 (it never waits on a full queue).
                while True:
                    got(b"")
                    await asyncio.sleep(0.1)

            drainer = asyncio.create_task(drain())
            await wait_until(lambda: got(b"READY=1"), 15, "READY=1", interval_s=0.2)
            await wait_until(lambda: got(b"WATCHDOG=1"), 5, "WATCHDOG=1", interval_s=0.2)
            await wait_until(
                lambda: (
                    db.exists()
                    and rows(db, "SELECT count(DISTINCT device_pk) FROM readings")[0][0] >= 3
                ),
                15,
                "readings of three devices in SQLite",
                interval_s=0.2,
            )
            stored = dict(
                rows(
                    db,
                    "SELECT d.device_id, count(*) FROM readings r JOIN devices d "
                    "USING(device_pk) GROUP BY d.device_id",
                )
            )
            assert set(stored) == {"pv", "battery", "grid"}  # the ghost never answered
            soc = rows(
                db,
                "SELECT value FROM readings r JOIN quantities q USING(quantity_pk) "
                "JOIN devices d USING(device_pk) WHERE q.name='soc_pct' AND d.device_id='battery'",
            )
            assert soc and all(0 <= v <= 100 for (v,) in soc)
            assert abs(soc[-1][0] - rig.home.state.soc_pct) < 1.0

            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{web_port}",
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                state = (await client.get("/api/state")).json()
            assert state["devices"]["ghost"]["stale"] is True
            assert state["devices"]["grid"]["stale"] is False
            assert state["summary"]["battery_soc_pct"] is not None

            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=chromium_path(), args=CHROMIUM_ARGS
                )
                page = await browser.new_page()
                await log_in(page, f"http://127.0.0.1:{web_port}")
                await page.wait_for_selector("#readings tr[data-device='grid']")
                soc_text = await page.inner_text("#battery_soc_pct")
                assert soc_text.endswith("%")
                ghost = page.locator("#devices tr.stale td:first-child")
                assert await ghost.all_inner_texts() == ["ghost"]
                await browser.close()

            before = rows(db, "SELECT count(*) FROM readings")[0][0]
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
            drainer.cancel()
            log = log_path.read_text(errors="replace")
            assert proc.returncode == 0, log[-2000:]
            after = rows(db, "SELECT count(*) FROM readings")[0][0]
            assert after >= before
            assert '"event": "hems stopping"' in log
            assert got(b"STOPPING=1")
            # One clear line about the dead device, not a traceback per poll.
            assert "Traceback" not in log
        finally:
            if drainer is not None:
                drainer.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
