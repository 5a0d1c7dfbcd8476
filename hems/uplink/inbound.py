"""The downlink side of the aggregator channel: from bytes on a `down/` topic to a verified,
typed message handed to its handler, and the answer the channel must send.

`Inbound` owns what the gateway remembers of the aggregator's messages: the `uplink_seen`
message ids (a resent id is a duplicate) and the last accepted aggregator seq (persisted in
`uplink_state` as `last_peer_seq`). It never touches the connection or the outbox: `receive()`
returns a `Response` and the channel stores and publishes it, recording the message as seen in
the answer's own transaction (`record`), so an answer and "answered" cannot part.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hems.core.clock import Clock
from hems.errors import MessageRejected, StoreError, UplinkError
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.messages import (
    TYPES,
    Ack,
    Event,
    EventDecision,
    EventResponse,
    OperatingEnvelope,
    type_for_topic,
)
from hems.uplink.outbox import LAST_PEER_SEQ, get_counter, set_counter

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[EventDecision]]
EnvelopeHandler = Callable[[OperatingEnvelope], Awaitable[None]]
AckHandler = Callable[[Ack], Awaitable[None]]
OutboxKind = Literal["response", "rejection"]
_UNAUTHENTICATED = frozenset({"bad_signature", "missing_signature"})


@dataclass(frozen=True, slots=True)
class Response:
    """What the channel sends for one downlink, in this order: `answer` stored in the outbox
    (recording `accepts` as seen in the same transaction), then an up_ack of `up_ack_seq`."""

    answer: EventResponse | None  # None: nothing to store (an accepted operating envelope)
    kind: OutboxKind = "response"  # "rejection": droppable, an answer to unauthenticated junk
    accepts: envelope.Envelope | None = None  # the downlink this answer accepts (seq consumed)
    up_ack_seq: int | None = None  # None: not acked (unauthenticated, or unsequenced)


class Inbound:
    """Verifies downlink messages and hands them to their handlers.

    `on_ack` is the channel's: it deletes the acked rows from the outbox.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        site_id: str,
        peer_key: Ed25519PublicKey,
        prefix: str,
        max_skew_s: float,
        on_ack: AckHandler,
        on_event: EventHandler | None = None,
        on_envelope: EnvelopeHandler | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._site_id = site_id
        self._peer_key = peer_key
        self._prefix = prefix
        self._max_skew_s = max_skew_s
        self._on_ack = on_ack
        self._on_event = on_event
        self._on_envelope = on_envelope
        self._last_seq = 0  # loaded from the database by load()
        # (reason, detail), newest last; bounded: a flood of forgeries must not grow memory
        self.rejections: deque[tuple[str, str]] = deque(maxlen=100)
        self.handler_failures = 0  # messages dropped because handling them raised

    @property
    def last_seq(self) -> int:
        """The last aggregator seq accepted (answered); a sequenced message must exceed it."""
        return self._last_seq

    async def load(self) -> None:
        """Take up the last accepted seq where the previous run left it."""
        self._last_seq = await self._db.call(lambda c: get_counter(c, LAST_PEER_SEQ, 0))

    # -- the channel's entry ----------------------------------------------------------------
    async def handle(
        self,
        topic: str,
        raw: bytes,
        send: Callable[[Response], Awaitable[None]],
        received_at: datetime | None = None,
    ) -> None:
        """Receive one message and `send` its response; never raises for a bad message."""
        try:
            response = await self.receive(topic, raw, received_at)
            if response is not None:
                await send(response)
                if response.accepts is not None:
                    self._last_seq = response.accepts.seq
                answer = response.answer
                if answer is not None and answer.status != "rejected":
                    log.info(
                        "flex event answered",
                        event_id=answer.event_id,
                        modification=answer.modification_number,
                        status=answer.status,
                    )
        except (sqlite3.Error, StoreError, UplinkError) as exc:
            # Not answered and not acked: the aggregator resends it, and we try again.
            log.error("uplink message not handled", topic=topic, error=str(exc))
        except Exception as exc:  # one message must never stop the daemon
            # A message that breaks a handler is a bug or an attack; either way it is counted
            # and dropped, and the next message is handled as usual.
            self.handler_failures += 1
            self.rejections.append(("handler_failed", f"{type(exc).__name__}: {exc}"[:500]))
            log.exception("uplink message dropped: handler failed", topic=topic)

    async def receive(
        self, topic: str, raw: bytes, received_at: datetime | None = None
    ) -> Response | None:
        """Verify one message and hand it to its handler. Returns what to send (None: nothing).

        Expiry and clock skew are checked against `received_at` (default: now), the local
        time the message came off the wire: time it then waited behind others here is not
        the sender's skew.

        Raises sqlite3.Error/StoreError if the database fails (the message is then not
        answered, so the aggregator resends it).
        """
        expected = type_for_topic(self._prefix, topic)
        try:
            message = envelope.parse(raw)
            # Only a well-formed id is ever bound into SQLite; check() rejects the others.
            msg_id = envelope.safe_id(message.get("id"))
            seen = msg_id is not None and await self._seen(msg_id)
            checked = envelope.check(
                message,
                key=self._peer_key,
                site_id=self._site_id,
                now=received_at or self._clock.now(),
                last_seq=self._last_seq,
                seen=lambda _id: seen,
                max_skew_s=self._max_skew_s,
                expected_type=expected,
                # An ack only deletes rows whose seqs the aggregator signed it for, and seqs
                # are never reused, so an old one is harmless; one that waited behind a burst
                # of others must still drain the outbox.
                check_skew=expected != "ack",
                check_expiry=expected != "ack",
            )
            if TYPES[checked.envelope.type][2] != "down":
                raise envelope.reject(
                    "malformed", f"type: {checked.envelope.type} is not a downlink", message
                )
        except MessageRejected as exc:
            return self._rejected(exc)
        env = checked.envelope
        payload = checked.payload
        if isinstance(payload, Ack):
            await self._on_ack(payload)
            self.record_deferred(env)
            return None
        if isinstance(payload, Event):
            return await self._event(env, payload)
        if isinstance(payload, OperatingEnvelope):
            return await self._envelope(env, payload)
        return None  # every downlink type is one of the above

    def record(self, conn: sqlite3.Connection, env: envelope.Envelope) -> None:
        """Record `env` as received (its id, and its seq as the last accepted), in `conn`'s
        transaction; expired ids go, as their messages would be rejected as expired anyway."""
        now = envelope.iso(self._clock.now())
        conn.execute("DELETE FROM uplink_seen WHERE expires_at < ?", (now,))
        conn.execute(
            "INSERT OR IGNORE INTO uplink_seen(id, expires_at) VALUES (?, ?)",
            (env.id, envelope.iso(env.expires_at)),
        )
        if env.seq > 0:
            set_counter(conn, LAST_PEER_SEQ, max(env.seq, get_counter(conn, LAST_PEER_SEQ, 0)))

    def record_deferred(self, env: envelope.Envelope) -> None:
        """`record`, committed with the store's next write (`Database.defer`): for acks, which
        are idempotent, so one replayed after a kill -9 lost this record does no harm."""
        self._db.defer(
            "DELETE FROM uplink_seen WHERE expires_at < ?", (envelope.iso(self._clock.now()),)
        )
        self._db.defer(
            "INSERT OR IGNORE INTO uplink_seen(id, expires_at) VALUES (?, ?)",
            (env.id, envelope.iso(env.expires_at)),
        )
        if env.seq > 0:
            self._db.defer(
                "INSERT INTO uplink_state(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                (LAST_PEER_SEQ, env.seq),
            )

    # -- per type ---------------------------------------------------------------------------
    async def _event(self, env: envelope.Envelope, event: Event) -> Response:
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
            return self._rejected(exc, accepts=env)
        response = EventResponse(
            ref_id=env.id,
            ref_type="event",
            event_id=event.event_id,
            modification_number=event.modification_number,
            status=decision.status,
            detail=decision.reason,
            clamped=decision.clamped,
        )
        return Response(response, accepts=env, up_ack_seq=env.seq)

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

    async def _envelope(self, env: envelope.Envelope, limits: OperatingEnvelope) -> Response:
        if self._on_envelope is not None:
            try:
                await self._on_envelope(limits)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("operating envelope handler failed")
        await self._db.call(lambda c: self.record(c, env))
        self._last_seq = env.seq
        return Response(None, up_ack_seq=env.seq)

    async def _seen(self, msg_id: str) -> bool:
        row = await self._db.fetchone("SELECT 1 FROM uplink_seen WHERE id = ?", (msg_id,))
        return row is not None

    def _rejected(
        self, exc: MessageRejected, accepts: envelope.Envelope | None = None
    ) -> Response | None:
        detail = getattr(exc, "detail", "")
        message = getattr(exc, "message", None) or {}
        ref_type = message.get("type") if isinstance(message.get("type"), str) else None
        self.rejections.append((exc.reason, detail))
        log.warning(
            "uplink message rejected", reason=exc.reason, detail=detail, ref_id=exc.message_id
        )
        if ref_type == "ack":
            return None  # an ack is never answered, or two peers could ping-pong rejections
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
        unauthenticated = exc.reason in _UNAUTHENTICATED
        seq = message.get("seq")
        acked = not unauthenticated and isinstance(seq, int) and seq > 0
        return Response(
            response,
            kind="rejection" if unauthenticated else "response",
            accepts=accepts,
            up_ack_seq=seq if acked else None,
        )
