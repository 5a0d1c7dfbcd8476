"""`make demo`: the simulated home and the daemon in one process, on one simulated clock.

The HIL rig serves the home over real Modbus TCP (the ports in config/demo.yaml); the daemon
reads it exactly as it would read real devices, and serves its page at
http://127.0.0.1:8080 (by default). The simulated day starts at 08:00 local time and runs
30× faster than real time unless told otherwise.

With `--aggregator` (`make demo ARGS=--aggregator`) it also starts a Mosquitto on a free
loopback port and the reference aggregator with its own key, turns on the uplink and flex
sections of config/demo-aggregator.yaml, seeds 60 days of simulated half-hourly meter history
(a baseline needs it), and has the aggregator send a signed one-hour turn-down event for the
evening peak an hour ahead; the console shows the gateway's answer and the verified delivery
report. The simulated day then starts at 15:00, so the event comes within minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sqlite3
import sys
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from hems import logs
from hems.app import Daemon
from hems.app.links import IntervalSender
from hems.cli.core import report_problems
from hems.config import Config, ConfigErrors, load_config
from hems.core.clock import AcceleratedClock, Clock
from hems.flex.config import FlexConfig
from hems.store.db import Database
from hems.store.rollup import HALF_HOUR_MS, floor_ms
from hems.store.timeseries import from_ms, to_ms
from hems.uplink import envelope
from hems.uplink.config import UplinkConfig
from hems.uplink.keys import load_or_create_key
from hems.uplink.outbox import LAST_PEER_SEQ, get_counter
from hil.aggregator import MosquittoBroker, ReferenceAggregator, check_report, find_mosquitto
from hil.chargepoint import SimChargePoint, SimConfig
from hil.ev import EvModel
from hil.home import Home, HomeConfig
from hil.rig import HilRig

REPO = Path(__file__).resolve().parents[1]
AGGREGATOR_OVERLAY = REPO / "config" / "demo-aggregator.yaml"
NO_MOSQUITTO = (
    "demo: --aggregator needs the Mosquitto MQTT broker; install it with "
    "`sudo apt-get install mosquitto` (Debian/Ubuntu/Raspberry Pi OS) or `brew install mosquitto`"
)
log = structlog.get_logger("hil.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hil.demo", description=__doc__)
    p.add_argument("-c", "--config", default=str(REPO / "config" / "demo.yaml"))
    p.add_argument("--speed", type=float, default=30.0, help="simulated seconds per second")
    p.add_argument("--start", default=None, help="simulated start (ISO 8601 with offset)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=None, help="web port (default: the config's)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--aggregator",
        action="store_true",
        help="also run Mosquitto and the reference aggregator, which sends a signed turn-down "
        "event for the evening peak and verifies the delivery report (needs mosquitto)",
    )
    return p.parse_args(argv)


def demo_start(cfg: Config, start: str | None, at: time = time(8, 0)) -> datetime:
    if start:
        return datetime.fromisoformat(start)
    tz = ZoneInfo(cfg.site.timezone)
    return datetime.combine(datetime.now(tz).date(), at, tz)


async def run_demo(
    cfg: Config,
    clock: AcceleratedClock,
    seed: int,
    seconds: float | None,
    mosquitto: str | None = None,
) -> None:
    """Run the rig and the daemon; with `mosquitto` (its binary) also the aggregator side."""
    modbus_ports = {d.port for d in cfg.devices if getattr(d, "type", "") == "sunspec"}
    rig = HilRig(
        clock,
        home_config=HomeConfig(
            seed=seed, latitude_deg=cfg.site.latitude, longitude_deg=cfg.site.longitude
        ),
        sunspec_port=min(modbus_ports) if modbus_ports else 0,
    )
    chargers = demo_chargers(cfg, clock, rig)
    for charger in chargers:
        rig.add_service(f"ocpp-{charger.cfg.identity}", lambda _rig, c=charger: c.run())
    async with rig, contextlib.AsyncExitStack() as stack:
        log.info("simulated home serving", ports=rig.ports, speed=clock.speed)
        if mosquitto is not None:
            await stack.enter_async_context(AggregatorDemo(cfg, clock, mosquitto, seed=seed))
        daemon = Daemon(cfg, clock)
        task = asyncio.create_task(daemon.run(), name="daemon")
        await daemon.started.wait()
        if daemon.web is not None:
            print(f"hems demo: open http://{cfg.web.host}:{daemon.web.bound_port}/", flush=True)
            code = await daemon.web.setup_code()
            if code is not None:
                print(f"hems demo: first visit: choose the owner's password with setup code {code}")
            else:
                print("hems demo: log in with the owner's password (forgotten: `.venv/bin/hems "
                      "admin password -c config/demo.yaml`)", flush=True)  # fmt: skip
        try:
            if seconds is None:
                await task
            else:
                await asyncio.wait_for(asyncio.shield(task), seconds)
        except TimeoutError:
            pass
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def demo_chargers(cfg: Config, clock: AcceleratedClock, rig: HilRig) -> list[SimChargePoint]:
    """One simulated charge point and car per configured charger: plugged in an hour after
    the start, leaving nine hours later, its draw added to the simulated home's meter."""
    if not cfg.ocpp.enabled:
        return []
    url = f"ws://{cfg.ocpp.host if cfg.ocpp.host != '0.0.0.0' else '127.0.0.1'}:{cfg.ocpp.port}"
    sims = []
    for c in cfg.ocpp_config().chargers:
        arrive = clock.now() + timedelta(hours=1)
        ev = EvModel(
            battery_kwh=60,
            soc_pct=35,
            max_ac_power_w=7400 if c.phases == 1 else 11000,
            phases=c.phases,
            plug_in_at=arrive,
            leave_at=arrive + timedelta(hours=9),
        )
        sim_cfg = SimConfig(
            url=url,
            identity=c.cp_identity,
            password=c.password.get_secret_value() if c.password else None,
            phases=c.phases,
            max_current_a=c.max_current_a,
            meter_interval_s=10,
        )
        sims.append(
            SimChargePoint(
                sim_cfg,
                clock,
                ev=ev,
                on_power=lambda w, name=c.id: rig.home.set_external_load_w(name, w),
            )
        )
    return sims


