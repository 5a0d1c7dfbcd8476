"""`hems interventions`: what the safety guard changed, and why, from the store."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from hems.config import ConfigErrors, load_config
from hems.control.journal import read_interventions
from hems.store.timeseries import from_ms


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hems interventions`."""
    p = sub.add_parser(
        "interventions",
        help="list the control loop's safety interventions (newest first)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="site config (its storage.path is read)")
    src.add_argument("--db", type=Path, help="the SQLite file directly")
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    p.add_argument("--rule", help="only this rule (fuse, export, reserve, stale, g100, ...)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_interventions)


def _fail(message: str) -> int:
    print(f"hems interventions: {message}", file=sys.stderr)
    return 2


def run_interventions(args: argparse.Namespace) -> int:
    if args.limit < 1:
        return _fail("--limit: must be >= 1")
    if args.config is not None:
        try:
            path = load_config(args.config).storage.path
        except ConfigErrors as exc:
            return _fail("; ".join(exc.problems))
    else:
        path = args.db
    if not Path(path).is_file():
        return _fail(f"{path}: no such database file")
    try:
        # Read-only: never create or migrate the daemon's database from the CLI.
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            rows = read_interventions(conn, args.rule, args.limit)
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return _fail(f"{path}: has no control_interventions table (daemon never ran?)")
        return _fail(f"{path}: {exc}")
    for at_ms, rule, device, event, reason, before, after in rows:
        at = from_ms(at_ms).isoformat(timespec="seconds")
        if args.json:
            print(json.dumps({
                "at": at, "rule": rule, "device_id": device, "event": event, "reason": reason,
                "before": json.loads(before), "after": json.loads(after),
            }))  # fmt: skip
        else:
            print(f"{at}  {rule:<10} {device or '-':<12} {event:<8} {reason}  {before} -> {after}")
    if not rows and not args.json:
        print("no interventions recorded")
    return 0
