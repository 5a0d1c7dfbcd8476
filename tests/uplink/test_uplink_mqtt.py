"""The channel against a real Mosquitto: TLS round trip, rejections on the wire, a broker
outage mid-event, and a gateway killed with kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hems.core.clock import AcceleratedClock, Clock, RealClock
from hems.core.readings import Quantity, Reading, Role
from hems.core.state import SiteState
from hems.store.db import Database
from hems.uplink import envelope
from hems.uplink.channel import Uplink
from hems.uplink.config import UplinkConfig
from hems.uplink.messages import Event, EventDecision, OperatingEnvelope
from hil.aggregator import ReferenceAggregator
from hil.uplink_gateway import report_payload
from tests.conftest import REPO
from tests.testlib import running, wait_until

SITE = "site-a"
CLOCK = RealClock()

if TYPE_CHECKING:  # fixtures come from conftest.py
    from hil.aggregator import MosquittoBroker
    from tests.uplink.conftest import TlsFiles


def config(
    broker: MosquittoBroker, agg_key: Ed25519PrivateKey, tls: TlsFiles | None = None, **kw: Any
) -> UplinkConfig:
    data: dict[str, Any] = {
        "enabled": True,
        "broker_host": "127.0.0.1" if tls is None else "localhost",
        "broker_port": broker.port,
        "aggregator_public_key": envelope.public_key_text(agg_key.public_key()),
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.4,
        "resend_after_s": 2,
        "keepalive_s": 5,
        **kw,
    }
    if tls is not None:
        cert, key = tls.client(SITE)
        data["tls"] = {"ca_path": str(tls.ca), "cert_path": str(cert), "key_path": str(key)}
    return UplinkConfig.model_validate(data)


def event(event_id: str, mod: int = 0, clock: Clock = CLOCK, **kw: Any) -> dict[str, Any]:
    start = clock.now() + timedelta(minutes=30)
    return {
        "event_id": event_id,
        "modification_number": mod,
        "kind": "turn_down",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "import_cap_w": 800,
        **kw,
    }


class Gateway:
    """An Uplink over its own SQLite file, recording the events it was given."""

    def __init__(self, tmp: Path, cfg: UplinkConfig, clock: Clock = CLOCK) -> None:
        self.tmp, self.cfg, self.clock = tmp, cfg, clock
        self.events: list[Event] = []  # the events decided (not outdated)
        self.modifications: dict[str, int] = {}
        self.envelopes: list[OperatingEnvelope] = []
        self.db: Database | None = None
        self.uplink: Uplink | None = None

    async def open(self) -> Uplink:
        self.db = await Database.open(self.tmp / "hems.db")
        state = SiteState(self.clock)
        state.register_device("meter", Role.GRID)
        state.publish([Reading("meter", Quantity.POWER_W, 1234.0, self.clock.now())])

        async def on_event(ev: Event) -> EventDecision:
            # The event owner keeps the modification rule (in the daemon: the flex book).
            stored = self.modifications.get(ev.event_id)
            if stored is not None and ev.modification_number <= stored:
                return EventDecision(status="outdated", stored_modification=stored)
            self.modifications[ev.event_id] = ev.modification_number
            self.events.append(ev)
            return EventDecision(status="accepted", clamped={"import_cap_w": ev.import_cap_w})

        async def on_envelope(limits: OperatingEnvelope) -> None:
            self.envelopes.append(limits)

        self.uplink = Uplink(
            self.cfg,
            SITE,
            state,
            self.db,
            self.clock,
            on_event,
            on_envelope,
            storage_path=self.tmp / "hems.db",
        )
        return self.uplink

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()


def aggregator(
    broker: MosquittoBroker,
    key: Ed25519PrivateKey,
    uplink: Uplink,
    tls: TlsFiles | None = None,
    clock: Clock = CLOCK,
) -> ReferenceAggregator:
    return ReferenceAggregator(
        "127.0.0.1" if tls is None else "localhost",
        broker.port,
        key=key,
        gateway_keys={SITE: envelope.load_public_key(uplink.public_key)},
        clock=clock,
        tls=tls.context("aggregator") if tls is not None else None,
        resend_after_s=clock.speed * 1.0,
    )


def responses(agg: ReferenceAggregator) -> list[dict[str, Any]]:
    return [m["payload"] for m in agg.site(SITE).of("event_response")]


async def test_event_round_trip_over_tls_with_client_certificates(
    tmp_path: Path,
    tls_broker: MosquittoBroker,
    tls_files: TlsFiles,
    aggregator_key: Ed25519PrivateKey,
) -> None:
    gw = Gateway(tmp_path, config(tls_broker, aggregator_key, tls_files))
    uplink = await gw.open()
    agg = aggregator(tls_broker, aggregator_key, uplink, tls_files)
    async with running(uplink, agg):
        async with asyncio.timeout(10):
            await uplink.connected.wait()
            await agg.connected.wait()
        sent = await agg.send_event(SITE, event("dfs-1"))
        await agg.wait_for(
            lambda: bool(responses(agg)) and not agg.site(SITE).pending, timeout_s=10
        )
        [resp] = responses(agg)
        assert resp["ref_id"] == sent["id"] and resp["status"] == "accepted"
        assert resp["clamped"] == {"import_cap_w": 800.0}
        assert [e.event_id for e in gw.events] == ["dfs-1"]
        assert agg.site(SITE).acked_down == {sent["seq"]}  # the gateway's up/ack
        assert agg.site(SITE).status == "online"  # retained birth message, verified
        assert agg.site(SITE).invalid == []
        limits = await agg.send_envelope(
            SITE, {"default_import_limit_w": 9000, "default_export_limit_w": 3680, "intervals": []}
        )
        await agg.wait_for(lambda: limits["seq"] in agg.site(SITE).acked_down, timeout_s=10)
        assert [e.default_import_limit_w for e in gw.envelopes] == [9000]
        # The aggregator's down/ack empties the outbox (capabilities + the response).
        for _ in range(100):
            if await uplink.outbox.count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await uplink.outbox.count() == 0
        # The broker refuses a client without a certificate from our CA.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("localhost", tls_broker.port, timeout=1):
                pass
    await gw.close()


async def test_every_rejection_is_answered_on_the_wire(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    gw = Gateway(tmp_path, config(broker, aggregator_key))
    uplink = await gw.open()
    agg = aggregator(broker, aggregator_key, uplink)
    async with running(uplink, agg):
        async with asyncio.timeout(10):
            await uplink.connected.wait()
            await agg.connected.wait()
        first = await agg.send_event(SITE, event("ok-1"))
        await agg.wait_for(lambda: len(responses(agg)) == 1, timeout_s=10)

        now = CLOCK.now()
        seq = agg.site(SITE).next_seq + 100

        def build(payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
            args = {"type_": "event", "site_id": SITE, "seq": seq, "now": now, "ttl_s": 600}
            args.update(kw)
            return envelope.build(aggregator_key, payload=payload, **args)

        forged = envelope.build(
            Ed25519PrivateKey.generate(),
            type_="event", site_id=SITE, seq=seq, payload=event("forged"), now=now, ttl_s=600,
        )  # fmt: skip
        missing = build(event("missing"))
        del missing["sig"]
        expired = build(event("expired"), now=now - timedelta(seconds=60), ttl_s=30)
        skewed = build(event("skewed"), now=now + timedelta(seconds=300))
        replayed = build(event("replayed"), seq=first["seq"])
        duplicate = build(event("duplicate"), message_id=first["id"])
        malformed = build(event("malformed"))
        malformed["payload"]["import_cap_w"] = "lots"
        malformed["sig"] = envelope.b64url(aggregator_key.sign(envelope.canonical(malformed)))
        outdated = build(event("ok-1", mod=0), seq=seq + 1)
        cases = {
            "bad_signature": forged,
            "missing_signature": missing,
            "expired": expired,
            "clock_skew": skewed,
            "replayed_seq": replayed,
            "duplicate_id": duplicate,
            "malformed": malformed,
        }
        for msg in cases.values():
            await agg.publish_raw(SITE, "event", envelope.encode(msg))
        await agg.publish_raw(SITE, "event", envelope.encode(outdated))
        await agg.publish_raw(SITE, "event", b"not json at all")

        def reasons() -> dict[str, dict[str, Any]]:
            return {r["reason"]: r for r in responses(agg) if r["status"] == "rejected"}

        await agg.wait_for(lambda: len(reasons()) >= len(cases) + 1, timeout_s=10)
        got = reasons()
        for reason, msg in cases.items():
            assert got[reason]["ref_id"] == msg["id"], reason
        assert got["malformed"]["detail"].startswith("payload.import_cap_w"), got["malformed"]
        assert got["outdated_modification"]["event_id"] == "ok-1"
        assert got["outdated_modification"]["ref_id"] == outdated["id"]
        assert got["outdated_modification"]["detail"] == (
            "payload.modification_number: 0 is not above 0 for event ok-1"
        )
        assert [e.event_id for e in gw.events] == ["ok-1"]  # nothing rejected was decided
        assert {r for r, _ in uplink.rejections} >= set(cases) | {"outdated_modification"}
    await gw.close()


@pytest.mark.parametrize("speed", [1.0, 300.0], ids=["real-clock", "ten-minute-outage-x300"])
async def test_broker_outage_mid_event_loses_and_duplicates_nothing(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey, speed: float
) -> None:
    # At x300 the 2 s real outage is 10 simulated minutes on both ends' clocks: expiry,
    # skew, backoff and resend timers all run on the injected clock.
    clock: Clock = CLOCK if speed == 1.0 else AcceleratedClock(speed)
    cfg = config(broker, aggregator_key, resend_after_s=2 * speed, backoff_max_s=0.4 * speed)
    gw = Gateway(tmp_path, cfg, clock)
    uplink = await gw.open()
    agg = aggregator(broker, aggregator_key, uplink, clock=clock)
    async with running(uplink, agg):
        async with asyncio.timeout(10):
            await uplink.connected.wait()
            await agg.connected.wait()
        await agg.send_event(SITE, event("dfs-7", clock=clock))
        await agg.wait_for(lambda: len(responses(agg)) == 1, timeout_s=10)

        await broker.stop()
        t_down = clock.monotonic()
        await wait_until(
            lambda: not uplink.connected.is_set() and not agg.connected.is_set(),
            timeout_s=10,
            what="both ends to notice the outage",
        )
        # During the outage: the event is modified and the gateway files its reports.
        modified = await agg.send_event(SITE, event("dfs-7", 1, clock, import_cap_w=300))
        seqs = [await uplink.send("delivery_report", report_payload(n)) for n in range(3)]
        assert seqs == sorted(seqs)
        await uplink.send("meter_interval", _interval())
        assert await uplink.outbox.count() >= 4
        await asyncio.sleep(2.0)
        down_s = (clock.monotonic() - t_down) if speed > 1 else None
        await broker.start()

        rec = agg.site(SITE)
        await agg.wait_for(
            lambda: (
                len(rec.of("delivery_report")) == 3
                and len(rec.of("meter_interval")) == 1
                and len(responses(agg)) == 2
                and not rec.pending
            ),
            timeout_s=20,
        )
        assert [r["payload"]["event_id"] for r in rec.of("delivery_report")] == [
            "rep-0",
            "rep-1",
            "rep-2",
        ]
        answer = next(
            r for r in responses(agg) if r["modification_number"] == 1 and r["status"] == "accepted"
        )
        if speed == 1.0:
            assert answer["ref_id"] == modified["id"]
        else:  # ten minutes old: the aggregator re-signed it rather than trip the skew check
            assert answer["ref_id"] != modified["id"]
        assert [(e.event_id, e.modification_number) for e in gw.events] == [
            ("dfs-7", 0),
            ("dfs-7", 1),
        ]
        for _ in range(100):
            if await uplink.outbox.count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await uplink.outbox.count() == 0
        assert rec.invalid == []
        assert uplink.connects >= 2
        assert down_s is None or down_s >= 600  # ten simulated minutes
    await gw.close()


def _interval() -> dict[str, Any]:
    return {
        "period_start": "2026-11-27T17:00:00Z",
        "period_end": "2026-11-27T17:30:00Z",
        "import_kwh": 0.42,
        "export_kwh": 0.0,
        "quality": "measured",
    }


def _outbox_rows(db_path: Path) -> list[tuple[int, str]]:
    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, kind FROM uplink_outbox ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return []
    finally:
        conn.close()


async def test_gateway_killed_with_sigkill_replays_its_outbox(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    cfg = config(broker, aggregator_key, resend_after_s=1)
    cfg_path = tmp_path / "uplink.json"
    cfg_path.write_text(cfg.model_dump_json())
    db_path = tmp_path / "gw" / "hems.db"
    cmd = [sys.executable, "-m", "hil.uplink_gateway", "--config", str(cfg_path)]
    cmd += ["--site", SITE, "--db", str(db_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    # Run 1: no aggregator is listening, so nothing is acked; kill -9 it once all is stored.
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--reports", "5", cwd=REPO, env=env, stdout=subprocess.DEVNULL
    )
    try:
        await wait_until(
            lambda: len(_outbox_rows(db_path)) >= 6, timeout_s=20, what="6 rows in the outbox"
        )
        await asyncio.sleep(0.3)  # let it publish too: the kill lands mid-session
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _outbox_rows(db_path)
    assert [k for _, k in before].count("report") == 5

    key_file = db_path.parent / "gateway_ed25519.pem"
    from hems.uplink.keys import load_or_create_key

    gw_pub = load_or_create_key(key_file).public_key()
    agg = ReferenceAggregator(
        "127.0.0.1",
        broker.port,
        key=aggregator_key,
        gateway_keys={SITE: gw_pub},
        clock=CLOCK,
        resend_after_s=1.0,
    )
    async with running(agg):
        async with asyncio.timeout(10):
            await agg.connected.wait()
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL
        )
        try:
            rec = agg.site(SITE)
            await agg.wait_for(lambda: len(rec.of("delivery_report")) == 5, timeout_s=20)
            await wait_until(
                lambda: not _outbox_rows(db_path), timeout_s=10, what="an empty outbox"
            )
        finally:
            proc.terminate()
            await proc.wait()
    got = [m["payload"]["event_id"] for m in rec.of("delivery_report")]
    assert got == [f"rep-{n}" for n in range(5)]  # in order, each once
    seqs = [m["seq"] for m in rec.of("delivery_report")]
    assert seqs == [s for s, k in before if k == "report"]  # the very rows stored before
    assert rec.invalid == []
    assert json.loads(cfg_path.read_text())["broker_port"] == broker.port


def _sockets_to(port: int) -> int:
    """This process's established TCP connections to 127.0.0.1:`port` (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) in inodes
        except OSError:
            continue  # closed meanwhile
    return count


