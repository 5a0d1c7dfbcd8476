"""The glue between stages, with the real control loop behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hems.app.links import EvSessions
from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.clock import ManualClock
from hems.core.site import LimitsConfig
from hems.core.state import SiteState

T0 = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)


def test_a_charger_unknown_to_control_is_logged_not_raised() -> None:
    # The OCPP listener runs inside the charger's receive loop: a refusal downstream must
    # not break it.
    clock = ManualClock(T0)
    loop = ControlLoop(
        ControlConfig(enabled=True), LimitsConfig(), SiteState(clock), ControlledDevices(),
        clock, lambda: None,
    )  # fmt: skip
    sessions = EvSessions(
        clock, ZoneInfo("Europe/London"), {"wallbox": ("07:30", 15000.0)},
        {"CP1": "wallbox"}, control=loop,
    )  # fmt: skip
    sessions.on_charger_event("status", {"charger": "CP1", "state": "plugged"})
    assert sessions.plugged == {"wallbox": True}
    sessions.on_charger_event("status", {"charger": "CP1", "state": "available"})
    assert sessions.plugged == {"wallbox": False} and sessions.sessions == {}


def test_plug_in_uses_the_next_local_departure() -> None:
    clock = ManualClock(T0)  # 19:00 BST
    sessions = EvSessions(
        clock, ZoneInfo("Europe/London"), {"wallbox": ("07:30", 15000.0)}, {"CP1": "wallbox"}
    )
    sessions.on_charger_event("status", {"charger": "CP1", "state": "charging"})
    departure = datetime.fromisoformat(sessions.sessions["wallbox"]["departure"])
    assert departure == datetime(2026, 6, 11, 6, 30, tzinfo=UTC)
    assert sessions.sessions["wallbox"]["energy_wh"] == 15000.0
    # Offline is not an unplug: the session stays.
    sessions.on_charger_event("status", {"charger": "CP1", "state": "offline"})
    assert "wallbox" in sessions.sessions
