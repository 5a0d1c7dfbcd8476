"""Run the HIL rig: `python -m hil --speed 60 --port 5020 [--seed N] [--start ISO]`.

Prints one line per served endpoint, then runs until SIGINT/SIGTERM and shuts down cleanly.
To serve more (P1, profile servers, OCPP charge points) add them in `build_rig`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime

from hems.core.clock import AcceleratedClock, Clock, RealClock
from hil.home import HomeConfig
from hil.rig import HilRig


def _parse_start(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--start: not an ISO date-time: {text!r}") from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from exc
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0 = any free port), got {v}")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hil", description="hems HIL rig: a simulated home")
    p.add_argument("--speed", type=_positive, default=1.0, help="simulated s per real s")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=5020, help="SunSpec Modbus TCP port (0 = any)")
    p.add_argument("--seed", type=int, default=1, help="seed for clouds and load noise")
    p.add_argument("--start", type=_parse_start, default=None, help="simulated start, ISO 8601")
    p.add_argument("--step-s", type=_positive, default=None, help="simulated s per physics step")
    p.add_argument(
        "--no-fault-proxy", action="store_true", help="serve SunSpec directly, no fault proxy"
    )
    return p


def build_rig(args: argparse.Namespace, clock: Clock) -> HilRig:
    """The rig the CLI runs. Other servers register here (rig.add_server / add_service)."""
    return HilRig(
        clock,
        home_config=HomeConfig(seed=args.seed),
        host=args.host,
        sunspec_port=args.port,
        step_s=args.step_s,
        fault_proxy=not args.no_fault_proxy,
    )


async def amain(args: argparse.Namespace) -> int:
    clock: Clock
    if args.speed == 1.0 and args.start is None:
        clock = RealClock()
    else:
        clock = AcceleratedClock(args.speed, args.start)
    rig = build_rig(args, clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await rig.start()
    except OSError as exc:
        print(f"hil: cannot bind: {exc}", file=sys.stderr)
        return 1
    try:
        ids = rig.sunspec.unit_ids
        for name, port in rig.ports.items():
            extra = (
                f" units pv={ids.pv} battery={ids.battery} meter={ids.meter} base=40000"
                if name == "sunspec"
                else ""
            )
            print(f"hil: {name} tcp://{args.host}:{port}{extra}", flush=True)
        print(f"hil: simulated start {clock.now().isoformat()} speed {clock.speed:g}x", flush=True)
        waiter = asyncio.create_task(stop.wait())
        runner = asyncio.create_task(rig.wait())
        done, _ = await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        runner.cancel()
        if runner in done and runner.exception() is not None:
            print(f"hil: stopped by error: {runner.exception()!r}", file=sys.stderr)
            return 1
    finally:
        await rig.stop()
    print("hil: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
