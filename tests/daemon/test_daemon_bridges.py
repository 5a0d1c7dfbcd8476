"""The glue between stages, with the real control loop behind it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hems.app.evsessions import EvSessions
from hems.control.config import ControlConfig
from hems.control.devices import ControlledDevices
from hems.control.loop import ControlLoop
from hems.core.capabilities import EvState
from hems.core.clock import ManualClock
from hems.core.site import LimitsConfig
from hems.core.state import SiteState
from hems.devices.ocpp.events import ChargerStatusChanged, MeterUpdated

T0 = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)


def _status(state: EvState, status: str = "Charging") -> ChargerStatusChanged:
    return ChargerStatusChanged(
        device_id="wallbox", identity="CP1", at=T0, status=status, error_code=None, state=state
    )


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
        control=loop,
    )  # fmt: skip
    sessions.on_charger_event(_status(EvState.PLUGGED, "Preparing"))
    assert sessions.plugged == {"wallbox": True}
    sessions.on_charger_event(_status(EvState.AVAILABLE, "Available"))
    assert sessions.plugged == {"wallbox": False} and sessions.sessions == {}


def test_plug_in_uses_the_next_local_departure() -> None:
    clock = ManualClock(T0)  # 19:00 BST
    sessions = EvSessions(clock, ZoneInfo("Europe/London"), {"wallbox": ("07:30", 15000.0)})
    # Only status changes count: a meter update is not a plug-in.
    sessions.on_charger_event(
        MeterUpdated(
            device_id="wallbox", identity="CP1", at=T0, power_w=7000.0, current_a={},
            energy_wh=None, session_energy_wh=0.0,
        )
    )  # fmt: skip
    assert sessions.sessions == {}
    sessions.on_charger_event(_status(EvState.CHARGING))
    departure = datetime.fromisoformat(sessions.sessions["wallbox"]["departure"])
    assert departure == datetime(2026, 6, 11, 6, 30, tzinfo=UTC)
    assert sessions.sessions["wallbox"]["energy_wh"] == 15000.0
    # Offline is not an unplug: the session stays.
    sessions.on_charger_event(_status(EvState.OFFLINE, "Unavailable"))
    assert "wallbox" in sessions.sessions
