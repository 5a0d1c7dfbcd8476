"""The aggregator channel: MQTT 5 (aiomqtt 2.5) with a durable outbox and signed envelopes.

`Uplink.run()` keeps one persistent session (fixed client id, clean_start False,
SessionExpiryInterval), a retained `up/status` with a Last Will of offline, and reconnects
with capped, jittered backoff (aiomqtt 2.x has no reconnect of its own). Everything outgoing
goes through the outbox first and is replayed in seq order after every reconnect; incoming
messages are verified (`envelope.check`) and rejections answered on `up/event/response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ValidationError

from hems.core.clock import Clock
from hems.core.quantities import site_values
from hems.core.state import SiteState
from hems.core.tasks import raise_if_cancelling
from hems.errors import ConfigError, MessageRejected, StoreError, UplinkError
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.config import UplinkConfig
from hems.uplink.keys import load_or_create_key
from hems.uplink.messages import (
    TYPES,
    Ack,
    Asset,
    Capabilities,
    Event,
    EventDecision,
    EventResponse,
    OperatingEnvelope,
    Status,
    Telemetry,
    topic_for,
    type_for_topic,
)
from hems.uplink.outbox import LAST_PEER_SEQ, Outbox, get_counter, set_counter

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[EventDecision]]
EnvelopeHandler = Callable[[OperatingEnvelope], Awaitable[None]]
_UNAUTHENTICATED = frozenset({"bad_signature", "missing_signature"})
_INFLIGHT_MAX = 1000  # sent but not yet acked by the aggregator
_WINDOW = 100  # published but not yet PUBACKed by the broker
_PUBLISH_TIMEOUT_S = 15.0


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._attempt = 0

    def next_s(self) -> float:
        cap = min(self.max_s, self.min_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return self.min_s + self._rng.random() * max(0.0, cap - self.min_s)


def tls_context(cfg: UplinkConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.tls.ca_path))
        ctx.load_cert_chain(str(cfg.tls.cert_path), str(cfg.tls.key_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("uplink.tls", f"cannot load certificates: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls.insecure_skip_hostname_check:
        ctx.check_hostname = False
    return ctx


class Uplink:
    """The gateway's side of the aggregator channel.

    Other parts call `await uplink.send(type, payload)` (e.g. "delivery_report",
    "meter_interval", "flex_offer"); it returns the seq once the message is in the outbox.
    """

    def __init__(
        self,
        cfg: UplinkConfig,
        site_id: str,
        state: SiteState,
        db: Database,
        clock: Clock,
        on_event: EventHandler | None = None,
        on_envelope: EnvelopeHandler | None = None,
        *,
        storage_path: Path | None = None,
        key: Ed25519PrivateKey | None = None,
        capabilities: Capabilities | None = None,
        software_version: str | None = None,
    ) -> None:
        if cfg.aggregator_public_key is None:
            raise ConfigError("uplink.aggregator_public_key", "is required")
        self.cfg = cfg
        self.site_id = site_id
        self._state = state
        self._db = db
        self._clock = clock
        self._on_event = on_event
        self._on_envelope = on_envelope
        self._key = key or load_or_create_key(cfg.key_path(storage_path))
        self._peer_key = envelope.load_public_key(cfg.aggregator_public_key)
        self._prefix = cfg.prefix(site_id)
        self._tls = tls_context(cfg)
        self._capabilities = capabilities
        self._version = software_version
        self.outbox = Outbox(db, cfg.outbox_max_rows)
        self._wake = asyncio.Event()
        self._sent_at: dict[int, float] = {}
        self._client: aiomqtt.Client | None = None
        self._session_tasks: asyncio.TaskGroup | None = None
        self._last_peer_seq = 0  # loaded from the database by run()
        self.connected = asyncio.Event()
        # (reason, detail), newest last; bounded: a flood of forgeries must not grow memory
        self.rejections: deque[tuple[str, str]] = deque(maxlen=100)
        self.handler_failures = 0  # messages dropped because handling them raised
        self.connects = 0

    @property
    def public_key(self) -> str:
        return envelope.public_key_text(self._key.public_key())

    def topic(self, type_: str) -> str:
        return topic_for(self._prefix, type_)

    # -- sending --------------------------------------------------------------------------
    async def send(self, type_: str, payload: dict[str, Any] | BaseModel) -> int:
        """Store a signed message in the outbox and wake the publisher. Returns its seq.

        Raises UplinkError naming the field if the payload does not fit its schema.
        """
        return await self._send(type_, payload)

    async def _send(
        self,
        type_: str,
        payload: dict[str, Any] | BaseModel,
        also: Callable[[sqlite3.Connection], None] | None = None,
        kind: str | None = None,
    ) -> int:
        spec = TYPES.get(type_)
        if spec is None or spec[2] != "up" or spec[3] is None:
            raise UplinkError(f"type: {type_!r} cannot be sent through the outbox")
        model, _, _, default_kind = spec
        if not isinstance(payload, BaseModel):
            try:
                payload = model.model_validate(payload)
            except ValidationError as exc:
                raise UplinkError(envelope.field_error(exc, f"{type_}.")) from None
        now = self._clock.now()
        signed: BaseModel = payload  # narrowed, for the closure
        seq = await self.outbox.append(
            self.topic(type_),
            kind or default_kind or type_,
            envelope.iso(now),
            lambda seq: self._sign(type_, signed, seq, now),
            also,
        )
        self._wake.set()
        return seq

    def _sign(self, type_: str, payload: BaseModel, seq: int, now: datetime) -> dict[str, Any]:
        return envelope.build(
            self._key,
            type_=type_,
            site_id=self.site_id,
            seq=seq,
            payload=payload,
            now=now,
            ttl_s=self.cfg.message_ttl_s,
        )

    def _unsequenced(self, type_: str, payload: BaseModel) -> bytes:
        return envelope.encode(self._sign(type_, payload, 0, self._clock.now()))

    async def _publish_direct(self, type_: str, payload: BaseModel, retain: bool = False) -> None:
        """Publish an unsequenced message now, without waiting for the broker's PUBACK.

        Not outboxed by design: if it is lost, the peer resends and gets a fresh one.
        """
        client, tg = self._client, self._session_tasks
        if client is None or tg is None:
            return
        raw = self._unsequenced(type_, payload)
        tg.create_task(self._quiet_publish(client, self.topic(type_), raw, retain))

    @staticmethod
    async def _quiet_publish(client: aiomqtt.Client, topic: str, raw: bytes, retain: bool) -> None:
        # Waiting for the PUBACK inside the receive loop would stall it on a dead link.
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic, raw, qos=1, retain=retain, timeout=_PUBLISH_TIMEOUT_S)

    # -- running --------------------------------------------------------------------------
    async def run(self) -> None:
        self._last_peer_seq = await self._db.call(lambda c: get_counter(c, LAST_PEER_SEQ, 0))
        await self._send("capabilities", self._capabilities or self._default_capabilities())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name="uplink:mqtt")
            tg.create_task(self._telemetry_loop(), name="uplink:telemetry")

    def _default_capabilities(self) -> Capabilities:
        return Capabilities(
            assets=[
                Asset(asset_id=device_id, role=str(role), control="none")  # type: ignore[arg-type]
                for device_id, role in sorted(self._state.devices.items())
            ]
        )

    async def _telemetry_loop(self) -> None:
        failing = False
        while True:
            await self._clock.sleep(self.cfg.telemetry_interval_s)
            raise_if_cancelling()
            try:
                await self.send("telemetry", self.telemetry())
            except (sqlite3.Error, StoreError) as exc:
                if not failing:
                    log.error("uplink telemetry not stored", error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("uplink telemetry stored again")
                failing = False

    def telemetry(self) -> Telemetry:
        # The figures come from the site-quantity table; the wire names stay as they are.
        v = site_values(self._state)
        return Telemetry(
            at=self._clock.now(),
            grid_w=v["grid_power_w"],
            pv_w=v["pv_power_w"],
            battery_w=v["battery_power_w"],
            soc_pct=v["battery_soc_pct"],
            ev_w=v["ev_power_w"],
        )

    def _client_for_session(self) -> aiomqtt.Client:
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = self.cfg.session_expiry_s
        offline = self._unsequenced("status", Status(state="offline"))
        return aiomqtt.Client(
            self.cfg.broker_host,
            self.cfg.broker_port,
            identifier=self.cfg.client_identifier(self.site_id),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            will=aiomqtt.Will(self.topic("status"), offline, qos=1, retain=True),
            keepalive=self.cfg.keepalive_s,
            timeout=self.cfg.connect_timeout_s,
            tls_context=self._tls,
            max_inflight_messages=_WINDOW,
        )

    async def _connection_loop(self) -> None:
        backoff = Backoff(self.cfg.backoff_min_s, self.cfg.backoff_max_s)
        failing = False
        while True:
            raise_if_cancelling()
            try:
                await self._session(backoff)
            except* (aiomqtt.MqttError, OSError) as group:
                if not failing or self.connected.is_set():
                    log.warning(
                        "uplink disconnected",
                        broker=f"{self.cfg.broker_host}:{self.cfg.broker_port}",
                        error=str(group.exceptions[0]),
                    )
                failing = True
            finally:
                self._client = None
                self._session_tasks = None
                self.connected.clear()
            await self._clock.sleep(backoff.next_s())

    async def _session(self, backoff: Backoff) -> None:
        client = self._client_for_session()
        async with client:
            self._client = client
            self.connects += 1
            backoff.reset()
            log.info("uplink connected", broker=f"{self.cfg.broker_host}:{self.cfg.broker_port}")
            p = self._prefix
            await client.subscribe(
                [(p + "down/event", 1), (p + "down/envelope", 1), (p + "down/ack", 1)]
            )
            await client.publish(
                self.topic("status"),
                self._unsequenced("status", Status(state="online", software_version=self._version)),
                qos=1,
                retain=True,
                timeout=_PUBLISH_TIMEOUT_S,
            )
            self._sent_at.clear()  # replay everything unacked, in order
            self.connected.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    self._session_tasks = tg
                    tg.create_task(self._publisher(client, tg), name="uplink:publish")
                    async for message in client.messages:
                        await self._handle_safely(
                            message.topic.value, bytes(message.payload or b"")
                        )
            except asyncio.CancelledError:
                # Orderly shutdown: say so, since the broker sends the Will only on a drop.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await client.publish(
                            self.topic("status"),
                            self._unsequenced("status", Status(state="offline")),
                            qos=1,
                            retain=True,
                        )
                raise

    async def _publisher(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        # Publishes are pipelined (up to _WINDOW awaiting PUBACK); paho writes them in call
        # order, so the wire order is the seq order.
        window = asyncio.Semaphore(_WINDOW)

        async def one(topic: str, raw: bytes) -> None:
            try:
                await client.publish(topic, raw, qos=1, timeout=_PUBLISH_TIMEOUT_S)
            except aiomqtt.MqttError:
                pass  # the link is going down; the row stays and is replayed
            finally:
                window.release()

        while True:
            raise_if_cancelling()
            self._wake.clear()
            now_s = self._clock.monotonic()
            after = 0
            inflight = sum(1 for t in self._sent_at.values() if now_s - t < self.cfg.resend_after_s)
            scanned: set[int] = set()
            while inflight < _INFLIGHT_MAX:
                rows = await self.outbox.pending(after, limit=200)
                if not rows:
                    # A full scan: forget rows that left the outbox (acked or evicted).
                    self._sent_at = {k: v for k, v in self._sent_at.items() if k in scanned}
                    break
                for row in rows:
                    after = row.seq
                    scanned.add(row.seq)
                    sent = self._sent_at.get(row.seq)
                    if sent is not None and now_s - sent < self.cfg.resend_after_s:
                        continue
                    await window.acquire()
                    self._sent_at[row.seq] = self._clock.monotonic()
                    tg.create_task(one(row.topic, row.message))
                    inflight += 1
                    if inflight >= _INFLIGHT_MAX:
                        break
            # Poll cadence for resends; a send() or an ack wakes us at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    # -- receiving ------------------------------------------------------------------------
    async def _handle_safely(self, topic: str, raw: bytes) -> None:
        try:
            await self._handle(topic, raw)
        except (sqlite3.Error, StoreError, UplinkError) as exc:
            # Not answered and not acked: the aggregator resends it, and we try again.
            log.error("uplink message not handled", topic=topic, error=str(exc))
        except Exception as exc:  # one message must never stop the daemon
            # A message that breaks a handler is a bug or an attack; either way it is counted
            # and dropped, and the next message is handled as usual.
            self.handler_failures += 1
            self.rejections.append(("handler_failed", f"{type(exc).__name__}: {exc}"[:500]))
            log.exception("uplink message dropped: handler failed", topic=topic)

    async def _handle(self, topic: str, raw: bytes) -> None:
        expected = type_for_topic(self._prefix, topic)
        try:
            message = envelope.parse(raw)
            # Only a well-formed id is ever bound into SQLite; check() rejects the others.
            msg_id = envelope.safe_id(message.get("id"))
            seen = msg_id is not None and await self._seen(msg_id)
            checked = envelope.check(
                message,
                key=self._peer_key,
                site_id=self.site_id,
                now=self._clock.now(),
                last_seq=self._last_peer_seq,
                seen=lambda _id: seen,
                max_skew_s=self.cfg.clock_skew_max_s,
                expected_type=expected,
            )
            if TYPES[checked.envelope.type][2] != "down":
                raise envelope.reject(
                    "malformed", f"type: {checked.envelope.type} is not a downlink", message
                )
        except MessageRejected as exc:
            await self._rejected(exc)
            return
        env = checked.envelope
        if env.type == "ack":
            ack: Ack = checked.payload  # type: ignore[assignment]
            deleted = await self.outbox.ack(ack.ranges)
            await self._db.call(lambda c: self._mark_seen(c, env))
            for seq in [s for s in self._sent_at if ack.covers(s)]:
                del self._sent_at[seq]
            if deleted:
                self._wake.set()
        elif env.type == "event":
            await self._handle_event(env, checked.payload)  # type: ignore[arg-type]
        elif env.type == "envelope":
            await self._handle_envelope(env, checked.payload)  # type: ignore[arg-type]

    async def _handle_event(self, env: envelope.Envelope, event: Event) -> None:
        # The modification rule is the event owner's (on_event, i.e. the flex event book);
        # this side only guards message ids and seqs.
        decision = await self._decide(event)
        if decision.status == "outdated":
            exc = envelope.reject(
                "outdated_modification",
                f"payload.modification_number: {event.modification_number} is not above "
                f"{decision.stored_modification} for event {event.event_id}",
                {"id": env.id, "type": env.type, "seq": env.seq, "payload": env.payload},
            )
            await self._rejected(exc, accept_seq=env)
            return
        response = EventResponse(
            ref_id=env.id,
            ref_type="event",
            event_id=event.event_id,
            modification_number=event.modification_number,
            status=decision.status,
            detail=decision.reason,
            clamped=decision.clamped,
        )
        await self._send("event_response", response, also=lambda conn: self._mark_seen(conn, env))
        self._last_peer_seq = env.seq
        log.info(
            "flex event answered",
            event_id=event.event_id,
            modification=event.modification_number,
            status=decision.status,
        )
        await self._publish_direct("up_ack", Ack(ranges=[(env.seq, env.seq)]))

    async def _decide(self, event: Event) -> EventDecision:
        if self._on_event is None:
            return EventDecision(status="opted_out", reason="flexibility is not enabled")
        try:
            return await self._on_event(event)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.exception("flex event handler failed", event_id=event.event_id)
            return EventDecision(status="opted_out", reason=f"handler failed: {exc}")

    async def _handle_envelope(self, env: envelope.Envelope, limits: OperatingEnvelope) -> None:
        if self._on_envelope is not None:
            try:
                await self._on_envelope(limits)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("operating envelope handler failed")
        await self._db.call(lambda c: self._mark_seen(c, env))
        self._last_peer_seq = env.seq
        await self._publish_direct("up_ack", Ack(ranges=[(env.seq, env.seq)]))

    def _mark_seen(self, conn: sqlite3.Connection, env: envelope.Envelope) -> None:
        now = envelope.iso(self._clock.now())
        conn.execute("DELETE FROM uplink_seen WHERE expires_at < ?", (now,))
        conn.execute(
            "INSERT OR IGNORE INTO uplink_seen(id, expires_at) VALUES (?, ?)",
            (env.id, envelope.iso(env.expires_at)),
        )
        if env.seq > 0:
            set_counter(conn, LAST_PEER_SEQ, max(env.seq, get_counter(conn, LAST_PEER_SEQ, 0)))

    async def _seen(self, msg_id: str) -> bool:
        row = await self._db.fetchone("SELECT 1 FROM uplink_seen WHERE id = ?", (msg_id,))
        return row is not None

    async def _rejected(
        self, exc: MessageRejected, accept_seq: envelope.Envelope | None = None
    ) -> None:
        detail = getattr(exc, "detail", "")
        message = getattr(exc, "message", None) or {}
        ref_type = message.get("type") if isinstance(message.get("type"), str) else None
        self.rejections.append((exc.reason, detail))
        log.warning(
            "uplink message rejected", reason=exc.reason, detail=detail, ref_id=exc.message_id
        )
        if ref_type == "ack":
            return  # an ack is never answered, or two peers could ping-pong rejections
        payload = message.get("payload")
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        response = EventResponse(
            ref_id=envelope.safe_id(exc.message_id),
            ref_type=ref_type if envelope.safe_id(ref_type) else None,
            # Echo only what is well-formed: this message may be forged junk.
            event_id=envelope.safe_id(event_id),
            status="rejected",
            reason=exc.reason,  # type: ignore[arg-type]
            detail=detail[:500],
        )
        # Answers to unauthenticated junk may be evicted like telemetry, so a flood of forged
        # messages cannot fill the outbox with undroppable rows.
        kind = "rejection" if exc.reason in _UNAUTHENTICATED else "response"
        also = None
        if accept_seq is not None:
            env = accept_seq

            def also(conn: sqlite3.Connection) -> None:
                self._mark_seen(conn, env)

        await self._send("event_response", response, also=also, kind=kind)
        if accept_seq is not None:
            self._last_peer_seq = accept_seq.seq
        seq = message.get("seq")
        if exc.reason not in _UNAUTHENTICATED and isinstance(seq, int) and seq > 0:
            await self._publish_direct("up_ack", Ack(ranges=[(seq, seq)]))
