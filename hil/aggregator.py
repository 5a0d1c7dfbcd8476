"""Reference aggregator: signs and sends events and envelopes, verifies every gateway
message with that gateway's public key, acks by seq, and resends downlinks until the
gateway acks or answers them. Usable in-process by tests and as the fleet driver.

Downlink seqs start at the current Unix time in ms, so a restarted aggregator stays above
the last seq every gateway accepted.

`MosquittoBroker` runs a throwaway Mosquitto on a free loopback port (plain, or mutual TLS)
for the demo (`make demo ARGS=--aggregator`) and every test that needs a broker
(`tests.testlib.mosquitto`); `check_report` re-checks a
delivery report's arithmetic the way an aggregator's settlement would.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pwd
import shutil
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hems.core.clock import Clock
from hems.errors import MessageRejected
from hems.uplink import envelope
from hems.uplink.channel import Backoff
from hems.uplink.messages import TYPES, Ack, type_for_topic

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Pending:
    topic: str
    raw: bytes
    id: str
    type: str
    payload: dict[str, Any]
    signed_at_s: float  # clock.monotonic()


@dataclass
class SiteRecord:
    next_seq: int
    received: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> message
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (reason, detail)
    pending: dict[int, Pending] = field(default_factory=dict)  # by seq
    acked_down: set[int] = field(default_factory=set)
    status: str | None = None

    def of(self, type_: str) -> list[dict[str, Any]]:
        return self.by_type.get(type_, [])


class ReferenceAggregator:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        key: Ed25519PrivateKey,
        gateway_keys: dict[str, Ed25519PublicKey] | Callable[[str], Ed25519PublicKey | None],
        clock: Clock,
        tls: ssl.SSLContext | None = None,
        client_id: str = "hems-aggregator",
        topic_prefix: str = "hems/v1/{site_id}/",
        resend_after_s: float = 5.0,
        ttl_s: float = 3600.0,
        backoff_max_s: float = 2.0,
        reissue_after_s: float = 60.0,
        on_message: Callable[[str, str, dict[str, Any]], None] | None = None,
        on_status: Callable[[str, str], None] | None = None,
        subscription: str | None = "",
    ) -> None:
        """`subscription`: the topic filter for gateway messages ("" = every site's `up/#`;
        an MQTT 5 shared one, `$share/GROUP/…`, to be one of several consumers; None = send
        only, with what consumers verified fed in through `ingest`)."""
        self._host, self._port, self._tls = host, port, tls
        self._key = key
        self._keys = gateway_keys
        self._clock = clock
        self._client_id = client_id
        self._template = topic_prefix
        self._resend_after_s = resend_after_s
        self._ttl_s = ttl_s
        self._backoff_max_s = backoff_max_s
        self._reissue_after_s = reissue_after_s
        # (site_id, type, message) for every new gateway message whose signature verified
        self._on_message = on_message
        self._on_status = on_status
        self._subscription = (
            self._template.replace("{site_id}", "+") + "up/#"
            if subscription == ""
            else subscription
        )
        self._client: aiomqtt.Client | None = None
        self._session_tasks: asyncio.TaskGroup | None = None
        self._sent_at: dict[tuple[str, int], float] = {}
        self.sites: dict[str, SiteRecord] = {}
        self.connected = asyncio.Event()
        self.changed = asyncio.Condition()

    @property
    def public_key(self) -> str:
        return envelope.public_key_text(self._key.public_key())

    def prefix(self, site_id: str) -> str:
        return self._template.replace("{site_id}", site_id)

    def site(self, site_id: str) -> SiteRecord:
        rec = self.sites.get(site_id)
        if rec is None:
            rec = SiteRecord(next_seq=int(self._clock.now().timestamp() * 1000))
            self.sites[site_id] = rec
        return rec

    def _gateway_key(self, site_id: str) -> Ed25519PublicKey | None:
        if callable(self._keys):
            return self._keys(site_id)
        return self._keys.get(site_id)

    # -- sending --------------------------------------------------------------------------
    def sign(
        self, site_id: str, type_: str, payload: dict[str, Any], seq: int | None = None
    ) -> dict[str, Any]:
        """A signed downlink message with the next seq (not sent)."""
        rec = self.site(site_id)
        if seq is None:
            rec.next_seq += 1
            seq = rec.next_seq
        return envelope.build(
            self._key,
            type_=type_,
            site_id=site_id,
            seq=seq,
            payload=payload,
            now=self._clock.now(),
            ttl_s=self._ttl_s,
        )

    async def send(self, site_id: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign and send an event or envelope; resent until the gateway acks or answers it."""
        message = self.sign(site_id, type_, payload)
        topic = self.prefix(site_id) + TYPES[type_][1]
        raw = envelope.encode(message)
        self.site(site_id).pending[message["seq"]] = Pending(
            topic, raw, message["id"], type_, payload, self._clock.monotonic()
        )
        await self._publish(topic, raw, (site_id, message["seq"]))
        return message

    async def send_event(self, site_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.send(site_id, "event", payload)

    async def send_envelope(self, site_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.send(site_id, "envelope", payload)

    async def publish_raw(self, site_id: str, type_: str, raw: bytes) -> None:
        """Send anything once, unsigned or forged (for tests of the gateway's checks)."""
        await self._publish(self.prefix(site_id) + TYPES[type_][1], raw, None)

    async def _publish(self, topic: str, raw: bytes, key: tuple[str, int] | None) -> None:
        client = self._client
        if client is None:
            return  # the resend loop delivers it after reconnecting
        if key is not None:
            self._sent_at[key] = self._clock.monotonic()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic, raw, qos=1, timeout=10)

    # -- running --------------------------------------------------------------------------
    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._connection_loop(), name="aggregator:mqtt")
            tg.create_task(self._resend_loop(), name="aggregator:resend")

    async def _connection_loop(self) -> None:
        backoff = Backoff(0.05, self._backoff_max_s)
        while True:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=self._client_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                tls_context=self._tls,
                max_inflight_messages=1000,
            )
            try:
                async with client, asyncio.TaskGroup() as tg:
                    if self._subscription is not None:
                        await client.subscribe(self._subscription, 1)
                    self._client = client
                    self._session_tasks = tg
                    self._sent_at.clear()  # resend everything pending
                    self.connected.set()
                    backoff.reset()
                    async for message in client.messages:
                        await self._handle(message.topic.value, bytes(message.payload or b""))
            except* (aiomqtt.MqttError, OSError) as group:
                log.info("aggregator disconnected", error=str(group.exceptions[0]))
            finally:
                self._client = None
                self._session_tasks = None
                self.connected.clear()
            await asyncio.sleep(backoff.next_s())

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._resend_after_s / 2))
            now_s = self._clock.monotonic()
            # All of a pass's publishes at once: awaiting each PUBACK in turn made a pass over
            # 1000 pending events (after a broker restart) take seconds of round trips.
            sends: list[Coroutine[Any, Any, Any]] = []
            for site_id, rec in list(self.sites.items()):
                for seq, p in list(rec.pending.items()):
                    sent = self._sent_at.get((site_id, seq))
                    if sent is not None and now_s - sent < self._resend_after_s:
                        continue
                    if now_s - p.signed_at_s > self._reissue_after_s:
                        # Too old for the gateway's clock-skew check: sign it afresh (new id
                        # and seq, same payload); the stale copy is answered as rejected.
                        rec.pending.pop(seq)
                        sends.append(self.send(site_id, p.type, p.payload))
                    else:
                        sends.append(self._publish(p.topic, p.raw, (site_id, seq)))
            await asyncio.gather(*sends)

    # -- receiving ------------------------------------------------------------------------
    async def _handle(self, topic: str, raw: bytes) -> None:
        site_id = self._site_from_topic(topic)
        if site_id is None:
            return
        rec = self.site(site_id)
        gw_key = self._gateway_key(site_id)
        try:
            if gw_key is None:
                raise envelope.reject("bad_signature", f"no key for site {site_id}")
            message = envelope.parse(raw)
            msg_id = message.get("id")
            dup = isinstance(msg_id, str) and msg_id in rec.received
            checked = envelope.check(
                message,
                key=gw_key,
                site_id=site_id,
                now=self._clock.now(),
                last_seq=0,
                seen=lambda _id: False,
                max_skew_s=120.0,
                expected_type=type_for_topic(self.prefix(site_id), topic),
                check_skew=False,  # outbox replays are legitimately old
            )
        except MessageRejected as exc:
            rec.invalid.append((exc.reason, getattr(exc, "detail", "")))
            log.warning("gateway message rejected", site_id=site_id, reason=exc.reason)
            return
        env = checked.envelope
        if env.type == "status":
            rec.status = checked.payload.state  # type: ignore[attr-defined]
            if self._on_status is not None:
                self._on_status(site_id, rec.status)
            async with self.changed:
                self.changed.notify_all()
            return
        if dup or (env.seq > 0 and env.seq in rec.seqs):
            rec.duplicates += 1  # a replay of something already held: ack again, count once
        else:
            self._record(site_id, rec, env.type, env.id, env.seq, message)
            if self._on_message is not None:
                self._on_message(site_id, env.type, message)
        if env.seq > 0 and self._client is not None and self._session_tasks is not None:
            ack = self.sign(site_id, "ack", Ack(ranges=[(env.seq, env.seq)]).model_dump(), seq=0)
            # Not awaited here: waiting for each PUBACK would stall the receive loop.
            self._session_tasks.create_task(
                self._publish(self.prefix(site_id) + "down/ack", envelope.encode(ack), None)
            )
        async with self.changed:
            self.changed.notify_all()

    def _record(
        self, site_id: str, rec: SiteRecord, type_: str, id_: str, seq: int, message: dict[str, Any]
    ) -> None:
        rec.received[id_] = message
        rec.by_type.setdefault(type_, []).append(message)
        if seq > 0:
            rec.seqs.add(seq)
        self._settle(rec, type_, message)

    async def ingest(self, site_id: str, type_: str, message: dict[str, Any]) -> None:
        """A gateway message a consumer has verified and acked (the sending side of a scaled-out
        aggregator): kept once by id and seq, settling what it answers, like a received one."""
        rec = self.site(site_id)
        if type_ == "status":
            rec.status = str(message.get("payload", {}).get("state"))
        elif message["id"] in rec.received or (message["seq"] > 0 and message["seq"] in rec.seqs):
            rec.duplicates += 1  # two consumers, or a replay: counted once
        else:
            self._record(site_id, rec, type_, message["id"], message["seq"], message)
        async with self.changed:
            self.changed.notify_all()

    def _site_from_topic(self, topic: str) -> str | None:
        head, _, tail = self._template.partition("{site_id}")
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        site_id, sep, _ = rest.partition(tail[:1] or "/")
        return site_id if sep else None

    def _settle(self, rec: SiteRecord, type_: str, message: dict[str, Any]) -> None:
        payload = message["payload"]
        if type_ == "up_ack":
            for lo, hi in payload["ranges"]:
                for seq in [s for s in rec.pending if lo <= s <= hi]:
                    rec.pending.pop(seq)
                    rec.acked_down.add(seq)
        elif type_ == "event_response":
            ref = payload.get("ref_id")
            for seq, p in list(rec.pending.items()):
                if p.id == ref:
                    rec.pending.pop(seq)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until predicate() holds; TimeoutError if it does not within timeout_s."""
        async with asyncio.timeout(timeout_s):
            async with self.changed:
                await self.changed.wait_for(predicate)


# -- a delivery report, checked the way settlement would ----------------------------------------


def check_report(payload: dict[str, Any], tolerance_kwh: float = 1e-5) -> list[str]:
    """Problems with a delivery report's arithmetic (empty = consistent).

    Per period: baseline = unadjusted + adjustment; delivered = baseline − metered (metered −
    baseline for turn-up), clipped at 0 unless the method settles net; periods contiguous;
    the total is the sum of the periods. A period without baseline or meter value must have
    no delivered value either.
    """
    problems: list[str] = []
    periods = payload.get("periods") or []
    if not periods:
        return ["periods: empty"]
    net = (payload.get("method_details") or {}).get("settlement") == "net"
    sign = -1.0 if payload.get("direction") == "turn_up" else 1.0
    total = 0.0
    for i, p in enumerate(periods):
        un, adj, base, met, dlv = (
            p.get(k)
            for k in (
                "unadjusted_baseline_kwh",
                "adjustment_kwh",
                "baseline_kwh",
                "metered_kwh",
                "delivered_kwh",
            )
        )
        if i and p["period_start"] != periods[i - 1]["period_end"]:
            problems.append(f"periods[{i}].period_start: not contiguous with the period before")
        if None not in (un, adj, base) and abs(un + adj - base) > tolerance_kwh:
            problems.append(f"periods[{i}].baseline_kwh: {base} != {un} + {adj}")
        if None in (base, met):
            if dlv is not None:
                problems.append(f"periods[{i}].delivered_kwh: set without baseline and meter")
            continue
        want = sign * (base - met)
        want = want if net else max(0.0, want)
        if dlv is None or abs(dlv - want) > tolerance_kwh:
            problems.append(f"periods[{i}].delivered_kwh: {dlv} != {want:.6f}")
        else:
            total += dlv
    reported = payload.get("total_delivered_kwh")
    if reported is not None and not math.isclose(reported, total, abs_tol=10 * tolerance_kwh):
        problems.append(f"total_delivered_kwh: {reported} != sum of periods {total:.6f}")
    return problems


# -- a throwaway broker -----------------------------------------------------------------------


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or in /usr/sbin (Debian puts it there), else None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    """Mutual TLS for the broker: clients need a certificate from `ca`; its CN is the user."""

    ca: Path
    cert: Path
    key: Path


class MosquittoBroker:
    """A Mosquitto on a free 127.0.0.1 port, no persistence, logging to `workdir`; anonymous,
    or with `tls` client certificates only. `stop()` then `start()` again reuses the port
    (broker outages in tests).

    `async with MosquittoBroker(binary, workdir) as broker:` … `broker.port`.
    """

    def __init__(self, binary: str, workdir: Path, tls: BrokerTls | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.tls = tls
        self.port = _free_port()
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto would drop to a user that may not read our files.
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {user}"]
        if self.tls is None:
            lines.append("allow_anonymous true")
        else:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
            ]
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(conf), stdout=out, stderr=out
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                tail = self.log_path.read_text(errors="replace")[-500:].strip()
                raise OSError(f"mosquitto exited with {self._proc.returncode}: {tail}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        await self.stop()
        raise OSError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s:g} s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                proc.kill()
            await proc.wait()

    async def __aenter__(self) -> MosquittoBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def report_window(payload: dict[str, Any]) -> tuple[datetime, datetime]:
    """(first period start, last period end) of a delivery report."""
    periods = payload["periods"]
    return (
        datetime.fromisoformat(periods[0]["period_start"]),
        datetime.fromisoformat(periods[-1]["period_end"]),
    )
