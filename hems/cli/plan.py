"""Subcommands of the planning area: `hems optimise` and `hems plan`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from hems.core.plan import Plan
from hems.errors import ConfigError, PlanningError, StoreError
from hems.planning.chart import plan_svg
from hems.planning.config import PlannerConfig
from hems.planning.planio import plan_to_dict
from hems.planning.problem import Problem
from hems.yamllines import format_loc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `hems optimise` and `hems plan`."""
    p = sub.add_parser(
        "optimise",
        help="solve a standalone planning problem (JSON, see `hems schema problem`)",
        description="Reads a Problem JSON file, solves it with the local MILP and prints the "
        "plan and its cost.",
    )
    p.add_argument("problem", type=Path, metavar="PROBLEM.json")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--time-limit-s", type=float, default=10.0)
    p.add_argument(
        "--mip-rel-gap",
        type=float,
        default=PlannerConfig.model_fields["mip_rel_gap"].default,
        help="relative MIP gap a plan called optimal is proven within (default: the daemon's)",
    )
    p.set_defaults(func=run_optimise)

    q = sub.add_parser(
        "plan",
        help="show the daemon's current plan and write an SVG chart",
        description="Reads the latest plan from the daemon's database.",
    )
    q.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    q.add_argument("--svg", type=Path, default=Path("plan.svg"), help="chart output path")
    q.add_argument("--json", action="store_true", help="print the plan as JSON")
    q.set_defaults(func=run_plan)


def _fail(cmd: str, message: str, code: int = 2) -> int:
    print(f"hems {cmd}: {message}", file=sys.stderr)
    return code


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{format_loc(err['loc'])}: {msg}" if err["loc"] else msg


def run_optimise(args: argparse.Namespace) -> int:
    from hems.planning.optimiser import optimise  # highspy loads only when needed

    try:
        text = args.problem.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail("optimise", f"{args.problem}: cannot read ({exc.__class__.__name__})")
    try:
        problem = Problem.model_validate_json(text)
    except ValidationError as exc:
        return _fail("optimise", f"{args.problem}: {_validation_message(exc)}")
    try:
        result = optimise(problem, time_limit_s=args.time_limit_s, mip_rel_gap=args.mip_rel_gap)
    except PlanningError as exc:
        return _fail("optimise", f"infeasible: {exc}", 1)
    if args.json:
        out = plan_to_dict(result.plan)
        out["objective"] = result.objective
        out["solve_time_s"] = result.solve_time_s
        print(json.dumps(out, indent=1))
    else:
        print(plan_table(result.plan, problem.timezone))
        print(
            f"\nstatus {result.plan.status} · energy cost {result.plan.cost:.4f} · "
            f"objective {result.objective:.4f} · solved in {result.solve_time_s * 1000:.1f} ms"
        )
    return 0


def plan_table(plan: Plan, timezone: str = "UTC") -> str:
    """A fixed-width table: one row per slot, one column per device."""
    zone = ZoneInfo(timezone)
    devices = sorted({d for s in plan.slots for d in s.targets_w})
    socs = sorted({d for s in plan.slots for d in s.soc_pct})
    head = ["time", "imp/kWh", "exp/kWh", "grid kW", "curt kW"]
    head += [f"{d} kW" for d in devices] + [f"{d} %" for d in socs]
    rows = [head]
    for s in plan.slots:
        row = [
            f"{s.start.astimezone(zone):%a %H:%M}",
            f"{s.price_import_per_kwh:.4f}",
            f"{s.price_export_per_kwh:.4f}",
            f"{(s.grid_import_w - s.grid_export_w) / 1000:+.2f}",
            f"{s.pv_curtail_w / 1000:.2f}",
        ]
        row += [f"{s.targets_w.get(d, 0.0) / 1000:+.2f}" for d in devices]
        row += [f"{s.soc_pct.get(d, 0.0):.1f}" for d in socs]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


async def latest_plan(db_path: Path) -> tuple[Plan, str] | None:
    """The newest stored plan and the reason it was made, or None."""
    from hems.planning.store import latest_plan as stored_latest_plan
    from hems.store.db import Database

    db = await Database.open(db_path)
    try:
        return await stored_latest_plan(db)
    finally:
        await db.close()


def run_plan(args: argparse.Namespace) -> int:
    from hems.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _fail("plan", str(exc))
    path = cfg.storage.path
    if not Path(path).exists():
        return _fail("plan", f"storage.path: {path} does not exist (has the daemon run?)", 1)
    try:
        found = asyncio.run(latest_plan(path))
    except StoreError as exc:
        return _fail("plan", str(exc), 1)
    if found is None:
        return _fail("plan", f"no plan stored yet in {path}", 1)
    plan, reason = found
    if args.json:
        print(json.dumps(plan_to_dict(plan), indent=1))
    else:
        print(plan_table(plan, cfg.site.timezone))
        print(f"\nplan made {plan.created_at:%Y-%m-%d %H:%M} UTC ({reason}); cost {plan.cost:.4f}")
        tariff = cfg.planner.tariff
        if tariff.standing_charge_per_day:
            print(
                f"standing charge {tariff.standing_charge_per_day:.4f} {tariff.currency}/day "
                "(not part of the optimisation)"
            )
    try:
        args.svg.write_text(plan_svg(plan, cfg.site.timezone), encoding="utf-8")
    except OSError as exc:
        return _fail("plan", f"--svg: cannot write {args.svg} ({exc.__class__.__name__})", 1)
    if not args.json:
        print(f"chart written to {args.svg}")
    return 0
