"""`hems optimise` and `hems plan`: real files, a real SQLite database, the real parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hems.cli import main
from hems.planning.optimiser import optimise
from hems.planning.planio import plan_to_dict
from hems.planning.problem import BatterySpec, Problem
from hems.store.db import Database

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


def small_problem() -> Problem:
    return Problem(
        start=T0,
        step_min=30,
        import_price_per_kwh=[0.3, 0.1, 0.3, 0.5],
        export_price_per_kwh=[0.0] * 4,
        load_w=1000,
        batteries=[
            BatterySpec(id="bat", capacity_wh=2000, initial_soc_pct=0, max_charge_w=4000,
                        max_discharge_w=4000, charge_efficiency=1, discharge_efficiency=1,
                        terminal_value_per_kwh=0)
        ],
    )  # fmt: skip


def test_optimise_prints_table_and_json(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.json"
    f.write_text(small_problem().model_dump_json())
    assert main(["optimise", str(f)]) == 0
    out = capsys.readouterr().out
    assert "bat kW" in out and "energy cost 0.3000" in out
    assert main(["optimise", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)  # nothing but JSON on stdout
    assert data["cost"] == pytest.approx(0.3)
    assert [s["targets_w"]["bat"] for s in data["slots"]] == [0, 2000, -1000, -1000]


def test_optimise_bad_input_names_the_field(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = json.loads(small_problem().model_dump_json())
    bad["batteries"][0]["capacity_wh"] = -5
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    assert main(["optimise", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hems optimise: ") and "batteries[0].capacity_wh:" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1

    bad = json.loads(small_problem().model_dump_json())
    bad["load_w"] = 9000
    bad["import_cap_w"] = 1000
    f.write_text(json.dumps(bad))
    assert main(["optimise", str(f)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hems optimise: infeasible: import_cap_w[0]: at 00:00 the base load")
    assert main(["optimise", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


async def test_plan_reads_latest_from_db_and_writes_svg(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    db_path = tmp_path / "hems.db"
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"site: {{id: demo, timezone: UTC}}\nstorage: {{path: {db_path}}}\n"
        "planner: {tariff: {standing_charge_per_day: 0.5}}\n"
    )
    plan = optimise(small_problem()).plan
    db = await Database.open(db_path)
    await db.execute(
        "INSERT INTO plans(created_at_ms, reason, status, cost, problem_json, plan_json)"
        " VALUES (?, 'slot boundary', ?, ?, ?, ?)",
        (1, plan.status, plan.cost, small_problem().model_dump_json(),
         json.dumps(plan_to_dict(plan))),
    )  # fmt: skip
    await db.close()
    svg = tmp_path / "out.svg"
    # `hems plan` runs its own event loop: call it from a worker thread.
    import asyncio

    code = await asyncio.to_thread(main, ["plan", "-c", str(cfg), "--svg", str(svg)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Mon 00:30" in out and "+2.00" in out and "(slot boundary)" in out
    assert "standing charge 0.5000 GBP/day (not part of the optimisation)" in out
    text = svg.read_text()
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert (
        "prices" in text and "state of charge" in text and text.count("<path") == 5
    )  # 2 prices, grid, bat power, bat SoC


def test_plan_without_database_says_so(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"site: {{id: demo}}\nstorage: {{path: {tmp_path / 'none.db'}}}\n")
    assert main(["plan", "-c", str(cfg)]) == 1
    assert "storage.path:" in capsys.readouterr().err
