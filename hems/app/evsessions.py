"""EV sessions, kept once: charger plug events and the owner's requests → one session per
charger, persisted, handed to the planner and the control loop.

A session starts when a charger reports a car plugged in, with the charger's configured
need (`devices[].ev`: departure time and energy), and the owner may change it on the page.
It is stored in SQLite, so after a restart the owner's target is resumed when the charger
reports the car still plugged in (a session whose departure has passed is not resumed);
unplugging ends it and deletes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, get_args
from zoneinfo import ZoneInfo

import structlog

from hems.core.assets import EvStrategy
from hems.core.capabilities import EV_PLUGGED, EvState
from hems.core.clock import Clock
from hems.core.ev import EvSession, SessionSource, energy_for_soc
from hems.core.localtime import next_local
from hems.core.tasks import raise_if_cancelling
from hems.devices.ocpp.events import ChargerEvent, ChargerStatusChanged
from hems.errors import HemsError
from hems.store.evsessions import EvSessionTable
from hems.store.timeseries import to_ms

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _ModeChange:
    device_id: str
    mode: EvStrategy | None


class EvPlanner(Protocol):
    def ev_plugged(
        self,
        charger_id: str,
        *,
        energy_wh: float | None = None,
        departure: datetime | None = None,
        arrival: datetime | None = None,
    ) -> None: ...

    def ev_unplugged(self, charger_id: str) -> None: ...


class EvControl(Protocol):
    def set_ev_session(
        self, device_id: str, target_energy_wh: float, departure: datetime
    ) -> None: ...


class EvSessions:
    """The one keeper of EV sessions. `targets`: charger device id → (default departure
    "HH:MM", energy wanted [Wh]) from the charger entries' `ev:` sections."""

    def __init__(
        self,
        clock: Clock,
        tz: ZoneInfo,
        targets: dict[str, tuple[str, float | None]],
        table: EvSessionTable | None = None,
        planner: EvPlanner | None = None,
        control: EvControl | None = None,
        capacity_wh: dict[str, float] | None = None,
    ) -> None:
        self._clock = clock
        self._capacity_wh = capacity_wh or {}  # charger → the car's battery [Wh] (ev: facts)
        self._tz = tz
        self._targets = targets
        self._table = table
        self._planner = planner
        self._control = control
        self.plugged: dict[str, bool] = {}
        self._sessions: dict[str, EvSession] = {}
        self._stored: dict[str, EvSession] = {}  # from before a restart, until the plug says
        self._writes: asyncio.Queue[EvSession | str | _ModeChange] = asyncio.Queue()
        self.modes: dict[str, EvStrategy] = {}

    @property
    def sessions(self) -> dict[str, dict[str, object]]:
        """The current sessions for the page and API, by charger device id."""
        return {d: s.as_dict() for d, s in self._sessions.items()}

    def session(self, device_id: str) -> EvSession | None:
        return self._sessions.get(device_id)

    async def restore(self) -> None:
        """Read the sessions stored before a restart (call before chargers connect)."""
        if self._table is not None:
            self._stored = await self._table.load()
            if self._stored:
                log.info("ev sessions from before the restart", chargers=sorted(self._stored))
            for device_id, mode in (await self._table.modes()).items():
                if mode in get_args(EvStrategy):
                    try:
                        self._apply_mode(device_id, mode)  # type: ignore[arg-type]
                    except HemsError as exc:  # a charger no longer configured
                        log.warning("stored ev mode not applied", charger=device_id, error=str(exc))

    async def run(self) -> None:
        """Writes sessions to SQLite in the order they changed (the listener is sync)."""
        while True:
            raise_if_cancelling()
            item = await self._writes.get()
            try:
                if self._table is None:
                    pass
                elif isinstance(item, _ModeChange):
                    await self._table.save_mode(item.device_id, item.mode, to_ms(self._clock.now()))
                elif isinstance(item, str):
                    await self._table.delete(item)
                else:
                    await self._table.save(item, to_ms(self._clock.now()))
            except HemsError as exc:
                log.error("ev session not stored", error=str(exc))
            finally:
                self._writes.task_done()

    async def flushed(self) -> None:
        """Returns once every change so far is stored (needs `run()` running)."""
        await self._writes.join()

    def on_charger_event(self, event: ChargerEvent) -> None:
        """OCPP listener (synchronous, called from the charger's receive loop)."""
        if not isinstance(event, ChargerStatusChanged):
            return
        device_id, state = event.device_id, event.state
        if state in (EvState.OFFLINE, EvState.FAULTED):
            return  # not a plug change; control puts the charger in its safe state
        plugged = state in EV_PLUGGED
        if self.plugged.get(device_id) == plugged:
            return
        self.plugged[device_id] = plugged
        stored = self._stored.pop(device_id, None)
        try:
            if plugged and stored is not None and stored.departure > self._clock.now():
                self._start(stored)
                log.info("ev session resumed", charger=device_id, set_by=stored.set_by)
            elif plugged:
                departure, energy_wh = self._targets.get(device_id, ("07:00", None))
                when = next_local(self._clock.now(), departure, self._tz)
                self.set_session(device_id, energy_wh, when, set_by="default")
            else:
                self._end(device_id)
        except HemsError as exc:
            # Called from the charger's receive loop: a refusal is logged, never raised.
            log.error("ev session not set", charger=device_id, error=str(exc))

    def set_session(
        self,
        device_id: str,
        energy_wh: float | None,
        departure: datetime,
        set_by: SessionSource = "owner",
        *,
        soc_pct: float | None = None,
        target_soc_pct: float | None = None,
    ) -> EvSession:
        """Start or change a session (plug-in, or the owner's request on the web page).
        With `soc_pct` and `target_soc_pct` the energy is computed from the car's capacity
        (the charger entry's `ev.battery_capacity_wh`). Raises HemsError naming the field."""
        if target_soc_pct is not None:
            if soc_pct is None:
                raise HemsError("soc_pct: the car's SoC now is needed for a SoC target")
            capacity_wh = self._capacity_wh.get(device_id)
            if capacity_wh is None:
                raise HemsError(f"target_soc_pct: {device_id} has no ev: battery_capacity_wh")
            energy_wh = energy_for_soc(soc_pct, target_soc_pct, capacity_wh)
        current = self._sessions.get(device_id)
        plugged_at = current.plugged_at if current else self._clock.now()
        session = EvSession(
            device_id, plugged_at, departure, energy_wh, set_by, soc_pct, target_soc_pct
        )
        self._start(session)
        return session

    def set_mode(self, device_id: str, mode: EvStrategy | None) -> None:
        """The owner's charging mode for a charger (None: the configured one), kept across
        sessions and restarts. Raises HemsError naming the field."""
        self._apply_mode(device_id, mode)
        self._writes.put_nowait(_ModeChange(device_id, mode))

    def _apply_mode(self, device_id: str, mode: EvStrategy | None) -> None:
        if self._control is not None:
            self._control.set_ev_mode(device_id, mode)
        if mode is None:
            self.modes.pop(device_id, None)
        else:
            self.modes[device_id] = mode

    def _start(self, session: EvSession) -> None:
        self._sessions[session.device_id] = session
        self._writes.put_nowait(session)
        if self._planner is not None:
            self._planner.ev_plugged(
                session.device_id,
                energy_wh=session.energy_wh,
                departure=session.departure,
                arrival=session.plugged_at,
            )
        if self._control is not None and session.energy_wh is not None:
            self._control.set_ev_session(session.device_id, session.energy_wh, session.departure)
        log.info(
            "ev session",
            charger=session.device_id,
            energy_wh=session.energy_wh,
            departure=session.departure,
            set_by=session.set_by,
        )

    def _end(self, device_id: str) -> None:
        self._sessions.pop(device_id, None)
        self._writes.put_nowait(device_id)
        if self._planner is not None:
            self._planner.ev_unplugged(device_id)
        log.info("ev unplugged", charger=device_id)
