"""Fleet benchmark: many gateways on one Mosquitto, one event to all, broker restarted mid-event.

    .venv/bin/python bench/bench_fleet.py [--gateways 500] [--procs 2]

Each gateway is a real `hems.uplink.Uplink` (own SQLite outbox, own MQTT 5 session, signed
envelopes), run in a few worker processes. The reference aggregator (`hil.aggregator`) signs
and sends one event to every site, verifies every response and delivery report, and acks.
When half the gateways have acked the event, the broker is stopped and started again.
Reported: time from dispatch to all acks, to all responses and reports, and messages lost
(expected − distinct received; must be 0). Needs /usr/sbin/mosquitto.
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
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from hems.core.clock import RealClock  # noqa: E402
from hems.uplink.envelope import public_key_text  # noqa: E402

MOSQUITTO = "/usr/sbin/mosquitto"


def site_key(site_id: str) -> Ed25519PrivateKey:
    # Deterministic per-site keys so the aggregator knows every gateway's public key.
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(site_id.encode()).digest())


def site_ids(n: int) -> list[str]:
    return [f"gw{i:05d}" for i in range(n)]


# -- worker: a share of the gateways ---------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    from hems.core.state import SiteState
    from hems.store.db import Database
    from hems.uplink.channel import Uplink
    from hems.uplink.config import UplinkConfig
    from hems.uplink.messages import Event, EventDecision

    clock = RealClock()
    cfg = UplinkConfig(
        enabled=True,
        broker_host="127.0.0.1",
        broker_port=args.port,
        aggregator_public_key=args.agg_pub,
        telemetry_interval_s=60,
        keepalive_s=30,
        backoff_min_s=0.2,
        backoff_max_s=2.0,
        resend_after_s=5.0,
    )
    mine = [s for i, s in enumerate(site_ids(args.gateways)) if i % args.procs == args.worker]
    uplinks: list[Uplink] = []
    dbs: list[Database] = []

    def on_event_for(box: list[Uplink]) -> Any:
        async def on_event(ev: Event) -> EventDecision:
            # The flex area would compute this after the event; here it follows at once.
            async def report() -> None:
                await asyncio.sleep(0.5)
                await box[0].send("delivery_report", _report(ev))

            tasks.add(asyncio.create_task(report()))
            return EventDecision(status="accepted")

        return on_event

    tasks: set[asyncio.Task[None]] = set()
    for site in mine:
        db = await Database.open(Path(args.tmp) / site / "hems.db")
        dbs.append(db)
        box: list[Uplink] = []
        up = Uplink(cfg, site, SiteState(clock), db, clock, on_event_for(box), key=site_key(site))
        box.append(up)
        uplinks.append(up)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runners = [asyncio.create_task(u.run()) for u in uplinks]
    print(json.dumps({"ready": len(uplinks)}), flush=True)
    await stop.wait()
    left = sum([await u.outbox.count() for u in uplinks])
    for t in [*runners, *tasks]:
        t.cancel()
    await asyncio.gather(*runners, *tasks, return_exceptions=True)
    for db in dbs:
        await db.close()
    print(json.dumps({"outbox_left": left}), flush=True)


def _report(ev: Any) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "modification_number": ev.modification_number,
        "method": "elexon-bl01",
        "method_version": "1",
        "periods": [
            {
                "period_start": ev.start.isoformat(),
                "period_end": ev.end.isoformat(),
                "unadjusted_baseline_kwh": 1.0,
                "adjustment_kwh": 0.0,
                "baseline_kwh": 1.0,
                "metered_kwh": 0.4,
                "delivered_kwh": 0.6,
            }
        ],
        "meter_data_sha256": hashlib.sha256(ev.event_id.encode()).hexdigest(),
    }


# -- driver ----------------------------------------------------------------------------------


class Broker:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        user = pwd.getpwuid(os.getuid()).pw_name
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {user}\n"
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
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hems-fleet-"))
    broker = Broker(tmp)
    procs: list[asyncio.subprocess.Process] = []
    try:
        return await _drive(args, tmp, broker, procs)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def _drive(
    args: argparse.Namespace, tmp: Path, broker: Broker, procs: list[asyncio.subprocess.Process]
) -> dict[str, Any]:
    from hil.aggregator import ReferenceAggregator

    clock = RealClock()
    # aiomqtt leaves "Future exception was never retrieved" noise on dropped links (LIBRARIES §4).
    asyncio.get_running_loop().set_exception_handler(lambda _loop, _ctx: None)
    broker.start()
    agg_key = Ed25519PrivateKey.generate()
    sites = site_ids(args.gateways)
    keys = {s: site_key(s).public_key() for s in sites}
    agg = ReferenceAggregator(
        "127.0.0.1", broker.port, key=agg_key, gateway_keys=keys, clock=clock, resend_after_s=5.0
    )
    agg_task = asyncio.create_task(agg.run())
    await asyncio.wait_for(agg.connected.wait(), 10)
    for w in range(args.procs):
        cmd = [sys.executable, __file__, "--worker", str(w), "--procs", str(args.procs)]
        cmd += ["--gateways", str(args.gateways), "--port", str(broker.port)]
        cmd += ["--agg-pub", public_key_text(agg_key.public_key()), "--tmp", str(tmp)]
        procs.append(await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, cwd=REPO))
    t_start = time.monotonic()
    recs = [agg.site(s) for s in sites]
    await agg.wait_for(lambda: all(r.status == "online" for r in recs), timeout_s=120)
    t_connected = time.monotonic() - t_start

    start = clock.now() + timedelta(minutes=5)
    payload = {
        "event_id": "fleet-1",
        "modification_number": 0,
        "kind": "turn_down",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "import_cap_w": 1000,
    }
    t0 = time.monotonic()
    await asyncio.gather(*(agg.send_event(s, payload) for s in sites))
    dispatch_s = time.monotonic() - t0

    def acked() -> int:
        # Settled: the gateway's up/ack or its signed response reached the aggregator.
        return sum(1 for r in recs if r.acked_down or r.of("event_response"))

    await agg.wait_for(lambda: acked() >= len(sites) // 2, timeout_s=120)
    acked_at_restart = acked()
    broker.stop()
    t_down = time.monotonic()
    await asyncio.sleep(args.outage_s)
    broker.start()
    outage_s = time.monotonic() - t_down

    try:
        await agg.wait_for(lambda: acked() == len(sites), timeout_s=args.timeout_s)
    except TimeoutError:
        missing = [s for s, r in zip(sites, recs, strict=True) if r.pending]
        r = agg.site(missing[0])
        print(
            "not acked:",
            len(missing),
            missing[:5],
            r.status,
            r.pending.keys(),
            {t: len(v) for t, v in r.by_type.items()},
            r.invalid,
            file=sys.stderr,
        )
        raise
    t_acks = time.monotonic() - t0
    await agg.wait_for(
        lambda: all(r.of("event_response") and r.of("delivery_report") for r in recs),
        timeout_s=args.timeout_s,
    )
    t_reports = time.monotonic() - t0
    await asyncio.sleep(6)  # let the last acks reach the gateways' outboxes
    left = 0
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        out, _ = await p.communicate()
        for line in out.decode().splitlines():
            if line.startswith('{"outbox_left"'):
                left += json.loads(line)["outbox_left"]
    agg_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agg_task
    broker.stop()

    expected = {"capabilities": 1, "event_response": 1, "delivery_report": 1}

    def got(r: Any, t: str) -> list[dict[str, Any]]:
        # A resent event is answered "duplicate_id" by design; that is not a second answer.
        return [m for m in r.of(t) if m["payload"].get("reason") != "duplicate_id"]

    lost = sum(max(0, n - len(got(r, t))) for r in recs for t, n in expected.items())
    extra = sum(max(0, len(got(r, t)) - n) for r in recs for t, n in expected.items())
    dup_answers = sum(len(r.of("event_response")) - len(got(r, "event_response")) for r in recs)
    return {
        "gateways": len(sites),
        "worker processes": args.procs,
        "all connected (s)": round(t_connected, 2),
        "dispatch of all events (s)": round(dispatch_s, 2),
        "acked before broker restart": acked_at_restart,
        "broker outage (s)": round(outage_s, 2),
        "dispatch -> all acks (s)": round(t_acks, 2),
        "dispatch -> all responses+reports (s)": round(t_reports, 2),
        "responses received (accepted)": sum(len(got(r, "event_response")) for r in recs),
        "duplicate_id answers to resent events": dup_answers,
        "reports received": sum(len(r.of("delivery_report")) for r in recs),
        "duplicates discarded by aggregator": sum(r.duplicates for r in recs),
        "invalid signatures": sum(len(r.invalid) for r in recs),
        "messages lost": lost,
        "unexpected extra messages": extra,
        "gateway outbox rows left": left,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", type=int, default=500)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--outage-s", type=float, default=2.0)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--agg-pub", default="", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    import logging

    import structlog

    # Reconnect noise from hundreds of clients would drown the table (and the worker pipes).
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    if args.worker is not None:
        asyncio.run(worker(args))
        return 0
    result = asyncio.run(drive(args))
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    return 0 if result["messages lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
