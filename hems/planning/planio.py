"""Plans as plain JSON (for the `plans` table, the CLI and the web API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hems.core.plan import Plan, PlanSlot


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "created_at": plan.created_at.isoformat(),
        "status": plan.status,
        "cost": plan.cost,
        "notes": list(plan.notes),
        "slots": [
            {
                "start": s.start.isoformat(),
                "duration_s": s.duration_s,
                "price_import_per_kwh": s.price_import_per_kwh,
                "price_export_per_kwh": s.price_export_per_kwh,
                "grid_import_w": s.grid_import_w,
                "grid_export_w": s.grid_export_w,
                "targets_w": s.targets_w,
                "soc_pct": s.soc_pct,
                "switches": s.switches,
                "pv_curtail_w": s.pv_curtail_w,
            }
            for s in plan.slots
        ],
    }


def plan_from_dict(d: dict[str, Any]) -> Plan:
    return Plan(
        created_at=datetime.fromisoformat(d["created_at"]),
        status=d["status"],
        cost=float(d["cost"]),
        notes=tuple(d.get("notes", ())),
        slots=tuple(
            PlanSlot(
                start=datetime.fromisoformat(s["start"]),
                duration_s=float(s["duration_s"]),
                price_import_per_kwh=float(s["price_import_per_kwh"]),
                price_export_per_kwh=float(s["price_export_per_kwh"]),
                grid_import_w=float(s["grid_import_w"]),
                grid_export_w=float(s["grid_export_w"]),
                targets_w={k: float(v) for k, v in s["targets_w"].items()},
                soc_pct={k: float(v) for k, v in s["soc_pct"].items()},
                switches={k: bool(v) for k, v in s["switches"].items()},
                pv_curtail_w=float(s["pv_curtail_w"]),
            )
            for s in d["slots"]
        ),
    )
