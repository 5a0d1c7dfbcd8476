"""The OCPP central system: one websocket server, one `OcppCharger` per charge point.

Chargers connect to ws(s)://HOST:PORT/<identity> (the identity is the LAST path segment, so
/ocpp/CP1 works too) offering `ocpp2.0.1` or `ocpp1.6`. Authentication happens in
`process_request`, before the upgrade: HTTP Basic with user == identity (security profile 1;
profile 2 when TLS is configured). Unknown identities get 404 or, when allowed, are held as
pending (at most `max_pending_unknown`, forgotten after `pending_unknown_expiry_s`).
Handshakes are limited per remote address first (429, no charger touched); an identity's
reconnect-loop count (429 and shown faulted until it calms down) only counts handshakes that
passed authentication, so an attacker guessing passwords cannot lock the real charger out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import ssl
from collections import deque
from http import HTTPStatus
from importlib import import_module
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from hems.core.clock import Clock
from hems.core.state import SiteState
from hems.devices.ocpp.charger import OcppCharger
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.events import ChargerListener
from hems.devices.ocpp.quirks import QuirkProfile, default_profile, load_profile
from hems.devices.ocpp.store import OcppStore
from hems.errors import ConfigError
from hems.store.db import Database

if TYPE_CHECKING:
    from hems.devices.ocpp.v16 import Link16
    from hems.devices.ocpp.v201 import Link201

log = structlog.get_logger(__name__)
# The ocpp package logs every frame at INFO; keep that out of the journal unless asked.
FRAMES = logging.getLogger("hems.ocpp.frames")
SUBPROTOCOLS = ["ocpp2.0.1", "ocpp1.6"]
# A version's link (and the ocpp package's modules of that version) is imported when the first
# charger connects with its subprotocol: a site with one 1.6 charger never loads 2.0.1.
_LINKS = {
    "ocpp1.6": ("hems.devices.ocpp.v16", "Link16"),
    "ocpp2.0.1": ("hems.devices.ocpp.v201", "Link201"),
}
_VERSION = {"ocpp1.6": "1.6", "ocpp2.0.1": "2.0.1"}


def _link_class(protocol: str) -> type[Link16] | type[Link201] | None:
    where = _LINKS.get(protocol)
    if where is None:
        return None
    module, name = where
    return getattr(import_module(module), name)


def identity_from_path(path: str) -> str:
    """The charge point identity: the last non-empty path segment, percent-decoded."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


def basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _device_id(identity: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]", "-", identity.lower()).strip("-_")[:44] or "charger"
    return f"cp-{cleaned}" if not cleaned[0].isalnum() else cleaned


