"""Live events for `GET /api/v1/stream` (server-sent events, `text/event-stream`).

A `Watcher` turns what the page shows into events by comparing snapshots: `site` (the site
figures and the latest readings; on change, after SiteState's listener says a batch
arrived), `devices` (a device's stale/down state changed), `plan` (a new plan),
`intervention` (each new journal entry) and `flex` (an event's status changed). The stages
need no hook: it reads the providers the API reads. Every event has an increasing `id:`; a
comment line is sent as a heartbeat.

Each client gets a bounded queue. A client that falls `queue_size` events behind is dropped
(its stream ends; EventSource reconnects and reloads), so a stalled phone never makes the
daemon buffer for ever. At most `max_streams` run at once; more get 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from hems.core.quantities import site_values
from hems.core.readings import Reading
from hems.core.state import SiteState
from hems.web.problem import problem

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        body = json.dumps(_finite(self.data), default=str, allow_nan=False)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


@dataclass(eq=False)
class _Client:
    queue: asyncio.Queue[Event | None]
    dropped: bool = False


@dataclass
class EventHub:
    """Fan-out of events to the open streams, each through its own bounded queue."""

    queue_size: int = 64
    max_streams: int = 8
    heartbeat_s: float = 15.0  # real seconds: it keeps proxies and the browser's link alive
    _clients: set[_Client] = field(default_factory=set)
    _next_id: int = 1
    _closed: bool = False
    dropped: int = 0  # clients dropped for being too slow

    @property
    def streams(self) -> int:
        return len(self._clients)

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        event = Event(self._next_id, kind, data)
        self._next_id += 1
        for client in list(self._clients):
            if client.dropped:
                continue
            try:
                client.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(client)
        return event

    def close(self) -> None:
        """End every stream and refuse new ones (the server is stopping: aiohttp would
        otherwise wait for the open streams before it lets go)."""
        self._closed = True
        for client in list(self._clients):
            client.dropped = True
            with contextlib.suppress(asyncio.QueueEmpty):
                client.queue.get_nowait()
            client.queue.put_nowait(None)

    def _drop(self, client: _Client) -> None:
        client.dropped = True
        self.dropped += 1
        # Make room for the end marker: the stream ends instead of waiting on a full queue.
        with contextlib.suppress(asyncio.QueueEmpty):
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        log.info("event stream dropped: client too slow", queue_size=self.queue_size)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            return problem(503, "stream: the daemon is stopping", headers={"Retry-After": "10"})
        if len(self._clients) >= self.max_streams:
            return problem(
                503,
                f"stream: {self.max_streams} streams are open already; try again later",
                headers={"Retry-After": "10"},
            )
        client = _Client(asyncio.Queue(self.queue_size))
        self._clients.add(client)
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
            )
            await response.prepare(request)
            # A retry hint and a first comment, so the client sees the stream is open.
            await response.write(b"retry: 5000\n: hems events\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(client.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if event is None:
                    break
                await response.write(event.encode())
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            self._clients.discard(client)
        return response


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has neither (unknown is null on the wire)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Watcher:
    """Samples the site and the providers, and publishes what changed (see the module)."""

    def __init__(
        self,
        hub: EventHub,
        state: SiteState,
        providers: Mapping[str, Callable[[], Any]],
        interval_s: float = 1.0,
    ) -> None:
        self._hub = hub
        self._state = state
        self._providers = providers
        self._interval_s = interval_s  # real seconds between looks, at most
        self._readings = asyncio.Event()
        self._last: dict[str, Any] = {}
        self._seen_interventions = -1
        state.add_listener(self._on_readings)

    def _on_readings(self, _batch: list[Reading]) -> None:
        self._readings.set()  # listeners only enqueue (SiteState's rule)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._readings.wait(), self._interval_s)
            self._readings.clear()
            try:
                await self.check()
            except Exception:  # a provider's bug must not end the stream for everyone
                log.exception("event watcher failed")
            # Coalesce: at most one look per interval however often readings arrive.
            await asyncio.sleep(self._interval_s)

    async def check(self) -> None:
        """Compare with the last look and publish each change (the first look sets the base,
        and publishes the site so a new client's page has something)."""
        state = self._state
        readings = [
            {k: r[k] for k in ("device_id", "quantity", "value", "stale")} for r in state.snapshot()
        ]
        self._changed("site", {"summary": site_values(state), "readings": readings})
        devices = {
            d: {"role": str(r), "stale": state.is_stale(d), "reason": state.down_reason(d)}
            for d, r in sorted(state.devices.items())
        }
        self._changed("devices", {"devices": devices}, first=False)
        plan = await self._read("plan")
        if plan is not None:
            head = {k: plan.get(k) for k in ("created_at", "status", "cost")}
            self._changed("plan", head, first=False)
        control = await self._read("control")
        if control is not None:
            self._new_interventions(control)
        flex = await self._read("flex-events")
        if flex is not None:
            statuses = {
                f"{e['event_id']}/{e['modification_number']}": e["status"]
                for e in flex.get("events", [])
            }
            self._changed("flex", {"events": statuses}, first=False)

    def _changed(self, kind: str, data: dict[str, Any], *, first: bool = True) -> None:
        known = kind in self._last
        if known and self._last[kind] == data:
            return
        self._last[kind] = data
        if known or first:
            self._hub.publish(kind, data)

    def _new_interventions(self, control: dict[str, Any]) -> None:
        logged = int(control["status"].get("interventions_logged", 0))
        recent: list[dict[str, Any]] = control.get("interventions", [])
        if self._seen_interventions >= 0 and logged > self._seen_interventions:
            for record in recent[-(logged - self._seen_interventions) :]:
                self._hub.publish("intervention", dict(record))
        self._seen_interventions = logged

    async def _read(self, name: str) -> Any:
        provider = self._providers.get(name)
        if provider is None:
            return None
        value = provider()
        return await value if inspect.isawaitable(value) else value
