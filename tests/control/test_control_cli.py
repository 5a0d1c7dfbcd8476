"""`hems interventions` against a real store written by the control loop's migration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from hems.cli import control as cli
from hems.store.db import Database


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hems")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


async def test_lists_interventions_newest_first(tmp_path: Path, capsys) -> None:
    path = tmp_path / "hems.db"
    db = await Database.open(path)
    rows = [
        (1_782_000_000_000, "fuse", "ev", "start", "import over fuse 60 A",
         '{"current_a": 16}', '{"current_a": 9.7}'),
        (1_782_000_005_000, "export", "pv", "start", "export over limit 3680 W: PV curtailed",
         '{"limit_pct": 100}', '{"limit_pct": 59.6}'),
    ]  # fmt: skip
    await db.executemany(
        "INSERT INTO control_interventions"
        "(at_ms, rule, device_id, event, reason, before_json, after_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    await db.close()
    capsys.readouterr()  # the store's own log lines
    assert _run(["interventions", "--db", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2026-06-21T00:00:05+00:00  export"), out
    assert "59.6" in out[0]
    assert "fuse" in out[1] and "import over fuse 60 A" in out[1]
    assert _run(["interventions", "--db", str(path), "--rule", "fuse", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["after"] for x in lines] == [{"current_a": 9.7}]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such database file"),
        ("empty", "has no control_interventions table"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path: Path, capsys, setup: str, message: str):
    path = tmp_path / "hems.db"
    if setup == "empty":
        import sqlite3

        sqlite3.connect(path).close()
    assert _run(["interventions", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
