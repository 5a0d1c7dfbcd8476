"""Inbound on its own, over a real SQLite file and without MQTT: each kind of bad downlink
gets its rejection (reason, detail, outbox kind, ack), a good one reaches its handler, and the
ids and seq it accepted survive a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.core.clock import ManualClock
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.inbound import Inbound, Response
from hems.uplink.messages import Ack, Event, EventDecision, OperatingEnvelope

AGG = Ed25519PrivateKey.generate()
SITE = "home-1"
PREFIX = f"hems/v1/{SITE}/"
START = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
EVENT_TOPIC = PREFIX + "down/event"


@dataclass
class Handlers:
    events: list[Event] = field(default_factory=list)
    envelopes: list[OperatingEnvelope] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    stored_modification: dict[str, int] = field(default_factory=dict)

    async def on_event(self, event: Event) -> EventDecision:
        stored = self.stored_modification.get(event.event_id)
        if stored is not None and event.modification_number <= stored:
            return EventDecision(status="outdated", stored_modification=stored)
        self.stored_modification[event.event_id] = event.modification_number
        self.events.append(event)
        return EventDecision(status="accepted")

    async def on_envelope(self, limits: OperatingEnvelope) -> None:
        self.envelopes.append(limits)

    async def on_ack(self, ack: Ack) -> None:
        self.acks.append(ack)


@dataclass
class Rig:
    db: Database
    clock: ManualClock
    handlers: Handlers
    inbound: Inbound
    sent: list[Response]

    def new_inbound(self) -> Inbound:
        return make_inbound(self.db, self.clock, self.handlers)

    async def send(self, response: Response) -> None:
        """What the channel does with a response, minus MQTT: store "answered" with it."""
        self.sent.append(response)
        accepts = response.accepts
        if accepts is not None:
            await self.db.call(lambda c: self.inbound.record(c, accepts))

    async def deliver(self, raw: bytes, topic: str = EVENT_TOPIC) -> Response | None:
        before = len(self.sent)
        await self.inbound.handle(topic, raw, self.send)
        return self.sent[-1] if len(self.sent) > before else None


def make_inbound(db: Database, clock: ManualClock, handlers: Handlers) -> Inbound:
    return Inbound(
        db,
        clock,
        site_id=SITE,
        peer_key=AGG.public_key(),
        prefix=PREFIX,
        max_skew_s=120,
        on_ack=handlers.on_ack,
        on_event=handlers.on_event,
        on_envelope=handlers.on_envelope,
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(START)
    handlers = Handlers()
    inbound = make_inbound(db, clock, handlers)
    await inbound.load()
    yield Rig(db, clock, handlers, inbound, [])
    await db.close()


def event(event_id: str = "dfs-1", mod: int = 0) -> dict[str, Any]:
    start = START + timedelta(minutes=30)
    return {
        "event_id": event_id,
        "modification_number": mod,
        "kind": "turn_down",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "import_cap_w": 800,
    }


def signed(
    seq: int,
    payload: dict[str, Any] | None = None,
    *,
    type_: str = "event",
    key: Ed25519PrivateKey = AGG,
    site_id: str = SITE,
    now: datetime = START,
    ttl_s: float = 600,
) -> dict[str, Any]:
    return envelope.build(
        key,
        type_=type_,
        site_id=site_id,
        seq=seq,
        payload=payload if payload is not None else event(),
        now=now,
        ttl_s=ttl_s,
    )


async def seen_ids(db: Database) -> set[str]:
    return {r[0] for r in await db.fetchall("SELECT id FROM uplink_seen")}


async def test_accepted_event_is_answered_acked_and_remembered_across_a_restart(
    rig: Rig,
) -> None:
    msg = signed(7)
    response = await rig.deliver(envelope.encode(msg))
    assert response is not None and response.answer is not None
    assert response.answer.status == "accepted" and response.answer.ref_id == msg["id"]
    assert (response.kind, response.up_ack_seq) == ("response", 7)
    assert response.accepts is not None and response.accepts.id == msg["id"]
    assert [e.event_id for e in rig.handlers.events] == ["dfs-1"]
    assert rig.inbound.last_seq == 7
    assert await seen_ids(rig.db) == {msg["id"]}

    restarted = rig.new_inbound()
    assert restarted.last_seq == 0
    await restarted.load()
    assert restarted.last_seq == 7  # from uplink_state, not memory
    rig.inbound = restarted
    again = await rig.deliver(envelope.encode(msg))
    assert again is not None and again.answer is not None
    assert (again.answer.reason, again.answer.detail) == (
        "duplicate_id",
        f"id: {msg['id']} was already received",
    )
    # Authenticated, so acked: the aggregator must stop resending it.
    assert (again.kind, again.up_ack_seq, again.accepts) == ("response", 7, None)
    assert restarted.rejections[-1][0] == "duplicate_id"
    assert len(rig.handlers.events) == 1  # the handler saw it once


async def test_replayed_seq_under_a_new_id_is_rejected(rig: Rig) -> None:
    await rig.deliver(envelope.encode(signed(7)))
    response = await rig.deliver(envelope.encode(signed(7, event("dfs-2"))))
    assert response is not None and response.answer is not None
    assert (response.answer.reason, response.answer.detail) == (
        "replayed_seq",
        "seq: 7 is not above 7",
    )
    assert response.answer.event_id == "dfs-2" and response.up_ack_seq == 7
    assert [e.event_id for e in rig.handlers.events] == ["dfs-1"]


async def test_bad_signature_is_a_droppable_rejection_never_acked(rig: Rig) -> None:
    forged = signed(9, key=Ed25519PrivateKey.generate())
    response = await rig.deliver(envelope.encode(forged))
    assert response is not None and response.answer is not None
    assert response.answer.status == "rejected"
    assert (response.answer.reason, response.answer.detail) == (
        "bad_signature",
        "sig: does not verify with the configured key",
    )
    assert (response.kind, response.up_ack_seq, response.accepts) == ("rejection", None, None)
    assert response.answer.ref_id == forged["id"] and response.answer.ref_type == "event"
    assert rig.inbound.rejections[-1] == (
        "bad_signature",
        "sig: does not verify with the configured key",
    )
    assert rig.handlers.events == [] and await seen_ids(rig.db) == set()
    assert rig.inbound.last_seq == 0


async def test_wrong_site_is_rejected_naming_both_sites(rig: Rig) -> None:
    response = await rig.deliver(envelope.encode(signed(3, site_id="home-2")))
    assert response is not None and response.answer is not None
    assert (response.answer.reason, response.answer.detail) == (
        "wrong_site",
        "site_id: 'home-2' is not 'home-1'",
    )
    assert (response.kind, response.up_ack_seq) == ("response", 3)
    assert rig.handlers.events == [] and rig.inbound.last_seq == 0


async def test_expired_message_is_rejected(rig: Rig) -> None:
    msg = signed(4, now=START - timedelta(seconds=60), ttl_s=30)
    response = await rig.deliver(envelope.encode(msg))
    assert response is not None and response.answer is not None
    assert response.answer.reason == "expired"
    assert response.answer.detail == f"expires_at: {msg['expires_at']} has passed".replace(
        ".000Z", "+00:00"
    )
    assert rig.handlers.events == [] and await seen_ids(rig.db) == set()


@pytest.mark.parametrize(
    ("raw", "detail_part"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b'{"a":' * 1_000 + b"1" + b"}" * 1_000, "deep"),
        (b" " * (envelope.MAX_MESSAGE_BYTES + 1), "bytes"),
        (b"[1, 2]", "must be a JSON object"),
    ],
    ids=["deep-array", "deep-object", "oversized", "not-an-object"],
)
async def test_deep_or_oversized_body_is_malformed_without_parsing(
    rig: Rig, raw: bytes, detail_part: str
) -> None:
    response = await rig.deliver(raw)
    assert response is not None and response.answer is not None
    assert response.answer.reason == "malformed"
    assert detail_part in (response.answer.detail or ""), response.answer.detail
    # Nothing readable to refer to, and nothing to ack.
    assert (response.answer.ref_id, response.answer.ref_type, response.answer.event_id) == (
        None,
        None,
        None,
    )
    assert (response.kind, response.up_ack_seq) == ("response", None)
    assert rig.inbound.handler_failures == 0


async def test_outdated_modification_is_rejected_but_consumes_its_seq(rig: Rig) -> None:
    await rig.deliver(envelope.encode(signed(1, event("dfs-1", mod=2))))
    older = signed(2, event("dfs-1", mod=1))
    response = await rig.deliver(envelope.encode(older))
    assert response is not None and response.answer is not None
    assert (response.answer.reason, response.answer.detail) == (
        "outdated_modification",
        "payload.modification_number: 1 is not above 2 for event dfs-1",
    )
    assert response.accepts is not None and response.accepts.id == older["id"]
    assert (response.kind, response.up_ack_seq) == ("response", 2)
    assert rig.inbound.last_seq == 2
    assert older["id"] in await seen_ids(rig.db)


async def test_operating_envelope_reaches_its_handler_and_is_acked(rig: Rig) -> None:
    limits = {"default_import_limit_w": 9000, "default_export_limit_w": 3680, "intervals": []}
    msg = signed(5, limits, type_="envelope")
    response = await rig.deliver(envelope.encode(msg), PREFIX + "down/envelope")
    assert response == Response(None, up_ack_seq=5)
    assert [e.default_import_limit_w for e in rig.handlers.envelopes] == [9000]
    assert rig.inbound.last_seq == 5 and await seen_ids(rig.db) == {msg["id"]}
    # On the wrong topic the same kind of message is malformed.
    wrong = await rig.deliver(envelope.encode(signed(6, limits, type_="envelope")))
    assert wrong is not None and wrong.answer is not None
    assert wrong.answer.detail == "type: 'envelope' does not belong on this topic"


async def test_acks_go_to_the_outbox_and_are_never_answered(rig: Rig) -> None:
    ack = signed(0, {"ranges": [[1, 3]]}, type_="ack")
    assert await rig.deliver(envelope.encode(ack), PREFIX + "down/ack") is None
    assert [a.ranges for a in rig.handlers.acks] == [[(1, 3)]]
    assert await seen_ids(rig.db) == {ack["id"]}
    # A rejected ack (here: sent again) is counted but gets no answer.
    assert await rig.deliver(envelope.encode(ack), PREFIX + "down/ack") is None
    assert rig.inbound.rejections[-1][0] == "duplicate_id" and len(rig.handlers.acks) == 1


async def test_a_failing_send_is_counted_or_left_for_the_resend(rig: Rig) -> None:
    raw = envelope.encode(signed(8))

    async def broken(_response: Response) -> None:
        raise RuntimeError("boom")

    async def locked(_response: Response) -> None:
        raise sqlite3.OperationalError("database is locked")

    await rig.inbound.handle(EVENT_TOPIC, raw, locked)
    assert rig.inbound.handler_failures == 0  # a store error: not answered, resent later
    assert rig.inbound.last_seq == 0
    await rig.inbound.handle(EVENT_TOPIC, raw, broken)
    assert rig.inbound.handler_failures == 1
    assert rig.inbound.rejections[-1] == ("handler_failed", "RuntimeError: boom")
    assert rig.inbound.last_seq == 0  # not answered, so the seq is not consumed
