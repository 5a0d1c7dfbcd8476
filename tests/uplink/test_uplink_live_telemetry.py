"""Telemetry while the channel is up goes out at once under a reserved seq, without a store
commit; what cannot be sent (channel down, or sent and not acked when it went down) is
stored with the store's next batch and replayed after the outage. Real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.uplink.channel import Uplink
from tests.testlib import wait_until
from tests.uplink.test_uplink_mqtt import SITE, Gateway, aggregator, config

if TYPE_CHECKING:
    from hil.aggregator import MosquittoBroker, ReferenceAggregator


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the file."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def committed(path: Path) -> tuple[list[tuple[int, str]], int]:
    """(seq, kind) of the outbox rows and the stored next_seq, as another process sees them."""
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute("SELECT seq, kind FROM uplink_outbox ORDER BY seq").fetchall()
        next_seq = conn.execute("SELECT value FROM uplink_state WHERE key='next_seq'").fetchone()
        return [(int(s), str(k)) for s, k in rows], int(next_seq[0])
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def task(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    t = asyncio.create_task(coro)
    try:
        yield t
    finally:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def telemetry_seqs(agg: ReferenceAggregator) -> list[int]:
    return [int(m["seq"]) for m in agg.site(SITE).of("telemetry")]


async def open_gateway(tmp_path: Path, broker: MosquittoBroker, key: Ed25519PrivateKey) -> Gateway:
    # telemetry_interval_s at its maximum: the test sends telemetry itself.
    gw = Gateway(tmp_path, config(broker, key, telemetry_interval_s=60))
    await gw.open()
    assert gw.db is not None
    gw.db.defer_max_s = 3600.0  # no timer commits: only the "store batch" the test makes
    return gw


async def test_telemetry_is_sent_at_once_without_a_store_commit(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    gw = await open_gateway(tmp_path, broker, aggregator_key)
    uplink: Uplink = gw.uplink  # type: ignore[assignment]
    agg = aggregator(broker, aggregator_key, uplink)
    watcher = sqlite3.connect(str(tmp_path / "hems.db"))
    try:
        async with task(uplink.run()), task(agg.run()):
            async with asyncio.timeout(10):
                await uplink.connected.wait()
                await agg.connected.wait()
            # The capabilities' commit at start also reserved the seqs for live telemetry.
            await agg.wait_for(lambda: len(agg.site(SITE).of("capabilities")) == 1, 10)
            rows, next_seq = committed(tmp_path / "hems.db")
            before = data_version(watcher)

            for _ in range(3):
                uplink.send_telemetry("telemetry", uplink.telemetry())
            await agg.wait_for(lambda: len(telemetry_seqs(agg)) == 3, 10)
            await wait_until(lambda: not uplink._inflight, 10, "the telemetry acks")

            seqs = telemetry_seqs(agg)
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
            # Under seqs reserved (committed) before they were published, above every
            # stored row: a restart never hands them out again.
            assert all(max(s for s, _ in rows) < s < next_seq for s in seqs)
            # No commit at all (the acks' records wait for the store's next batch), and
            # none of it is in the outbox after that batch either.
            assert data_version(watcher) == before
            assert uplink.live_sent == 3 and uplink.live_kept == 0
            assert gw.db is not None
            await gw.db.flush_deferred()
            assert [k for _, k in committed(tmp_path / "hems.db")[0]] == []  # capabilities acked
    finally:
        watcher.close()
        await gw.close()


async def test_telemetry_made_in_an_outage_is_stored_with_the_batch_and_replayed(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    gw = await open_gateway(tmp_path, broker, aggregator_key)
    uplink: Uplink = gw.uplink  # type: ignore[assignment]
    db = gw.db
    assert db is not None
    try:
        async with task(uplink.run()):
            async with asyncio.timeout(10):
                await uplink.connected.wait()
            # No aggregator yet: this one goes out at once and is never acked.
            uplink.send_telemetry("telemetry", uplink.telemetry())
            await wait_until(lambda: uplink.live_sent == 1, 10, "the live send")
            assert db.deferred == 0

            await broker.stop()
            await wait_until(lambda: not uplink.connected.is_set(), 10, "the outage")
            # Channel down: this one cannot be sent; the unacked live one is kept too.
            uplink.send_telemetry("telemetry", uplink.telemetry())
            assert uplink.live_kept == 1 and db.deferred == 2
            rows_before = committed(tmp_path / "hems.db")[0]
            assert not any(k == "telemetry" for _, k in rows_before)
            await db.flush_deferred()  # the store's batch
            rows, next_seq = committed(tmp_path / "hems.db")
            kept = [s for s, k in rows if k == "telemetry"]
            assert len(kept) == 2 and max(kept) < next_seq

            await broker.start()
            agg = aggregator(broker, aggregator_key, uplink)
            async with task(agg.run()):
                # Replayed from the outbox once the channel is back, under the same seqs.
                await agg.wait_for(lambda: sorted(set(telemetry_seqs(agg))) == kept, 30)

                async def drained() -> bool:
                    return not any(k == "telemetry" for k in await uplink.outbox.counts_by_kind())

                await wait_until(drained, 20, "the telemetry rows acked and deleted")
    finally:
        await gw.close()
