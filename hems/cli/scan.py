"""Subcommands of the Modbus area: `hems scan HOST[:PORT] [--unit N]... [--json]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from hems.devices.modbus.scan import format_json, format_text, parse_target, scan_endpoint
from hems.errors import ConfigError
from hems.logs import configure


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "scan",
        help="find SunSpec models on a Modbus TCP device and print a config snippet",
        description="Reads the SunSpec model chain of each unit id, prints identity, models "
        "with start addresses, a decoded snapshot and a ready-to-paste devices: entry.",
    )
    p.add_argument("target", metavar="HOST[:PORT]", help="device address; port defaults to 502")
    p.add_argument(
        "--unit", type=int, action="append", metavar="N",
        help="unit id to scan (repeatable; default 1)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument(
        "--transport", choices=("tcp", "rtu-over-tcp"), default="tcp",
        help="rtu-over-tcp for RS-485 gateways that pass RTU frames through",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="per request [s]")
    p.set_defaults(func=run_scan)


def run_scan(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
        units = args.unit or [1]
        for u in units:
            if not 0 <= u <= 247:
                raise ConfigError("--unit", f"{u}: must be 0..247")
        if not 0 < args.timeout <= 60:
            raise ConfigError("--timeout", "must be > 0 and <= 60 s")
    except ConfigError as exc:
        print(f"hems scan: {exc}", file=sys.stderr)
        return 2
    # Logs go to stderr (stdout is the report, maybe JSON); pymodbus' own complaints about
    # refused connects and timeouts repeat what the report already says.
    configure(level="error", fmt="console", stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    reports = asyncio.run(scan_endpoint(host, port, units, args.transport, args.timeout))
    print(format_json(reports, host, port) if args.json else format_text(reports, host, port))
    return 0 if any(r.kind != "none" for r in reports) else 1
