"""The in-flight window against a real Mosquitto: a broker outage with thousands of rows
queued, at the soak's speed (400x: `resend_after_s` 120 simulated s is 0.3 real s)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.core.clock import AcceleratedClock
from hems.uplink import envelope
from hil.aggregator import ReferenceAggregator
from tests.testlib import running, wait_until
from tests.uplink.test_uplink_mqtt import SITE, Gateway, _interval, config, event, responses

if TYPE_CHECKING:
    from hil.aggregator import MosquittoBroker

QUEUED = 2000


async def test_outbox_drains_after_an_outage_with_thousands_queued_each_row_once(
    tmp_path: Path,
    broker: MosquittoBroker,
    aggregator_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = AcceleratedClock(400.0)
    cfg = config(broker, aggregator_key, resend_after_s=120, backoff_min_s=1, backoff_max_s=30)
    gw = Gateway(tmp_path, cfg, clock)
    uplink = await gw.open()
    topic = uplink.topic("meter_interval")
    sends = 0
    publish = aiomqtt.Client.publish

    async def counting(self: aiomqtt.Client, t: str, *a: Any, **kw: Any) -> None:
        nonlocal sends
        sends += t == topic
        await publish(self, t, *a, **kw)

    monkeypatch.setattr(aiomqtt.Client, "publish", counting)
    agg = ReferenceAggregator(  # as the soak runs it
        "127.0.0.1",
        broker.port,
        key=aggregator_key,
        gateway_keys={SITE: envelope.load_public_key(uplink.public_key)},
        clock=clock,
        resend_after_s=30,
        reissue_after_s=100,
    )
    async with running(uplink, agg):
        await wait_until(
            lambda: uplink.connected.is_set() and agg.connected.is_set(), 10, "both connected"
        )
        await broker.stop()
        await wait_until(lambda: not uplink.connected.is_set(), 10, "the gateway to notice")
        seqs = [await uplink.send("meter_interval", _interval()) for _ in range(QUEUED)]
        assert await uplink.outbox.count() >= QUEUED
        sends = 0
        await broker.start()
        await wait_until(agg.connected.is_set, 10, "the aggregator back")
        # An event after the outage is answered, not rejected for skew or expiry behind a
        # backlog of acks.
        await agg.send_event(SITE, event("after-outage", clock=clock))

        rec = agg.site(SITE)
        got = await wait_until(
            lambda: len(rec.of("meter_interval")) >= QUEUED and rec.of("meter_interval"),
            timeout_s=45,
            what=f"{QUEUED} meter intervals at the aggregator",
        )
        await wait_until(
            lambda: any(r["status"] == "accepted" for r in responses(agg)),
            timeout_s=20,
            what="the event after the outage accepted",
        )
        # Drained: only telemetry or capabilities sent since may be in flight.
        await wait_until(lambda: _only_fresh(uplink.outbox.counts_by_kind()), 20, "an empty outbox")
    await gw.close()
    assert sorted(m["seq"] for m in got) == seqs  # each row once, none missing
    assert len({m["id"] for m in got}) == QUEUED
    assert sends <= 1.5 * QUEUED, f"{sends} publishes for {QUEUED} rows"
    assert rec.duplicates <= 0.5 * QUEUED
    assert not [r for r in uplink.rejections if r[0] in ("clock_skew", "expired")]


async def _only_fresh(counts: Any) -> bool:
    kinds = await counts
    return not {k: n for k, n in kinds.items() if k not in ("telemetry", "capabilities")}
