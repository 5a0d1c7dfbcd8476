"""Table owners of the planning area on a real SQLite file: `plans` (planning.store) and
`forecasts` (planning.forecast), each saving and pruning only its own rows."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems.core.plan import Plan, PlanSlot
from hems.planning.forecast import Forecast, prune_forecasts, store_forecast
from hems.planning.planio import plan_to_dict
from hems.planning.problem import Problem
from hems.planning.store import latest_plan, prune_plans, save_plan, stored_json
from hems.store.db import Database

T0 = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)
PROBLEM = Problem(start=T0, import_price_per_kwh=[0.2], export_price_per_kwh=[0.1])


def plan(at: datetime, cost: float) -> Plan:
    slot = PlanSlot(
        start=T0, duration_s=1800, price_import_per_kwh=0.2, price_export_per_kwh=0.1,
        grid_import_w=400, grid_export_w=0, targets_w={}, soc_pct={}, switches={},
        pv_curtail_w=0,
    )  # fmt: skip
    return Plan(at, (slot,), cost, "optimal", ("a note",))


async def test_plans_are_saved_read_back_and_pruned_by_their_owner(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    try:
        assert await latest_plan(db) is None
        old, new = T0 - timedelta(days=20), T0
        await save_plan(db, created_at=old, reason="old", status="optimal", problem=PROBLEM,
                        plan=plan(old, 1.0), solve_time_s=0.01, notes=None)  # fmt: skip
        await save_plan(db, created_at=new, reason="new", status="optimal", problem=PROBLEM,
                        plan=plan(new, 2.0), solve_time_s=0.02, notes=None)  # fmt: skip
        # A failed attempt is stored with its reason but is never "the latest plan".
        await save_plan(db, created_at=new + timedelta(minutes=1), reason="failed",
                        status="infeasible", problem=PROBLEM, plan=None, solve_time_s=None,
                        notes=["events[0]: impossible"])  # fmt: skip
        found = await latest_plan(db)
        assert found is not None and found[1] == "new" and found[0].cost == 2.0
        assert found[0].notes == ("a note",)
        row = await db.fetchone(
            "SELECT notes_json, problem_json FROM plans WHERE reason = 'failed'"
        )
        assert row is not None and json.loads(row[0]) == ["events[0]: impossible"]
        assert Problem.model_validate_json(stored_json(row[1])) == PROBLEM

        fc = Forecast(T0, 30, [100.0], "default")
        await store_forecast(db, "pv", old, fc)
        await store_forecast(db, "load", new, fc)

        cutoff = T0 - timedelta(days=14)
        assert await prune_plans(db, cutoff) == 1
        assert [r[0] for r in await db.fetchall("SELECT reason FROM plans")] == ["new", "failed"]
        # The plans' retention leaves the forecasts alone: their owner prunes them.
        assert len(await db.fetchall("SELECT 1 FROM forecasts")) == 2
        assert await prune_forecasts(db, cutoff) == 1
        assert [r[0] for r in await db.fetchall("SELECT kind FROM forecasts")] == ["load"]
    finally:
        await db.close()


async def test_plans_are_stored_compressed_with_the_next_commit_and_old_rows_still_read(
    tmp_path: Path,
) -> None:
    """Issue 16: a plan's problem and plan JSON are ~16 KB a replan; stored compressed and
    riding on the next commit (the store's batch). Rows stored as text before still read."""
    path = tmp_path / "hems.db"
    db = await Database.open(path)
    db.defer_max_s = 3600.0  # only the next commit takes the plan along
    try:
        await db.execute(
            "INSERT INTO plans(created_at_ms, reason, status, cost, problem_json, plan_json)"
            " VALUES (0, 'text row', 'optimal', 1.0, ?, ?)",
            (PROBLEM.model_dump_json(), json.dumps(plan_to_dict(plan(T0, 1.0)))),
        )
        found = await latest_plan(db)
        assert found is not None and found[1] == "text row" and found[0].cost == 1.0
        big = Problem(start=T0, import_price_per_kwh=[0.2123456] * 96,
                      export_price_per_kwh=[0.1] * 96)  # fmt: skip
        await save_plan(db, created_at=T0, reason="new", status="optimal", problem=big,
                        plan=plan(T0, 2.0), solve_time_s=0.01, notes=None)  # fmt: skip
        other = sqlite3.connect(str(path))
        try:
            assert other.execute("SELECT count(*) FROM plans").fetchone()[0] == 1
            found = await latest_plan(db)  # seen before it is committed
            assert found is not None and found[1] == "new" and found[0].cost == 2.0
            await db.execute("DELETE FROM plans WHERE reason = 'nothing'")  # the next commit
            stored, size = other.execute(
                "SELECT problem_json, length(problem_json) FROM plans WHERE reason = 'new'"
            ).fetchone()
        finally:
            other.close()
        assert isinstance(stored, bytes) and size < len(big.model_dump_json()) / 4
        assert Problem.model_validate_json(stored_json(stored)) == big
    finally:
        await db.close()
