"""EV sessions are kept once and persisted: the owner's target survives a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hems.app.evsessions import EvSessions
from hems.core.capabilities import EvState
from hems.core.clock import ManualClock
from hems.devices.ocpp.events import ChargerStatusChanged
from hems.errors import HemsError
from hems.store.db import Database
from hems.store.evsessions import EvSessionTable

T0 = datetime(2026, 6, 10, 18, 0, tzinfo=UTC)  # 19:00 BST
LONDON = ZoneInfo("Europe/London")
TARGETS = {"wallbox": ("07:30", 15000.0)}


def _status(state: EvState) -> ChargerStatusChanged:
    return ChargerStatusChanged(
        device_id="wallbox", identity="CP1", at=T0, status=str(state), error_code=None, state=state
    )


class Planner:
    """Records what the planner is told (the planner's own behaviour has its own tests)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None, datetime | None, datetime | None]] = []

    def ev_plugged(
        self,
        charger_id: str,
        *,
        energy_wh: float | None = None,
        departure: datetime | None = None,
        arrival: datetime | None = None,
    ) -> None:
        self.calls.append((charger_id, energy_wh, departure, arrival))

    def ev_unplugged(self, charger_id: str) -> None:
        self.calls.append((charger_id, None, None, None))


async def _drain(sessions: EvSessions) -> None:
    """Run the writer until everything queued is in SQLite."""
    task = asyncio.create_task(sessions.run())
    await asyncio.wait_for(sessions.flushed(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_owners_target_survives_a_restart_while_the_car_stays_plugged(
    tmp_path: Path,
) -> None:
    clock = ManualClock(T0)
    owner_departure = datetime(2026, 6, 11, 5, 15, tzinfo=UTC)
    db = await Database.open(tmp_path / "hems.db")
    try:
        first = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db))
        await first.restore()
        first.on_charger_event(_status(EvState.PLUGGED))
        assert first.session("wallbox").set_by == "default"  # type: ignore[union-attr]
        first.set_session("wallbox", 22000.0, owner_departure)
        await _drain(first)

        await clock.advance(20 * 60)  # the daemon restarts; the car is still there
        planner = Planner()
        second = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db), planner=planner)
        await second.restore()
        assert second.sessions == {}  # nothing is planned before the charger says plugged
        second.on_charger_event(_status(EvState.CHARGING))
        resumed = second.session("wallbox")
        assert resumed is not None
        assert (resumed.energy_wh, resumed.departure, resumed.set_by) == (
            22000.0,
            owner_departure,
            "owner",
        )
        assert resumed.plugged_at == T0  # the session's start is kept, not the restart's
        assert planner.calls == [("wallbox", 22000.0, owner_departure, T0)]

        second.on_charger_event(_status(EvState.AVAILABLE))  # unplugged: the session ends
        await _drain(second)
        assert await EvSessionTable(db).load() == {}
    finally:
        await db.close()


async def test_a_stored_session_is_not_resumed_after_its_departure(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    try:
        first = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db))
        first.on_charger_event(_status(EvState.PLUGGED))
        first.set_session("wallbox", 5000.0, T0 + timedelta(hours=1))
        await _drain(first)

        await clock.advance(2 * 3600)  # down past the owner's departure
        second = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db))
        await second.restore()
        second.on_charger_event(_status(EvState.PLUGGED))
        session = second.session("wallbox")
        assert session is not None and session.set_by == "default"
        assert session.energy_wh == 15000.0  # the charger's configured need again
    finally:
        await db.close()


def test_a_bad_owner_request_names_the_field_and_keeps_the_session() -> None:
    clock = ManualClock(T0)
    sessions = EvSessions(clock, LONDON, TARGETS)
    sessions.on_charger_event(_status(EvState.PLUGGED))
    before = sessions.sessions
    with pytest.raises(HemsError, match=r"energy_wh: must be 0\.\.200000"):
        sessions.set_session("wallbox", 1e9, T0 + timedelta(hours=3))
    with pytest.raises(HemsError, match="departure: must carry a time zone offset"):
        sessions.set_session("wallbox", 1000.0, datetime(2026, 6, 11, 7, 0))
    assert sessions.sessions == before


class Control:
    def __init__(self) -> None:
        self.modes: dict[str, str | None] = {}

    def set_ev_session(
        self,
        device_id: str,
        target_energy_wh: float,
        departure: datetime,
        *,
        target_soc_pct: float | None = None,
    ) -> None:
        pass

    def set_ev_mode(self, device_id: str, mode: str | None) -> None:
        if device_id != "wallbox":
            raise HemsError(f"{device_id}: mode: not a charger")
        self.modes[device_id] = mode


async def test_the_owners_charging_mode_is_kept_across_restarts(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    try:
        first = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db), control=Control())
        first.set_mode("wallbox", "pv-only")
        await _drain(first)
        control = Control()
        second = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db), control=control)
        await second.restore()
        assert control.modes == {"wallbox": "pv-only"} and second.modes == {"wallbox": "pv-only"}
        second.set_mode("wallbox", None)  # back to the configured mode, and forgotten
        await _drain(second)
        assert await EvSessionTable(db).modes() == {}
        with pytest.raises(HemsError, match="not a charger"):
            second.set_mode("garage", "fast")
    finally:
        await db.close()


async def test_a_soc_target_becomes_energy_from_the_cars_capacity(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = await Database.open(tmp_path / "hems.db")
    try:
        planner = Planner()
        first = EvSessions(clock, LONDON, TARGETS, EvSessionTable(db), planner=planner,
                           capacity_wh={"wallbox": 60_000.0})  # fmt: skip
        first.on_charger_event(_status(EvState.PLUGGED))
        departure = T0 + timedelta(hours=12)
        s = first.set_session("wallbox", None, departure, soc_pct=35, target_soc_pct=80)
        assert s.energy_wh == pytest.approx(0.45 * 60_000)  # 35 % → 80 % of 60 kWh
        assert planner.calls[-1][1] == pytest.approx(27_000)
        assert first.sessions["wallbox"]["target_soc_pct"] == 80
        await _drain(first)
        stored = (await EvSessionTable(db).load())["wallbox"]  # kept across a restart
        assert (stored.soc_pct, stored.target_soc_pct) == (35, 80)
        with pytest.raises(HemsError, match="soc_pct: the car's SoC now is needed"):
            first.set_session("wallbox", None, departure, target_soc_pct=80)
        with pytest.raises(HemsError, match=r"target_soc_pct: must be 0\.\.100"):
            first.set_session("wallbox", None, departure, soc_pct=35, target_soc_pct=120)
        no_capacity = EvSessions(clock, LONDON, TARGETS)
        with pytest.raises(HemsError, match="no ev: battery_capacity_wh"):
            no_capacity.set_session("wallbox", None, departure, soc_pct=35, target_soc_pct=80)
    finally:
        await db.close()
