"""EV sessions, kept once: charger plug events and the owner's requests → one session per
charger, persisted, handed to the planner and the control loop.

A session starts when a charger reports a car plugged in, with the charger's configured
need (`devices[].ev`: departure time and energy), and the owner may change it on the page.
It is stored in SQLite, so after a restart the owner's target is resumed when the charger
reports the car still plugged in (a session whose departure has passed is not resumed);
unplugging ends it and deletes it.

A SoC target (`ev.target_soc_pct`, or the owner's on the page) is planned with the car's
capacity (`ev.battery_capacity_wh`) from the car's SoC: the one the charger measures
(MeterValues SoC, `Quantity.SOC_PCT` in SiteState) while it is fresh, else the owner's
reading. A measured SoC re-plans the session as it arrives (by 1 % steps), so with a
configured `target_soc_pct` the car is charged to that SoC rather than by the fixed
`target_energy_wh`; without a SoC the energy target applies. The control loop is told the
SoC target too: it holds the charger at 0 A once the car's measured SoC reaches it.
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
from hems.core.ev import EvSession, SessionSource, SocSource, energy_for_soc
from hems.core.localtime import next_local
from hems.core.readings import Quantity, Reading
from hems.core.state import SiteState
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
        self,
        device_id: str,
        target_energy_wh: float,
        departure: datetime,
        *,
        target_soc_pct: float | None = None,
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
        *,
        state: SiteState | None = None,
        target_soc_pct: dict[str, float | None] | None = None,
    ) -> None:
        self._clock = clock
        self._state = state  # the chargers' measured SoC (and session energy), if given
        self._target_soc = {d: t for d, t in (target_soc_pct or {}).items() if t is not None}
        if state is not None:
            state.add_listener(self._on_readings)
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
                target = self._target_soc.get(device_id)
                if target is not None and self.measured_soc_pct(device_id) is not None:
                    self.set_session(device_id, None, when, "default", target_soc_pct=target)
                else:  # no SoC yet: the energy target, until the car's SoC arrives
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
        source: SocSource | None = None
        remaining_wh: float | None = None
        if target_soc_pct is not None:
            measured = self.measured_soc_pct(device_id)
            if measured is not None:  # the car's own figure wins over a reading typed in
                soc_pct, source = measured, "measured"
            elif soc_pct is None:
                raise HemsError("soc_pct: the car's SoC now is needed for a SoC target")
            else:
                source = "manual"
            capacity_wh = self._capacity_wh.get(device_id)
            if capacity_wh is None:
                raise HemsError(f"target_soc_pct: {device_id} has no ev: battery_capacity_wh")
            remaining_wh = energy_for_soc(soc_pct, target_soc_pct, capacity_wh)
            # The planner counts the session's energy from plug-in: add what is in already.
            energy_wh = remaining_wh + self._session_energy_wh(device_id)
        current = self._sessions.get(device_id)
        plugged_at = current.plugged_at if current else self._clock.now()
        session = EvSession(
            device_id, plugged_at, departure, energy_wh, set_by, soc_pct, target_soc_pct, source
        )
        self._start(session, remaining_wh)
        return session

    def measured_soc_pct(self, device_id: str) -> float | None:
        """The car's SoC as the charger reports it now [%], None unless fresh."""
        if self._state is None:
            return None
        return self._state.fresh_value(device_id, Quantity.SOC_PCT)

    def _session_energy_wh(self, device_id: str) -> float:
        if self._state is None:
            return 0.0
        return self._state.fresh_value(device_id, Quantity.SESSION_ENERGY_WH) or 0.0

    def _on_readings(self, batch: list[Reading]) -> None:
        """SiteState listener: a fresh measured SoC re-plans a session aiming at a SoC."""
        for r in batch:
            if r.quantity is not Quantity.SOC_PCT:
                continue
            session = self._sessions.get(r.device_id)
            if session is None or not self.plugged.get(r.device_id):
                continue
            target = session.target_soc_pct
            if target is None and session.set_by == "default":
                target = self._target_soc.get(r.device_id)
            if target is None:
                continue
            if session.soc_source == "measured" and session.soc_pct is not None:
                if abs(r.value - session.soc_pct) < 1.0:
                    continue  # re-plan by whole percents, not on every meter value
            try:
                self.set_session(
                    r.device_id, None, session.departure, session.set_by,
                    soc_pct=r.value, target_soc_pct=target,
                )  # fmt: skip
            except HemsError as exc:
                log.error("ev session not re-planned", charger=r.device_id, error=str(exc))

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

    def _start(self, session: EvSession, remaining_wh: float | None = None) -> None:
        """`remaining_wh`: for a SoC target, the energy still wanted from now (the control
        loop counts from when it is told; the planner from plug-in)."""
        self._sessions[session.device_id] = session
        self._writes.put_nowait(session)
        if self._planner is not None:
            self._planner.ev_plugged(
                session.device_id,
                energy_wh=session.energy_wh,
                departure=session.departure,
                arrival=session.plugged_at,
            )
        wanted_wh = remaining_wh if remaining_wh is not None else session.energy_wh
        if self._control is not None and wanted_wh is not None:
            if session.target_soc_pct is not None:  # the loop stops the car at that SoC
                self._control.set_ev_session(
                    session.device_id,
                    wanted_wh,
                    session.departure,
                    target_soc_pct=session.target_soc_pct,
                )
            else:
                self._control.set_ev_session(session.device_id, wanted_wh, session.departure)
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
