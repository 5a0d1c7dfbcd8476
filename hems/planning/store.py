"""The owner of the `plans` table (migration 0003): every plan with the `Problem` that made it.

Only this module writes, reads or deletes `plans` rows: the service saves each plan (or
failed attempt) here and asks for the retention; the CLI reads the latest plan here. The
`forecasts` table is the forecaster's (hems.planning.forecast: `store_forecast`,
`prune_forecasts`), `tariff_prices` the tariff's (hems.planning.tariffs).

Issue 16 (SD card): a plan with its problem is ~16 KB of JSON, ~17 1-KiB pages a replan.
`problem_json` and `plan_json` are stored zlib-compressed (a BLOB; `stored_json` reads
either form, rows from before stay text), and the row rides on the store's next batch
(`Database.defer`: a kill -9 loses at most one batch of plans; reads see it at once). A
stored problem for `hems optimise` is `stored_json(problem_json)` written to a file.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime

from hems.core.plan import Plan
from hems.planning.planio import plan_from_dict, plan_to_dict
from hems.planning.problem import Problem
from hems.store.db import Database
from hems.store.timeseries import to_ms


def packed_json(text: str) -> bytes:
    """JSON as stored in `plans` (zlib: a soak plan's 16 KB came to 1.5 KB)."""
    return zlib.compress(text.encode("utf-8"), 6)


def stored_json(value: str | bytes) -> str:
    """The JSON text of a `problem_json`/`plan_json` value: compressed (bytes) or text (rows
    stored before compression)."""
    if isinstance(value, bytes):
        return zlib.decompress(value).decode("utf-8")
    return value


async def save_plan(
    db: Database,
    *,
    created_at: datetime,
    reason: str,
    status: str,
    problem: Problem,
    plan: Plan | None,
    solve_time_s: float | None,
    notes: list[str] | None,
) -> None:
    """Store one planning attempt; `plan` None = none came out (`notes` says why). The
    notes stored are `notes` if given, else the plan's. Written with the next commit."""
    row = (
        to_ms(created_at),
        reason,
        status,
        plan.cost if plan else None,
        solve_time_s * 1000 if solve_time_s is not None else None,
        packed_json(problem.model_dump_json()),
        packed_json(json.dumps(plan_to_dict(plan))) if plan else None,
        json.dumps(notes if notes is not None else list(plan.notes if plan else [])),
    )
    db.defer(
        "INSERT INTO plans(created_at_ms, reason, status, cost, solve_time_ms,"
        " problem_json, plan_json, notes_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


async def prune_plans(db: Database, before: datetime) -> int:
    """Delete the plans made before `before`; how many went."""
    return await db.execute("DELETE FROM plans WHERE created_at_ms < ?", (to_ms(before),))


def queue_prune_plans(db: Database, before: datetime) -> None:
    """`prune_plans` with the next commit (the store's batch), for the service's retention:
    a delete of its own would commit the plan just queued at once."""
    db.defer("DELETE FROM plans WHERE created_at_ms < ?", (to_ms(before),))


async def latest_plan(db: Database) -> tuple[Plan, str] | None:
    """The newest stored plan and the reason it was made, or None."""
    row = await db.fetchone(
        "SELECT plan_json, reason FROM plans WHERE plan_json IS NOT NULL"
        " ORDER BY created_at_ms DESC, plan_pk DESC LIMIT 1"
    )
    if row is None:
        return None
    return plan_from_dict(json.loads(stored_json(row[0]))), row[1]
