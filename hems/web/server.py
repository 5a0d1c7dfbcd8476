"""The local web page and REST API (aiohttp).

JSON under /api/…; other parts of the daemon add their own read endpoints with
`add_json(name, provider)` and form/API actions with `add_action(name, handler)` so this module
stays small. Bad input to an action gets HTTP 400 with `{"error": "field: reason"}`.
The owner's page (/ and its fragments /fragment/<name>) is hems.web.pages, rendered on the
server from the same providers.

Health (hems.web.health): /api/v1/health (and /api/health, the same) answers 200 `{"ok": true}`
or 503 with reasons, public for monitoring probes.

Security (hems.web.auth): every route but the login and setup pages, the static files and
the health endpoints needs the owner's session (cookie) or an API token (`Authorization: Bearer`).
A state-changing request with a session also needs the session's CSRF token and a
same-origin `Sec-Fetch-Site`/`Origin`; a read-only token cannot change anything. Every
response carries a CSP without inline script, `frame-ancestors 'none'`, `nosniff` and a
referrer policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, MultipartReader, web
from pydantic import BaseModel

from hems.core.clock import Clock
from hems.core.jsonsafe import JsonTooLarge, loads_bounded
from hems.core.quantities import site_values
from hems.core.readings import Quantity
from hems.core.state import SiteState
from hems.errors import ConfigError, HemsError
from hems.store.timeseries import ReadingStore
from hems.web.api import PREFIX as V1
from hems.web.api import ApiV1, ConfigFile
from hems.web.auth import AuthStore, LoginLimiter, Session, Token, same_origin
from hems.web.health import HealthCheck, site_reasons
from hems.web.pages import OwnerPage, SiteView
from hems.web.problem import problem
from hems.web.stream import EventHub, Watcher

log = structlog.get_logger(__name__)

JsonProvider = Callable[[], Any] | Callable[[], Awaitable[Any]]
Action = Callable[[dict[str, Any]], Awaitable[Any]]


def site_summary(state: SiteState) -> dict[str, float | None]:
    """The site figures the owner looks at first, by key; None when unknown or stale.

    The figures and their rules are hems.core.quantities.SITE_QUANTITIES, shared with the
    uplink and Home Assistant so the page never disagrees with them.
    """
    return site_values(state)


class WebServer:
    def __init__(
        self,
        host: str,
        port: int,
        state: SiteState,
        clock: Clock,
        store: ReadingStore | None = None,
        site_name: str = "",
        *,
        auth: AuthStore,
        limiter: LoginLimiter,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._auth = auth
        self._limiter = limiter
        self._tls = tls
        self._host = host
        self._port = port
        self._state = state
        self._clock = clock
        self._store = store
        self._site_name = site_name
        self._json: dict[str, JsonProvider] = {}
        self._actions: dict[str, Action] = {}
        self._routes: list[tuple[str, str, Handler]] = []
        self._health: HealthCheck | None = None
        self._api_paths: set[str] = set()  # add_route(api=True): 401, never a redirect
        self._runner: web.AppRunner | None = None
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self.bound_port: int | None = None
        # The owner's page (hems.web.pages), rendered from the same providers as the API.
        self._page = OwnerPage(
            state, clock, store, site_name, self._json, lambda: auth.security_log(50)
        )
        # The REST API v1 (hems.web.api) and its live events (hems.web.stream).
        self.events = EventHub()
        self._v1 = ApiV1(
            state, clock, store, site_name, self._json, self._actions, self._health_body,
            self.events.handle,
        )  # fmt: skip
        self._v1.audit = self.audit_config
        self._watcher: asyncio.Task[None] | None = None

    def set_site_view(self, view: SiteView) -> None:
        """What the page shows beyond SiteState: the site's zone, the plan, the uplink."""
        self._page.view = view

    def set_health(self, check: HealthCheck) -> None:
        """The stages' health reasons, added to the site's own (the grid meter); the page's
        banner shows the ones that mean a limit cannot be kept."""
        self._health = check
        self._page.health = check

    async def setup_code(self) -> str | None:
        """The one-time setup code while the owner has no password yet."""
        return await self._auth.setup_code()

    def set_config(self, provider: Callable[[], BaseModel]) -> None:
        """The running configuration, for GET /api/v1/config (secrets are masked there)."""
        self._v1.config = provider

    def set_config_file(self, path: Path, restart: Callable[[], None]) -> None:
        """The file the daemon started from, for PATCH /api/v1/config (hems.web.installer
        sets it with the page's own restart)."""
        self._v1.config_file = ConfigFile(path, restart)

    async def audit_config(self, request: web.Request, detail: str) -> None:
        """A config or database change to the security log: what changed and who (a token's
        name or the owner's session), never the values."""
        token = request.get(_TOKEN)
        who = f"token {token.name!r}" if token is not None else "owner session"
        await self._auth.log("config-changed", _client(request), f"{detail} ({who})")

    def add_json(self, name: str, provider: JsonProvider) -> None:
        self._json[name] = provider

    def add_action(self, name: str, handler: Action) -> None:
        self._actions[name] = handler

    def add_route(self, method: str, path: str, handler: Handler, *, api: bool = False) -> None:
        """A page or endpoint of another web module (pages, installer, /metrics). It sits
        behind the same guard as every route: a session or token, and CSRF + origin for
        changes. `api`: without credentials it answers 401 like /api/…, not a redirect to
        the login page (a scraper would follow that and read HTML)."""
        if path in _PUBLIC or path.startswith("/static/"):
            raise ValueError(f"{path}: reserved")
        self._routes.append((method, path, handler))
        if api:
            self._api_paths.add(path)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=_MAX_BODY_BYTES, middlewares=[self._headers, self._guard]
        )
        app.on_response_prepare.append(self._security_headers)
        app.router.add_get("/", self._index)
        app.router.add_get("/fragment/{name}", self._fragment)
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_get("/setup", self._setup_page)
        app.router.add_post("/setup", self._setup)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/security-log", self._api_security_log)
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_get("/api/series", self._api_series)
        app.router.add_get("/api/health", self._api_health)
        self._v1.add_routes(app)  # /api/v1/…, health included
        app.router.add_get("/api/{name}", self._api_extra)
        app.router.add_post("/api/{name}", self._api_action)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        scheme = "https" if self._tls else "http"
        log.info("web page serving", url=f"{scheme}://{self._host}:{self.bound_port}/")
        watcher = Watcher(self.events, self._state, self._json)
        self._watcher = asyncio.create_task(watcher.run(), name="web-events")
        code = await self._auth.setup_code()
        if code is not None:
            # There is no default password: whoever reads this log (or runs `hems admin
            # setup-code` on the gateway) sets the first one at /setup.
            log.warning("no owner password yet: open /setup with this code", setup_code=code)

    def add_cleanup(self, close: Callable[[], Awaitable[None]]) -> None:
        """Awaited when the server stops (another web module's background work)."""
        self._cleanups.append(close)

    async def stop(self) -> None:
        for close in self._cleanups:
            await close()
        self.events.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        session = session_of(request)
        page = await self._page.index(
            session.csrf if session else "", request.query.get("history", "today")
        )
        return web.Response(text=page, content_type="text/html")

    async def _fragment(self, request: web.Request) -> web.Response:
        """One section of the page as HTML, for the page's script to swap in."""
        name = request.match_info["name"]
        html = await self._page.fragment(name, request.query.get("range", "today"))
        if html is None:
            return _error(404, f"{name}: no such fragment")
        return web.Response(text=html, content_type="text/html")

    # -- security ----------------------------------------------------------------------------
    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except Exception:
            # A handler's bug is a 500 with the same headers, not aiohttp's bare page.
            log.exception("web handler failed", path=request.path)
            response = _deny(request, 500, "internal error (logged)")
        if (
            isinstance(response, web.HTTPException)
            and response.status >= 400
            and _is_v1(request.path)
        ):
            # The router's own 404/405/413 in the API's format too.
            reason = f"{request.method} {request.path}: {response.reason}"
            response = problem(response.status, reason, [{"field": "request", "reason": reason}])
        if isinstance(response, web.Response) and response.content_type in _COMPRESSIBLE:
            # gzip when the browser asks (aiohttp reads Accept-Encoding); a phone on Wi-Fi
            # and the Pi's one link both gain.
            response.enable_compression()
        if isinstance(response, web.HTTPException):
            raise response
        return response

    async def _security_headers(self, _: web.Request, response: web.StreamResponse) -> None:
        # On prepare, so a streamed response (the event stream) carries them too.
        response.headers.update(_SECURITY_HEADERS)
        if self._tls is not None:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authentication and, for changes, CSRF and origin: before any handler runs."""
        path, unsafe = request.path, request.method not in ("GET", "HEAD", "OPTIONS")
        if path in _PUBLIC or path.startswith("/static/"):
            if unsafe and not self._same_origin(request):
                await self._refused(request, "cross-site form post")
                return _deny(request, 403, "origin: cross-site requests are refused")
            return await handler(request)
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            token: Token | None = await self._auth.token(bearer.removeprefix("Bearer ").strip())
            if token is None:
                await self._refused(request, "unknown or revoked API token")
                return _deny(request, 401, "auth: unknown or revoked API token")
            if unsafe and not token.can_write:
                return _deny(request, 403, f"auth: token {token.name!r} is read-only")
            request[_TOKEN] = token
            return await handler(request)
        session = await self._auth.session(request.cookies.get(_COOKIE, ""))
        if session is None:
            if unsafe and not self._same_origin(request):
                # SameSite=Strict kept a cross-site form's cookie back; the owner still
                # sees that a page tried to change something.
                await self._refused(
                    request, f"cross-site {request.method} {path} without a session"
                )
            if path.startswith("/api/") or path in self._api_paths:
                return _deny(
                    request, 401, "auth: log in, or send an API token (Authorization: Bearer)"
                )
            target = "/login" if await self._auth.has_password() else "/setup"
            raise web.HTTPSeeOther(target)
        if unsafe:
            if not self._same_origin(request):
                await self._refused(request, f"cross-site {request.method} {path}")
                return _deny(request, 403, "origin: cross-site requests are refused")
            sent = request.headers.get("X-CSRF-Token")
            if sent is None and request.content_type == "application/x-www-form-urlencoded":
                sent = str((await request.post()).get("csrf", ""))
            elif sent is None and request.content_type == "multipart/form-data":
                sent = await _multipart_csrf(request)
            if not sent or not hmac.compare_digest(sent, session.csrf):
                await self._refused(request, f"missing or wrong CSRF token on {path}")
                return _deny(request, 403, "csrf: missing or wrong token; reload the page")
        request[_SESSION] = session
        return await handler(request)

    def _same_origin(self, request: web.Request) -> bool:
        scheme = "https" if self._tls is not None else "http"
        return same_origin(
            request.headers.get("Origin"),
            request.headers.get("Sec-Fetch-Site"),
            scheme,
            request.host,
        )

    async def _refused(self, request: web.Request, detail: str) -> None:
        log.warning("web request refused", client=_client(request), reason=detail)
        await self._auth.log("refused", _client(request), detail)

    async def _login_page(self, request: web.Request) -> web.Response:
        if not await self._auth.has_password():
            raise web.HTTPSeeOther("/setup")
        return _page("Log in", _LOGIN_FORM, error=request.query.get("error", ""))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        client = _client(request)
        wait_s = self._limiter.locked_for_s(client)
        if wait_s > 0:
            return _page(
                "Log in", _LOGIN_FORM, error=f"Too many failed logins: try again in {wait_s:.0f} s",
                status=429,
            )  # fmt: skip
        form = await request.post()
        if await self._auth.check_password(str(form.get("password", ""))):
            self._limiter.succeeded(client)
            token, session = await self._auth.create_session(client)
            await self._auth.log("login", client, "owner logged in")
            response = web.HTTPSeeOther("/")
            response.set_cookie(
                _COOKIE, token, httponly=True, samesite="Strict", secure=self._tls is not None,
                path="/", max_age=int((session.expires_at - self._clock.now()).total_seconds()),
            )  # fmt: skip
            raise response
        lock_s = self._limiter.failed(client)
        await self._auth.log("login-failed", client, "wrong password")
        if lock_s > 0:
            await self._auth.log("lockout", client, f"locked out for {lock_s:.0f} s")
            return _page(
                "Log in", _LOGIN_FORM, error=f"Too many failed logins: locked for {lock_s:.0f} s",
                status=429,
            )  # fmt: skip
        return _page("Log in", _LOGIN_FORM, error="Wrong password", status=401)

    async def _setup_page(self, _: web.Request) -> web.Response:
        if await self._auth.has_password():
            raise web.HTTPSeeOther("/login")
        return _page("Set up hems", _SETUP_FORM)

    async def _setup(self, request: web.Request) -> web.StreamResponse:
        client = _client(request)
        if self._limiter.locked_for_s(client) > 0:
            return _page("Set up hems", _SETUP_FORM, error="Too many attempts", status=429)
        form = await request.post()
        password = str(form.get("password", ""))
        if password != str(form.get("confirm", "")):
            return _page(
                "Set up hems", _SETUP_FORM, error="confirm: the passwords differ", status=400
            )
        try:
            await self._auth.complete_setup(str(form.get("code", "")), password, client)
        except HemsError as exc:
            if str(exc).startswith("code:"):
                self._limiter.failed(client)
            return _page("Set up hems", _SETUP_FORM, error=str(exc), status=400)
        raise web.HTTPSeeOther("/login")

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        await self._auth.end_session(request.cookies.get(_COOKIE, ""))
        await self._auth.log("logout", _client(request), "owner logged out")
        response = web.HTTPSeeOther("/login")
        response.del_cookie(_COOKIE, path="/")
        raise response

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = _STATIC.get(name)
        if kind is None:
            return _error(404, f"{name}: no such file")
        text = resources.files("hems.web").joinpath(f"static/{name}").read_text("utf-8")
        return web.Response(text=text, content_type=kind)

    async def _api_security_log(self, _: web.Request) -> web.Response:
        entries = await self._auth.security_log(50)
        return web.json_response([asdict(e) for e in entries], dumps=_dumps)

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
        body, status = self._health_body()
        return web.json_response(body, status=status, dumps=_dumps)

    def _health_body(self) -> tuple[dict[str, Any], int]:
        reasons = [*site_reasons(self._state), *(self._health() if self._health else ())]
        stale = [d for d in self._state.devices if self._state.is_stale(d)]
        stages = self._json.get("stages")
        failures = (stages() or {}).get("failures", {}) if stages is not None else {}
        body = {
            "ok": not reasons,
            "reasons": [asdict(r) for r in reasons],
            "stale_devices": stale,
            # Counts only: the last error's text stays behind the login (/api/stages).
            "stage_failures": {n: {"failures": f["failures"]} for n, f in failures.items()},
        }
        return body, 503 if reasons else 200

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
_COOKIE = "hems_session"
_COMPRESSIBLE = frozenset({"text/html", "text/css", "text/javascript", "application/json"})
_SESSION = web.RequestKey("session", Session)
_TOKEN = web.RequestKey("token", Token)
_MULTIPART = web.RequestKey("multipart", MultipartReader)
_MAX_CSRF_BYTES = 256
_PUBLIC = frozenset({"/login", "/setup", "/api/health", "/api/v1/health"})
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "installer.css": "text/css"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOGIN_FORM = """<form method="post" action="/login">
<label>Password <input type="password" name="password" autocomplete="current-password" required
autofocus></label>
<button type="submit">Log in</button></form>"""
_SETUP_FORM = """<p>No password is set yet. Enter the setup code from the gateway's log (or from
<code>hems admin setup-code</code> on the gateway) and choose the owner's password.</p>
<form method="post" action="/setup">
<label>Setup code <input name="code" autocomplete="off" required autofocus></label>
<label>Password (at least 10 characters) <input type="password" name="password" minlength="10"
autocomplete="new-password" required></label>
<label>Repeat it <input type="password" name="confirm" autocomplete="new-password" required>
</label>
<button type="submit">Set password</button></form>"""


def _page(title: str, body: str, error: str = "", status: int = 200) -> web.Response:
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>hems · {escape(title)}</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/app.css">'
        f'</head><body><main class="auth"><h1>{escape(title)}</h1>{message}{body}</main>'
        "</body></html>"
    )
    return web.Response(text=html, content_type="text/html", status=status)


def session_of(request: web.Request) -> Session | None:
    """The owner's session of a request that passed the guard (None for an API token)."""
    return request.get(_SESSION)


