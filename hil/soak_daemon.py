"""The daemon as the soak (hil/soak.py) runs it: `hems run` plus a probe and a steppable clock.

    python -m hil.soak_daemon -c hems.yaml --speed 300 --start 2026-06-22T05:00:00+00:00 \
        --probe /dev/shm/probe.jsonl --step-on-usr2 3600

The same `Daemon` as `hems run`, in its own process (so the soak can `kill -9` it). Two things
are added, both outside hems/:

* `--probe PATH`: every `--probe-every-s` real seconds one JSON line with the asyncio task
  count, the store's buffer and write counters and the uplink outbox depth (what "no task
  leak, no unbounded queue" is checked on). Put it on a tmpfs (/dev/shm): the soak measures
  this process's disk writes, and the probe is not part of them.
* `--step-on-usr2 S`: SIGUSR2 steps the wall clock (`now()`) by S seconds while the monotonic
  clock runs on, as an NTP step does on a Pi that booted with a stale clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from hems import logs
from hems.app import Daemon
from hems.config import load_config
from hems.core.clock import AcceleratedClock
from hems.store.db import Database


class SteppableClock(AcceleratedClock):
    """An accelerated clock whose wall time can be stepped (monotonic time is not)."""

    def __init__(self, speed: float, start: datetime) -> None:
        super().__init__(speed, start)
        self.offset_s = 0.0

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=self.offset_s)

    def step(self, seconds: float) -> None:
        self.offset_s += seconds


COMMITS: dict[str, int] = {}


def count_commits() -> None:
    """Count the daemon's write transactions by caller (Database.call), for the probe."""
    original = Database.call

    async def call(self: Database, fn: Any) -> Any:
        name = getattr(fn, "__qualname__", "?").replace(".<locals>", "").replace(".<lambda>", "")
        COMMITS[name] = COMMITS.get(name, 0) + 1
        return await original(self, fn)

    Database.call = call  # type: ignore[method-assign]


async def probe(daemon: Daemon, clock: SteppableClock, path: Path, every_s: float) -> None:
    await daemon.started.wait()
    with path.open("a", buffering=1) as out:
        while True:
            store = daemon.store
            stats = store.stats if store is not None else None
            outbox = await daemon.uplink.outbox.count() if daemon.uplink is not None else None
            line = {
                "real_s": time.time(),
                "sim": clock.now().isoformat(),
                "tasks": len(asyncio.all_tasks()),
                "store_buffered": stats.buffered if stats else None,
                "store_written": stats.written if stats else None,
                "store_dropped": stats.dropped if stats else None,
                "store_failed_flushes": stats.failed_flushes if stats else None,
                "store_error": stats.last_error if stats else None,
                "outbox": outbox,
                "commits": COMMITS,
            }
            out.write(json.dumps(line) + "\n")
            await asyncio.sleep(every_s)


def trace_guard(path: Path, clock: SteppableClock) -> None:
    """One JSON line per control cycle: what the guard was given and what it returned (the
    soak puts the cycles before a step over the export limit in its report). On a tmpfs."""
    import hems.control.loop as control_loop

    original = control_loop.apply_guard
    out = path.open("a", buffering=1)

    def _cmd(c: Any) -> Any:
        return c.values() if c is not None else None

    def apply_guard(image: Any, spec: Any, limits: Any, cfg: Any, proposed: Any, *a: Any) -> Any:
        result = original(image, spec, limits, cfg, proposed, *a)
        line = {
            "sim": clock.now().isoformat(timespec="seconds"),
            "grid_w": image.grid.power_w,
            "bat": {d: [b.power_w, b.soc_pct, b.grid_span_w] for d, b in image.batteries.items()},
            "pv": {d: [v.power_w, v.limit_pct, v.grid_span_w] for d, v in image.pvs.items()},
            "ev": {
                d: [e.power_w, str(e.state), e.offered_a, e.grid_span_w]
                for d, e in image.evs.items()
            },
            "proposed": {d: _cmd(c) for d, c in proposed.items()},
            "guarded": {d: _cmd(c) for d, c in result.commands.items()},
            "grid_pred_w": result.grid_pred_w,
            "rules": sorted({i.rule for i in result.interventions}),
            "distrust": sorted(a[1]) if len(a) > 1 else [],
        }
        out.write(json.dumps(line, default=str) + "\n")
        return result

    control_loop.apply_guard = apply_guard  # type: ignore[assignment]


async def main_async(args: argparse.Namespace) -> int:
    count_commits()
    cfg = load_config(args.config)
    logs.configure(cfg.logging.level, cfg.logging.format)
    # `--start` is the simulated time at real (epoch) time `--anchor`: the process took a
    # moment to start, and its clock must agree with the rig's from its first reading.
    start = datetime.fromisoformat(args.start)
    if args.anchor is not None:
        start += timedelta(seconds=(time.time() - args.anchor) * args.speed)
    clock = SteppableClock(args.speed, start)
    if args.guard_trace:
        trace_guard(Path(args.guard_trace), clock)
    daemon = Daemon(cfg, clock, config_path=Path(args.config))
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    if args.step_on_usr2:

        def step() -> None:
            clock.step(args.step_on_usr2)
            structlog.get_logger("hil.soak").warning("clock stepped", by_s=args.step_on_usr2)

        loop.add_signal_handler(signal.SIGUSR2, step)
    probe_task = None
    if args.probe:
        probe_task = asyncio.create_task(
            probe(daemon, clock, Path(args.probe), args.probe_every_s), name="soak-probe"
        )
    try:
        await daemon.run()
    except asyncio.CancelledError:
        return 0
    finally:
        if probe_task is not None:
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe_task
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m hil.soak_daemon")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--speed", type=float, required=True)
    p.add_argument("--start", required=True)
    p.add_argument("--anchor", type=float, default=None, help="epoch s at which it was --start")
    p.add_argument("--probe", default=None)
    p.add_argument("--probe-every-s", type=float, default=1.0)
    p.add_argument("--step-on-usr2", type=float, default=0.0)
    p.add_argument("--guard-trace", default=None, help="a JSON line per control cycle (tmpfs)")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
