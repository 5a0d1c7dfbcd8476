"""The aggregator channel: MQTT 5 (aiomqtt 2.5) with a durable outbox and signed envelopes.

`Uplink.run()` keeps one persistent session (fixed client id, clean_start False,
SessionExpiryInterval), a retained `up/status` with a Last Will of offline, and reconnects
with capped, jittered backoff (aiomqtt 2.x has no reconnect of its own). Everything outgoing
goes through the outbox first and is replayed in seq order after every reconnect, except
telemetry while the channel is up: it is sent at once under a reserved seq and stored only if
it cannot be (the channel went down before its ack came; see `send_telemetry`); incoming
messages are verified and handled by `Inbound` (hems/uplink/inbound.py), whose answers and
rejections this channel stores and sends on `up/event/response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import ssl
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
from hems.uplink.outbox import Outbox, OutboxRow

log = structlog.get_logger(__name__)

_WINDOW = 100  # rows published and not yet acked by the aggregator (the in-flight window)
_RESEND_BACKOFF_MAX = 8  # the resend interval doubles per resend, up to 8 resend_after_s
_PUBLISH_TIMEOUT_S = 15.0


@dataclass(slots=True)
class _InFlight:
    """One outbox row in the in-flight window."""

    row: OutboxRow
    sends: int = 0
    sent_s: float = 0.0  # clock.monotonic() of the last send
    due_s: float = 0.0  # clock.monotonic() at which it is resent unless acked
    # Live telemetry, not in the outbox: stored (with these) if the channel goes down first.
    stored: bool = True
    message_id: str = ""
    created: str = ""


def _expired(row: OutboxRow, now: datetime) -> bool:
    try:
        expires_at = json.loads(row.message)["expires_at"]
        return bool(datetime.fromisoformat(expires_at) <= now)
    except (ValueError, KeyError, TypeError):
        return False


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


def _drop_socket(client: aiomqtt.Client) -> None:
    """Close a session's socket at once, if it is still open (no DISCONNECT, so the broker
    sends the Will). aiomqtt 2.5 has no call for it: paho's own close also unregisters the
    socket from the event loop (aiomqtt's on_socket_close)."""
    paho = getattr(client, "_client", None)
    close = getattr(paho, "_sock_close", None)
    # Private names: should a new aiomqtt or paho rename them, this does nothing and
    # tests/uplink/test_uplink_mqtt.py (no socket left behind) fails.
    if close is not None and paho.socket() is not None:
        close()


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
        self._inflight: dict[int, _InFlight] = {}  # by seq, in seq order
        self._live: deque[_InFlight] = deque()  # live telemetry the publisher has not taken
        self._cursor = 0  # the publisher's: the highest outbox seq taken into the window
        self.live_sent = 0  # telemetry rows sent without being stored
        self.live_kept = 0  # live rows stored for replay (channel down before their ack)
        # incoming message -> local time it arrived; weak: a message dropped unread goes too
        self._received_at: weakref.WeakKeyDictionary[aiomqtt.Message, datetime] = (
            weakref.WeakKeyDictionary()
        )
        self.published = 0  # outbox rows published, first sends and resends
        self._rtt_s = 0.0  # smoothed send-to-ack time of rows acked after one send
        self._backoff = 1  # resend interval multiplier: doubled per resend, 1 on a fresh ack
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
        # Seqs for live telemetry, reserved in the capabilities' commit just below.
        self.outbox.refill()
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
        while True:
            await self._clock.sleep(self.cfg.telemetry_interval_s)
            raise_if_cancelling()
            self.send_telemetry("telemetry", self.telemetry())

    def send_telemetry(self, type_: str, payload: BaseModel) -> None:
        """`send` for droppable rows made often (telemetry), without a commit of its own (an
        SD-card page per table and index touched, written twice).

        Channel up: signed with a seq reserved beforehand (`Outbox.reserve_live`) and
        published at once, never stored; if the channel goes down before the aggregator's
        ack, the row is stored for replay. Channel down (or no reserved seq left): stored
        with the store's next commit and published once stored, as after an outage. A kill
        -9 may lose unstored rows (at most one store batch of them), never reuse a seq."""
        now = self._clock.now()
        topic, kind, created = self.topic(type_), self._kind(type_), envelope.iso(now)
        seq = self.outbox.reserve_live() if self.connected.is_set() else None
        if seq is None:
            self.outbox.append_deferred(
                topic,
                kind,
                created,
                lambda seq: self._sign(type_, payload, seq, now),
                self._row_stored,
            )
            return
        message = self._sign(type_, payload, seq, now)
        row = OutboxRow(seq, topic, kind, envelope.encode(message))
        self._live.append(_InFlight(row, stored=False, message_id=message["id"], created=created))
        self._wake.set()

    def _row_stored(self, seq: int) -> None:
        # A row stored late (kept live telemetry) may sit below the publisher's cursor.
        self._cursor = min(self._cursor, seq - 1)
        self._wake.set()

    def _keep_unsent(self) -> None:
        """Store the live rows not acked (the channel is going down) for replay."""
        kept = [f for f in self._inflight.values() if not f.stored] + list(self._live)
        self._live.clear()
        for f in kept:
            self._inflight.pop(f.row.seq, None)
            self.outbox.store_deferred(f.row, f.message_id, f.created, self._row_stored)
        self.live_kept += len(kept)

    def _kind(self, type_: str) -> str:
        spec = TYPES.get(type_)
        if spec is None or spec[2] != "up" or spec[3] is None:
            raise UplinkError(f"type: {type_!r} cannot be sent through the outbox")
        return str(spec[3])

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
            queue_type=self._stamping_queue(),
        )

    def _stamping_queue(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue, noting the local time each message came off the wire."""
        clock, stamps = self._clock, self._received_at

        class StampingQueue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                stamps[item] = clock.now()
                super().put_nowait(item)

        return StampingQueue

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
                self._keep_unsent()  # live rows made while the session ended
            await self._clock.sleep(backoff.next_s())

    async def _session(self, backoff: Backoff) -> None:
        client = self._client_for_session()
        try:
            async with client:
                try:
                    await self._serve(client, backoff)
                except asyncio.CancelledError:
                    raise  # orderly: aiomqtt's exit sends DISCONNECT (no Will)
                except BaseException:
                    # A failed session is dropped, not closed politely: on a dead or swamped
                    # link the DISCONNECT would hold the reconnect up to connect_timeout_s.
                    _drop_socket(client)
                    raise
        finally:
            # A CONNACK that timed out leaves aiomqtt's socket open: it would connect later
            # under this client id, take the session over (and PUBACK its queued messages
            # into a queue nobody reads) until paho's keepalive closes it.
            _drop_socket(client)

    async def _serve(self, client: aiomqtt.Client, backoff: Backoff) -> None:
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
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tg:
                self._session_tasks = tg
                tg.create_task(self._publisher(client, tg), name="uplink:publish")
                async for message in client.messages:
                    await self._inbound.handle(
                        message.topic.value,
                        bytes(message.payload or b""),
                        self._answer,
                        self._received_at.pop(message, None),
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
        # The in-flight window: at most _WINDOW rows published and not yet acked by the
        # aggregator, the oldest unacked first. Each row has its own resend timer; a resend
        # doubles the interval for all rows until an ack of a row sent once (as TCP's RTO),
        # so a pass sends at most _WINDOW rows however slow the acks are.
        # A (re)connect starts the window again from the oldest unacked row. paho writes
        # publishes in call order, so the wire order is the seq order.
        self._inflight.clear()
        self._cursor = 0

        def publish(f: _InFlight) -> None:
            f.sends += 1
            f.sent_s = self._clock.monotonic()
            if f.sends > 1:  # a lapsed timer: every row waits longer, until a fresh ack
                self._backoff = min(self._backoff * 2, _RESEND_BACKOFF_MAX)
            # Never sooner than a few round trips: a busy aggregator (or a fast clock) must
            # not turn every slow ack into a resend.
            base_s = max(self.cfg.resend_after_s, 4 * self._rtt_s)
            f.due_s = f.sent_s + base_s * self._backoff
            self.published += 1
            tg.create_task(self._publish_row(client, f.row))

        try:
            while True:
                raise_if_cancelling()
                self._wake.clear()
                now_s = self._clock.monotonic()
                for f in [f for f in self._inflight.values() if f.due_s <= now_s]:
                    publish(f)  # oldest seq first: the dict is in seq order
                while self._live:  # live telemetry: at once, outside the window's bound
                    f = self._live.popleft()
                    self._inflight[f.row.seq] = f
                    self.live_sent += 1
                    publish(f)
                while len(self._inflight) < _WINDOW:
                    rows = await self.outbox.pending(
                        self._cursor, limit=_WINDOW - len(self._inflight)
                    )
                    if not rows:
                        break
                    now = self._clock.now()
                    for row in rows:
                        self._cursor = max(self._cursor, row.seq)
                        if row.seq in self._inflight:
                            continue  # taken before a late row moved the cursor back
                        if _expired(row, now):
                            continue  # the aggregator would reject it; it stays in the outbox
                        f = _InFlight(row)
                        self._inflight[row.seq] = f
                        publish(f)
                due = min((f.due_s for f in self._inflight.values()), default=None)
                await self._wait_for_wake(None if due is None else due - self._clock.monotonic())
        finally:
            self._keep_unsent()

    async def _publish_row(self, client: aiomqtt.Client, row: OutboxRow) -> None:
        try:
            await client.publish(row.topic, row.message, qos=1, timeout=_PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError:
            pass  # the link is going down; the row stays and is replayed

    async def _wait_for_wake(self, timeout_s: float | None) -> None:
        """Until a send() or an ack wakes the publisher, or `timeout_s` of the clock pass."""
        if timeout_s is None:
            await self._wake.wait()
            return
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(max(0.0, timeout_s)))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

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
        await self.outbox.ack(ack.ranges)
        acked = [seq for seq in self._inflight if ack.covers(seq)]
        now_s = self._clock.monotonic()
        for seq in acked:
            f = self._inflight.pop(seq)
            if f.sends == 1:  # a resent row's ack may answer either copy (Karn)
                self._rtt_s += (now_s - f.sent_s - self._rtt_s) / 8
                self._backoff = 1
        if acked:
            self._wake.set()  # room in the window
