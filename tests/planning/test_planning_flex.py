"""Flexibility instructions in the planner: constraints, price signals, withdrawal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems.core.clock import ManualClock
from hems.core.flex import FlexInstruction
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.planning.config import PlannerConfig
from hems.planning.service import PlannerService
from hems.store.db import Database

NOW = datetime(2026, 11, 27, 16, 5, tzinfo=UTC)
T17 = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)


def cap(event_id: str, mod: int, start: datetime, cap_w: float) -> FlexInstruction:
    return FlexInstruction(
        event_id=event_id, modification=mod, start=start, end=start + timedelta(hours=1),
        import_cap_w=cap_w,
    )  # fmt: skip


def price(event_id: str, mod: int, start: datetime, per_kwh: float) -> FlexInstruction:
    return FlexInstruction(
        event_id=event_id, modification=mod, start=start, end=start + timedelta(hours=1),
        price_per_kwh=per_kwh,
    )  # fmt: skip


async def test_instructions_replace_withdraw_and_keep_their_place(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(NOW)
    svc = PlannerService(PlannerConfig(enabled=True), LimitsConfig(), SiteState(clock), db, clock)
    try:
        later = T17 + timedelta(hours=2)
        svc.set_flex_instructions([cap("b", 0, later, 2000.0), cap("a", 0, T17, 1000.0)])
        await svc.plan_once("test")
        assert svc.last_problem is not None
        assert [(e.id, e.import_cap_w) for e in svc.last_problem.events] == [
            ("b", 2000.0),
            ("a", 1000.0),
        ]
        # A new modification of "b" keeps its place; "a" turns price-only: its cap goes
        # and its price steers the plan over its hour (two settlement periods).
        base = svc.tariff.prices(T17, 3, 30).import_per_kwh
        svc.set_flex_instructions([cap("b", 1, later, 1500.0), price("a", 1, T17, -0.5)])
        await svc.plan_once("test")
        assert [(e.id, e.import_cap_w) for e in svc.last_problem.events] == [("b", 1500.0)]
        assert svc.tariff.prices(T17, 3, 30).import_per_kwh == [-0.5, -0.5, base[0]]
        # All withdrawn: no constraint, the tariff's own prices again.
        svc.set_flex_instructions([])
        await svc.plan_once("test")
        assert svc.last_problem.events == []
        assert svc.tariff.prices(T17, 3, 30).import_per_kwh == base
        reasons = [r[0] for r in await db.fetchall("SELECT reason FROM plans")]
        assert reasons == ["test"] * 3
    finally:
        await db.close()
