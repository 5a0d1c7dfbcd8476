"""The flex glue with real peers: the uplink's wire event → FlexService on SQLite → the
control loop's live target, and the modification rule answered from flex's event book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hems.app.links import FlexLink, answer_event
from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.clock import ManualClock
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.flex.config import FlexConfig
from hems.flex.service import FlexService
from hems.store.db import Database
from hems.uplink.messages import Event

T0 = datetime(2024, 1, 31, 10, tzinfo=UTC)
START = datetime(2024, 1, 31, 17, tzinfo=UTC)


def wire(mod: int, **kw: object) -> Event:
    payload: dict[str, object] = dict(
        event_id="dfs-1", modification_number=mod, kind="turn_down",
        start=START.isoformat(), end=(START + timedelta(hours=1)).isoformat(),
        import_cap_w=1000.0,
    )  # fmt: skip
    payload.update(kw)
    return Event.model_validate(payload)


async def test_wire_event_to_live_target_and_the_modification_rule(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "hems.db")
    clock = ManualClock(T0)
    loop = ControlLoop(
        ControlConfig(enabled=True), LimitsConfig(), SiteState(clock), ControlledDevices(),
        clock, lambda: None,
    )  # fmt: skip
    flex: FlexService | None = None

    async def baseline_w(instruction):  # type: ignore[no-untyped-def]
        assert flex is not None
        return await flex.live_baseline_w(instruction)

    link = FlexLink(clock, None, loop, baseline_w)
    flex = FlexService(
        FlexConfig(enabled=True), "Europe/London", db, clock, lambda t, p: None,
        import_limit_w=13800.0, export_limit_w=3680.0, on_change=link.on_change,
    )  # fmt: skip
    try:
        d = await answer_event(flex, wire(0))
        assert (d.status, d.reason, d.clamped) == ("accepted", None, None)
        live = loop.flex_status()
        # No meter history: delivery is tracked against the cap itself.
        assert live is not None and live["event_id"] == "dfs-1" and live["kind"] == "import-cap"
        assert (live["limit_w"], live["baseline_w"]) == (1000.0, 1000.0)

        # Equal or lower modification: outdated, from the one rule in flex's event book.
        d = await answer_event(flex, wire(0, import_cap_w=600.0))
        assert (d.status, d.stored_modification) == ("outdated", 0)
        assert loop.flex_status()["limit_w"] == 1000.0  # type: ignore[index]

        # A turn-up modification: the plan's to follow, the live target is cleared.
        d = await answer_event(flex, wire(1, kind="turn_up", import_cap_w=None, setpoint_w=4000))
        assert d.status == "accepted"
        assert loop.flex_status() is None
        d = await answer_event(flex, wire(1))
        assert (d.status, d.stored_modification) == ("outdated", 1)

        # Not representable as a flex event (the wire model lets infinity through).
        d = await answer_event(flex, wire(2, import_cap_w=float("inf")))
        assert d.status == "opted_out" and "import_cap_w" in (d.reason or "")
        # Flexibility off: nothing is stored, every event is opted out.
        d = await answer_event(None, wire(5))
        assert (d.status, d.reason) == ("opted_out", "flexibility is not enabled here")
        assert await flex.book.stored_modification("dfs-1") == 1
    finally:
        await db.close()
