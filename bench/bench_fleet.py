"""Fleet benchmark: many gateways, each running hems' real uplink and flexibility code, over
mutual TLS on one Mosquitto, with the aggregator scaled out by MQTT 5 shared subscriptions.

    .venv/bin/python bench/bench_fleet.py [--gateways 300] [--procs 2] [--consumers 2]
        [--speed 30] [--telemetry-wall-s 60]

Gateways (`--procs` worker processes): each is a `hems.uplink.Uplink` (own SQLite outbox, own
MQTT 5 session, its own client certificate, signed envelopes) wired to a `hems.flex.FlexService`
exactly as the daemon wires them (`hems.app.links.answer_event`): the event is decided by the
flex policy (clamped to the home's safety minimum), stored in the event book, and after the
window the signed delivery report is built by the DFS baseline method from the gateway's own
meter intervals: 21 days of simulated history (`hil.demo.seed_meter_history`), then the
event's half hours simulated as a home that kept under the cap.

Aggregator: one dispatcher (signs and sends the event to every site, resends until settled)
and `--consumers` processes sharing `$share/aggregator/hems/v1/+/up/#`: each verifies the
gateway's signature, acks by seq, and passes what it verified to the dispatcher, which keeps
each message once by id and seq and settles what it answers.

The broker: Mosquitto with TLS client certificates only, the certificate's CN as the user, and
an ACL that confines each gateway to `hems/v1/<its CN>/#`. When half the gateways have acked
the event the broker is stopped and started again (persistence on, so queued messages
survive).

Time: all processes share one simulated clock (`--speed`, anchored to one wall-clock instant),
so the 30-minute event and the report delay pass in `--speed`-times less wall time; so does
telemetry (every 60 simulated s) unless `--telemetry-wall-s` sets a real fleet's wall-clock
rate. The gateways' 120 s clock-skew window is simulated time too (4 wall s at 30×). Reported
in wall seconds: dispatch → all acks, → all responses, event end → all reports; plus
exactly-once counts, the reports' arithmetic (`hil.aggregator.check_report`) and order; and,
for the gateways not yet acked when the broker stopped, where the time after its restart went
(session attempts, CONNACK, session back, the dispatcher's sends, the ack's arrival; median /
p95 / max). The dispatcher's resend policy is in `bench/fleet_dispatcher.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from hems.uplink.envelope import public_key_text  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"
SHARED_GROUP = "aggregator"
CAP_W = 500.0  # the event's import cap (the homes' safety minimum, so nothing is clamped)
START = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)  # a Wednesday; 21 working-day history before
HISTORY_VARIANTS = 4  # simulated homes per worker process (each gateway copies one)
WEEK_MS = 7 * 86_400_000
# Answers to copies: resent ("duplicate_id"), older than one already taken ("replayed_seq"),
# signed too long ago ("expired", "clock_skew"), or a re-signed copy of the event the gateway
# already holds at that modification ("outdated_modification"; the bench sends one only).
_COPY_REASONS = ("duplicate_id", "replayed_seq", "expired", "clock_skew", "outdated_modification")


class SharedClock:
    """Simulated time at `speed` from `start`, anchored to the wall-clock instant `anchor_s`
    (time.time()), so separate processes agree on it to the millisecond."""

    def __init__(self, speed: float, start: datetime, anchor_s: float) -> None:
        self.speed, self._start, self._anchor_s = speed, start, anchor_s

    def monotonic(self) -> float:
        return (time.time() - self._anchor_s) * self.speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def site_key(site_id: str) -> Ed25519PrivateKey:
    # Deterministic per-site keys so the aggregator knows every gateway's public key.
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(site_id.encode()).digest())


def site_ids(n: int) -> list[str]:
    return [f"gw{i:05d}" for i in range(n)]


def clock_of(args: argparse.Namespace) -> SharedClock:
    return SharedClock(args.speed, datetime.fromisoformat(args.start), args.anchor)


def tls_context(tls_dir: Path, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    ctx.load_cert_chain(str(tls_dir / f"{name}.crt"), str(tls_dir / f"{name}.key"))
    return ctx


# -- worker: a share of the gateways ---------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    from zoneinfo import ZoneInfo

    from hems.app.links import answer_event
    from hems.core.state import SiteState
    from hems.flex.config import FlexConfig
    from hems.flex.service import FlexService
    from hems.store.db import Database
    from hems.uplink.channel import Uplink
    from hems.uplink.config import UplinkConfig, UplinkTlsConfig
    from hems.uplink.messages import Event, EventDecision
    from hil.demo import seed_meter_history
    from hil.home import HomeConfig

    clock = clock_of(args)
    tls_dir = Path(args.tls_dir)
    flex_cfg = FlexConfig.model_validate(
        {
            "enabled": True,
            "baseline_method": "dfs",
            "meter_device_id": "grid",
            "report_delay_s": 60,
            "check_interval_s": 60,
        }
    )
    mine = [(i, s) for i, s in enumerate(site_ids(args.gateways)) if i % args.procs == args.worker]
    uplinks: list[Uplink] = []
    services: list[FlexService] = []
    dbs: list[Database] = []
    windows: dict[str, tuple[datetime, datetime, float]] = {}  # site -> accepted event
    # site -> [(what, wall time.time())]: "attempt" (a session begins), "connack", "up" (its
    # subscriptions and status done) / "down", "event" (the gateway decided)
    trace: dict[str, list[tuple[str, float]]] = {site: [] for _, site in mine}
    # Simulating 21 days of a home takes seconds: a few homes are simulated per process and
    # each gateway starts from a copy of one of them (its own file from then on).
    templates: list[Path] = []
    for v in range(HISTORY_VARIANTS):
        path = Path(args.tmp) / f"history-{args.worker}-{v}.db"
        seed = args.worker * HISTORY_VARIANTS + v
        await seed_meter_history(
            path, "grid", START, days=21, home=HomeConfig(seed=seed), seed=seed
        )
        templates.append(path)
    for i, site in mine:
        db_path = Path(args.tmp) / site / "hems.db"
        db_path.parent.mkdir(parents=True)
        shutil.copyfile(templates[i % HISTORY_VARIANTS], db_path)
        db = await Database.open(db_path)
        dbs.append(db)
        cert = tls_dir / site
        cfg = UplinkConfig(
            enabled=True,
            broker_host="127.0.0.1",
            broker_port=args.port,
            tls=UplinkTlsConfig(
                ca_path=tls_dir / "ca.crt",
                cert_path=cert.with_suffix(".crt"),
                key_path=cert.with_suffix(".key"),
            ),
            aggregator_public_key=args.agg_pub,
            telemetry_interval_s=60,  # the maximum; at --speed 30 one every 2 s of wall time
            keepalive_s=30,
            backoff_min_s=0.2 * args.speed,  # simulated seconds: 0.2 s to 2 s of wall time
            backoff_max_s=2.0 * args.speed,
            resend_after_s=5.0 * args.speed,
        )
        if args.telemetry_wall_s is not None:
            # A real fleet's rate while the event runs at --speed: the interval is in simulated
            # seconds, so one per N wall s is N * speed, past the config's 60 s bound (which is
            # for real time); model_copy skips that check on purpose.
            telemetry_s = args.telemetry_wall_s * args.speed
            cfg = cfg.model_copy(update={"telemetry_interval_s": telemetry_s})
        box: list[Uplink] = []

        async def send_up(type_: str, payload: dict[str, Any], box: list[Uplink] = box) -> int:
            return int(await box[0].send(type_, payload))

        flex = FlexService(
            flex_cfg, ZoneInfo("Europe/London"), db, clock, send_up,
            import_limit_w=13_800, export_limit_w=3680,
        )  # fmt: skip

        async def on_event(ev: Event, flex: FlexService = flex, site: str = site) -> EventDecision:
            trace[site].append(("event", time.time()))
            decision = await answer_event(flex, ev)
            if decision.status == "accepted":
                windows[site] = (ev.start, ev.end, CAP_W)
            return decision

        up = Uplink(cfg, site, SiteState(clock), db, clock, on_event, key=site_key(site))
        make_client = up._client_for_session

        def traced_client(make_client: Any = make_client, site: str = site) -> Any:
            trace[site].append(("attempt", time.time()))  # a session attempt begins
            return make_client()

        up._client_for_session = traced_client  # type: ignore[method-assign]
        box.append(up)
        uplinks.append(up)
        services.append(flex)

    async def meter() -> None:
        """The event's half hours as each home's smart meter records them once they are over:
        the home's simulated use a week before, held under the cap the home followed."""
        done: set[str] = set()
        while True:
            await asyncio.sleep(0.2)
            for n, (_, site) in enumerate(mine):
                if site in done or site not in windows:
                    continue
                start, end, cap_w = windows[site]
                if clock.now() < end:
                    continue
                start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
                await dbs[n].execute(
                    "INSERT OR IGNORE INTO meter_intervals (device_id, period_start_ms, "
                    "import_wh, export_wh, quality, updated_ms) SELECT device_id, "
                    "period_start_ms + ?, MIN(import_wh, ?), export_wh, 'actual', ? "
                    "FROM meter_intervals WHERE device_id = 'grid' AND period_start_ms >= ? "
                    "AND period_start_ms < ?",
                    (WEEK_MS, cap_w * 0.5, end_ms, start_ms - WEEK_MS, end_ms - WEEK_MS),
                )
                done.add(site)

    async def watch() -> None:
        """Each session's ups and downs, as the gateway sees them (polled every 20 ms)."""
        up = {u.site_id: False for u in uplinks}
        connacks = {u.site_id: 0 for u in uplinks}
        while True:
            now_s = time.time()
            for u in uplinks:
                if u.connects != connacks[u.site_id]:
                    connacks[u.site_id] = u.connects
                    trace[u.site_id].append(("connack", now_s))
                if u.connected.is_set() != up[u.site_id]:
                    up[u.site_id] = not up[u.site_id]
                    trace[u.site_id].append(("up" if up[u.site_id] else "down", now_s))
            await asyncio.sleep(0.02)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runners = [asyncio.create_task(u.run()) for u in uplinks]
    runners.append(asyncio.create_task(watch()))
    runners += [asyncio.create_task(f.run()) for f in services]
    runners.append(asyncio.create_task(meter()))
    print(json.dumps({"ready": len(uplinks)}), flush=True)
    await stop.wait()
    left = sum([await u.outbox.count() for u in uplinks])
    connects = sum(u.connects for u in uplinks)
    for t in runners:
        t.cancel()
    await asyncio.gather(*runners, return_exceptions=True)
    for db in dbs:
        await db.close()
    print(json.dumps({"outbox_left": left, "connects": connects, "trace": trace}), flush=True)


