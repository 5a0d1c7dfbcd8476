"""The local web page and REST API (aiohttp).

Read-only JSON under /api/…; other parts of the daemon add their own read endpoints with
`add_json(name, provider)` and form/API actions with `add_action(name, handler)` so this module
stays small. Bad input to an action gets HTTP 400 with `{"error": "field: reason"}`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from html import escape
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from hems.core.clock import Clock
from hems.core.jsonsafe import JsonTooLarge, loads_bounded
from hems.core.quantities import SITE_QUANTITIES, site_values
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.errors import ConfigError, HemsError
from hems.store.timeseries import ReadingStore

log = structlog.get_logger(__name__)

JsonProvider = Callable[[], Any] | Callable[[], Awaitable[Any]]
Action = Callable[[dict[str, Any]], Awaitable[Any]]


def site_summary(state: SiteState) -> dict[str, float | None]:
    """The site figures the owner looks at first, by key; None when unknown or stale.

    The figures and their rules are hems.core.quantities.SITE_QUANTITIES, shared with the
    uplink and Home Assistant so the page never disagrees with them.
    """
    return site_values(state)


def summary_cards() -> str:
    """The page's summary cards, one per site quantity; the script fills in the values."""
    return "\n".join(
        f'    <div class="card"><div class="label">{escape(q.name)}</div>'
        f'<div class="value" id="{escape(q.key)}" data-unit="{escape(q.unit)}" '
        f'data-precision="{q.precision}">–</div>'
        f'<div class="hint">{escape(q.description)}</div></div>'
        for q in SITE_QUANTITIES
    )


class WebServer:
    def __init__(
        self,
        host: str,
        port: int,
        state: SiteState,
        clock: Clock,
        store: ReadingStore | None = None,
        site_name: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self._state = state
        self._clock = clock
        self._store = store
        self._site_name = site_name
        self._json: dict[str, JsonProvider] = {}
        self._actions: dict[str, Action] = {}
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def add_json(self, name: str, provider: JsonProvider) -> None:
        self._json[name] = provider

    def add_action(self, name: str, handler: Action) -> None:
        self._actions[name] = handler

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/series", self._api_series)
        app.router.add_get("/api/health", self._api_health)
        app.router.add_get("/api/{name}", self._api_extra)
        app.router.add_post("/api/{name}", self._api_action)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("web page serving", url=f"http://{self._host}:{self.bound_port}/")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------------
    async def _index(self, _: web.Request) -> web.Response:
        page = resources.files("hems.web").joinpath("static/index.html").read_text("utf-8")
        page = page.replace("    <!-- summary cards -->", summary_cards(), 1)
        return web.Response(text=page, content_type="text/html")

    async def _api_state(self, _: web.Request) -> web.Response:
        devices = {
            device_id: {
                "role": str(role),
                "stale": self._state.is_stale(device_id),
                "reason": self._state.down_reason(device_id),
            }
            for device_id, role in sorted(self._state.devices.items())
        }
        body = {
            "site": self._site_name,
            "now": self._clock.now().isoformat(),
            "summary": site_summary(self._state),
            "devices": devices,
            "readings": self._state.snapshot(),
            "store": asdict(self._store.stats) if self._store is not None else None,
        }
        return web.json_response(body, dumps=_dumps)

    async def _api_health(self, _: web.Request) -> web.Response:
        stale = [d for d in self._state.devices if self._state.is_stale(d)]
        stages = self._json.get("stages")
        failures = (stages() or {}).get("failures", {}) if stages is not None else {}
        return web.json_response(
            {"ok": True, "stale_devices": stale, "stage_failures": failures}, dumps=_dumps
        )

    async def _api_series(self, request: web.Request) -> web.Response:
        if self._store is None:
            return _error(404, "series: no store")
        q = request.query
        device_id = q.get("device", "")
        try:
            quantity = Quantity(q.get("quantity", "power_w"))
        except ValueError:
            return _error(400, f"quantity: unknown quantity {q.get('quantity')!r}")
        try:
            minutes = int(q.get("minutes", "60"))
            if not 1 <= minutes <= 60 * 24 * 31:
                raise ValueError
        except ValueError:
            return _error(400, "minutes: must be an integer 1..44640")
        resolution_s = 1800 if minutes > 24 * 60 else 60
        until = self._clock.now()
        rows = await self._store.series(
            device_id, quantity, until - timedelta(minutes=minutes), until, resolution_s
        )
        return web.json_response({"device": device_id, "quantity": quantity, "rows": rows})

    async def _api_extra(self, request: web.Request) -> web.Response:
        provider = self._json.get(request.match_info["name"])
        if provider is None:
            return _error(404, f"{request.match_info['name']}: no such endpoint")
        value = provider()
        if inspect.isawaitable(value):
            value = await value
        return web.json_response(value, dumps=_dumps)

    async def _api_action(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        handler = self._actions.get(name)
        if handler is None:
            return _error(404, f"{name}: no such action")
        try:
            if request.content_type == "application/json":
                raw = await request.read()
                body = loads_bounded(raw, max_bytes=_MAX_BODY_BYTES, max_depth=_MAX_DEPTH)
            else:
                body = dict(await request.post())
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body: larger than {_MAX_BODY_BYTES} bytes")
        except JsonTooLarge as exc:
            return _error(413, str(exc))
        except LookupError as exc:  # an unknown charset in Content-Type
            return _error(400, f"body: unsupported charset ({exc})")
        except ValueError as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict):
            return _error(400, "body: must be a JSON object")
        try:
            result = await handler(body)
        except (ConfigError, HemsError, ValueError) as exc:
            log.warning("web action refused", action=name, error=str(exc))
            return _error(400, str(exc))
        return web.json_response({"ok": True, "result": result}, dumps=_dumps)


_MAX_BODY_BYTES = 64 * 1024
_MAX_DEPTH = 16


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