# -- the aggregator side (--aggregator) -----------------------------------------------------


def aggregator_config(
    cfg: Config, broker_port: int, aggregator_public_key: str, overlay: Path = AGGREGATOR_OVERLAY
) -> Config:
    """Turn on `cfg`'s uplink and flex sections from `overlay` (config/demo-aggregator.yaml),
    pointed at the local broker and trusting the reference aggregator's key. In place."""
    try:
        data = yaml.safe_load(overlay.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigErrors([f"{overlay}: cannot read: {exc}"]) from None
    unknown = sorted(set(data) - {"uplink", "flex"})
    if unknown:
        raise ConfigErrors([f"{overlay}: {unknown[0]}: only uplink and flex are read here"])
    uplink = dict(data.get("uplink") or {})
    uplink.update(broker_port=broker_port, aggregator_public_key=aggregator_public_key)
    problems: list[str] = []
    for section, model, values in (
        ("uplink", UplinkConfig, uplink),
        ("flex", FlexConfig, data.get("flex") or {}),
    ):
        try:
            setattr(cfg, section, model.model_validate(values))
        except ValidationError as exc:
            problems += [
                f"{overlay}: {'.'.join([section, *map(str, e['loc'])])}: {e['msg']}"
                for e in exc.errors()
            ]
    if problems:
        raise ConfigErrors(problems)
    return cfg


def simulated_history(
    home: Home, start: datetime, periods: int, seed: int
) -> list[tuple[int, float, float]]:
    """(period_start_ms, import_wh, export_wh) for `periods` half-hours from `start` (UTC,
    period-aligned): the rig's household load and PV without the battery, sampled every 5 min,
    the load scaled by a per-day factor (0.85–1.15) so no two days are the same."""
    tz = ZoneInfo(home.config.timezone)
    cap_w = home.config.pv_inverter_max_w
    rows = []
    for n in range(periods):
        t0 = start + timedelta(minutes=30 * n)
        day = t0.astimezone(tz).date()
        factor = random.Random(f"{seed}:history:{day.isoformat()}").uniform(0.85, 1.15)
        import_wh = export_wh = 0.0
        for k in range(6):
            at = t0 + timedelta(minutes=2.5 + 5 * k)
            net_w = home.household_load_w(at) * factor - min(cap_w, home.pv_available_w(at))
            import_wh += max(0.0, net_w) * 5 / 60
            export_wh += max(0.0, -net_w) * 5 / 60
        rows.append((to_ms(t0), round(import_wh, 1), round(export_wh, 1)))
    return rows


async def seed_meter_history(
    db_path: Path,
    device_id: str,
    until: datetime,
    *,
    days: int = 60,
    home: HomeConfig | None = None,
    seed: int = 1,
) -> int:
    """Fill the half-hours of `device_id` in the `days` before `until` that have no row yet
    with simulated meter data (`simulated_history`), so a baseline has the history a real
    smart meter would have. Never replaces a recorded row. The simulated rows are marked as
    already handed to the uplink (the IntervalSender's cursor), so the aggregator is not
    flooded with invented history. Returns how many rows were added."""
    period_ms = HALF_HOUR_MS
    end_ms = floor_ms(to_ms(until), period_ms)
    start_ms = end_ms - days * 86_400_000
    db = await Database.open(db_path)
    try:
        have = {
            r[0]
            for r in await db.fetchall(
                "SELECT period_start_ms FROM meter_intervals WHERE device_id = ? AND "
                "period_start_ms >= ? AND period_start_ms < ?",
                (device_id, start_ms, end_ms),
            )
        }
        model = Home(home or HomeConfig(seed=seed))
        start = from_ms(start_ms)
        rows = await asyncio.to_thread(
            simulated_history, model, start, (end_ms - start_ms) // period_ms, seed
        )
        rows = [r for r in rows if r[0] not in have]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO meter_intervals(device_id, period_start_ms, import_wh,"
                " export_wh, quality, updated_ms) VALUES (?, ?, ?, ?, 'actual', ?)",
                [(device_id, ms, imp, exp, ms + period_ms) for ms, imp, exp in rows],
            )
            conn.execute(
                "INSERT INTO app_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (IntervalSender.KEY, str(end_ms)),
            )

        if rows:
            await db.call(write)
        return len(rows)
    finally:
        await db.close()


async def recorded_after(db_path: Path, device_id: str, at: datetime) -> bool:
    """True if `device_id` already has meter intervals from `at` on (an earlier demo run)."""
    db = await Database.open(db_path)
    try:
        row = await db.fetchone(
            "SELECT 1 FROM meter_intervals WHERE device_id = ? AND period_start_ms >= ? LIMIT 1",
            (device_id, floor_ms(to_ms(at), HALF_HOUR_MS)),
        )
        return row is not None
    finally:
        await db.close()


async def last_accepted_downlink_seq(db_path: Path) -> int:
    """The gateway's last accepted aggregator seq (0 if none): a new aggregator must start
    above it, and the simulated clock of an earlier demo run may have been ahead of ours."""
    db = await Database.open(db_path)
    try:
        return int(await db.call(lambda conn: get_counter(conn, LAST_PEER_SEQ, 0)))
    finally:
        await db.close()


def event_window(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, datetime]:
    """(send_at, start, end) of the demo event: one hour from 17:30 local (the evening peak),
    sent an hour before; later in the day, the first half-hour at least an hour away."""
    start = datetime.combine(now.astimezone(tz).date(), time(17, 30), tz).astimezone(UTC)
    if start - now < timedelta(hours=1):
        ahead_s = (now + timedelta(hours=1)).timestamp()
        start = datetime.fromtimestamp(-(-ahead_s // 1800) * 1800, UTC)
    return max(now, start - timedelta(hours=1)), start, start + timedelta(hours=1)


def _say(text: str) -> None:
    print(f"aggregator: {text}", flush=True)


class AggregatorDemo:
    """The aggregator side of `--aggregator`: a local Mosquitto, the reference aggregator with
    its own key, the daemon's uplink and flex turned on in `cfg`, simulated meter history, and
    one signed turn-down event (import cap `cap_w`) dispatched on the simulated clock.

    Enter it before the daemon is built (it changes `cfg` and seeds the database).
    """

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        mosquitto: str,
        *,
        seed: int = 1,
        cap_w: float = 0.0,
        history_days: int = 60,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.seed = seed
        self.cap_w = cap_w
        self.history_days = history_days
        self.storage = Path(cfg.storage.path)
        self.broker = MosquittoBroker(mosquitto, self.storage.parent / "mosquitto")
        self.key = Ed25519PrivateKey.generate()
        self.event_id = f"evt-{uuid.uuid4().hex[:6]}"
        self.aggregator: ReferenceAggregator | None = None
        self.reports: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> AggregatorDemo:
        await self.broker.start()
        try:
            await self._setup()
        except BaseException:
            await self.broker.stop()
            raise
        return self

    async def _setup(self) -> None:
        cfg = self.cfg
        aggregator_config(cfg, self.broker.port, envelope.public_key_text(self.key.public_key()))
        gateway = load_or_create_key(cfg.uplink.key_path(self.storage))
        meter = cfg.flex.meter_device_id or "grid"
        added = await seed_meter_history(
            self.storage, meter, self.clock.now(), days=self.history_days,
            home=HomeConfig(seed=self.seed, latitude_deg=cfg.site.latitude,
                            longitude_deg=cfg.site.longitude, timezone=cfg.site.timezone),
            seed=self.seed,
        )  # fmt: skip
        if added:
            log.info(
                "SIMULATED meter history seeded for the baseline (not measured)",
                device=meter,
                half_hours=added,
                days=self.history_days,
            )
        if await recorded_after(self.storage, meter, self.clock.now()):
            log.warning(
                "an earlier run already recorded this simulated day; recorded intervals are "
                "never replaced, so the report will use them (remove the database for a fresh "
                "day)",
                path=str(self.storage),
            )
        agg = self.aggregator = ReferenceAggregator(
            "127.0.0.1",
            self.broker.port,
            key=self.key,
            gateway_keys={cfg.site.id: gateway.public_key()},
            clock=self.clock,
            client_id=f"hems-demo-aggregator-{self.broker.port}",
            resend_after_s=30,
            reissue_after_s=100,  # below the gateway's 120 s skew check
            on_message=self._on_message,
        )
        rec = agg.site(cfg.site.id)
        rec.next_seq = max(rec.next_seq, await last_accepted_downlink_seq(self.storage))
        tz = ZoneInfo(cfg.site.timezone)
        send_at, start, end = event_window(self.clock.now(), tz)
        speed = getattr(self.clock, "speed", 1.0)
        in_s = (send_at - self.clock.now()).total_seconds() / speed
        report_s = (end - self.clock.now()).total_seconds() / speed + 200 / speed
        _say(
            f"broker on 127.0.0.1:{self.broker.port}; event {self.event_id} (import cap "
            f"{self.cap_w:g} W, {start.astimezone(tz):%H:%M}–{end.astimezone(tz):%H:%M}) will be "
            f"sent at {send_at.astimezone(tz):%H:%M} simulated time (in ~{in_s / 60:.0f} min), "
            f"its delivery report ~{report_s / 60:.0f} min from now"
        )
        self._tasks = [
            asyncio.create_task(agg.run(), name="aggregator"),
            asyncio.create_task(self._dispatch(send_at, start, end), name="aggregator:dispatch"),
        ]

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.stop()

    async def _dispatch(self, send_at: datetime, start: datetime, end: datetime) -> None:
        assert self.aggregator is not None
        await self.clock.sleep((send_at - self.clock.now()).total_seconds())
        await self.aggregator.connected.wait()
        await self.aggregator.send_event(
            self.cfg.site.id,
            {
                "event_id": self.event_id,
                "modification_number": 0,
                "kind": "turn_down",
                "start": start.isoformat(),
                "end": end.isoformat(),
                "import_cap_w": self.cap_w,
            },
        )
        _say(f"sent signed event {self.event_id} (turn down: import at most {self.cap_w:g} W)")

    def _on_message(self, site_id: str, type_: str, message: dict[str, Any]) -> None:
        """Every new gateway message whose signature verified with the gateway's key."""
        p = message["payload"]
        if type_ == "event_response":
            why = p.get("detail") or p.get("reason")
            _say(
                f"{site_id} answered {p.get('event_id') or p.get('ref_id')}: {p['status']}"
                + (f" ({why})" if why else "")
            )
        elif type_ == "delivery_report":
            self.reports.append(p)
            problems = check_report(p)
            total = p.get("total_delivered_kwh")
            if problems:
                _say(f"report {p['event_id']} signature verified, but {problems[0]}")
                return
            _say(
                f"report {p['event_id']} verified, delivered "
                + ("unknown" if total is None else f"{total:.2f} kWh")
                + f" ({p['method']}, {len(p.get('days_used') or [])} baseline days, "
                f"meter data sha256 {p['meter_data_sha256'][:12]}…)"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mosquitto = None
    if args.aggregator:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            print(NO_MOSQUITTO, file=sys.stderr)
            return 1
    try:
        cfg = load_config(args.config)
    except ConfigErrors as exc:
        return report_problems(exc)
    if args.port is not None:
        cfg.web.port = args.port
    logs.configure(cfg.logging.level, cfg.logging.format)
    start = demo_start(cfg, args.start, time(15, 0) if args.aggregator else time(8, 0))
    clock = AcceleratedClock(args.speed, start)

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_demo(cfg, clock, args.seed, args.seconds, mosquitto)

    try:
        asyncio.run(runner())
    except OSError as exc:
        print(f"demo: cannot start: {exc}", file=sys.stderr)
        return 1
    except ConfigErrors as exc:
        return report_problems(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