def multipart_of(request: web.Request) -> MultipartReader | None:
    """The multipart stream of a form post the guard has read the leading `csrf` part of,
    positioned after it (None when the guard did not read one: an API token's request)."""
    return request.get(_MULTIPART)


async def _multipart_csrf(request: web.Request) -> str:
    """The `csrf` field of a multipart form, which must be its first part (the form puts
    it before the file input): read from the stream, bounded, so an upload is never
    buffered; the reader is kept for the handler to go on from there."""
    try:
        reader = await request.multipart()
        request[_MULTIPART] = reader
        part = await reader.next()
    except (ValueError, KeyError, AssertionError):  # no boundary, a malformed stream
        return ""
    if not isinstance(part, BodyPartReader) or part.name != "csrf":
        return ""
    value = b""
    while chunk := await part.read_chunk(256):
        value += chunk
        if len(value) > _MAX_CSRF_BYTES:
            return ""
    return value.decode("utf-8", "replace")


def _client(request: web.Request) -> str:
    # The peer address: hems serves the LAN directly, so no proxy header is trusted.
    return request.remote or "unknown"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _is_v1(path: str) -> bool:
    return path == V1 or path.startswith(V1 + "/")


def _deny(request: web.Request, status: int, message: str) -> web.Response:
    """An error in the format of the path's API: problem+json under /api/v1, else
    `{"error": "field: reason"}` (the unversioned routes keep their format)."""
    return problem(status, message) if _is_v1(request.path) else _error(status, message)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
