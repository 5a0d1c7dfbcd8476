"""The live event stream (GET /api/v1/stream) on the real WebServer over real HTTP (httpx):
events on state changes with ids, the heartbeat, the bounded per-client queue (a slow client
is dropped), the cap on concurrent streams, and no stream without credentials.

Waits are on the events themselves; timeouts only as safety nets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, expect

from hems.core import Quantity, Reading
from tests.testlib import log_in, wait_until
from tests.web.test_web_security import bare, logged_in


@dataclass
class Sse:
    """One open stream, its events parsed as they arrive (kind, id, data), and comments."""

    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> Any:
        async def check() -> Any:
            async with self.arrived:
                while not (found := predicate(self)):
                    await self.arrived.wait()
                return found

        return await asyncio.wait_for(check(), timeout_s)


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient) -> AsyncIterator[Sse]:
    s = Sse()
    opened = asyncio.Event()

    async def read() -> None:
        async with client.stream("GET", "/api/v1/stream", timeout=None) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"] == "text/event-stream"
            assert "default-src 'self'" in r.headers["content-security-policy"]
            opened.set()
            kind, ident, data = "", 0, ""
            async for line in r.aiter_lines():
                async with s.arrived:
                    if line.startswith(":"):
                        s.comments.append(line[1:].strip())
                    elif line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("id: "):
                        ident = int(line.removeprefix("id: "))
                    elif line.startswith("data: "):
                        data = line.removeprefix("data: ")
                    elif line == "" and kind:
                        s.events.append((kind, ident, json.loads(data)))
                        kind = ""
                    s.arrived.notify_all()
        async with s.arrived:
            s.ended.set()
            s.arrived.notify_all()

    task = asyncio.create_task(read())
    done, _ = await asyncio.wait(
        {task, asyncio.ensure_future(opened.wait())},
        timeout=20,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if task in done:
        task.result()  # the stream was refused: raise its assertion
    try:
        yield s
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_stream_sends_changes_with_ids_and_heartbeats(tmp_path: Path) -> None:
    async with bare(tmp_path) as s:
        s.web.events.heartbeat_s = 0.2
        bearer = {"Authorization": f"Bearer {s.read_only}"}  # reading needs no write scope
        async with httpx.AsyncClient(base_url=s.base, headers=bearer) as client, sse(client) as st:
            # A new reading (the grid now imports): a site event with the new figure.
            s.state.publish([Reading("grid", Quantity.POWER_W, 2500.0, s.clock.now())])
            site = await st.wait_for(
                lambda x: [
                    e
                    for e in x.events
                    if e[0] == "site" and e[2]["summary"].get("grid_power_w") == 2500.0
                ]
            )
            # A device goes down: a devices event naming it and why.
            s.state.mark_down("pv", "modbus: no answer")
            devices = await st.wait_for(
                lambda x: [
                    e for e in x.events if e[0] == "devices" and e[2]["devices"]["pv"]["stale"]
                ]
            )
            assert devices[0][2]["devices"]["pv"]["reason"] == "modbus: no answer"
            assert devices[0][2]["devices"]["grid"]["stale"] is False
            assert devices[0][1] > site[0][1]  # ids increase
            ids = [e[1] for e in st.events]
            assert ids == sorted(set(ids))
            # Nothing changes: the heartbeat keeps the link alive.
            await st.wait_for(lambda x: "heartbeat" in x.comments)


async def test_stream_needs_credentials(tmp_path: Path) -> None:
    async with bare(tmp_path) as s, httpx.AsyncClient(base_url=s.base) as anon:
        r = await anon.get("/api/v1/stream")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "auth"
        r = await anon.get(
            "/api/v1/stream", headers={"Authorization": "Bearer hems_revoked-or-made-up"}
        )
        assert r.status_code == 401 and r.json()["status"] == 401
        assert s.web.events.streams == 0
        # The owner's session is enough (the page uses it).
        async with logged_in(s.base) as (session, _csrf), sse(session) as st:
            s.state.publish([Reading("grid", Quantity.POWER_W, 777.0, s.clock.now())])
            await st.wait_for(
                lambda x: any(
                    e[2].get("summary", {}).get("grid_power_w") == 777.0 for e in x.events
                )
            )


async def test_a_slow_client_is_dropped_and_streams_are_capped(tmp_path: Path) -> None:
    async with bare(tmp_path) as s:
        hub = s.web.events
        hub.queue_size, hub.max_streams = 4, 2
        bearer = {"Authorization": f"Bearer {s.token}"}
        async with httpx.AsyncClient(base_url=s.base, headers=bearer) as client:
            async with sse(client) as slow, sse(client) as other:
                assert hub.streams == 2
                # A third stream is refused while two are open, as a problem.
                r = await client.get("/api/v1/stream")
                assert r.status_code == 503 and r.headers["retry-after"] == "10"
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["errors"][0]["field"] == "stream"
                # More events than the queue holds before either stream's task runs: both
                # clients are behind, and are dropped rather than buffered.
                for i in range(hub.queue_size + 1):
                    hub.publish("site", {"n": i})
                await slow.wait_for(lambda x: x.ended.is_set())
                await other.wait_for(lambda x: x.ended.is_set())
                assert hub.dropped == 2
                assert len(slow.events) < hub.queue_size + 1
            await wait_until(lambda: hub.streams == 0, 10, "the dropped streams to close")
            # A new stream (EventSource reconnects by itself) works again.
            async with sse(client) as again:
                hub.publish("plan", {"created_at": "x"})
                await again.wait_for(lambda x: any(e[0] == "plan" for e in x.events))


async def test_owner_page_follows_the_stream_under_its_csp(
    tmp_path: Path, browser: Browser
) -> None:
    """The live section is refreshed by events while the stream is open: its polling is
    off then, so a new figure on the page proves the event path (real CSP, no bypass)."""
    async with bare(tmp_path) as s:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await log_in(page, s.base)
        await page.wait_for_selector("body[data-stream=open]")
        assert await page.inner_text("#grid_power_w") == "-1.23 kW"
        s.state.publish([Reading("grid", Quantity.POWER_W, 4321.0, s.clock.now())])
        await expect(page.locator("#grid_power_w")).to_have_text("4.32 kW", timeout=15_000)
        assert errors == []
