"""The page's view of the event book: an event without meter history has no baseline, and the
view does not rebuild the report over the history on every look; a new plan asks again."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems.app.flexview import FlexBookView
from hems.app.links import answer_event
from hems.core.clock import ManualClock
from hems.core.flex import FlexInstruction
from hems.core.plan import Plan, PlanSlot
from hems.flex.config import FlexConfig
from hems.flex.service import FlexService
from hems.store.db import Database
from hems.uplink.messages import Event

T0 = datetime(2024, 1, 31, 10, tzinfo=UTC)
START = datetime(2024, 1, 31, 17, tzinfo=UTC)


class CountingFlex(FlexService):
    """The real service; counts the baseline builds the view asks for."""

    builds = 0

    async def live_baseline_w(self, instruction: FlexInstruction) -> float:
        self.builds += 1
        return await super().live_baseline_w(instruction)


def plan(created_at: datetime) -> Plan:
    slots = tuple(
        PlanSlot(start=T0 + timedelta(minutes=30 * i), duration_s=1800,
                 price_import_per_kwh=0.2, price_export_per_kwh=0.05,
                 grid_import_w=800.0, grid_export_w=0.0)
        for i in range(24)
    )  # fmt: skip
    return Plan(created_at, slots, cost=1.0, status="optimal")


async def test_no_baseline_is_asked_again_after_a_new_plan_not_on_every_view(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    flex = CountingFlex(
        FlexConfig(enabled=True, meter_device_id="grid"), "Europe/London", db, clock,
        lambda t, p: None, import_limit_w=13800.0, export_limit_w=3680.0,
    )  # fmt: skip
    try:
        event = Event.model_validate(
            {"event_id": "dfs-1", "modification_number": 0, "kind": "turn_down",
             "start": START.isoformat(), "end": (START + timedelta(hours=1)).isoformat(),
             "import_cap_w": 1000.0}
        )  # fmt: skip
        assert (await answer_event(flex, event)).status == "accepted"
        first = plan(T0)
        view = FlexBookView(db, flex, lambda: first, lambda: ())
        for _ in range(5):
            shown = await view.view()
            assert shown["events"][0]["expected_kwh"] is None  # no history: no baseline
        assert flex.builds == 1
        assert math.isnan(await flex.live_baseline_w((await flex.instructions())[0]))

        view.on_plan(plan(T0 + timedelta(minutes=30)))
        builds = flex.builds
        await view.view()
        await view.view()
        assert flex.builds == builds + 1
    finally:
        await db.close()