async def test_connect_attempts_that_time_out_leave_no_socket_behind(
    tmp_path: Path, broker: MosquittoBroker, aggregator_key: Ed25519PrivateKey
) -> None:
    # A stopped broker completes TCP connections (the kernel queues them) but never sends
    # CONNACK: each attempt times out after connect_timeout_s, as with a swamped broker after
    # a restart. aiomqtt leaves such a socket open; left open, each would connect later under
    # the gateway's client id and take its session over.
    cfg = config(broker, aggregator_key, connect_timeout_s=1, backoff_max_s=0.1)
    gw = Gateway(tmp_path, cfg)
    uplink = await gw.open()
    attempts: list[int] = []
    make_client = uplink._client_for_session

    def counted() -> aiomqtt.Client:
        attempts.append(_sockets_to(broker.port))  # sockets open as the next attempt begins
        return make_client()

    uplink._client_for_session = counted  # type: ignore[method-assign]
    assert broker._proc is not None
    os.kill(broker._proc.pid, signal.SIGSTOP)
    try:
        async with running(uplink):
            await wait_until(lambda: len(attempts) >= 4, timeout_s=20, what="4 attempts")
            assert attempts[1:4] == [0, 0, 0]
            os.kill(broker._proc.pid, signal.SIGCONT)
            async with asyncio.timeout(10):
                await uplink.connected.wait()
            assert _sockets_to(broker.port) == 1
    finally:
        os.kill(broker._proc.pid, signal.SIGCONT)
    await gw.close()
