"""The `hems` command. Each area registers its own subcommands from its `cli` module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module has `register(subparsers)`, adding parsers whose `func(args) -> int` runs them.
COMMAND_MODULES = (
    "hems.cli.core",  # run, check-config
    "hems.cli.scan",  # scan
    "hems.cli.charger",  # charger test
    "hems.cli.plan",  # optimise, plan, schema problem
    "hems.cli.flex",  # baseline
    "hems.cli.control",  # interventions
    "hems.cli.uplink",  # keys show, schema uplink
    "hems.cli.admin",  # setup code, password, API tokens
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hems", description="Home energy management daemon for a home gateway."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hems schema uplink | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
