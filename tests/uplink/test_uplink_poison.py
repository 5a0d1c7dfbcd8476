"""Hostile downlink messages on a real Mosquitto: each poison message, retained, is rejected on
every start of the gateway, never stops the channel, and a good signed event still follows."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.uplink import envelope
from hems.uplink.messages import TYPES
from tests.testlib import running, wait_until
from tests.uplink.test_uplink_mqtt import CLOCK, SITE, Gateway, aggregator, config, event, responses

if TYPE_CHECKING:
    from hil.aggregator import MosquittoBroker


def _poisons(key: Ed25519PrivateKey) -> dict[str, bytes]:
    now = CLOCK.now()
    forged = envelope.build(
        Ed25519PrivateKey.generate(),
        type_="event", site_id=SITE, seq=10_000, payload=event("x"), now=now, ttl_s=600,
    )  # fmt: skip
    typed = dict(forged, payload={"event_id": 1})  # bad signature, and a payload of wrong types
    surrogate = dict(forged, id="\ud800")
    big = envelope.build(
        key, type_="event", site_id=SITE, seq=10_001, payload=event("big"), now=now, ttl_s=600
    )
    big["payload"]["note"] = "x" * (5 << 20)  # validly signed, 5 MiB
    big["sig"] = envelope.b64url(key.sign(envelope.canonical(big)))
    return {
        "wrong-field-types": envelope.encode(typed),
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # ensure_ascii writes the lone surrogate as the escape \ud800, which json.loads accepts
        "lone-surrogate-id": json.dumps(surrogate).encode(),
        "five-mib-signed": envelope.encode(big),
    }


POISONS = ["wrong-field-types", "deep", "deep-object", "lone-surrogate-id", "five-mib-signed"]


@pytest.mark.parametrize("name", POISONS)
async def test_retained_poison_is_rejected_on_every_start(
    name: str, tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    raw = _poisons(aggregator_key)[name]
    topic = f"hems/v1/{SITE}/{TYPES['event'][1]}"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="poisoner") as client:
        await client.publish(topic, raw, qos=1, retain=True)

    gw = Gateway(tmp_path, config(broker, aggregator_key))
    for start in (1, 2):
        uplink = await gw.open()
        task = asyncio.create_task(uplink.run())
        await wait_until(lambda u=uplink: len(u.rejections) >= 1, timeout_s=15)
        assert not task.done(), f"start {start}: the channel stopped on {name}"
        reason, _detail = uplink.rejections[-1]
        assert reason in {"malformed", "bad_signature"}, (name, uplink.rejections)
        assert uplink.handler_failures == 0, uplink.rejections
        if start == 2:
            agg = aggregator(broker, aggregator_key, uplink)
            async with running(agg):
                async with asyncio.timeout(10):
                    await uplink.connected.wait()
                    await agg.connected.wait()
                await agg.send_event(SITE, event("good-after-poison"))
                await agg.wait_for(
                    lambda a=agg: any(r.get("status") == "accepted" for r in responses(a)),
                    timeout_s=10,
                )
            assert [e.event_id for e in gw.events] == ["good-after-poison"]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await gw.close()


def _raw_rejected(raw: bytes) -> str:
    try:
        envelope.parse(raw)
    except Exception as exc:  # whatever escapes is reported by name
        return getattr(exc, "reason", type(exc).__name__)
    return "parsed"


def test_parse_bounds_size_and_depth_before_the_parser() -> None:
    assert _raw_rejected(b"[" * 100_000) == "malformed"
    assert _raw_rejected(b" " * (envelope.MAX_MESSAGE_BYTES + 1)) == "malformed"
    assert _raw_rejected(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == "parsed"
    assert envelope.safe_id("\ud800") is None
    assert envelope.safe_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b") is not None