class OcppCentralSystem:
    """Entry class: `await OcppCentralSystem(cfg, state, clock, db).run()`."""

    def __init__(
        self,
        cfg: OcppConfig,
        state: SiteState,
        clock: Clock,
        db: Database | None = None,
        *,
        accept_any_id: bool = False,
        listener: ChargerListener | None = None,
        quirks_for_unknown: str | None = None,
    ) -> None:
        self.cfg = cfg
        self._state = state
        self._clock = clock
        self._store = OcppStore(db)
        self._accept_any = accept_any_id
        self._unknown_quirks = quirks_for_unknown  # `hems charger test --quirks`
        self._listener = listener
        self._by_identity: dict[str, OcppCharger] = {}
        self._connections: dict[str, ServerConnection] = {}
        self._connects: dict[str, deque[float]] = {}
        self._by_address: dict[str, deque[float]] = {}
        self._unknown_seen_s: dict[str, float] = {}  # pending unknown id → last handshake
        self._rejected: set[str] = set()  # unknown ids the owner refused (kept in the store)
        self.started = asyncio.Event()
        self.port: int | None = None
        if FRAMES.level == logging.NOTSET:
            FRAMES.setLevel(logging.WARNING)
        for ccfg in cfg.chargers:
            quirks = self._quirks_for(ccfg, None)
            self._by_identity[ccfg.cp_identity] = OcppCharger(
                ccfg, quirks, cfg, state, clock, self._store, listener
            )

    # -- public surface ------------------------------------------------------------------
    @property
    def chargers(self) -> dict[str, OcppCharger]:
        """Every known charger by hems device id (configured ones even while offline)."""
        return {c.device_id: c for c in self._by_identity.values()}

    def charger(self, device_id: str) -> OcppCharger:
        for c in self._by_identity.values():
            if c.device_id == device_id:
                return c
        raise KeyError(device_id)

    async def pending(self) -> list[str]:
        live = [i for i, c in self._by_identity.items() if c.pending]
        return sorted(set(live) | set(await self._store.pending()))

    async def accept(self, identity: str) -> None:
        """The owner accepts a pending charger; it is asked to boot again at once."""
        await self._store.seen(identity, "accepted", self._clock.now())
        self._rejected.discard(identity)
        charger = self._by_identity.get(identity)
        if charger is None or not charger.pending:
            return
        charger.pending = False
        charger.publish_readings()
        self._unknown_seen_s.pop(identity, None)  # no longer held against the pending bound
        log.info("ocpp pending charger accepted", charger=identity)
        link = charger.link
        if link is not None:
            charger.followup(lambda: _trigger_boot(link))

    async def reject(self, identity: str) -> None:
        """The owner refuses a pending charger: it is disconnected and refused (HTTP 403) from
        now on, across restarts, until accepted. A configured charger cannot be rejected."""
        if self.cfg.charger(identity) is not None:
            raise ConfigError("identity", f"{identity!r} is a configured charger")
        await self._store.seen(identity, "rejected", self._clock.now())
        self._rejected.add(identity)
        self._unknown_seen_s.pop(identity, None)
        charger = self._by_identity.pop(identity, None)
        ws = self._connections.get(identity)
        if ws is not None:
            await ws.close(1008, "rejected by the owner")
        log.info(
            "ocpp pending charger rejected", charger=identity, was_connected=charger is not None
        )

    async def run(self) -> None:
        """Serve until cancelled. Returns at once when `ocpp.enabled` is false."""
        if not self.cfg.enabled:
            log.info("ocpp central system disabled")
            return
        ssl_ctx = None
        if self.cfg.tls is not None:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_ctx.load_cert_chain(self.cfg.tls.cert_path, self.cfg.tls.key_path)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("ocpp.tls", f"cannot load certificate/key: {exc}") from None
        self._rejected = await self._store.rejected()
        insecure = [c.id for c in self.cfg.chargers if c.password is None]
        if insecure:  # only possible with ocpp.allow_insecure_chargers
            log.warning(
                "ocpp INSECURE: chargers without password (security profile 0); any LAN host"
                " using their identity can take their place",
                chargers=insecure,
            )
        async with serve(
            self._handler,
            self.cfg.host,
            self.cfg.port,
            subprotocols=SUBPROTOCOLS,  # type: ignore[arg-type]
            process_request=self._process_request,
            ping_interval=self.cfg.ping_interval_s,
            ping_timeout=self.cfg.ping_timeout_s,
            max_size=self.cfg.max_frame_bytes,
            ssl=ssl_ctx,
            logger=logging.getLogger("hems.ocpp.websockets"),
        ) as server:
            self.port = _bound_port(server)
            log.info(
                "ocpp central system listening",
                host=self.cfg.host,
                port=self.port,
                tls=ssl_ctx is not None,
            )
            self.started.set()
            await server.serve_forever()

    # -- handshake -------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        identity = identity_from_path(request.path)
        if not identity:
            return connection.respond(HTTPStatus.NOT_FOUND, "no charge point id in the path\n")
        remote = _address(connection)
        if self._too_many(self._by_address, remote, self.cfg.max_handshakes_per_address):
            log.warning("ocpp handshakes refused for an address", remote=remote)
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many handshakes\n")
        ccfg = self.cfg.charger(identity)
        if ccfg is None and identity in self._rejected:
            log.info("ocpp rejected charger refused", charger=identity)
            return connection.respond(HTTPStatus.FORBIDDEN, "charge point rejected\n")
        if ccfg is None:
            if self._accept_any:
                return self._counted(connection, identity)
            if self.cfg.allow_pending_unknown:
                if not self._admit_unknown(identity):
                    log.warning("ocpp pending charger refused: too many", charger=identity)
                    return connection.respond(
                        HTTPStatus.SERVICE_UNAVAILABLE, "too many pending charge points\n"
                    )
                return self._counted(connection, identity)
            log.warning("ocpp unknown charger refused", charger=identity)
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        if ccfg.password is None:
            return self._counted(connection, identity)
        creds = basic_auth(request.headers.get("Authorization"))
        expected = ccfg.password.get_secret_value().encode()
        ok = creds is not None and hmac.compare_digest(
            creds[0].encode(), identity.encode()
        ) & hmac.compare_digest(creds[1].encode(), expected)
        if not ok:
            log.warning(
                "ocpp charger authentication failed",
                charger=identity,
                had_credentials=creds is not None,
            )
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication failed\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="hems-ocpp", charset="UTF-8"'
            return response
        return self._counted(connection, identity)

    def _counted(self, connection: ServerConnection, identity: str) -> Response | None:
        """The handshake passed authentication: count it for the identity's reconnect loop."""
        if self._reconnect_loop(identity):
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "reconnecting too fast\n")
        return None

    def _too_many(self, counts: dict[str, deque[float]], key: str, limit: int) -> bool:
        """Record one attempt for `key`; True when it makes more than `limit` in the window."""
        now_s = self._clock.monotonic()
        window_s = self.cfg.reconnect_window_s
        if len(counts) > 1000:  # random keys must not grow this without bound
            for k in [k for k, v in counts.items() if not v or now_s - v[-1] > window_s]:
                del counts[k]
        seen = counts.setdefault(key, deque())
        seen.append(now_s)
        while seen and now_s - seen[0] > window_s:
            seen.popleft()
        return len(seen) > limit

    def _admit_unknown(self, identity: str) -> bool:
        """Hold an unknown id as pending unless `max_pending_unknown` are held already.
        Ids not seen for `pending_unknown_expiry_s` and not connected are forgotten first."""
        now_s = self._clock.monotonic()
        for other, seen_s in list(self._unknown_seen_s.items()):
            charger = self._by_identity.get(other)
            connected = charger is not None and charger.link is not None
            if now_s - seen_s > self.cfg.pending_unknown_expiry_s and not connected:
                del self._unknown_seen_s[other]
                if charger is not None and charger.pending:
                    del self._by_identity[other]
                    self._connects.pop(other, None)
        known = self._by_identity.get(identity)
        if known is not None and not known.pending:
            return True  # accepted by the owner: no longer counts against the bound
        if identity not in self._unknown_seen_s:
            if len(self._unknown_seen_s) >= self.cfg.max_pending_unknown:
                return False
        self._unknown_seen_s[identity] = now_s
        return True

    def pending_unknown_count(self) -> int:
        """Unknown ids currently held in memory as pending."""
        return len(self._unknown_seen_s)

    def _reconnect_loop(self, identity: str) -> bool:
        if not self._too_many(self._connects, identity, self.cfg.max_connects_per_window):
            return False
        seen = self._connects[identity]
        charger = self._by_identity.get(identity)
        if charger is not None and charger.faulted_reason is None:
            charger.set_fault(
                f"reconnect loop ({len(seen)} connects in {self.cfg.reconnect_window_s:g} s)"
            )
        elif charger is None:
            log.warning("ocpp reconnect loop refused", charger=identity)
        return True

    # -- connections -----------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        identity = identity_from_path(ws.request.path if ws.request else "")
        protocol = ws.subprotocol or ""
        link_cls = _link_class(protocol)
        if link_cls is None:  # unreachable while `subprotocols` is set; be safe anyway
            await ws.close(1002, "unsupported subprotocol")
            return
        charger = await self._charger_for(identity, _VERSION[protocol])
        structlog.contextvars.bind_contextvars(charger=identity)
        old = self._connections.get(identity)
        self._connections[identity] = ws
        if old is not None and old is not ws:
            log.info("ocpp charger reconnected, old connection closed", charger=identity)
            await old.close(1000, "replaced by a new connection")
        link = link_cls(identity, ws, charger, self.cfg.response_timeout_s)
        link.logger = FRAMES
        log.info(
            "ocpp charger connected",
            charger=identity,
            version=_VERSION[protocol],
            remote=str(ws.remote_address),
        )
        try:
            await charger.serve(link)
        except Exception:  # one charger's failure never takes the server down
            log.exception("ocpp connection failed", charger=identity)
        finally:
            if self._connections.get(identity) is ws:
                del self._connections[identity]

    async def _charger_for(self, identity: str, version: str) -> OcppCharger:
        charger = self._by_identity.get(identity)
        if charger is None:
            ccfg = ChargerConfig(
                id=_device_id(identity), identity=identity, quirks=self._unknown_quirks
            )
            status = await self._store.charger_status(identity)
            charger = OcppCharger(
                ccfg,
                default_profile(version),
                self.cfg,
                self._state,
                self._clock,
                self._store,
                self._listener,
                publish=False,
            )
            charger.pending = not self._accept_any and status != "accepted"
            self._by_identity[identity] = charger
            if not charger.pending:
                self._unknown_seen_s.pop(identity, None)
                if status == "accepted":  # the owner accepted it before: it is the site's
                    charger.publish_readings()
        quirks = self._quirks_for(charger.cfg, version)
        if quirks is not charger.quirks:
            charger.quirks = quirks
            charger.profile_unsupported = quirks.limit.method == "fallback"
        if charger.faulted_reason and charger.faulted_reason.startswith("reconnect loop"):
            charger.clear_fault()
        return charger

    def _quirks_for(self, ccfg: ChargerConfig, version: str | None) -> QuirkProfile:
        if ccfg.quirks is None:
            return default_profile(version or "1.6")  # type: ignore[arg-type]
        try:
            profile = load_profile(ccfg.quirks)
        except ConfigError as exc:
            raise ConfigError(f"ocpp.chargers[{ccfg.id}].quirks", str(exc)) from None
        if version is not None and profile.ocpp_version != version:
            log.error(
                "ocpp quirk profile is for another OCPP version; using generic",
                charger=ccfg.id,
                profile=ccfg.quirks,
                connected=version,
            )
            return default_profile(version)  # type: ignore[arg-type]
        return profile


def _address(connection: ServerConnection) -> str:
    try:
        return str(connection.remote_address[0])
    except (TypeError, IndexError, AttributeError):
        return "unknown"


async def _trigger_boot(link: Any) -> None:
    # The link's own version only: importing the other would load it for nothing.
    if link.version == "1.6":
        from ocpp.v16 import call as call16

        await link.call(call16.TriggerMessage(requested_message="BootNotification"), suppress=False)
    else:
        from ocpp.v201 import call as call201

        await link.call(
            call201.TriggerMessage(requested_message="BootNotification"), suppress=False
        )


def _bound_port(server: Server) -> int:
    for sock in server.sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("server has no socket")
