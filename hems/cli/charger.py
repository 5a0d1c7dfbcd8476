"""`hems charger test`: commission a charger against the gateway's central system.

Runs the OCPP central system alone, accepts the connecting charger (any identity unless
`--id`), prints its boot information, status and meter values, applies a test limit and
reports whether the charger accepted it and whether the current followed. It stays
connected (answering the charger) for `--seconds` or until the charger disconnects or
Ctrl-C, then removes its test limit (ClearChargingProfile) and closes.
"Followed" needs a measured current near the limit while the car is charging.
Exit codes: 0 limit accepted and followed; 1 limit refused, unanswered or ignored;
2 no charger booted; 3 limit accepted but not confirmed (the car did not charge).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from hems.core.capabilities import EvState
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

EXIT_OK, EXIT_LIMIT, EXIT_NO_CHARGER, EXIT_NOT_CONFIRMED = 0, 1, 2, 3
_CLEAR_TIMEOUT_S = 5.0  # removing the test limit at the end


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
    test.add_argument(
        "--seconds", type=float, default=120.0, help="stay connected this long (default 120)"
    )
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
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # Ctrl-C / SIGTERM: finish like a timeout, limit removed
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = asyncio.create_task(cs.run())
    deadline_s = loop.time() + args.seconds
    try:
        return await _session(cs, args, outcome, server, _Until(stop, deadline_s, clock))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await server


class _Until:
    """The session's end: `--seconds` passed or a signal came."""

    def __init__(self, stop: asyncio.Event, deadline_s: float, clock: RealClock) -> None:
        self.stop = stop
        self.deadline_s = deadline_s
        self.clock = clock
        self._said = False  # "interrupted" printed

    async def next(self, events: asyncio.Queue[ChargerEvent]) -> ChargerEvent | None:
        """The next charger event; None once the session is over."""
        left_s = self.deadline_s - asyncio.get_running_loop().time()
        if self.stop.is_set() or left_s <= 0:
            return self._over()
        getter = asyncio.ensure_future(events.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        done, _ = await asyncio.wait(
            {getter, stopper}, timeout=left_s, return_when=asyncio.FIRST_COMPLETED
        )
        for t in (getter, stopper):
            t.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        return self._over()

    def _over(self) -> None:
        if self.stop.is_set() and not self._said:
            self._said = True
            _say("interrupted")


def _booted(cs: Any) -> bool:
    return any(c.booted for c in cs.chargers.values())


async def _session(
    cs: Any,
    args: argparse.Namespace,
    events: asyncio.Queue[ChargerEvent],
    server: asyncio.Task,
    until: _Until,
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
        event = await until.next(events)
        if event is None:
            _say("RESULT: no charger booted in time" if not _booted(cs) else "RESULT: time is up")
            return EXIT_NO_CHARGER
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
    _say(f"RESULT: limit {args.limit_a:g} A accepted; waiting for meter values to confirm")
    try:
        return await _watch(charger, events, until)
    finally:
        await _remove_test_limit(charger)


async def _watch(charger: Any, events: asyncio.Queue[ChargerEvent], until: _Until) -> int:
    """Judge the limit until the session ends: followed only when the car charges at about
    the limit (drawing nothing, or less, obeys any limit and proves nothing)."""
    code: int | None = None
    charged_a = 0.0  # the most seen while charging
    while (event := await until.next(events)) is not None:
        if isinstance(event, ChargerOffline) and event.device_id == charger.device_id:
            _say("the charger disconnected")
            break
        if code is not None:
            continue
        if isinstance(event, LimitOutcome) and not event.followed:
            _say(
                f"RESULT: current followed: NO (charger ignores the limit; "
                f"measured {event.measured_a:.1f} A)"
            )
            code = EXIT_LIMIT
        elif isinstance(event, MeterUpdated) and charger.current_state() is EvState.CHARGING:
            measured_a = max(event.current_a.values(), default=0.0)
            limit = charger.limit
            if measured_a <= 0 or limit is None:
                continue
            charged_a = max(charged_a, measured_a)
            settled = until.clock.monotonic() >= limit.check_after_s  # past its own delay
            if settled and abs(measured_a - limit.current_a) <= charger.cfg.follow_tolerance_a:
                _say(f"RESULT: current followed: yes (measured {measured_a:.1f} A)")
                code = EXIT_OK
    if code is not None:
        return code
    if charged_a <= 0:
        _say("RESULT: current followed: not confirmed: the car did not charge")
    else:
        _say(
            f"RESULT: current followed: not confirmed: the car drew at most {charged_a:.1f} A, "
            "below the limit"
        )
    return EXIT_NOT_CONFIRMED


async def _remove_test_limit(charger: Any) -> None:
    """Leave nothing behind: clear the test profile (or say what could not be undone)."""
    if charger.profile_unsupported:
        fallback = charger.quirks.limit.fallback
        how = fallback.method if fallback is not None else "fallback"
        _say(f"note: the test limit was set with {how}; it stays until changed on the charger")
        return
    try:
        async with asyncio.timeout(_CLEAR_TIMEOUT_S):
            status = await charger.command("clear_profiles", charger.cfg.connector_id)
    except (DeviceError, TimeoutError) as exc:
        _say(f"WARNING: test limit NOT removed ({exc or 'no answer'}): clear it on the charger")
        return
    _say(f"test limit removed (ClearChargingProfile: {status})")
