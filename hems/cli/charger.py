"""`hems charger test`: commission a charger against the gateway's central system.

Runs the OCPP central system alone, accepts the connecting charger (any identity unless
`--id`), prints its boot information, status and meter values, applies a test limit and
reports whether the charger accepted it and whether the current followed.
Exit codes: 0 booted and limit accepted; 1 limit refused or unanswered; 2 no charger booted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from hems.core.clock import RealClock
from hems.core.state import SiteState
from hems.devices.ocpp.config import ChargerConfig, OcppConfig
from hems.devices.ocpp.events import (
    ChargerBooted,
    ChargerEvent,
    ChargerFaulted,
    ChargerOffline,
    ChargerStatusChanged,
    LimitOutcome,
    LimitSent,
    MeterUpdated,
    TransactionStarted,
    TransactionStopped,
)
from hems.errors import ConfigError, DeviceError

EXIT_OK, EXIT_LIMIT, EXIT_NO_CHARGER = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    charger = sub.add_parser("charger", help="EV charger (OCPP) tools")
    csub = charger.add_subparsers(dest="charger_command", metavar="SUBCOMMAND")
    csub.required = True
    test = csub.add_parser(
        "test",
        help="run the central system alone and test a charger pointed at this gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    test.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    test.add_argument("--port", type=int, default=9000, help="listen port (default 9000)")
    test.add_argument("--id", dest="identity", help="accept only this charge point identity")
    test.add_argument("--password", help="basic-auth password the charger must send (with --id)")
    test.add_argument("--quirks", help="charger profile in drivers/chargers (default generic)")
    test.add_argument("--limit-a", type=float, default=10.0, help="test limit per phase [A]")
    test.add_argument("--phases", type=int, choices=(1, 3), default=3)
    test.add_argument("--seconds", type=float, default=120.0, help="give up after this long")
    test.set_defaults(func=run_test)


def _say(line: str) -> None:
    print(line, flush=True)


def _show(event: ChargerEvent) -> None:
    cp = event.identity
    if isinstance(event, ChargerBooted):
        state = "PENDING" if event.pending else "accepted"
        _say(
            f"[{cp}] boot ({state}): OCPP {event.version} vendor={event.vendor!r} "
            f"model={event.model!r} serial={event.serial!r} "
            f"firmware={event.firmware!r}"
        )
    elif isinstance(event, ChargerStatusChanged):
        _say(
            f"[{cp}] status {event.status} -> {event.state}"
            + (f" (error {event.error_code})" if event.error_code not in (None, "NoError") else "")
        )
    elif isinstance(event, MeterUpdated):
        amps = ", ".join(f"{k or 'I'}={v:.1f} A" for k, v in sorted(event.current_a.items()))
        power = event.power_w
        _say(
            f"[{cp}] meter power={'?' if power is None else f'{power:.0f} W'} {amps} "
            f"session={event.session_energy_wh:.0f} Wh"
        )
    elif isinstance(event, LimitSent):
        _say(
            f"[{cp}] limit {event.current_a:g} A x {event.phases} via {event.method}: "
            f"{event.status}"
        )
    elif isinstance(event, ChargerOffline):
        _say(f"[{cp}] offline: {event.reason}")
    elif isinstance(event, ChargerFaulted):
        _say(f"[{cp}] faulted: {event.reason}")
    elif isinstance(event, TransactionStarted):
        _say(f"[{cp}] transaction started {event.transaction_id}")
    elif isinstance(event, TransactionStopped):
        _say(f"[{cp}] transaction stopped {event.transaction_id}")


def run_test(args: argparse.Namespace) -> int:
    from hems.logs import configure

    configure(level="warning", fmt="console", stream=sys.stderr)
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LIMIT


async def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hems.devices.ocpp.server import _device_id

    try:
        chargers = []
        if args.identity:
            chargers.append(
                ChargerConfig(
                    id=_device_id(args.identity),
                    identity=args.identity,
                    password=args.password,
                    quirks=args.quirks,
                )
            )
        elif args.quirks:
            ChargerConfig(id="check", quirks=args.quirks)  # validates the profile name
        cfg = OcppConfig(
            enabled=True,
            host=args.host,
            port=args.port,
            # A bench tool: a charger without --password is allowed, and logged as insecure.
            allow_insecure_chargers=args.password is None,
            meter_value_sample_interval_s=5,
        ).with_chargers(chargers)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "argument"
            print(f"error: {where}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return EXIT_LIMIT
    from hems.devices.ocpp.server import OcppCentralSystem

    clock = RealClock()
    outcome: asyncio.Queue[ChargerEvent] = asyncio.Queue()

    def listener(event: ChargerEvent) -> None:
        _show(event)
        outcome.put_nowait(event)

    cs = OcppCentralSystem(
        cfg,
        SiteState(clock),
        clock,
        None,
        accept_any_id=not args.identity,
        listener=listener,
        quirks_for_unknown=args.quirks,
    )
    server = asyncio.create_task(cs.run())
    progress: dict[str, bool] = {"accepted": False}
    try:
        return await asyncio.wait_for(_session(cs, args, outcome, server, progress), args.seconds)
    except TimeoutError:
        if progress["accepted"]:
            _say("RESULT: current followed: unknown (no meter values judged it in time)")
            return EXIT_OK
        _say("RESULT: no charger booted in time" if not _booted(cs) else "RESULT: time is up")
        return EXIT_NO_CHARGER if not _booted(cs) else EXIT_LIMIT
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await server


def _booted(cs: Any) -> bool:
    return any(c.booted for c in cs.chargers.values())


async def _session(
    cs: Any,
    args: argparse.Namespace,
    events: asyncio.Queue[ChargerEvent],
    server: asyncio.Task,
    progress: dict[str, bool],
) -> int:
    started = asyncio.create_task(cs.started.wait())
    await asyncio.wait({started, server}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        exc = server.exception()
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_NO_CHARGER
    _say(
        f"listening on ws://{args.host}:{cs.port}/{args.identity or '<charge point id>'}"
        " (subprotocols ocpp2.0.1, ocpp1.6)"
    )
    while True:
        event = await events.get()
        if isinstance(event, ChargerBooted) and not event.pending:
            break
    charger = next(c for c in cs.chargers.values() if c.booted)
    await asyncio.sleep(0.5)  # let the first StatusNotification arrive
    delay_s = charger.expected_response_delay_s()
    if delay_s:
        _say(
            f"note: the charger may delay the change by up to {delay_s:.0f} s "
            "(GB Smart Charge Points Regulations randomised delay)"
        )
    try:
        await charger.set_limit(args.limit_a, args.phases)
    except DeviceError as exc:
        _say(f"RESULT: limit NOT accepted: {exc}")
        return EXIT_LIMIT
    progress["accepted"] = True
    _say(f"RESULT: limit {args.limit_a:g} A accepted; waiting for meter values to confirm")
    while True:
        event = await events.get()
        if isinstance(event, LimitOutcome):
            verdict = "yes" if event.followed else "NO (charger ignores the limit)"
            _say(f"RESULT: current followed: {verdict} (measured {event.measured_a:.1f} A)")
            return EXIT_OK