# -- consumer: one of the aggregator's receiving processes ------------------------------------


async def consumer(args: argparse.Namespace) -> None:
    from hil.aggregator import ReferenceAggregator

    asyncio.get_running_loop().set_exception_handler(lambda _loop, _ctx: None)
    sites = site_ids(args.gateways)
    keys = {s: site_key(s).public_key() for s in sites}
    agg_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(args.agg_secret))
    out = sys.stdout

    def forward(site_id: str, type_: str, message: dict[str, Any]) -> None:
        out.write(json.dumps({"site": site_id, "type": type_, "message": message}) + "\n")
        out.flush()

    def status(site_id: str, state: str) -> None:
        out.write(json.dumps({"site": site_id, "type": "status", "state": state}) + "\n")
        out.flush()

    agg = ReferenceAggregator(
        "127.0.0.1", args.port, key=agg_key, gateway_keys=keys, clock=clock_of(args),
        tls=tls_context(Path(args.tls_dir), "aggregator"),
        client_id=f"agg-consumer-{args.consumer}",
        subscription=f"$share/{SHARED_GROUP}/hems/v1/+/up/#",
        # Mosquitto 2.0.11 does not keep a shared subscription over its restart: what gateways
        # publish before a consumer has subscribed again is dropped (they resend it after
        # resend_after_s). So the consumers come back first: few clients, short backoff.
        backoff_max_s=0.1,
        on_message=forward, on_status=status,
    )  # fmt: skip
    task = asyncio.create_task(agg.run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- driver ----------------------------------------------------------------------------------


class Broker:
    """Mosquitto with client certificates only (CN = user) and a per-gateway ACL."""

    def __init__(self, workdir: Path, tls_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        user = pwd.getpwuid(os.getuid()).pw_name
        acl = workdir / "acl"
        acl.write_text(
            "user aggregator\ntopic readwrite hems/v1/#\n\npattern readwrite hems/v1/%u/#\n"
        )
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"per_listener_settings false\nlistener {self.port} 127.0.0.1\nuser {user}\n"
            f"cafile {tls_dir / 'ca.crt'}\ncertfile {tls_dir / 'server.crt'}\n"
            f"keyfile {tls_dir / 'server.key'}\nrequire_certificate true\n"
            f"use_identity_as_username true\nallow_anonymous false\nacl_file {acl}\n"
            f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 10000\n"
        )
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=out)
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-400:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    from hil.certs import make_tls

    tmp = Path(tempfile.mkdtemp(prefix="hems-fleet-"))
    tls_dir = tmp / "tls"
    make_tls(tls_dir, ["aggregator", *site_ids(args.gateways)])
    broker = Broker(tmp, tls_dir)
    procs: list[asyncio.subprocess.Process] = []
    try:
        return await _drive(args, tmp, tls_dir, broker, procs)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        broker.stop()
        if not os.environ.get("HEMS_FLEET_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


async def _drive(
    args: argparse.Namespace,
    tmp: Path,
    tls_dir: Path,
    broker: Broker,
    procs: list[asyncio.subprocess.Process],
) -> dict[str, Any]:
    from bench.fleet_dispatcher import Dispatcher
    from hil.aggregator import check_report, report_window

    # aiomqtt leaves "Future exception was never retrieved" noise on dropped links (LIBRARIES §4).
    asyncio.get_running_loop().set_exception_handler(lambda _loop, _ctx: None)
    broker.start()
    args.anchor = time.time()
    args.start = START.isoformat()
    clock = clock_of(args)
    agg_key = Ed25519PrivateKey.generate()
    sites = site_ids(args.gateways)
    keys = {s: site_key(s).public_key() for s in sites}
    dispatcher = Dispatcher(
        "127.0.0.1", broker.port, key=agg_key, gateway_keys=keys, clock=clock,
        tls=tls_context(tls_dir, "aggregator"), client_id="agg-dispatcher", subscription=None,
        resend_after_s=5.0 * args.speed, resend_max_s=30.0 * args.speed, reissue_after_s=90.0,
    )  # fmt: skip
    sends = dispatcher.sends  # site -> wall times the dispatcher sent it the event
    agg_task = asyncio.create_task(dispatcher.run())
    await asyncio.wait_for(dispatcher.connected.wait(), 10)
    common = ["--gateways", str(args.gateways), "--port", str(broker.port), "--tmp", str(tmp)]
    common += ["--tls-dir", str(tls_dir), "--speed", str(args.speed)]
    common += ["--start", args.start, "--anchor", repr(args.anchor)]
    if args.telemetry_wall_s is not None:
        common += ["--telemetry-wall-s", str(args.telemetry_wall_s)]
    secret = agg_key.private_bytes_raw().hex()
    for c in range(args.consumers):
        cmd = [sys.executable, __file__, "--consumer", str(c), "--agg-secret", secret, *common]
        procs.append(await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=REPO))
    readers = [asyncio.create_task(_read_consumer(p, dispatcher)) for p in procs]
    for w in range(args.procs):
        cmd = [sys.executable, __file__, "--worker", str(w), "--procs", str(args.procs), *common]
        cmd += ["--agg-pub", public_key_text(agg_key.public_key())]
        procs.append(await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=REPO))
    workers = procs[args.consumers :]
    t_start = time.monotonic()
    recs = [dispatcher.site(s) for s in sites]
    _stage(f"{len(sites)} gateways starting")
    await dispatcher.wait_for(lambda: all(r.status == "online" for r in recs), args.timeout_s)
    t_connected = time.monotonic() - t_start
    _stage("all online; dispatching")

    # The first half hour at least 2 simulated minutes away (settlement periods are :00/:30).
    soon = clock.now() + timedelta(minutes=2)
    event_start = soon.replace(minute=(soon.minute // 30) * 30, second=0, microsecond=0)
    event_start += timedelta(minutes=30)
    event_end = event_start + timedelta(minutes=30)
    payload = {
        "event_id": "fleet-1",
        "modification_number": 0,
        "kind": "turn_down",
        "start": event_start.isoformat(),
        "end": event_end.isoformat(),
        "import_cap_w": CAP_W,
    }
    acked_at: dict[str, float] = {}  # site -> wall time its ack or answer reached the dispatcher

    async def watch_acks() -> None:
        while len(acked_at) < len(sites):
            now_s = time.time()
            for s, r in zip(sites, recs, strict=True):
                if s not in acked_at and (r.acked_down or r.of("event_response")):
                    acked_at[s] = now_s
            await asyncio.sleep(0.02)

    ack_watch = asyncio.create_task(watch_acks())
    t0 = time.monotonic()
    t0_wall = time.time()
    await asyncio.gather(*(dispatcher.send_event(s, payload) for s in sites))
    dispatch_s = time.monotonic() - t0

    def acked() -> int:
        # Settled: the gateway's up/ack or its signed response reached the aggregator.
        return sum(1 for r in recs if r.acked_down or r.of("event_response"))

    await dispatcher.wait_for(lambda: acked() >= len(sites) // 2, timeout_s=args.timeout_s)
    acked_at_restart = acked()
    _stage(f"{acked_at_restart} acked; restarting the broker")
    stopped_wall = time.time()
    broker.stop()
    t_down = time.monotonic()
    await asyncio.sleep(args.outage_s)
    broker.start()
    started_wall = time.time()
    outage_s = time.monotonic() - t_down
    try:
        await dispatcher.wait_for(lambda: acked() == len(sites), timeout_s=args.timeout_s)
        t_acks = time.monotonic() - t0
        _stage("all acked")
        await _wait_all(dispatcher, recs, "event_response", args.timeout_s)
        t_responses = time.monotonic() - t0
        wall_to_end_s = max(0.0, (event_end - clock.now()).total_seconds() / args.speed)
        await asyncio.sleep(wall_to_end_s)
        t_end = time.monotonic()
        _stage("event over; waiting for the reports")
        await _wait_all(dispatcher, recs, "delivery_report", args.timeout_s)
        t_reports = time.monotonic() - t_end
    except TimeoutError:
        # Say where the time went before giving up: the gateways' traces of the late sites.
        _, _, traces = await _stop_workers(workers)
        timeline = _timeline(t0_wall, stopped_wall, started_wall, traces, sends, acked_at)
        for k, v in timeline.items():
            _stage(f"{k}: {v}")
        for s in [s for s in sites if s not in acked_at][:10]:
            marks = [(what, round(t - started_wall, 2)) for what, t in traces.get(s, [])]
            sent = [round(t - started_wall, 2) for t in sends.get(s, [])]
            _stage(f"not acked {s}: gateway {marks}; dispatcher sent at {sent}")
        _stage(f"broker log: {_broker_log_counts(broker.log)}")
        raise
    await asyncio.sleep(3)  # let the last acks reach the gateways' outboxes
    left, connects, traces = await _stop_workers(workers)
    ack_watch.cancel()
    for p in procs[: args.consumers]:
        p.send_signal(signal.SIGTERM)
    counts = await asyncio.gather(*readers)
    agg_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agg_task

    expected = {"capabilities": 1, "event_response": 1, "delivery_report": 1}

    def got(r: Any, t: str) -> list[dict[str, Any]]:
        """The messages of type t, one per thing they are about. Copies of the event that the
        broker outage left in flight are answered on the transport's grounds (a resent copy
        "duplicate_id", an older seq "replayed_seq", a copy signed too long ago "expired" or
        "clock_skew", after which the dispatcher re-signs it); a re-signed copy is answered
        again with the same decision. None of these is a second decision."""
        messages = [m for m in r.of(t) if m["payload"].get("reason") not in _COPY_REASONS]
        if t != "event_response":
            return messages
        first: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
        for m in messages:
            p = m["payload"]
            first.setdefault((p.get("event_id"), p.get("modification_number"), p["status"]), m)
        return list(first.values())

    answers = sum(len(r.of("event_response")) for r in recs)
    copies_by_reason = {
        reason: sum(
            1 for r in recs for m in r.of("event_response") if m["payload"].get("reason") == reason
        )
        for reason in _COPY_REASONS
    }

    lost = sum(max(0, n - len(got(r, t))) for r in recs for t, n in expected.items())
    extra = sum(max(0, len(got(r, t)) - n) for r in recs for t, n in expected.items())
    extra_by_type = {t: sum(max(0, len(got(r, t)) - n) for r in recs) for t, n in expected.items()}
    reports = [m["payload"] for r in recs for m in r.of("delivery_report")]
    bad_reports = sum(
        1 for p in reports if check_report(p) or report_window(p) != (event_start, event_end)
    )
    out_of_order = sum(
        1
        for r in recs
        if got(r, "event_response")
        and r.of("delivery_report")
        and r.of("delivery_report")[0]["seq"] <= got(r, "event_response")[0]["seq"]
    )
    accepted = sum(
        1 for r in recs for m in got(r, "event_response") if m["payload"]["status"] == "accepted"
    )
    delivered = [p.get("total_delivered_kwh") or 0.0 for p in reports]
    return {
        "gateways": len(sites),
        "gateway processes / aggregator consumers": f"{args.procs} / {args.consumers}",
        "clock speed": args.speed,
        "telemetry per gateway every (wall s)": args.telemetry_wall_s or round(60 / args.speed, 2),
        "start -> all connected over TLS (s, incl. history)": round(t_connected, 2),
        "dispatch of all events (s)": round(dispatch_s, 2),
        "acked before broker restart": acked_at_restart,
        "broker outage (s)": round(outage_s, 2),
        "dispatch -> all acks (s)": round(t_acks, 2),
        "dispatch -> all responses (s)": round(t_responses, 2),
        "event end -> all signed reports (s)": round(t_reports, 2),
        "responses accepted": accepted,
        "answers incl. to resent / re-signed copies": answers,
        "answers to copies by reason": copies_by_reason,
        "copies signed afresh after a too-old one was rejected": dispatcher.fresh_copies,
        "reports received / failing check_report or window": f"{len(reports)} / {bad_reports}",
        "report before its response": out_of_order,
        "delivered kWh per home (mean)": round(sum(delivered) / max(1, len(delivered)), 3),
        "messages per consumer": " / ".join(str(c) for c in counts),
        "duplicates discarded by aggregator": sum(r.duplicates for r in recs),
        "invalid signatures": sum(len(r.invalid) for r in recs),
        "messages lost": lost,
        "unexpected extra messages": f"{extra} {extra_by_type}" if extra else 0,
        "gateway outbox rows left": left,
        "gateway connects (incl. reconnects)": connects,
        "broker log": _broker_log_counts(broker.log),
        **_timeline(t0_wall, stopped_wall, started_wall, traces, sends, acked_at),
    }


async def _stop_workers(
    workers: list[asyncio.subprocess.Process],
) -> tuple[int, int, dict[str, list[tuple[str, float]]]]:
    """SIGTERM the gateway processes; their outbox rows left, connects and traces."""
    left = connects = 0
    traces: dict[str, list[tuple[str, float]]] = {}
    for p in workers:
        p.send_signal(signal.SIGTERM)
    for p in workers:
        out, _ = await p.communicate()
        for line in out.decode().splitlines():
            if line.startswith('{"outbox_left"'):
                item = json.loads(line)
                left += item["outbox_left"]
                connects += item["connects"]
                traces.update(item["trace"])
    return left, connects, traces


def _spread(values: list[float]) -> str:
    """median / p95 / max of wall seconds, and how many."""
    if not values:
        return "none"
    v = sorted(values)
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    return f"{v[len(v) // 2]:.2f} / {p95:.2f} / {v[-1]:.2f} (n={len(v)})"


def _timeline(
    t0: float,
    stopped: float,
    started: float,
    traces: dict[str, list[tuple[str, float]]],
    sends: dict[str, list[float]],
    acked_at: dict[str, float],
) -> dict[str, str]:
    """Where the time after the broker restart went, per gateway not acked before it (wall s
    from the broker's start, median / p95 / max): the gateway's session back, its decision
    (the event's copy it took), the dispatcher's first send after the restart, its ack."""
    late = [s for s, t in acked_at.items() if t > stopped]
    back, sessions, event, first_send, ack, ack_after_back = [], [], [], [], [], []
    attempts, connack = [], []
    slow: list[str] = []  # acked more than 3 s after its session was back
    for s in late:
        ups = [t for what, t in traces.get(s, []) if what == "up" and t > stopped]
        tries = [t for what, t in traces.get(s, []) if what == "attempt" and t > stopped]
        acks = [t for what, t in traces.get(s, []) if what == "connack" and t > stopped]
        attempts.append(float(len(tries)))
        if acks:
            connack.append(acks[0] - started)
        evs = [t for what, t in traces.get(s, []) if what == "event" and t > t0]
        sent = [t for t in sends.get(s, []) if t > started]
        sessions.append(float(len(ups)))
        if ups:
            back.append(ups[0] - started)
            ack_after_back.append(acked_at[s] - ups[0])
        if evs:
            event.append(evs[0] - started)
        if sent:
            first_send.append(sent[0] - started)
        ack.append(acked_at[s] - started)
        if ups and acked_at[s] - ups[0] > 3.0:
            slow.append(s)
    down = [
        min(t for what, t in tr if what == "down" and t > stopped) - stopped
        for tr in traces.values()
        if any(what == "down" and t > stopped for what, t in tr)
    ]
    return {
        "restart: gateways acked after it": str(len(late)),
        "restart: broker stop -> gateway sees its session down": _spread(down),
        "restart: session attempts per late site": _spread(attempts),
        "restart: broker start -> CONNACK (late sites)": _spread(connack),
        "restart: broker start -> session back (late sites)": _spread(back),
        "restart: sessions after it per late site": _spread(sessions),
        "restart: broker start -> dispatcher's first send": _spread(first_send),
        "restart: broker start -> gateway decides": _spread(event),
        "restart: broker start -> ack at dispatcher": _spread(ack),
        "restart: session back -> ack at dispatcher": _spread(ack_after_back),
        "restart: acked > 3 s after the session was back": f"{len(slow)} {slow[:5]}",
    }


def _broker_log_counts(log: Path) -> dict[str, int]:
    """Why connections ended, as Mosquitto logged them (both broker runs)."""
    text = log.read_text(errors="replace")
    marks = {
        "connected": "New client connected",
        "keepalive timeout": "has exceeded timeout",
        "client-id takeover": "already connected, closing old connection",
        "closed by client": "closed its connection",
        "dropped (EOF or socket error)": " disconnected.",
        "protocol error": "disconnected: Protocol error",
        "not authorised": "disconnected, not authorised",
        "connection failed before CONNECT (TLS)": "failed: ",
    }
    return {k: text.count(m) for k, m in marks.items()}


async def _wait_all(dispatcher: Any, recs: list[Any], type_: str, timeout_s: float) -> None:
    """Until every site has sent a `type_`; on timeout, say which sites have not."""
    try:
        await dispatcher.wait_for(lambda: all(r.of(type_) for r in recs), timeout_s=timeout_s)
    except TimeoutError:
        missing = [s for s, r in dispatcher.sites.items() if r in recs and not r.of(type_)]
        _stage(f"timed out: {len(missing)} sites without a {type_}: {missing[:20]}")
        raise


def _stage(what: str) -> None:
    """Progress on stderr, so a run that times out says where."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


async def _read_consumer(proc: asyncio.subprocess.Process, dispatcher: Any) -> int:
    """Feed a consumer's verified messages to the dispatcher; returns how many it passed."""
    assert proc.stdout is not None
    n = 0
    async for line in proc.stdout:
        item = json.loads(line)
        if item["type"] == "status":
            await dispatcher.ingest(item["site"], "status", {"payload": {"state": item["state"]}})
            continue
        n += 1
        await dispatcher.ingest(item["site"], item["type"], item["message"])
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", type=int, default=300)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--speed", type=float, default=30.0)
    p.add_argument("--outage-s", type=float, default=2.0)
    p.add_argument(
        "--telemetry-wall-s",
        type=float,
        default=None,
        help="telemetry every N wall seconds per gateway (default: every 60 simulated s, "
        "i.e. --speed times a real fleet's rate)",
    )
    p.add_argument("--timeout-s", type=float, default=300.0)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--consumer", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--agg-pub", default="", help=argparse.SUPPRESS)
    p.add_argument("--agg-secret", default="", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    p.add_argument("--tls-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--start", default="", help=argparse.SUPPRESS)
    p.add_argument("--anchor", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    import logging

    import structlog

    # Reconnect noise from hundreds of clients would drown the table (and the worker pipes).
    if not os.environ.get("HEMS_FLEET_DEBUG"):
        logging.disable(logging.CRITICAL)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    else:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if args.worker is not None:
        asyncio.run(worker(args))
        return 0
    if args.consumer is not None:
        asyncio.run(consumer(args))
        return 0
    result = asyncio.run(drive(args))
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    return 0 if result["messages lost"] == 0 and not result["unexpected extra messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
