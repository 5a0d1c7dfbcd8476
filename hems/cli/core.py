"""Core subcommands: `hems run`, `hems check-config`, `hems schema`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from datetime import datetime
from pathlib import Path

import structlog

from hems import logs
from hems.config import Config, ConfigErrors, load_config
from hems.core.clock import AcceleratedClock, Clock, RealClock
from hems.errors import HemsError

# name -> "module:function" returning a JSON Schema dict
SCHEMAS = {
    "config": "hems.cli.core:config_json_schema",
    "problem": "hems.planning.problem:problem_json_schema",
    "profile": "hems.devices.modbus.profile:profile_schema",
    "uplink": "hems.uplink.schema:uplink_json_schema",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="site configuration (YAML)")
    run.add_argument(
        "--speed",
        type=float,
        default=None,
        help="run on an accelerated clock (simulated seconds per second; for the HIL rig)",
    )
    run.add_argument("--start", default=None, help="simulated start time (ISO 8601 with offset)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    config = sub.add_parser("config", help="configuration file tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND")
    config_sub.required = True
    migrate = config_sub.add_parser(
        "migrate", help="print a file in the old layout rewritten as one entry per device"
    )
    migrate.add_argument("file")
    migrate.set_defaults(func=cmd_config_migrate)

    schema = sub.add_parser("schema", help="print a JSON Schema (config, problem, profile, uplink)")
    schema.add_argument("name", choices=sorted(SCHEMAS))
    schema.set_defaults(func=cmd_schema)


def report_problems(exc: ConfigErrors) -> int:
    """Print every config problem on its own line to stderr; the exit code for it (1)."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    return 1


def cmd_config_migrate(args: argparse.Namespace) -> int:
    """The file rewritten on stdout (comments are not kept), each move on stderr. Secrets
    references (`${env:…}`) are copied as written, never resolved."""
    import yaml

    from hems.configmigrate import migrate
    from hems.yamllines import format_loc

    path = Path(args.file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 1
    if not isinstance(data, dict):
        print(f"{path}: must be a mapping of sections (site, devices, …)", file=sys.stderr)
        return 1
    new, moves = migrate(data)
    stuck = [m for m in moves if m.problem]
    for m in moves:
        how = f"not moved: {m.problem}" if m.problem else f"moved to {m.new}"
        print(f"{format_loc(m.old)}: {how}", file=sys.stderr)
    if not moves:
        print(f"{path}: already in the current layout", file=sys.stderr)
    if stuck:
        return 1
    sys.stdout.write(yaml.safe_dump(new, sort_keys=False, allow_unicode=True))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigErrors as exc:
        return report_problems(exc)
    print(f"{args.file}: ok (site {cfg.site.id}, {len(cfg.devices)} devices)")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    module, func = SCHEMAS[args.name].split(":")
    schema = getattr(importlib.import_module(module), func)()
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0


def config_json_schema() -> dict[str, object]:
    return Config.model_json_schema()


def make_clock(speed: float | None, start: str | None) -> Clock:
    if speed is None and start is None:
        return RealClock()
    begin = datetime.fromisoformat(start) if start else None
    return AcceleratedClock(speed or 1.0, begin)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigErrors as exc:
        logs.configure()
        return report_problems(exc)
    logs.configure(cfg.logging.level, cfg.logging.format)
    try:
        clock = make_clock(args.speed, args.start)
    except ValueError as exc:
        print(f"--start: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(run_until_signalled(cfg, clock, Path(args.config)))


async def run_until_signalled(cfg: Config, clock: Clock, config_path: Path | None = None) -> int:
    from hems.app import Daemon

    log = structlog.get_logger("hems")
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await Daemon(cfg, clock, config_path=config_path).run()
    except asyncio.CancelledError:
        log.info("hems stopped")
        return 0
    except HemsError as exc:
        log.error("hems failed", error=str(exc))
        return 1
    except ExceptionGroup as group:
        # A task the daemon cannot run without died; systemd restarts us.
        for exc in group.exceptions:
            log.error("hems failed", error=str(exc), exc_info=exc)
        return 1
    return 0
