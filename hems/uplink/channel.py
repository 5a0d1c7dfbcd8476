"""The aggregator channel: MQTT 5 (aiomqtt 2.5) with a durable outbox and signed envelopes.

`Uplink.run()` keeps one persistent session (fixed client id, clean_start False,
SessionExpiryInterval), a retained `up/status` with a Last Will of offline, and reconnects
with capped, jittered backoff (aiomqtt 2.x has no reconnect of its own). Everything outgoing
goes through the outbox first and is replayed in seq order after every reconnect; incoming
messages are verified and handled by `Inbound` (hems/uplink/inbound.py), whose answers and
rejections this channel stores and sends on `up/event/response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import ssl
from collections import deque
from collections.abc import Callable
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
from hems.errors import ConfigError, StoreError, UplinkError
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.capabilities import describe_site
from hems.uplink.config import UplinkConfig
from hems.uplink.inbound import EnvelopeHandler, EventHandler, Inbound, Response
from hems.uplink.keys import load_or_create_key
from hems.uplink.messages import (
    TYPES,
    Ack,
    Capabilities,
    Status,
    Telemetry,
    topic_for,
)
from hems.uplink.outbox import Outbox

log = structlog.get_logger(__name__)

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
        capabilities: Capabilities | Callable[[], Capabilities] | None = None,
        software_version: str | None = None,
    ) -> None:
        if cfg.aggregator_public_key is None:
            raise ConfigError("uplink.aggregator_public_key", "is required")
        self.cfg = cfg
        self.site_id = site_id
        self._state = state
        self._db = db
        self._clock = clock
        self._key = key or load_or_create_key(cfg.key_path(storage_path))
        self._prefix = cfg.prefix(site_id)
        self._tls = tls_context(cfg)
        self._capabilities = capabilities
        self._capabilities_changed = asyncio.Event()
        self._version = software_version
        self.outbox = Outbox(db, cfg.outbox_max_rows)
        self._wake = asyncio.Event()
        self._sent_at: dict[int, float] = {}
        self._client: aiomqtt.Client | None = None
        self._session_tasks: asyncio.TaskGroup | None = None
        self._inbound = Inbound(
            db,
            clock,
            site_id=site_id,
            peer_key=envelope.load_public_key(cfg.aggregator_public_key),
            prefix=self._prefix,
            max_skew_s=cfg.clock_skew_max_s,
            on_ack=self._on_ack,
            on_event=on_event,
            on_envelope=on_envelope,
        )
        self.connected = asyncio.Event()
        self.connects = 0

    @property
    def rejections(self) -> deque[tuple[str, str]]:
        """(reason, detail) of the last 100 downlinks rejected or dropped, newest last."""
        return self._inbound.rejections

    @property
    def handler_failures(self) -> int:
        """Downlinks dropped because handling them raised."""
        return self._inbound.handler_failures

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
        await self._inbound.load()
        await self._send("capabilities", self.capabilities())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name="uplink:mqtt")
            tg.create_task(self._telemetry_loop(), name="uplink:telemetry")
            tg.create_task(self._capabilities_loop(), name="uplink:capabilities")

    def capabilities(self) -> Capabilities:
        """What the gateway says it can do now (the composition root's, if it gave one)."""
        caps = self._capabilities
        if callable(caps):
            return caps()
        return caps or self._default_capabilities()

    def capabilities_changed(self) -> None:
        """What the site can do changed (a device joined control): send `capabilities` again."""
        self._capabilities_changed.set()

    async def _capabilities_loop(self) -> None:
        while True:
            await self._capabilities_changed.wait()
            self._capabilities_changed.clear()
            try:
                await self._send("capabilities", self.capabilities())
            except (sqlite3.Error, StoreError) as exc:
                log.error("uplink capabilities not stored", error=str(exc))

    def _default_capabilities(self) -> Capabilities:
        # Nothing known but the roles: every asset measured only.
        return describe_site(self._state.devices, {}, control_enabled=False)

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
                        await self._inbound.handle(
                            message.topic.value, bytes(message.payload or b""), self._answer
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

    # -- receiving: verification is Inbound's; the channel stores and publishes its answers --
    async def _answer(self, response: Response) -> None:
        if response.answer is not None:
            accepts = response.accepts
            also = None
            if accepts is not None:

                def also(conn: sqlite3.Connection) -> None:
                    self._inbound.record(conn, accepts)

            await self._send("event_response", response.answer, also=also, kind=response.kind)
        if response.up_ack_seq is not None:
            seq = response.up_ack_seq
            await self._publish_direct("up_ack", Ack(ranges=[(seq, seq)]))

    async def _on_ack(self, ack: Ack) -> None:
        deleted = await self.outbox.ack(ack.ranges)
        for seq in [s for s in self._sent_at if ack.covers(s)]:
            del self._sent_at[seq]
        if deleted:
            self._wake.set()
