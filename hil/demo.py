"""`make demo`: the simulated home and the daemon in one process, on one simulated clock.

The HIL rig serves the home over real Modbus TCP (the ports in config/demo.yaml); the daemon
reads it exactly as it would read real devices, and serves its page at
http://127.0.0.1:8080 (by default). The simulated day starts at 08:00 local time and runs
30× faster than real time unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from hems import logs
from hems.app import Daemon
from hems.config import Config, ConfigErrors, load_config
from hems.core.clock import AcceleratedClock
from hil.chargepoint import SimChargePoint, SimConfig
from hil.ev import EvModel
from hil.home import HomeConfig
from hil.rig import HilRig

REPO = Path(__file__).resolve().parents[1]
log = structlog.get_logger("hil.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hil.demo", description=__doc__)
    p.add_argument("-c", "--config", default=str(REPO / "config" / "demo.yaml"))
    p.add_argument("--speed", type=float, default=30.0, help="simulated seconds per second")
    p.add_argument("--start", default=None, help="simulated start (ISO 8601 with offset)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=None, help="web port (default: the config's)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    return p.parse_args(argv)


def demo_start(cfg: Config, start: str | None) -> datetime:
    if start:
        return datetime.fromisoformat(start)
    tz = ZoneInfo(cfg.site.timezone)
    return datetime.combine(datetime.now(tz).date(), time(8, 0), tz)


async def run_demo(cfg: Config, clock: AcceleratedClock, seed: int, seconds: float | None) -> None:
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
    async with rig:
        log.info("simulated home serving", ports=rig.ports, speed=clock.speed)
        daemon = Daemon(cfg, clock)
        task = asyncio.create_task(daemon.run(), name="daemon")
        await daemon.started.wait()
        if daemon.web is not None:
            print(f"hems demo: open http://{cfg.web.host}:{daemon.web.bound_port}/", flush=True)
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
    for c in cfg.ocpp.chargers:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigErrors as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    if args.port is not None:
        cfg.web.port = args.port
    logs.configure(cfg.logging.level, cfg.logging.format)
    clock = AcceleratedClock(args.speed, demo_start(cfg, args.start))

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_demo(cfg, clock, args.seed, args.seconds)

    try:
        asyncio.run(runner())
    except OSError as exc:
        print(f"demo: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
